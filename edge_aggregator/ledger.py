"""What the edge keeps of each round in the `StateStore`: the transaction that stores an upload, and the
checkpoints of the folder that adds stored uploads into the round's sum.

Per round (key names in `services.keyspace`):
- `manifest`: JSON `{client id: Contribution}`, each line signed by its client: every accepted upload;
- `upload:{client id}`: each accepted ciphertext, stored before the upload is acknowledged and kept until the
  forward has an outcome (a client the cloud refuses is taken out, `exclude`, and the folder adds the others
  again, one at a time);
- `sum`: the running ciphertext, one serialised `EncryptedVector` however many clients contributed, and
  `folded`: the `FoldCheckpoint` naming the clients whose uploads it holds. Both are written together, by the
  folder (`edge_aggregator.folder`) off the request path, or by `exclude` and `carry`; the manifest's other
  clients are accepted and not yet added;
- `plan`: the `RoundPlan` as the edge adopted it (basis version and expected clients survive a restart);
- `closed`: a `Closure`, written once (SET NX); no upload joins the sum after it;
- `forwarded`: the forward's `Outcome`, written once;
- `late:{origin}:...`: a bucket of uploads made for an earlier round `origin`, the same three keys; late
  uploads land there, and so does a sum the cloud refused as closed (`carry`);
- counters of refused uploads, accepted ciphertext bytes, and uploads dropped by reason (`DropReason`).
Per nonce: a marker that outlives any round it could be replayed into, written with its TTL.

An upload changes `manifest`, its own ciphertext and its nonce marker (with its TTL) in one
`StateStore.transaction` that also reads `closed` and never the sum, so a refused upload writes nothing, no
upload lands after the round closed, an acknowledged one is stored, and no crash leaves a marker that never
expires. A folder's checkpoint writes the sum and `folded` only while it holds the round's fold lease and
`folded` is still what it started from (`checkpoint`): a folder killed before it lands loses nothing (its
successor starts from the last checkpoint) and one that lands never counts an upload twice.

A record that does not read back (altered in the store, a truncated write, or written before a bound
existed) is quarantined and logged, and the edge goes on without it, so that one bad record neither fails an
upload nor stops a round (issue 20, item 1):
- a running sum or its checkpoint (a round's own, or a late bucket's) whose manifest reads back is moved
  to the quarantine keys alone, and the folder sums the round's stored uploads again from an empty sum: every
  upload is still stored on its own until the round's outcome, so none is dropped for it
  (`_quarantine_sum`);
- a manifest that does not read back is moved with its sum, and the stored uploads it named are counted
  dropped (`record_quarantined`): without it the edge cannot say whose they are; the round goes on from an
  empty sum;
- the rest is bookkeeping the edge can make again (`services.stored_records`, `bookkeeping=True` and
  `Discards`: quarantined, removed, read as absent). A plan, closure or outcome: the tick stores the plan of
  the round it follows again (the cloud's plan, held since it was adopted), closes the round again when it
  is due, and forwards it again (the cloud takes a repeat of a sum once, by idempotency key); an older
  round's plan is gone, and the sums made under it are dropped `plan_missing`. A counter (refused uploads,
  accepted bytes, drops by reason) counts again from 0, in the write that adds to it (`_commit`).

Once a round's forward has an outcome, its single uploads are deleted and its sum, manifest and late buckets
expire `retain_round_s` seconds later (`EdgeSettings.retain_round_s`, docs/operations.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from inspect import isawaitable
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, TypeAdapter

from edge_aggregator.errors import DuplicateUploadError, ReplayError, RoundClosedError, SumFullError
from edge_aggregator.sum_seal import SumSeal
from protocol.messages import ClientUpdate, Contribution, DropReason, ErrorCode, RoundPlan, Sha256Hex
from services import keyspace
from services.lease import Lease, Pause
from services.store import Expiring, StateStore, TransactionFn, Updates, Write
from services.stored_records import (
    QUARANTINE_TTL_S,
    Discards,
    StoredRecordError,
    parse_record,
    read_record,
)

log = logging.getLogger("fedlora.edge")
_MANIFEST = TypeAdapter(dict[str, Contribution])
_COUNT = TypeAdapter(NonNegativeInt)
T = TypeVar("T")

#: `resum(sums) -> sum_bytes`: the sum of two stored sums, serialised (`carry` joins a sum into a bucket's).
Resum = Callable[[Sequence[bytes]], Awaitable[bytes]]


class CloseReason(StrEnum):
    QUORUM = "quorum"
    DEADLINE = "deadline"
    SUPERSEDED = "superseded"  # the cloud published a later round before this one closed here
    FEDERATION_ENDED = "federation_ended"  # the federation ended before this round closed here


class ForwardStatus(StrEnum):
    DELIVERED = "delivered"
    SKIPPED = "skipped"  # fewer than k contributions: never forwarded
    REFUSED = "refused"  # the cloud answered 4xx
    CARRIED = "carried"  # the cloud had closed the round: its sum joined a later round as a late bucket


class Closure(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    reason: CloseReason
    at: datetime


class Drop(BaseModel):
    """Uploads made for `round` that reach no model, and why."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    round: int = Field(ge=0)
    reason: DropReason
    count: int = Field(ge=1)


