"""The client-level budget as a cap on the ledger: the check when a round closes, and before decrypting one.

`central_dp.epsilon_budget` caps one epsilon, the public one or the one against the decrypting cloud
(`central_dp.budget_against`). Three checks keep the ledger under it:

- at creation, a spec whose first round alone exceeds the budget is refused (`check_budget`, with the
  other projections of the plan in `protocol.privacy_planning`);
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

from cloud_server.central_ledger import Ledger, compose, entry_for, epsilon_of
from protocol.aggregation import RoundNoise
from protocol.messages import Contribution, FederationSpec
from protocol.privacy_planning import epsilon_figure, figure_name, next_epsilon


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
    column_noise_std: tuple[float, ...] | None = None,
) -> Settlement:
    """The ledger with `round_` added, and the epsilons after it and if the next round (round `round_ + 1`,
    with `shares_planned_next` noise shares) runs."""
    dp = spec.central_dp
    entry = entry_for(round_, noise, contributions, total_weight, column_noise_std=column_noise_std)
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


def stop_reason(spec: FederationSpec, settled: Settlement, *, rounds_closed: int) -> str | None:
    """Why the federation stops after a round settled as `settled`: the next round could take the budgeted
    epsilon past the budget. None when it may go on."""
    dp = spec.central_dp
    budget = dp.epsilon_budget
    if budget is None or settled.upcoming is None or settled.upcoming <= budget:
        return None
    late = " (counting the late uploads it could fold in)" if spec.late_uploads is not None else ""
    return (
        f"the next round would bring {figure_name(spec, dp.budget_against)} to {epsilon_figure(settled.upcoming)}"
        f"{late}, above the budget {budget:g} (spent {epsilon_figure(settled.spent)} after {rounds_closed} of "
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
        f"round {round_} would bring {figure_name(spec, dp.budget_against)} to {epsilon_figure(would)}, above the "
        f"budget {budget:g} (spent {epsilon_figure(spent)} after {len(ledger.rounds)} rounds, delta {dp.delta:g}); "
        "it was not decrypted"
    )
