"""The client-level budget as a cap: projections before a round, the check before decrypting one.

`central_dp.epsilon_budget` caps one epsilon, the public one or the one against the decrypting cloud
(`central_dp.budget_against`). Three checks keep the ledger under it:

- at creation, a spec whose first round alone exceeds the budget is refused (`check_budget`);
- when a round closes, the same store transaction asks what the next round could bring the epsilon to
  and ends the federation (`budget_exhausted`) if that passes the budget (`settle_round`, `stop_reason`).
  The projection takes the worst case the spec allows: every late upload `late_uploads` accepts, at weight
  1, with what encoding adds; against the decrypting cloud, the next round as planned (all its planned
  shares arrive, less the colluders');
- before a round is decrypted, what its release would really bring the epsilon to, from its manifests (its
  late uploads, the shares that arrived); above the budget the round is not decrypted and the federation
  ends (`overspend`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cloud_server.aggregation import RoundNoise
from cloud_server.central_ledger import Column, Ledger, compose, entry_for, epsilon_of, round_event
from cloud_server.errors import UnprocessableError
from protocol.messages import Contribution, FederationSpec, schedule_multiplier
from protocol.privacy import Accountant, PrivacyError, PrivacyEvent, make_accountant
from protocol.sensitivity import worst_sensitivity


@dataclass(frozen=True)
class Settlement:
    """A closed round in the ledger, and what the budget check needs."""

    ledger: Ledger
    epsilon: float | None  # the public epsilon after the round; None without central noise
    spent: float  # the budgeted epsilon (`budget_against`) after the round; inf when unbounded
    upcoming: float | None  # the budgeted epsilon if the next round runs; None when none is planned


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
    shares_planned_next: int | None = None,
) -> Settlement:
    """The ledger with `round_` added, and the epsilons after it and if the next round (round `round_ + 1`,
    with `shares_planned_next` noise shares) runs."""
    dp = spec.central_dp
    entry = entry_for(round_, noise, contributions, total_weight)
    grown = Ledger(rounds=(*ledger.rounds, entry))
    public = compose(spec, grown, layout_size=layout_size)
    after = public.epsilon(delta=dp.delta) if public is not None else None
    grown = Ledger(rounds=(*ledger.rounds, entry.model_copy(update={"epsilon_after": after})))
    budgeted = (
        public
        if dp.budget_against == "public"
        else compose(spec, grown, layout_size=layout_size, against=dp.budget_against)
    )
    spent = epsilon_of(budgeted, dp.delta)
    if rounds_closed_after >= spec.rounds or not dp.noisy:
        return Settlement(grown, after, spent, None)
    upcoming = (
        next_epsilon(
            spec,
            budgeted,
            rounds_closed=rounds_closed_after,
            next_round=round_ + 1,
            layout_size=layout_size,
            against=dp.budget_against,
            shares_planned=shares_planned_next,
        )
        if budgeted is not None
        else math.inf
    )
    return Settlement(grown, after, spent, upcoming)


def scheduled_event(
    spec: FederationSpec,
    *,
    round_index: int,
    round_number: int,
    layout_size: int,
    against: Column = "public",
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
    against: Column = "public",
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
        raise UnprocessableError(str(e), field="central_dp") from e
    if first is not None and first > budget:
        raise UnprocessableError(
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
        f"the first round could bring {figure_name(spec, dp.budget_against)} to {_figure(first)} with "
        f"{shares_planned} planned noise shares, above the budget {budget:g}: raise the noise or the budget"
    )


def figure_name(spec: FederationSpec, against: Column) -> str:
    """How a reason names the epsilon the budget caps."""
    if against == "public":
        return "the client-level epsilon"
    colluding = spec.central_dp.colluding_clients
    return "the client-level epsilon against the decrypting cloud" + (
        f" and {colluding} colluding hospitals" if colluding else ""
    )


def _figure(epsilon: float) -> str:
    return f"{epsilon:.4g}" if math.isfinite(epsilon) else "unbounded"


def stop_reason(spec: FederationSpec, settled: Settlement, *, rounds_closed: int) -> str | None:
    """Why the federation stops after a round settled as `settled`: the next round could take the budgeted
    epsilon past the budget. None when it may go on."""
    dp = spec.central_dp
    budget = dp.epsilon_budget
    if budget is None or settled.upcoming is None or settled.upcoming <= budget:
        return None
    late = " (counting the late uploads it could fold in)" if spec.late_uploads is not None else ""
    return (
        f"the next round would bring {figure_name(spec, dp.budget_against)} to {_figure(settled.upcoming)}"
        f"{late}, above the budget {budget:g} (spent {_figure(settled.spent)} after {rounds_closed} of "
        f"{spec.rounds} rounds, delta {dp.delta:g})"
    )


def overspend(
    spec: FederationSpec, ledger: Ledger, *, round_: int, noise: RoundNoise, layout_size: int
) -> str | None:
    """Why round `round_`, about to be decrypted with `noise`, must not be: releasing it would take the
    budgeted epsilon past the budget (a dropout the projection did not plan for, late uploads of a round
    after a failed one). None when it may be decrypted."""
    dp = spec.central_dp
    budget = dp.epsilon_budget
    if budget is None:
        return None
    grown = Ledger(rounds=(*ledger.rounds, entry_for(round_, noise, [], 0.0)))
    would = epsilon_of(compose(spec, grown, layout_size=layout_size, against=dp.budget_against), dp.delta)
    if would <= budget:
        return None
    spent = epsilon_of(compose(spec, ledger, layout_size=layout_size, against=dp.budget_against), dp.delta)
    return (
        f"round {round_} would bring {figure_name(spec, dp.budget_against)} to {_figure(would)}, above the "
        f"budget {budget:g} (spent {_figure(spent)} after {len(ledger.rounds)} rounds, delta {dp.delta:g}); "
        "it was not decrypted"
    )
