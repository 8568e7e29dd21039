"""What the cloud checks of an edge's sums beyond the signature and the manifest, decided without a store.

The cloud cannot see inside a ciphertext, so it holds each edge to what it can check (issue 18, item 3):

- a sum's envelope counts exactly as many encryptions as its manifest names hospitals (`check_count`): an
  edge that adds one hospital's ciphertext to itself `m` times would weigh it `m` times in the mean;
- a ciphertext is accepted once per federation, across rounds, late buckets and edges (`claim`): a sum the
  cloud already decrypted, decrypted again under another weight or beside other sums, can be isolated. A
  sum is known by its canonical digest (what it parses to, serialised again), and each hospital's upload
  by the digest its signed manifest line names, so one upload is never counted in two accepted sums;
- a hospital's update for a round is in at most one accepted sum, whichever edge names it (`claim`); one
  already counted under another edge is refused as such (`CountedElsewhereError`).

A refusal that is one hospital's, not the sum's, names it in `detail["client_ids"]` (with the `round` it
trained for), so an honest edge can forward its other hospitals without it.

These check bytes and ids, not what a ciphertext holds: an edge that re-randomises a ciphertext (adds an
encryption of zero) and rewrites its envelope's count passes them. Masking below the encryption is what makes
such a sum worthless (docs/privacy.md, "What the cloud refuses").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class AcceptanceError(ValueError):
    """An edge's sum the cloud must refuse; `field` names where in the aggregate, `detail` says more."""

    def __init__(self, message: str, *, field: str, detail: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.detail = dict(detail or {})


class CountMismatchError(AcceptanceError):
    """The envelope counts another number of encryptions than the manifest names hospitals."""


class ReplayedCiphertextError(AcceptanceError):
    """The ciphertext was accepted before (or appears twice in one aggregate)."""


class CountedTwiceError(AcceptanceError):
    """A hospital named is already in an accepted sum for that round."""


class CountedElsewhereError(CountedTwiceError):
    """A hospital named is already in another edge's accepted sum for that round: a masked or encrypted sum
    cannot drop one hospital, so the whole sum is refused and its edge forwards again without it."""


@dataclass(frozen=True)
class Sum:
    """One ciphertext of an edge aggregate: the round's own sum or a late bucket."""

    field: str  # where it sits in the aggregate: "ciphertext" or "late.{i}.ciphertext"
    contributions_field: str  # where its manifest sits: "contributions" or "late.{i}.contributions"
    origin_round: int  # the round its hospitals trained for
    ciphertext_sha256: str  # canonical: of the ciphertext serialised again from what it parses to
    client_ids: tuple[str, ...]
    upload_sha256: tuple[
        str, ...
    ]  # each hospital's upload digest, from its signed line, in client_ids' order


@dataclass(frozen=True)
class Claims:
    """What accepting some sums writes: each ciphertext digest (the sums' and their hospitals' uploads') with
    the field it came in, and per round the hospitals counted so far (client id -> edge id), those already
    counted included."""

    digests: dict[str, str]
    counted: dict[int, dict[str, str]]


def check_count(envelope_count: int, *, named: int, field: str) -> None:
    """Raise unless a ciphertext whose envelope says it sums `envelope_count` encryptions is one of `named`
    hospitals' uploads each (an honest edge starts its sum from the first upload, so the two are equal)."""
    if envelope_count != named:
        raise CountMismatchError(
            f"the ciphertext is a sum of {envelope_count} encryptions; its manifest names {named} clients",
            field=field,
            detail={"envelope_count": envelope_count, "manifest_count": named},
        )


def claim(
    sums: Sequence[Sum],
    *,
    edge_id: str,
    accepted: Mapping[str, bool],
    counted: Mapping[int, Mapping[str, str]],
) -> Claims:
    """The claims of accepting `sums` from `edge_id`, given which digests were `accepted` before and who is
    `counted` per round (missing rounds: nobody). Raises `ReplayedCiphertextError` for a digest accepted before
    or repeated in `sums`, `CountedTwiceError` for a hospital already counted for its round."""
    digests: dict[str, str] = {}
    after = {round_: dict(ids) for round_, ids in counted.items()}
    for part in sums:
        digest = part.ciphertext_sha256
        if accepted.get(digest) or digest in digests:
            raise ReplayedCiphertextError(
                f"this ciphertext (SHA-256 {digest}) was already accepted; a sum is counted once",
                field=part.field,
                detail={"ciphertext_sha256": digest},
            )
        digests[digest] = part.field
        for index, (cid, upload) in enumerate(zip(part.client_ids, part.upload_sha256, strict=True)):
            if upload == digest:  # a sum of one upload (k = 1) is that upload: one ciphertext, claimed above
                continue
            if accepted.get(upload) or upload in digests:
                raise ReplayedCiphertextError(
                    f"client {cid}'s upload (SHA-256 {upload}) is already in an accepted sum; an upload is "
                    "counted once",
                    field=f"{part.contributions_field}.{index}.ciphertext_sha256",
                    detail={"ciphertext_sha256": upload, "client_ids": [cid], "round": part.origin_round},
                )
            digests[upload] = f"{part.contributions_field}.{index}"
        round_ids = after.setdefault(part.origin_round, {})
        check_not_counted(
            part.client_ids,
            origin_round=part.origin_round,
            edge_id=edge_id,
            counted=round_ids,
            field=part.contributions_field,
        )
        round_ids.update(dict.fromkeys(part.client_ids, edge_id))
    return Claims(digests=digests, counted=after)


def check_not_counted(
    client_ids: Sequence[str], *, origin_round: int, edge_id: str, counted: Mapping[str, str], field: str
) -> None:
    """Raise unless none of `client_ids` is `counted` (client id -> edge id) for `origin_round` yet:
    `CountedElsewhereError` if every one named is another edge's, `CountedTwiceError` otherwise."""
    twice = sorted(set(client_ids) & counted.keys())
    if not twice:
        return
    counted_at = {cid: counted[cid] for cid in twice}
    detail = {"round": origin_round, "client_ids": twice, "counted_at": counted_at}
    if edge_id not in counted_at.values():
        raise CountedElsewhereError(
            f"clients {twice} are already in round {origin_round}'s sums through {sorted(set(counted_at.values()))}; "
            "a client counts under one edge per round",
            field=field,
            detail=detail,
        )
    raise CountedTwiceError(
        f"clients {twice} are already in round {origin_round}'s sums; a client counts once per round",
        field=field,
        detail=detail,
    )
