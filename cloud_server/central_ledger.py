"""The client-level ledger's entries: what each closed round released, and how an accountant reads it.

One entry per closed round records the noise really on the released sum (the schedule's `z`, or for
distributed noise the contributed shares plus the cloud's top-up) and how far one hospital could move that
sum (`sensitivity`, in clip norms: one upload with what its encoding adds, `protocol.sensitivity`, more
when late uploads were folded in). An accountant reads each entry twice:

- *public*: what anyone who sees the released adapters learns, a participating hospital included: with
  distributed noise each hospital knows its own share, so the noise counted is the released noise less the
  largest share (less `central_dp.colluding_clients` of them when more hospitals pool what they know);
- *against the decrypting cloud*: with distributed noise the cloud knows its own top-up, holds each edge's
  aggregate apart and can decrypt the smallest on its own, and hospitals colluding with it
  (`central_dp.colluding_clients`) know their own shares; so only the shares inside the smallest edge sum,
  less the colluders', count (Kairouz, Liu, Steinke 2021, arXiv:2102.06387, distributed DP's threat model).
  Without distributed noise the cloud adds all the noise itself and sees the noise-free sum: against it
  there is no client-level bound. Nor is there one against a cloud colluding with an edge, which can hand
  it one hospital's upload: that hospital's own share is then all the client-level noise on it.

Entries written before the ledger counted encoding or kept the shares are brought up to date on reading
(`current_entry`), so a stored ledger of an older cloud is accounted the same way, never more leniently.
"""

from __future__ import annotations

import math

from pydantic import Field

from cloud_server.records import Record
from protocol.aggregation import RoundNoise
from protocol.messages import (
    BudgetAgainst,
    Contribution,
    FederationSpec,
    Identifier,
    LocalSpend,
    NoiseMechanism,
)
from protocol.privacy import Accountant, PrivacyEvent, make_accountant
from protocol.privacy_planning import round_event
from protocol.sensitivity import encoding_slack, late_factor, norm_order

Column = BudgetAgainst  # "public": the released adapters; "decrypting_cloud": the cloud that decrypts


class RoundPrivacy(Record):
    """One closed round in the ledger."""

    round: int = Field(ge=0)
    mechanism: NoiseMechanism
    noise_multiplier: float = Field(ge=0.0)
    clip_norm: float = Field(gt=0.0)
    realised_noise_multiplier: float = Field(ge=0.0)
    decryptor_noise_multiplier: float | None = None
    distributed: bool = False
    shares_planned: int | None = None
    top_up_std: float | None = None
    clients: int = Field(ge=0)
    total_weight: float = Field(ge=0.0)
    sensitivity: float = Field(
        default=1.0, ge=1.0, description="clip norms one hospital could move the sum by (late uploads: > 1)"
    )
    epsilon_after: float | None = Field(default=None, ge=0.0)
    local: dict[Identifier, LocalSpend] = Field(default_factory=dict)
    # None in entries written before encoding was counted: `current_entry` adds it to `sensitivity` on reading.
    encoding_slack: float | None = Field(default=None, ge=0.0)
    # What the decrypting cloud saw (distributed noise); None in entries written before they were kept.
    shares_arrived: int | None = Field(default=None, ge=0)
    share_std: float | None = Field(default=None, ge=0.0)
    # The shares in the smallest edge aggregate (what the cloud could decrypt alone); None in older entries.
    smallest_sum_shares: int | None = Field(default=None, ge=0)
    # Per LoRA column, the noise's std on the published mean (`Aggregated.column_noise_std`); None in older
    # entries and for rounds that published nothing.
    column_noise_std: tuple[float, ...] | None = None
    # False for a round that failed with edge sums in the cloud's hands: nothing was published, so the
    # public column skips it, but the cloud holds sums it can decrypt, so the column against it counts it.
    released: bool = True


class Ledger(Record):
    """Every closed round of one federation, oldest first (one store value, updated in the commit)."""

    rounds: tuple[RoundPrivacy, ...] = ()


def current_entry(spec: FederationSpec, entry: RoundPrivacy, *, layout_size: int) -> RoundPrivacy:
    """`entry` as this ledger writes entries. One written before encoding was counted gets the encoding's
    slack for every upload a hospital could have had in that round (`late_factor`), an upper bound on what
    it lacked; one written before shares were kept gets one share per client, all of the same size (edges
    refuse a share that differs from the plan's)."""
    update: dict[str, object] = {}
    if entry.encoding_slack is None:
        order = norm_order(entry.mechanism)
        slack = (
            encoding_slack(spec.he, clip_norm=entry.clip_norm, size=layout_size, ord=order) / entry.clip_norm
        )
        sensitivity = entry.sensitivity + slack * late_factor(spec.late_uploads, round_=entry.round)
        rescale = entry.sensitivity / sensitivity
        update |= {
            "encoding_slack": slack,
            "sensitivity": sensitivity,
            "realised_noise_multiplier": entry.realised_noise_multiplier * rescale,
        }
        if entry.decryptor_noise_multiplier is not None:
            update["decryptor_noise_multiplier"] = entry.decryptor_noise_multiplier * rescale
    if entry.distributed and entry.shares_arrived is None and entry.decryptor_noise_multiplier is not None:
        seen = entry.decryptor_noise_multiplier * entry.sensitivity * entry.clip_norm
        update |= {
            "shares_arrived": entry.clients,
            "share_std": seen / math.sqrt(entry.clients) if entry.clients else 0.0,
        }
    if entry.distributed and entry.smallest_sum_shares is None:
        # Not recorded: the smallest sum an edge may forward holds `min_clients_per_edge` uploads.
        arrived = entry.clients if entry.shares_arrived is None else entry.shares_arrived
        update["smallest_sum_shares"] = min(arrived, spec.min_clients_per_edge)
    return entry.model_copy(update=update) if update else entry


