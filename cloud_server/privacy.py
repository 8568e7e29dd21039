"""The privacy ledger: what every closed round released, at both layers, and what it adds up to.

Central (client-level) layer: one entry per closed round with the noise that was really on the released sum
(the schedule's `z`, or for distributed noise the contributed shares plus the cloud's top-up), composed by
an RDP or exact (PRV) accountant into the federation's epsilon at `central_dp.delta`. The entry is written
in the same store transaction that publishes the round's adapter, so the ledger and the adapters never
disagree; the same transaction stops the federation (`budget_exhausted`) when the next round would take
the epsilon past `central_dp.epsilon_budget`.

Local (example-level) layer: each upload carries the hospital's accountant histories `(sigma, q, steps)`,
one for its training part (its noisy count, then DP-SGD) and one for its held-out part (its noisy count,
then noisy held-out losses), and the epsilon its own Opacus accountant gives; the ledger recomputes the
epsilon from the histories with its own RDP accountant instead of trusting the figure (the larger of the
two parts: each example is in one of them), and shows both.

Failed rounds release nothing and spend no central budget. A hospital's steps in a failed round show up in
the history it sends with its next upload.
"""

from __future__ import annotations

from collections import defaultdict
from functools import lru_cache

from pydantic import Field

from cloud_server.aggregation import RoundNoise
from cloud_server.errors import UnprocessableError
from cloud_server.records import Record
from protocol.crypto.params import PaillierParams
from protocol.messages import (
    CentralRoundPrivacy,
    ClientPrivacy,
    ClientRoundPrivacy,
    Contribution,
    FederationSpec,
    FederationState,
    Identifier,
    LocalSpend,
    NoiseMechanism,
    PrivacyReport,
    schedule_multiplier,
)
from protocol.noise import skellam_sensitivity
from protocol.privacy import (
    Accountant,
    GaussianEvent,
    LaplaceEvent,
    PrivacyError,
    PrivacyEvent,
    RdpAccountant,
    SkellamEvent,
    make_accountant,
)


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


class Ledger(Record):
    """Every closed round of one federation, oldest first (one store value, updated in the commit)."""

    rounds: tuple[RoundPrivacy, ...] = ()


def round_event(
    spec: FederationSpec, *, layout_size: int, mechanism: NoiseMechanism, multiplier: float, distributed: bool
) -> PrivacyEvent | None:
    """The accountant's view of one round whose released sum carries noise `multiplier * C` (a Gaussian's
    std or a Laplace scale); None for a round without noise (which makes the epsilon infinite)."""
    if mechanism is NoiseMechanism.NONE or multiplier <= 0:
        return None
    if mechanism is NoiseMechanism.LAPLACE:
        return LaplaceEvent(noise_multiplier=multiplier)
    he = spec.he
    if distributed and isinstance(he, PaillierParams):
        # Skellam shares on the Paillier lattice: sensitivity and variance in quantisation steps.
        l1, l2 = skellam_sensitivity(clip_norm=spec.central_dp.clip_norm, step=he.step, size=layout_size)
        std_steps = multiplier * spec.central_dp.clip_norm / he.step
        return SkellamEvent(variance=std_steps**2, l1_sensitivity=l1, l2_sensitivity=l2)
    return GaussianEvent(noise_multiplier=multiplier)


def central_accountant(spec: FederationSpec, ledger: Ledger, *, layout_size: int) -> Accountant | None:
    """The accountant over every closed round; None when some round released a sum without noise."""
    accountant = make_accountant(spec.central_dp.accountant)
    for entry in ledger.rounds:
        event = round_event(
            spec,
            layout_size=layout_size,
            mechanism=entry.mechanism,
            multiplier=entry.realised_noise_multiplier,
            distributed=entry.distributed,
        )
        if event is None:
            return None
        accountant.compose(event)
    return accountant


def settle_round(
    spec: FederationSpec,
    ledger: Ledger,
    *,
    round_: int,
    noise: RoundNoise,
    contributions: list[Contribution],
    total_weight: float,
    layout_size: int,
    rounds_closed_after: int,
) -> tuple[Ledger, float | None, float | None]:
    """The ledger with `round_` added, the central epsilon after it, and the epsilon if the next planned
    round runs (None: no next round, or no central noise at all)."""
    entry = RoundPrivacy(
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
    )
    grown = Ledger(rounds=(*ledger.rounds, entry))
    accountant = central_accountant(spec, grown, layout_size=layout_size)
    if accountant is None:
        return grown, None, None
    delta = spec.central_dp.delta
    after = accountant.epsilon(delta=delta)
    entry = entry.model_copy(update={"epsilon_after": after})
    grown = Ledger(rounds=(*ledger.rounds, entry))
    if rounds_closed_after >= spec.rounds:
        return grown, after, None
    return (
        grown,
        after,
        next_epsilon(spec, accountant, rounds_closed=rounds_closed_after, layout_size=layout_size),
    )


def scheduled_event(spec: FederationSpec, *, round_index: int, layout_size: int) -> PrivacyEvent | None:
    """The accountant's view of round `round_index` as planned: the schedule's noise, no dropouts."""
    dp = spec.central_dp
    return round_event(
        spec,
        layout_size=layout_size,
        mechanism=dp.mechanism,
        multiplier=schedule_multiplier(dp, round_index=round_index, rounds=spec.rounds),
        distributed=dp.distributed,
    )


def next_epsilon(
    spec: FederationSpec, accountant: Accountant, *, rounds_closed: int, layout_size: int
) -> float:
    """The central epsilon if one more round runs with the schedule's noise (as planned, no dropouts)."""
    event = scheduled_event(spec, round_index=rounds_closed, layout_size=layout_size)
    if event is None:
        return float("inf")
    projected = accountant.copy()
    projected.compose(event)
    return projected.epsilon(delta=spec.central_dp.delta)


