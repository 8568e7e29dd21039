"""Seed 001's dynamic ranks in a simulated federation: who trains at which rank, round by round.

The services run the rank policy in the cloud (`cloud_server.enrolment`: the first rank from the client's
released example count; `cloud_server.round_outcome`: growth from the published update's column energy,
re-basing when the validation loss settles). A simulation asks a `RankPlanner` instead, so that an
experiment can compare rank rules on the same data: the planner sees what the cloud would see after each
round (the public global update) and, for the rule that needs it, each hospital's own upload, and answers
the next round's ranks and whether to re-base. The simulation applies the answer with the protocol's own
functions (`protocol.reach.planned_hold`, `protocol.ffa.rebase_adapter`).

`SeedRanks` is seed 001 as the services implement it, on `protocol.ffa`'s `initial_rank`, `column_energy`
and `grown_ranks`. `VarianceRanks` is seed 001's own growth criterion ("the cloud analyses the variance of
the gradients and gives clients of higher data quality a higher rank"): a hospital whose uploads vary
little from round to round, relative to their mean, is judged the better data and doubles its rank. The
cloud cannot compute that from what it sees: every hospital encrypts its upload (and masks it, under
masking), an edge forwards only sums of at least `k` hospitals, and the cloud decrypts only the global sum,
so no party but the hospital ever holds one hospital's update. `VarianceRanks` therefore reads each
hospital's own uploads, as a hospital would compute the figure itself and report it; the figure is a
function of its DP-SGD outputs, so it costs no example-level privacy (post-processing), but reporting it
would show the cloud one number per hospital per round outside the secure sum. The services do not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from protocol.ffa import AdapterLayout, column_energy, grown_ranks, initial_rank
from protocol.messages import RankPolicy, RankPolicyKind


class RankPlanError(ValueError):
    """A rank plan that cannot be applied to the federation."""


@dataclass(frozen=True)
class RankStep:
    """A planner's answer after a round: the next round's rank of every hospital, and the common rank the
    cloud re-bases the global adapter to before it (None: no re-basing)."""

    ranks: dict[str, int]
    rebase_rank: int | None = None


@dataclass(frozen=True)
class RoundSeen:
    """What a planner is shown after round `round_` closes."""

    round_: int
    ranks: Mapping[str, int]  # the ranks the round trained at
    update: np.ndarray  # the change to the global adapter (published: every hospital downloads it)
    uploads: Mapping[str, np.ndarray]  # each hospital's own upload (its clipped delta), in the clear


class RankPlanner(Protocol):
    def initial(self, public_examples: Mapping[str, int], *, layout: AdapterLayout) -> dict[str, int]:
        """Every hospital's first rank, from its released example count."""
        ...

    def after_round(self, seen: RoundSeen, *, layout: AdapterLayout) -> RankStep:
        """The next round's ranks (and re-basing) after the round `seen` shows."""
        ...


def _lora_coordinates(layout: AdapterLayout) -> np.ndarray:
    """True on the LoRA coordinates of the adapter vector (`B`'s columns), False on the head."""
    head = sum(entry.size for entry in layout.head)
    mask = np.ones(layout.size, dtype=bool)
    mask[layout.size - head :] = False
    return mask