def decryptor_noise(entry: RoundPrivacy, *, colluding: int) -> float:
    """In clip norms, the std of the noise that neither the cloud nor `colluding` hospitals know in the
    smallest sum the cloud can decrypt on its own (one edge's aggregate): its shares less the colluders'
    (each at most the largest share). 0 when the cloud added the noise itself or the colluders know every
    share of that sum."""
    if not entry.distributed or entry.decryptor_noise_multiplier is None:
        return 0.0
    smallest = entry.smallest_sum_shares if entry.smallest_sum_shares is not None else entry.shares_arrived
    unknown = (smallest or 0) - colluding
    if unknown <= 0:
        return 0.0
    return math.sqrt(unknown) * (entry.share_std or 0.0) / entry.clip_norm


def public_noise(entry: RoundPrivacy, *, colluding: int) -> float:
    """In clip norms, the std of the noise on `entry`'s released sum that a participating hospital does not
    know: all of it, less its own share with distributed noise (less `colluding` shares when that many
    hospitals pool theirs); the cloud's top-up stays unknown to them."""
    released = entry.realised_noise_multiplier * entry.sensitivity
    if not entry.distributed:
        return released
    known = min(max(1, colluding), entry.shares_arrived or 0)
    share = (entry.share_std or 0.0) / entry.clip_norm
    return math.sqrt(max(0.0, released * released - known * share * share))


def entry_event(
    spec: FederationSpec, entry: RoundPrivacy, *, layout_size: int, against: Column
) -> PrivacyEvent | None:
    """The accountant's view of one closed round (`current_entry` form), for the public or the decrypting cloud."""
    colluding = spec.central_dp.colluding_clients
    noise = (
        public_noise(entry, colluding=colluding)
        if against == "public"
        else decryptor_noise(entry, colluding=colluding)
    )
    return round_event(
        spec,
        layout_size=layout_size,
        mechanism=entry.mechanism,
        noise=noise,
        sensitivity=entry.sensitivity,
        distributed=entry.distributed,
    )


def compose(
    spec: FederationSpec, ledger: Ledger, *, layout_size: int, against: Column = "public"
) -> Accountant | None:
    """The accountant over every closed round of `ledger`; None when some round released (or showed the
    decrypting cloud) a sum without noise, which leaves the epsilon unbounded."""
    accountant = make_accountant(spec.central_dp.accountant)
    for entry in ledger.rounds:
        if against == "public" and not entry.released:
            continue
        event = entry_event(
            spec,
            current_entry(spec, entry, layout_size=layout_size),
            layout_size=layout_size,
            against=against,
        )
        if event is None:
            return None
        accountant.compose(event)
    return accountant


def epsilon_of(accountant: Accountant | None, delta: float) -> float:
    """The epsilon of `compose`'s answer: inf when it is unbounded."""
    return math.inf if accountant is None else accountant.epsilon(delta=delta)


def entry_for(
    round_: int,
    noise: RoundNoise,
    contributions: list[Contribution],
    total_weight: float,
    *,
    column_noise_std: tuple[float, ...] | None = None,
) -> RoundPrivacy:
    """The ledger entry of a round released with `noise` from `contributions` (fresh and late), with the
    noise it left on each published column of the adapter."""
    return RoundPrivacy(
        round=round_,
        mechanism=noise.mechanism,
        noise_multiplier=noise.multiplier,
        clip_norm=noise.clip_norm,
        realised_noise_multiplier=noise.realised_multiplier,
        decryptor_noise_multiplier=noise.decryptor_multiplier if noise.distributed else None,
        distributed=noise.distributed,
        shares_planned=noise.shares_planned,
        top_up_std=noise.cloud_std if noise.distributed else None,
        clients=len({c.client_id for c in contributions}),
        total_weight=total_weight,
        sensitivity=noise.sensitivity,
        local={c.client_id: c.local_privacy for c in contributions if c.local_privacy is not None},
        encoding_slack=noise.encoding_slack,
        shares_arrived=noise.shares_arrived if noise.distributed else None,
        share_std=noise.share_std if noise.distributed else None,
        smallest_sum_shares=noise.smallest_sum_shares if noise.distributed else None,
        column_noise_std=column_noise_std,
    )