def planned_epsilons(spec: FederationSpec, *, layout_size: int, rounds: int | None = None) -> list[float]:
    """The central epsilon after each of the first `rounds` (default: all planned) rounds as scheduled;
    empty without noise."""
    dp = spec.central_dp
    if not dp.noisy:
        return []
    accountant = make_accountant(dp.accountant)
    epsilons = []
    for t in range(spec.rounds if rounds is None else rounds):
        event = scheduled_event(spec, round_index=t, layout_size=layout_size)
        if event is not None:
            accountant.compose(event)
        epsilons.append(accountant.epsilon(delta=dp.delta))
    return epsilons


def planned_epsilon(spec: FederationSpec, *, layout_size: int, rounds: int | None = None) -> float | None:
    """The central epsilon after `rounds` (default: all planned) rounds as scheduled; None without noise."""
    epsilons = planned_epsilons(spec, layout_size=layout_size, rounds=rounds)
    return epsilons[-1] if epsilons else None


def check_budget(spec: FederationSpec, *, layout_size: int) -> None:
    """Refuse a spec whose first round alone would spend more than its central budget."""
    budget = spec.central_dp.epsilon_budget
    if budget is None:
        return
    try:
        first = planned_epsilon(spec, layout_size=layout_size, rounds=1)
    except PrivacyError as e:
        raise UnprocessableError(str(e), field="central_dp") from e
    if first is not None and first > budget:
        raise UnprocessableError(
            f"central_dp.epsilon_budget {budget} is below what the first round spends ({first:.4g}) with "
            f"noise_multiplier {spec.central_dp.noise_multiplier}: raise the noise or the budget",
            field="central_dp.epsilon_budget",
            detail={"first_round_epsilon": first},
        )


@lru_cache(maxsize=4096)
def history_epsilon(history: tuple[tuple[float, float, int], ...], delta: float) -> float:
    """Epsilon of one accountant history of Gaussian releases, by the ledger's own RDP accountant."""
    accountant = RdpAccountant()
    for sigma, rate, steps in history:
        if steps > 0:
            accountant.compose(GaussianEvent(noise_multiplier=sigma, sample_rate=rate, steps=steps))
    return accountant.epsilon(delta=delta)


def local_epsilon(spend: LocalSpend) -> float:
    """A hospital's example-level epsilon: the larger of its training part's and its held-out part's (an
    example is in exactly one; parallel composition, McSherry 2009, "Privacy Integrated Queries", Thm 4)."""
    return max(
        history_epsilon(spend.history, spend.delta), history_epsilon(spend.held_out_history, spend.delta)
    )


def report(
    spec: FederationSpec,
    ledger: Ledger,
    *,
    layout_size: int,
    state: FederationState | None = None,
    reason: str | None = None,
    rounds_closed: int,
) -> PrivacyReport:
    """`GET /privacy`: both layers, per round and per client."""
    dp = spec.central_dp
    accountant = central_accountant(spec, ledger, layout_size=layout_size) if dp.noisy else None
    central = accountant.epsilon(delta=dp.delta) if accountant is not None and ledger.rounds else None
    upcoming = None
    if accountant is not None and rounds_closed < spec.rounds:
        upcoming = next_epsilon(spec, accountant, rounds_closed=rounds_closed, layout_size=layout_size)
    rows: dict[str, list[ClientRoundPrivacy]] = defaultdict(list)
    latest: dict[str, LocalSpend] = {}
    for entry in ledger.rounds:
        for cid, spend in sorted(entry.local.items()):
            last = spend.history[-1] if spend.history else None
            rows[cid].append(
                ClientRoundPrivacy(
                    round=entry.round,
                    local_epsilon=local_epsilon(spend),
                    reported_epsilon=spend.epsilon,
                    noise_multiplier=last[0] if last else None,
                    sample_rate=last[1] if last else None,
                    steps=sum(n for _, _, n in spend.history),
                    history=spend.history,
                    held_out_history=spend.held_out_history,
                )
            )
            latest[cid] = spend
    clients = tuple(
        ClientPrivacy(
            client_id=cid,
            local_epsilon=rows[cid][-1].local_epsilon,
            reported_epsilon=latest[cid].epsilon,
            local_budget=latest[cid].budget or spec.local_dp.epsilon,
            local_delta=latest[cid].delta,
            rounds=tuple(rows[cid]),
        )
        for cid in sorted(rows)
    )
    return PrivacyReport(
        federation_id=spec.federation_id,
        delta=dp.delta,
        central_epsilon=central,
        central_budget=dp.epsilon_budget,
        central_rounds=tuple(
            CentralRoundPrivacy(
                round=e.round,
                mechanism=e.mechanism,
                noise_multiplier=e.noise_multiplier,
                clip_norm=e.clip_norm,
                epsilon_after=e.epsilon_after,
                realised_noise_multiplier=e.realised_noise_multiplier,
                decryptor_noise_multiplier=e.decryptor_noise_multiplier,
                clients=e.clients,
                total_weight=e.total_weight,
                sensitivity=e.sensitivity,
                distributed=e.distributed,
                shares_planned=e.shares_planned,
                top_up_std=e.top_up_std,
            )
            for e in ledger.rounds
        ),
        clients=clients,
        accountant=dp.accountant,
        state=state,
        reason=reason,
        next_round_epsilon=upcoming,
        planned_epsilon=planned_epsilon(spec, layout_size=layout_size),
        local_accountant="rdp",
    )
