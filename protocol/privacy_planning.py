"""Privacy planning: what a federation's client-level epsilon will be before its rounds run.

Pure projections from the spec, no ledger and no store: the accountant's view of a release
(`round_event`) and of a round as scheduled (`scheduled_event`), the epsilon after each planned round
(`planned_epsilons`) or after one more round (`next_epsilon`), and the checks a spec must pass before it
starts (`check_budget`, `first_round_overspend`). The cloud's ledger (`cloud_server.central_ledger`,
`cloud_server.privacy_budget`) composes what rounds really released with the same `round_event`.

Pure: no I/O, nothing imported from outside `protocol`.
"""

from __future__ import annotations

import math
from typing import Any

from protocol.distributions import Distribution
from protocol.messages import BudgetAgainst, FederationSpec, NoiseMechanism, schedule_multiplier
from protocol.noise import distribution_for
from protocol.privacy import (
    Accountant,
    GaussianEvent,
    LaplaceEvent,
    PrivacyError,
    PrivacyEvent,
    SkellamEvent,
    make_accountant,
)
from protocol.sensitivity import lattice_sensitivities, worst_sensitivity


class BudgetError(ValueError):
    """A spec's central budget cannot be met: `field` names the setting at fault, `detail` what was
    computed (the cloud answers it with a 422)."""

    def __init__(self, message: str, *, field: str, detail: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.detail = detail


def round_event(
    spec: FederationSpec,
    *,
    layout_size: int,
    mechanism: NoiseMechanism,
    noise: float,
    sensitivity: float,
    distributed: bool,
) -> PrivacyEvent | None:
    """The accountant's view of a release carrying noise `noise * C` (a Gaussian's or Skellam's std, a
    Laplace scale) that one hospital can move by `sensitivity * C`; None without noise (no bound)."""
    if mechanism is NoiseMechanism.NONE or noise <= 0:
        return None
    if mechanism is NoiseMechanism.LAPLACE:
        return LaplaceEvent(noise_multiplier=noise / sensitivity)
    he, clip_norm = spec.he, spec.central_dp.clip_norm
    step = he.lattice_step
    if distribution_for(mechanism, he, distributed=distributed) is Distribution.SKELLAM and step is not None:
        # Skellam shares on the lattice: sensitivity and variance in lattice steps. Late uploads are refused
        # with distributed noise, so the reach is one integer vector's (`lattice_sensitivities`).
        l1, l2 = lattice_sensitivities(l2=sensitivity * clip_norm / step, size=layout_size)
        return SkellamEvent(variance=(noise * clip_norm / step) ** 2, l1_sensitivity=l1, l2_sensitivity=l2)
    return GaussianEvent(noise_multiplier=noise / sensitivity)


def scheduled_event(
    spec: FederationSpec,
    *,
    round_index: int,
    round_number: int,
    layout_size: int,
    against: BudgetAgainst = "public",
    shares_planned: int | None = None,
) -> PrivacyEvent | None:
    """The accountant's view of a round before it runs: the `round_index`-th closed round's scheduled noise,
    against the worst case round `round_number` allows (every late upload the spec accepts, at weight 1;
    encoding included). With distributed noise each of the `shares_planned` shares carries
    `1 / shares_planned` of the target variance, and a round releases at least the target (the cloud tops
    up) or more (more shares arrived than planned, with a dropout margin). The public column counts what a
    participating hospital (or `colluding_clients` of them) does not know, at the fewest shares a round
    with another hospital in it can hold: `m = max(k, known + 1)`, so `(max(n', m) - known) / n'` of the
    variance (unknown `n'`: the `m` that minimises it). Against the decrypting cloud, the smallest sum it
    may hold alone, `k` shares, less the colluders' (unknown `n'`: unbounded). None: no bound."""
    dp = spec.central_dp
    noise = schedule_multiplier(dp, round_index=round_index, rounds=spec.rounds)
    known = max(1, dp.colluding_clients)
    fewest = max(spec.min_clients_per_edge, known + 1)
    planned = shares_planned if shares_planned is not None else fewest
    if against == "decrypting_cloud":
        # The more shares a round plans, the smaller each is, and the cloud can decrypt an edge's sum of
        # `k` of them alone: with the count unknown, nothing bounds it.
        if not dp.distributed or shares_planned is None:
            return None
        counted = spec.min_clients_per_edge - dp.colluding_clients
        if counted <= 0:
            return None
        noise *= math.sqrt(counted / planned)
    elif dp.distributed:
        noise *= math.sqrt((max(planned, fewest) - known) / planned)
    return round_event(
        spec,
        layout_size=layout_size,
        mechanism=dp.mechanism,
        noise=noise,
        sensitivity=worst_sensitivity(spec, size=layout_size, round_=round_number),
        distributed=dp.distributed,
    )


def next_epsilon(
    spec: FederationSpec,
    accountant: Accountant,
    *,
    rounds_closed: int,
    next_round: int,
    layout_size: int,
    against: BudgetAgainst = "public",
    shares_planned: int | None = None,
) -> float:
    """The epsilon (public, or against the decrypting cloud) if round `next_round` runs as scheduled and
    reaches as far as the spec allows (`scheduled_event`); inf when nothing would bound it."""
    event = scheduled_event(
        spec,
        round_index=rounds_closed,
        round_number=next_round,
        layout_size=layout_size,
        against=against,
        shares_planned=shares_planned,
    )
    if event is None:
        return math.inf
    projected = accountant.copy()
    projected.compose(event)
    return projected.epsilon(delta=spec.central_dp.delta)


def planned_epsilons(
    spec: FederationSpec, *, layout_size: int, rounds: int | None = None, shares_planned: int | None = None
) -> list[float]:
    """The public epsilon after each of the first `rounds` (default: all planned) rounds as scheduled;
    empty without noise. It assumes no round fails (round `t` is the `t`-th closed) and that every round
    reaches as far as the spec allows: every late upload `late_uploads` accepts, at weight 1, encoding
    included; so a federation with late uploads is charged for them whether or not they come. With
    distributed noise, rounds of `shares_planned` shares (None: the fewest a round can plan)."""
    dp = spec.central_dp
    if not dp.noisy:
        return []
    accountant: Accountant | None = make_accountant(dp.accountant)
    epsilons = []
    for t in range(spec.rounds if rounds is None else rounds):
        event = scheduled_event(
            spec, round_index=t, round_number=t, layout_size=layout_size, shares_planned=shares_planned
        )
        if event is None:
            accountant = None  # a round no noise hides from the column: nothing bounds it any more
        elif accountant is not None:
            accountant.compose(event)
        epsilons.append(accountant.epsilon(delta=dp.delta) if accountant is not None else math.inf)
    return epsilons


def planned_epsilon(
    spec: FederationSpec, *, layout_size: int, rounds: int | None = None, shares_planned: int | None = None
) -> float | None:
    """The public epsilon after `rounds` (default: all planned) rounds as scheduled (`planned_epsilons`);
    None without noise."""
    epsilons = planned_epsilons(spec, layout_size=layout_size, rounds=rounds, shares_planned=shares_planned)
    return epsilons[-1] if epsilons else None


def check_budget(spec: FederationSpec, *, layout_size: int) -> None:
    """Refuse a spec whose first round alone would spend more than its central budget, on the public figure
    with the fewest shares a round can plan (the most a participating hospital can know). The shares are not
    known before hospitals enrol, so the column against the decrypting cloud is checked when the federation
    starts (`first_round_overspend`)."""
    budget = spec.central_dp.epsilon_budget
    if budget is None:
        return
    try:
        first = planned_epsilon(spec, layout_size=layout_size, rounds=1)
    except PrivacyError as e:
        raise BudgetError(str(e), field="central_dp") from e
    if first is not None and first > budget:
        raise BudgetError(
            f"central_dp.epsilon_budget {budget} is below what the first round spends ({first:.4g}) with "
            f"noise_multiplier {spec.central_dp.noise_multiplier}: raise the noise or the budget",
            field="central_dp.epsilon_budget",
            detail={"first_round_epsilon": first if math.isfinite(first) else None},
        )


def first_round_overspend(
    spec: FederationSpec, *, layout_size: int, shares_planned: int | None
) -> str | None:
    """Why a federation must not start: its first round, with the shares its plan asks for, could already
    take the budgeted epsilon past the budget (the cloud holds every edge sum it receives, released or not,
    so this is checked before any hospital trains). None when it may start."""
    dp = spec.central_dp
    budget = dp.epsilon_budget
    if budget is None:
        return None
    event = scheduled_event(
        spec,
        round_index=0,
        round_number=0,
        layout_size=layout_size,
        against=dp.budget_against,
        shares_planned=shares_planned,
    )
    if event is None:
        first = math.inf
    else:
        accountant = make_accountant(dp.accountant)
        accountant.compose(event)
        first = accountant.epsilon(delta=dp.delta)
    if first <= budget:
        return None
    return (
        f"the first round could bring {figure_name(spec, dp.budget_against)} to {epsilon_figure(first)} with "
        f"{shares_planned} planned noise shares, above the budget {budget:g}: raise the noise or the budget"
    )


def figure_name(spec: FederationSpec, against: BudgetAgainst) -> str:
    """How a reason names the epsilon the budget caps."""
    if against == "public":
        return "the client-level epsilon"
    colluding = spec.central_dp.colluding_clients
    return "the client-level epsilon against the decrypting cloud" + (
        f" and {colluding} colluding hospitals" if colluding else ""
    )


def epsilon_figure(epsilon: float) -> str:
    return f"{epsilon:.4g}" if math.isfinite(epsilon) else "unbounded"