class FoldCheckpoint(BaseModel):
    """What a round's running sum holds: the clients whose uploads were added into it (`covers`), a token
    each write draws again (`epoch`), so that a checkpoint lands only on the state its folder started from,
    the SHA-256 of the sum it was written with (None: no sum), and the edge's MAC of all of it
    (`edge_aggregator.sum_seal`), so that neither can be rolled back or rewritten in the store unseen."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    covers: tuple[str, ...] = ()
    epoch: str = Field(default_factory=lambda: secrets.token_hex(8))
    sum_sha256: Sha256Hex | None = None
    mac: str = Field(default="", max_length=128)

    def dump(self) -> bytes:
        return self.model_dump_json().encode()


@dataclass(frozen=True)
class FoldStart:
    """A folder's starting point: the stored sum, the checkpoint it holds (and its bytes, to compare at the
    checkpoint), the accepted uploads not yet in it, in client order, and the SHA-256 of each one's
    ciphertext (from its signed manifest line)."""

    stored: bytes | None
    checkpoint: FoldCheckpoint
    raw: bytes
    pending: tuple[str, ...]
    digests: Mapping[str, str] = field(default_factory=dict)


class Outcome(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    status: ForwardStatus
    count: int = Field(ge=0)
    at: datetime
    detail: str = ""
    ciphertext_sha256: str | None = None
    late_forwarded: int = Field(default=0, ge=0, description="late uploads sent along, in buckets of >= k")
    late_dropped: int = Field(default=0, ge=0, description="late uploads that reach no model")
    carried_into: int | None = Field(default=None, ge=0, description="the round a CARRIED sum joined")
    dropped: tuple[Drop, ...] = Field(
        default=(), description="uploads this outcome leaves out of every model"
    )


class RoundLedger:
    """The edge's per-round state for one federation, in a `StateStore`."""

    def __init__(
        self,
        store: StateStore,
        *,
        edge_id: str,
        federation_id: str,
        seal: SumSeal,
        retain_round_s: float = keyspace.EDGE_ROUND_TTL_S,
    ) -> None:
        if not retain_round_s > 0:
            raise ValueError(f"retain_round_s must be positive, got {retain_round_s}")
        self._store = store
        self._seal = seal
        self._eid = edge_id
        self._fid = federation_id
        self._retain_round_s = retain_round_s
        # One manifest-changing transaction at a time in this process: each rewrites a round's manifest, so
        # uploads stored together would only make each other start over (WATCH/MULTI) and send their
        # ciphertext again. Replicas of the edge still race through the store.
        self._manifest_writes = asyncio.Lock()

    # -- reads ------------------------------------------------------------------------------------------
    # A plan, closure or outcome that does not read back is read as none, and made again (module docstring).
    async def plan(self, round_: int) -> RoundPlan | None:
        return await read_record(
            self._store, keyspace.edge_plan(self._eid, self._fid, round_), RoundPlan, bookkeeping=True
        )

    async def manifest(self, round_: int) -> dict[str, Contribution]:
        return await self._manifest(round_, round_)

    async def origins(self, round_: int) -> list[int]:
        """The rounds whose uploads round `round_` holds: its own (when it has a manifest) and those of its
        buckets of late uploads."""
        own = [round_] if await self._store.get(keyspace.edge_manifest(self._eid, self._fid, round_)) else []
        return own + sorted(await self.late_buckets(round_))

    async def unfolded(self, round_: int, origin: int) -> list[str]:
        """The clients whose accepted uploads are not yet in round `round_`'s sum for `origin` (a late bucket's
        when it differs from `round_`)."""
        return list((await self.fold_start(round_, origin)).pending)

    async def fold_start(self, round_: int, origin: int) -> FoldStart:
        """Where a folder of round `round_`'s sum for `origin` starts; a manifest, sum or checkpoint that does
        not read back is quarantined first (with its partners), and the round goes on from an empty sum."""
        return await self._healing(lambda: self._fold_start(round_, origin))

    async def _fold_start(self, round_: int, origin: int) -> FoldStart:
        k_sum, k_manifest, _ = self._sum_keys(round_, origin)
        k_folded = self._folded_key(round_, origin)
        manifest = _load_manifest(await self._store.get(k_manifest), key=k_manifest)
        raw = await self._store.get(k_folded)
        stored = await self._store.get(k_sum)
        # Hashed on a thread (hashlib lets go of the GIL): a sum of 1 M CKKS values is 32 MB.
        digest = await asyncio.to_thread(_sha256, stored)
        checkpoint = self._load_checkpoint(round_, origin, raw, stored, digest=digest)
        if raw is None:
            # A first checkpoint that covers nothing, so that every later write to the sum changes it.
            raw = checkpoint.dump()
            if not await self._store.set_if_absent(k_folded, raw):
                return await self._fold_start(round_, origin)
        pending = tuple(sorted(manifest.keys() - set(checkpoint.covers)))
        digests = {cid: manifest[cid].ciphertext_sha256 for cid in pending}
        return FoldStart(stored=stored, checkpoint=checkpoint, raw=raw, pending=pending, digests=digests)

    async def stored_upload(self, round_: int, origin: int, client_id: str) -> bytes | None:
        _, _, k_upload = self._sum_keys(round_, origin)
        return await self._store.get(k_upload(client_id))

    async def take_fold_lease(self, round_: int, origin: int, *, ttl_s: float, pause: Pause) -> Lease | None:
        """The lease of round `round_`'s one folder for `origin`, None while another holds it."""
        key = keyspace.edge_fold_lease(self._eid, self._fid, round_, origin)
        return await Lease.take(self._store, key, ttl_s=ttl_s, pause=pause)

    async def quarantine_unreadable_sum(self, round_: int, origin: int, *, raw: bytes, reason: str) -> None:
        """The folder found round `round_`'s stored sum for `origin` (`raw`) does not deserialise: quarantine
        it with its manifest, and count the uploads they covered dropped (module docstring)."""
        k_sum, _, _ = self._sum_keys(round_, origin)
        await self._quarantine_sum(round_, origin, StoredRecordError(k_sum, reason, raw=raw))

    async def holds(self, lease: Lease) -> bool:
        """Whether `lease` is still its holder's in the store."""
        return await self._store.get(lease.key) == lease.token

    async def checkpoint(
        self, round_: int, origin: int, *, lease: Lease, start: FoldStart, total: bytes, added: Sequence[str]
    ) -> bool:
        """Write `total`, the sum `start` read plus the uploads of `added`, and the checkpoint that names them,
        in one transaction; nothing (False) unless `lease` is still held and the checkpoint is still the one
        `start` read (no other write to the sum came in between: `exclude`, `carry`, a quarantine)."""
        k_sum, _, _ = self._sum_keys(round_, origin)
        k_folded = self._folded_key(round_, origin)
        covers = tuple(sorted({*start.checkpoint.covers, *added}))
        digest = await asyncio.to_thread(_sha256, total)  # off the event loop, as in `_fold_start`
        checkpoint = self._sealed(round_, origin, covers=covers, total=total, digest=digest).dump()

        def land(current: dict[str, bytes | None]) -> Updates:
            if not lease.holds(current) or current[k_folded] != start.raw:
                return {}
            # No TTL, as the manifest: the round's outcome gives them the retention window (`_retain`).
            return {k_sum: total, k_folded: checkpoint}

        # The store writes only keys its transaction read: the sum is read too (once per batch).
        return bool(await self._store.transaction([lease.key, k_folded, k_sum], land))

    async def closure(self, round_: int) -> Closure | None:
        return await read_record(
            self._store, keyspace.edge_closed(self._eid, self._fid, round_), Closure, bookkeeping=True
        )

    async def outcome(self, round_: int) -> Outcome | None:
        return await read_record(
            self._store, keyspace.edge_forwarded(self._eid, self._fid, round_), Outcome, bookkeeping=True
        )

    async def nonce_seen(self, nonce: str) -> bool:
        return await self._store.get(keyspace.edge_nonce(self._eid, self._fid, nonce)) is not None

    async def refused(self, round_: int) -> int:
        return await self._count(keyspace.edge_refused(self._eid, self._fid, round_))

    async def dropped(self, round_: int) -> dict[DropReason, int]:
        """Uploads made for `round_` that this edge acknowledged and that reach no model, by reason."""
        prefix = keyspace.edge_dropped_prefix(self._eid, self._fid, round_)
        counts = {}
        for key in await self._store.scan(prefix):
            reason = key[len(prefix) :]
            if reason in DropReason.__members__.values():
                counts[DropReason(reason)] = await self._count(key)
        return counts

    async def bytes_received(self, round_: int) -> int:
        return await self._count(keyspace.edge_bytes(self._eid, self._fid, round_))

    async def pending(self) -> list[int]:
        """Rounds closed here whose forward has no outcome yet (the cloud was unreachable)."""
        closed = await self._rounds_with("closed")
        done = set(await self._rounds_with("forwarded"))
        return [r for r in closed if r not in done]

    async def unclosed(self) -> list[int]:
        """Rounds holding uploads (their own or carried late ones) that were never closed (say, the edge was
        down when the cloud moved on)."""
        closed = set(await self._rounds_with("closed"))
        holding = set(await self._rounds_with("manifest")) | set(await self._rounds_with("late"))
        return sorted(r for r in holding if r not in closed)

    # -- writes -----------------------------------------------------------------------------------------
    async def save_plan(self, plan: RoundPlan) -> None:
        await self._store.set(
            keyspace.edge_plan(self._eid, self._fid, plan.round),
            plan.model_dump_json().encode(),
            ttl_s=keyspace.EDGE_ROUND_TTL_S,
        )

    async def add(self, update: ClientUpdate, *, capacity: int, line: Contribution | None = None) -> int:
        """Store `update` with its round's manifest line (`line`, when the caller made it already: its
        `manifest_line()`) and nonce, atomically; the number of contributions after. The folder adds it into the sum later; the sum is neither read nor written here.

        Re-checks inside the transaction what the caller checked before (closed, replay, duplicate), since
        another upload may have committed in between, and refuses an upload past the `capacity` summands the
        scheme can add (`SumFullError`). Raises the matching `ServiceError`; nothing is written.
        """
        round_, cid = update.round, update.client_id
        k_manifest = keyspace.edge_manifest(self._eid, self._fid, round_)
        k_upload = keyspace.edge_upload(self._eid, self._fid, round_, cid)
        k_nonce = keyspace.edge_nonce(self._eid, self._fid, update.nonce)
        k_closed = keyspace.edge_closed(self._eid, self._fid, round_)
        k_bytes = keyspace.edge_bytes(self._eid, self._fid, round_)
        nonce_record = Expiring(
            json.dumps({"client_id": cid, "round": round_}).encode(), ttl_s=keyspace.NONCE_TTL_S
        )
        contribution = line or update.manifest_line()
        counted = 0

        async def compute(current: dict[str, bytes | None]) -> Updates:
            nonlocal counted
            if current[k_closed] is not None:
                raise RoundClosedError(f"round {round_} closed at this edge while the upload was checked")
            if current[k_nonce] is not None:
                raise ReplayError(f"nonce {update.nonce} was already used", field="nonce")
            manifest = _load_manifest(current[k_manifest], key=k_manifest)
            if cid in manifest:
                raise DuplicateUploadError(f"client {cid} is already in round {round_}'s sum")
            _check_capacity(len(manifest), capacity, what=f"round {round_}'s sum")
            manifest[cid] = contribution
            counted = len(manifest)
            return {
                k_manifest: _MANIFEST.dump_json(manifest),
                k_upload: update.ciphertext,
                k_nonce: nonce_record,
                **_added(current, {k_bytes: len(update.ciphertext)}),
            }

        keys = [k_manifest, k_upload, k_nonce, k_closed]
        async with self._manifest_writes:
            await self._healing(lambda: self._commit(keys, compute, counters=[k_bytes]))
        return counted

    async def add_late(
        self, update: ClientUpdate, *, into: int, capacity: int, line: Contribution | None = None
    ) -> int:
        """Store a late upload (made for `update.round`, closed here; `line` its manifest line, as `add`) in
        round `into`'s bucket for that round, atomically with its nonce; the bucket's size after (the folder adds it into the bucket's sum). Refused,
        with nothing written, once `into` has closed, on a replayed nonce, when the client is already in its
        round's sum or bucket, or past the scheme's `capacity` summands."""
        origin, cid = update.round, update.client_id
        k_manifest = keyspace.edge_late_manifest(self._eid, self._fid, into, origin)
        k_upload = keyspace.edge_late_upload(self._eid, self._fid, into, origin, cid)
        k_fresh = keyspace.edge_manifest(self._eid, self._fid, origin)
        # The round's own sum and any bucket an earlier round carried: one update per client and round.
        k_earlier = [
            keyspace.edge_late_manifest(self._eid, self._fid, r, origin) for r in range(origin + 1, into)
        ]
        k_nonce = keyspace.edge_nonce(self._eid, self._fid, update.nonce)
        k_closed = keyspace.edge_closed(self._eid, self._fid, into)
        k_bytes = keyspace.edge_bytes(self._eid, self._fid, into)
        nonce_record = Expiring(
            json.dumps({"client_id": cid, "round": origin, "folded_into": into}).encode(),
            ttl_s=keyspace.NONCE_TTL_S,
        )
        contribution = line or update.manifest_line()
        counted = 0

        async def compute(current: dict[str, bytes | None]) -> Updates:
            nonlocal counted
            if current[k_closed] is not None:
                raise RoundClosedError(f"round {into}, which late uploads join, closed at this edge")
            if current[k_nonce] is not None:
                raise ReplayError(f"nonce {update.nonce} was already used", field="nonce")
            bucket = _load_manifest(current[k_manifest], key=k_manifest)
            if any(cid in _load_manifest(current[k], key=k) for k in (k_manifest, k_fresh, *k_earlier)):
                raise DuplicateUploadError(f"client {cid} already has an upload for round {origin}")
            _check_capacity(len(bucket), capacity, what=f"round {into}'s bucket for round {origin}")
            bucket[cid] = contribution
            counted = len(bucket)
            return {
                k_manifest: _MANIFEST.dump_json(bucket),
                k_upload: update.ciphertext,
                k_nonce: nonce_record,
                **_added(current, {k_bytes: len(update.ciphertext)}),
            }

        keys = [k_manifest, k_upload, k_fresh, *k_earlier, k_nonce, k_closed]
        async with self._manifest_writes:
            await self._healing(lambda: self._commit(keys, compute, counters=[k_bytes]))
        return counted

    async def late_buckets(self, round_: int) -> dict[int, dict[str, Contribution]]:
        """Round `round_`'s buckets of late uploads: origin round -> manifest."""
        prefix = keyspace.edge_late_prefix(self._eid, self._fid, round_)
        buckets: dict[int, dict[str, Contribution]] = {}
        for key in await self._store.scan(prefix):
            origin, _, rest = key[len(prefix) :].partition(":")
            if rest == "manifest" and origin.isdigit():
                buckets[int(origin)] = await self._manifest(round_, int(origin))
        return dict(sorted(buckets.items()))

    async def exclude(
        self, round_: int, client_ids: Collection[str], *, origin: int, reason: DropReason
    ) -> list[str]:
        """Take `client_ids` out of round `round_`'s sum (`origin` == `round_`) or out of its bucket of late
        uploads for `origin`: the manifest without them and those taken out counted as dropped for `reason`
        (under `origin`), in one transaction, so that an acknowledged upload is never out of the sum without
        being counted. The clients taken out (none when it holds none of them, or once round `round_`'s
        forward has an outcome: its sums are final then, and its uploads forgotten on purpose).

        Nothing is summed here: when the sum holds one of them, the sum and its checkpoint are reset, and the
        folder adds the other clients' stored uploads again, one at a time and checkpointed as any fold
        (memory: the sum and one upload, whatever the cohort); else the sum stays and only its checkpoint's
        epoch changes, so that no folder that read the manifest before lands a checkpoint naming them. Their
        stored uploads are then deleted by key (their values never read); a crash in between leaves keys no
        manifest names, deleted with the round's uploads (`_forget_uploads`)."""
        k_sum, k_manifest, k_upload = self._sum_keys(round_, origin)
        k_folded = self._folded_key(round_, origin)
        k_dropped = keyspace.edge_dropped(self._eid, self._fid, origin, reason.value)
        k_forwarded = keyspace.edge_forwarded(self._eid, self._fid, round_)
        await self._manifest(round_, origin)  # quarantined first if it does not read back
        taken: list[str] = []

        def compute(current: dict[str, bytes | None]) -> Updates:
            taken.clear()
            if current[k_forwarded] is not None:
                return {}
            now = _load_manifest(current[k_manifest], key=k_manifest)
            checkpoint = self._load_checkpoint(round_, origin, current[k_folded], current[k_sum])
            out = sorted(set(client_ids) & now.keys())
            if not out:
                return {}
            taken.extend(out)
            kept = {cid: now[cid] for cid in sorted(now.keys() - set(out))}
            covers = () if set(out) & set(checkpoint.covers) else checkpoint.covers
            total = current[k_sum] if covers else None
            return {
                **({k_sum: None} if not covers else {}),
                k_folded: self._sealed(round_, origin, covers=covers, total=total).dump() if kept else None,
                k_manifest: _MANIFEST.dump_json(kept),
                **_added(current, {k_dropped: len(out)}),
            }

        async with self._manifest_writes:
            await self._healing(
                lambda: self._commit(
                    [k_sum, k_manifest, k_folded, k_forwarded], compute, counters=[k_dropped]
                )
            )
        if taken:
            await self._store.delete(*(k_upload(cid) for cid in taken))
        return taken

    async def carry(self, round_: int, *, origin: int, into: int, resum: Resum) -> bool:
        """Add closed round `round_`'s sum of uploads made for `origin` (its own sum when `origin` == `round_`,
        else its bucket for `origin`) into round `into`'s bucket for `origin`, with its manifest lines and
        uploads, in one transaction. True once they are there (by this call or an earlier one), False when
        `into` has closed (nothing written: try a later round). The bucket's checkpoint then covers what both
        sums held; an upload the source had not folded yet is pending in the bucket, for its folder."""
        k_sum, k_manifest, k_upload = self._sum_keys(round_, origin)
        d_sum, d_manifest, d_upload = self._sum_keys(into, origin)
        k_folded, d_folded = self._folded_key(round_, origin), self._folded_key(into, origin)
        k_closed = keyspace.edge_closed(self._eid, self._fid, into)
        source = await self._manifest(round_, origin)
        await self._manifest(into, origin)  # the bucket it joins, quarantined first if it does not read back
        keys = [k_sum, k_manifest, k_folded, d_sum, d_manifest, d_folded, k_closed]
        keys += [key for cid in source for key in (k_upload(cid), d_upload(cid))]
        placed = False

        async def compute(current: dict[str, bytes | None]) -> dict[str, bytes | None]:
            nonlocal placed
            moving = _load_manifest(current[k_manifest], key=k_manifest)
            there = _load_manifest(current[d_manifest], key=d_manifest)
            placed = moving.keys() <= there.keys()  # carried by an earlier call (or nothing to carry)
            if placed or current[k_closed] is not None or moving.keys() != source.keys():
                return {}
            placed = True
            held = [
                self._load_checkpoint(r, origin, current[folded], current[summed]).covers
                for r, folded, summed in ((into, d_folded, d_sum), (round_, k_folded, k_sum))
            ]
            parts = [part for part in (current[d_sum], current[k_sum]) if part is not None]
            uploads = {d_upload(cid): current[k_upload(cid)] for cid in moving}
            total = await resum(parts) if parts else None
            covers = tuple(sorted({*held[0], *held[1]}))
            return {
                d_sum: total,
                d_folded: self._sealed(into, origin, covers=covers, total=total).dump(),
                d_manifest: _MANIFEST.dump_json(there | moving),
                **{key: value for key, value in uploads.items() if value is not None},
            }

        await self._healing(lambda: self._store.transaction(keys, compute))
        return placed

    async def close(self, round_: int, closure: Closure) -> tuple[Closure, bool]:
        """Close the round to uploads (once). Returns the closure in force and whether this call wrote it."""
        key = keyspace.edge_closed(self._eid, self._fid, round_)
        for _ in range(2):  # a second time after a closure that did not read back was moved to quarantine
            if await self._store.set_if_absent(
                key, closure.model_dump_json().encode(), ttl_s=keyspace.EDGE_ROUND_TTL_S
            ):
                return closure, True
            existing = await self.closure(round_)
            if existing is not None:
                return existing, False
        return closure, False

    async def record(self, round_: int, outcome: Outcome) -> tuple[Outcome, bool]:
        """Record the forward's outcome (once) and count the uploads it drops, in one transaction, so that a
        process killed in between leaves both or neither; returns the outcome in force and whether this call
        wrote it."""
        key = keyspace.edge_forwarded(self._eid, self._fid, round_)
        counters: dict[str, int] = {}
        for drop in outcome.dropped:
            counter = keyspace.edge_dropped(self._eid, self._fid, drop.round, drop.reason.value)
            counters[counter] = counters.get(counter, 0) + drop.count

        def once(current: dict[str, bytes | None]) -> Updates:
            if current[key] is not None:
                return {}
            return {
                key: Expiring(outcome.model_dump_json().encode(), ttl_s=keyspace.EDGE_ROUND_TTL_S),
                **_added(current, counters),
            }

        if await self._commit([key], once, counters=counters):
            await self._forget_uploads(round_)
            await self._retain(round_)
            return outcome, True
        return await self.outcome(round_) or outcome, False

    async def count_refusal(self, round_: int) -> None:
        key = keyspace.edge_refused(self._eid, self._fid, round_)
        await self._commit([], lambda current: _added(current, {key: 1}), counters=[key])

    # -- helpers ----------------------------------------------------------------------------------------
    async def _count(self, key: str) -> int:
        """A counter's value; one that does not read back is discarded and read as 0 (it only reports)."""
        return await read_record(self._store, key, _COUNT, bookkeeping=True) or 0

    async def _manifest(self, round_: int, origin: int) -> dict[str, Contribution]:
        """Round `round_`'s manifest (`origin` == `round_`) or its bucket's for `origin`; quarantined with its
        sum, and read as empty, if it does not read back."""
        _, k_manifest, _ = self._sum_keys(round_, origin)
        try:
            return _load_manifest(await self._store.get(k_manifest), key=k_manifest)
        except StoredRecordError as e:
            await self._quarantine_sum(round_, origin, e)
            return {}

    async def _healing(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """`attempt()`, a transaction that reads manifests and sums; once more after quarantining one it found
        unreadable (a second unreadable one raises `StoredRecordError`: 409 `stored_record_corrupt`)."""
        try:
            return await attempt()
        except StoredRecordError as e:
            where = self._sum_of(e.key)
            if where is None:
                raise
            await self._quarantine_sum(*where, e)
            return await attempt()

    async def _commit(
        self, keys: Sequence[str], compute: TransactionFn, *, counters: Collection[str] = ()
    ) -> Updates:
        """`StateStore.transaction` over `keys` and `counters`, which `compute` adds to (`_added`). A counter
        that is not a count reaches `compute` as none, so it counts again from 0, and is then discarded
        (quarantined, logged): bookkeeping never refuses the write it counts. What was written."""
        discards = Discards()

        async def run(current: dict[str, bytes | None]) -> Updates:
            discards.clear()
            for counter in counters:
                count = discards.parse(current[counter], key=counter, reader=_COUNT, empty=None)
                current = current | {counter: None if count is None else str(count).encode()}
            result = compute(current)
            return await result if isawaitable(result) else result

        written = await self._store.transaction([*keys, *counters], run)
        await discards.settle(self._store)
        return written

    def _sum_of(self, key: str) -> tuple[int, int] | None:
        """(round, origin) of a sum or manifest key (`edge_sum`, `edge_manifest`, and their late buckets');
        None for another key."""
        rest = key.removeprefix(keyspace.edge_rounds_prefix(self._eid, self._fid))
        match rest.split(":"):
            case [round_, "manifest" | "sum" | "folded"] if round_.isdigit():
                return int(round_), int(round_)
            case [round_, "late", origin, "manifest" | "sum" | "folded"] if (
                round_.isdigit() and origin.isdigit()
            ):
                return int(round_), int(origin)
        return None

    async def _quarantine_sum(self, round_: int, origin: int, error: StoredRecordError) -> None:
        """Move an unreadable sum or checkpoint to its quarantine key, the uploads being summed again (module
        docstring); or an unreadable manifest with its sum, counting the stored uploads it named dropped
        (`record_quarantined`), in one transaction, then deleting those uploads by key (their values are never
        read: memory holds no ciphertext of the cohort); log it (keys and reason, no values). Nothing happens if the record was rewritten meanwhile (another replica moved it)."""
        k_sum, k_manifest, k_upload = self._sum_keys(round_, origin)
        k_folded = self._folded_key(round_, origin)
        q_sum, q_manifest = keyspace.quarantine_of(k_sum), keyspace.quarantine_of(k_manifest)
        reason = DropReason.RECORD_QUARANTINED
        k_dropped = keyspace.edge_dropped(self._eid, self._fid, origin, reason.value)
        moved: list[int] = []
        listed: list[bytes | None] = [None]
        uploads: list[str] = []
        resummed = [False]

        def move(current: dict[str, bytes | None]) -> Updates:
            moved.clear()
            if current[error.key] != error.raw or current[k_manifest] != listed[0]:
                return {}  # moved by another replica, or (manifest changed) the uploads listed are stale
            # A sum or checkpoint under a manifest that reads back: the uploads are still stored one by one,
            # so the folder sums them again from an empty sum and none is dropped.
            resummed[0] = error.key != k_manifest and _reads_back(current[k_manifest], key=k_manifest)
            if resummed[0]:
                uploads.clear()
            moved.append(len(uploads))
            updates: dict[str, Write] = {
                k_sum: None,
                k_folded: None,
                **({} if resummed[0] else {k_manifest: None}),
                **(_added(current, {k_dropped: len(uploads)}) if uploads else {}),
            }
            # Kept for the operator beside the sum: the manifest dropped with it, or the checkpoint that did
            # not read back.
            partner = k_manifest if not resummed[0] else k_folded if error.key == k_folded else None
            for key in (k_sum, partner):
                if key is not None and (value := current[key]) is not None:
                    updates[keyspace.quarantine_of(key)] = Expiring(value, ttl_s=QUARANTINE_TTL_S)
            return updates

        # The uploads are listed by key before the transaction, under the manifest read just before them: an
        # upload stored in between changes the manifest, and the listing is taken again.
        while await self._store.get(error.key) == error.raw:
            listed[0] = await self._store.get(k_manifest)
            uploads[:] = await self._store.scan(k_upload(""))
            await self._commit(
                [k_sum, k_manifest, k_folded, q_sum, q_manifest, keyspace.quarantine_of(k_folded)],
                move,
                counters=[k_dropped],
            )
            if moved:
                break
        if moved and uploads:
            await self._store.delete(*uploads)
        if moved:
            log.error(
                "a stored record does not read back: quarantined; the round goes on, summing its stored uploads "
                "again"
                if resummed[0]
                else "a stored manifest does not read back: quarantined with its sum; the round goes on without "
                "the uploads it named",
                extra={
                    "federation_id": self._fid,
                    "round": round_,
                    "edge_id": self._eid,
                    "code": ErrorCode.STORED_RECORD_CORRUPT.value,
                    "data": {
                        "key": error.key,
                        "quarantine": keyspace.quarantine_of(error.key),
                        "error": error.reason,
                        "uploads_dropped": moved[0],
                        "drop_reason": reason.value,
                    },
                },
            )

    def _sealed(
        self,
        round_: int,
        origin: int,
        *,
        covers: Sequence[str],
        total: bytes | None,
        digest: str | None = None,
    ) -> FoldCheckpoint:
        """A fresh checkpoint of round `round_`'s sum for `origin`: `total` (None: no sum; `digest` its
        SHA-256 when the caller computed it), holding `covers`, with a new epoch and the edge's MAC."""
        epoch = secrets.token_hex(8)
        digest = digest if digest is not None else _sha256(total)
        mac = self._seal.tag(round_=round_, origin=origin, covers=covers, epoch=epoch, sum_sha256=digest)
        return FoldCheckpoint(covers=tuple(covers), epoch=epoch, sum_sha256=digest, mac=mac)

    def _load_checkpoint(
        self,
        round_: int,
        origin: int,
        raw: bytes | None,
        stored: bytes | None,
        *,
        digest: str | None = None,
    ) -> FoldCheckpoint:
        """The checkpoint of round `round_`'s sum for `origin` (`raw`, with the sum `stored`); a fresh one
        when there is neither. `StoredRecordError` (which `_healing` quarantines, the uploads then summed
        again) when it does not read back, when a sum is stored without one (nothing says which uploads it
        holds), when its MAC does not verify (rewritten in the store: `covers` naming an upload the sum does
        not hold, or written before checkpoints carried a MAC) or when the sum is not the one it was written
        with (an older sum written back). `digest`: `stored`'s SHA-256, when the caller computed it."""
        k_sum, _, _ = self._sum_keys(round_, origin)
        key = self._folded_key(round_, origin)
        if raw is None:
            if stored is not None:
                raise StoredRecordError(
                    k_sum, "a running sum without the checkpoint that names its uploads", raw=stored
                )
            return self._sealed(round_, origin, covers=(), total=None)
        checkpoint = parse_record(raw, key=key, reader=FoldCheckpoint)
        if not self._seal.verify(
            checkpoint.mac,
            round_=round_,
            origin=origin,
            covers=checkpoint.covers,
            epoch=checkpoint.epoch,
            sum_sha256=checkpoint.sum_sha256,
        ):
            raise StoredRecordError(
                key, "the checkpoint's MAC does not verify under this edge's key", raw=raw
            )
        if (digest if digest is not None else _sha256(stored)) != checkpoint.sum_sha256:
            raise StoredRecordError(
                key, "the stored running sum is not the one its checkpoint was written with", raw=raw
            )
        return checkpoint

    def _folded_key(self, round_: int, origin: int) -> str:
        """The checkpoint of round `round_`'s sum for `origin` (`_sum_keys`)."""
        if origin == round_:
            return keyspace.edge_folded(self._eid, self._fid, round_)
        return keyspace.edge_late_folded(self._eid, self._fid, round_, origin)

    def _sum_keys(self, round_: int, origin: int) -> tuple[str, str, Callable[[str], str]]:
        """Sum, manifest and upload keys of round `round_`'s own sum (`origin` == `round_`) or of its bucket
        of late uploads made for `origin`."""
        eid, fid = self._eid, self._fid
        if origin == round_:
            return (
                keyspace.edge_sum(eid, fid, round_),
                keyspace.edge_manifest(eid, fid, round_),
                lambda cid: keyspace.edge_upload(eid, fid, round_, cid),
            )
        return (
            keyspace.edge_late_sum(eid, fid, round_, origin),
            keyspace.edge_late_manifest(eid, fid, round_, origin),
            lambda cid: keyspace.edge_late_upload(eid, fid, round_, origin, cid),
        )

    async def _retain(self, round_: int) -> None:
        """Keep a finished round's sum, manifest and late buckets for `retain_round_s` (audits, a retried
        forward), then forget them. Its plan keeps `EDGE_ROUND_TTL_S`: small, and a later round's bucket of
        late uploads made for this round names it."""
        late = await self._store.scan(keyspace.edge_late_prefix(self._eid, self._fid, round_))
        keys = [
            keyspace.edge_sum(self._eid, self._fid, round_),
            keyspace.edge_folded(self._eid, self._fid, round_),
            keyspace.edge_manifest(self._eid, self._fid, round_),
            *late,
        ]
        await self._store.expire(keys, ttl_s=self._retain_round_s)

    async def _forget_uploads(self, round_: int) -> None:
        """Drop the round's single uploads (its own and its late buckets'): with an outcome, the sum is final,
        and the edge keeps no hospital's ciphertext longer than it needs it."""
        late = keyspace.edge_late_prefix(self._eid, self._fid, round_)
        keys = await self._store.scan(keyspace.edge_uploads_prefix(self._eid, self._fid, round_))
        keys += [k for k in await self._store.scan(late) if ":upload:" in k[len(late) :]]
        if keys:
            await self._store.delete(*keys)

    async def _rounds_with(self, suffix: str) -> list[int]:
        prefix = keyspace.edge_rounds_prefix(self._eid, self._fid)
        rounds = set()
        for key in await self._store.scan(prefix):
            number, _, rest = key[len(prefix) :].partition(":")
            if (rest == suffix or rest.startswith(suffix + ":")) and number.isdigit():
                rounds.add(int(number))
        return sorted(rounds)


def _reads_back(raw: bytes | None, *, key: str) -> bool:
    """Whether a stored manifest (`raw`, None when absent) deserialises."""
    try:
        _load_manifest(raw, key=key)
    except StoredRecordError:
        return False
    return True


def _load_manifest(raw: bytes | None, *, key: str) -> dict[str, Contribution]:
    return parse_record(raw, key=key, reader=_MANIFEST) if raw is not None else {}


def _sha256(data: bytes | None) -> str | None:
    return hashlib.sha256(data).hexdigest() if data is not None else None


def _check_capacity(count: int, capacity: int, *, what: str) -> None:
    """`SumFullError` when a sum of `count` uploads cannot take another (`HEScheme.max_summands`)."""
    if count >= capacity:
        raise SumFullError(f"{what} holds {count} uploads, as many as the scheme can add ({capacity})")


def _added(current: Mapping[str, bytes | None], adds: Mapping[str, int]) -> Updates:
    """The counters `adds` names, each increased by its amount and kept `EDGE_ROUND_TTL_S`; `current` as
    `RoundLedger._commit` hands it over (a counter there is a count, or none)."""
    return {
        key: Expiring(str(int(current[key] or b"0") + by).encode(), ttl_s=keyspace.EDGE_ROUND_TTL_S)
        for key, by in adds.items()
    }