@dataclass
class SeedRanks:
    """Seed 001's three stages: the first rank from the data size (`RankPolicy` `data_size`), doubling when
    the published update's highest column of a hospital's rank carries at least `grow_energy` times the mean
    energy of its columns (`grown_ranks`), and re-basing to `rebase_rank` after round `rebase_after`.

    The services re-base when the hospitals' DP-released validation loss settles (`ConvergenceConfig`); a
    simulation has no such release, so the round is fixed here and the run's loss curve shows whether it
    had settled."""

    policy: RankPolicy
    r_max: int
    rebase_rank: int | None = None
    rebase_after: int | None = None  # the round (0-based) after which the adapter is re-based
    rebased: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if (self.rebase_rank is None) != (self.rebase_after is None):
            raise RankPlanError(
                f"rebase_rank {self.rebase_rank} and rebase_after {self.rebase_after} go together"
            )
        if self.rebase_rank is not None and not 1 <= self.rebase_rank <= self.r_max:
            raise RankPlanError(f"rebase_rank must lie in [1, r_max={self.r_max}], got {self.rebase_rank}")

    def initial(self, public_examples: Mapping[str, int], *, layout: AdapterLayout) -> dict[str, int]:
        return {
            name: initial_rank(self.policy, num_examples=count, r_max=self.r_max)
            for name, count in public_examples.items()
        }

    def after_round(self, seen: RoundSeen, *, layout: AdapterLayout) -> RankStep:
        if self.rebase_rank is not None and not self.rebased and seen.round_ == self.rebase_after:
            self.rebased = True
            return RankStep({name: self.rebase_rank for name in seen.ranks}, rebase_rank=self.rebase_rank)
        if self.rebased or self.policy.grow_energy is None:
            return RankStep(dict(seen.ranks))
        caps = {name: self.r_max for name in seen.ranks}
        energy = column_energy(layout, seen.update)
        return RankStep(grown_ranks(seen.ranks, caps, energy=energy, threshold=self.policy.grow_energy))


def relative_variance(uploads: Sequence[np.ndarray]) -> float:
    """`mean_t ||u_t - u_bar||^2 / ||u_bar||^2` over one hospital's uploads `u_t` so far: how much they
    scatter around their mean direction (0: the same update every round). Infinite when the mean is 0."""
    if len(uploads) < 2:
        raise RankPlanError(f"the variance of uploads needs at least 2 rounds, got {len(uploads)}")
    stacked = np.stack([np.asarray(u, dtype=np.float64) for u in uploads])
    mean = stacked.mean(axis=0)
    spread = float(np.mean(np.sum((stacked - mean) ** 2, axis=1)))
    scale = float(np.sum(mean**2))
    return spread / scale if scale > 0 else float("inf")


@dataclass
class VarianceRanks:
    """Seed 001's growth criterion: from the second round on, every hospital whose uploads' relative
    variance (`relative_variance` of the LoRA part of its uploads so far) is at most the median of the
    hospitals' doubles its rank (up to `r_max`). The first rank and the re-basing are `base`'s."""

    base: SeedRanks
    history: dict[str, list[np.ndarray]] = field(default_factory=dict, init=False)
    variances: list[dict[str, float]] = field(default_factory=list, init=False)  # one per round from the 2nd

    def initial(self, public_examples: Mapping[str, int], *, layout: AdapterLayout) -> dict[str, int]:
        return self.base.initial(public_examples, layout=layout)

    def after_round(self, seen: RoundSeen, *, layout: AdapterLayout) -> RankStep:
        lora = _lora_coordinates(layout)
        for name, upload in seen.uploads.items():
            self.history.setdefault(name, []).append(np.asarray(upload)[lora])
        base = self.base
        if base.rebase_rank is not None and not base.rebased and seen.round_ == base.rebase_after:
            return base.after_round(seen, layout=layout)  # the re-basing round
        if base.rebased or seen.round_ < 1:
            return RankStep(dict(seen.ranks))
        variance = {name: relative_variance(ups) for name, ups in self.history.items()}
        self.variances.append(variance)
        median = float(np.median(list(variance.values())))
        return RankStep(
            {
                name: min(self.base.r_max, 2 * rank) if variance[name] <= median else rank
                for name, rank in seen.ranks.items()
            }
        )


def data_size_policy(*, examples_for_r_max: int, grow_energy: float | None) -> RankPolicy:
    """The `data_size` policy with its growth threshold: the policy the services would be configured with."""
    return RankPolicy(
        kind=RankPolicyKind.DATA_SIZE, examples_for_r_max=examples_for_r_max, grow_energy=grow_energy
    )
