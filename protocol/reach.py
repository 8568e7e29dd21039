"""Which coordinates of a round's release at least `k` hospitals reach (`k` enforced per coordinate).

`k` (`FederationSpec.min_clients_per_edge`) is checked per sum, but with mixed ranks a sum of `k` hospitals
can still carry a coordinate that fewer of them reach: a rank-`r` hospital's delta is zero beyond column
`r` of every padded `B` (and row `r` of `A`, for strategies that train it), so a column that only one
hospital's rank reaches is that hospital's update divided by a public weight. Ranks are nested (a hospital
reaching column `j` reaches every column below it), so the hospitals reaching column `j` are those of rank
above `j`, and the columns at least `k` of them reach are those below the k-th largest rank: the
*published rank*. Everything from it on is held back (published unchanged from the previous adapter); the
head is reached by every hospital, so it is held back only when the round has fewer than `k` hospitals.

The count is per sum the cloud decrypts on its own: the on-time total and each late group (`aggregate`
decrypts them separately). Two sums each reaching a column with one hospital would otherwise publish it as
reached by two, while the decrypting cloud held each hospital's column alone. A column is published only if
every decrypted sum reaches it with none or at least `k` hospitals, and at least one with `k` (`reach`); and
the cloud leaves out of the round a late group that would hold back a column the on-time sum publishes
(`fits`), so its short columns are never decrypted at all and the round's fresh columns are kept.

Pure: no I/O, nothing imported from outside `protocol`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from protocol.ffa import AdapterLayout
from protocol.messages import Contribution


def published_rank(ranks: Iterable[int], *, k: int) -> int:
    """The k-th largest of `ranks` (one per hospital): the LoRA columns of `B` (rows of `A`) below it are
    reached by at least `k` of them. 0 when there are fewer than `k` hospitals."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    ordered = sorted(ranks, reverse=True)
    return ordered[k - 1] if len(ordered) >= k else 0


@dataclass(frozen=True)
class Reach:
    """What of a round's release at least `k` hospitals reach."""

    rank: int  # the published rank: LoRA columns of B (rows of A) from this index on are held back
    held: np.ndarray  # bool, the layout's length: True where fewer than `k` hospitals reach the coordinate

    @property
    def held_back(self) -> int:
        """How many coordinates are held back."""
        return int(np.count_nonzero(self.held))


def planned_hold(layout: AdapterLayout, published_rank: int | None) -> np.ndarray | None:
    """Where a hospital zeroes its delta before encrypting under a plan that publishes `published_rank`
    (`RoundPlan.published_rank`): True on the LoRA columns of `B` (rows of `A`) from that rank on, which
    fewer than `k` planned hospitals reach. The cloud holds them back after decrypting anyway; zeroing them
    first keeps a column one hospital reaches out of what the cloud decrypts too. None when the plan holds
    nothing back in advance (no published rank, or `r_max` and above)."""
    if published_rank is None or published_rank >= layout.r_max:
        return None
    if published_rank < 0:
        raise ValueError(f"published_rank must be at least 0, got {published_rank}")
    if published_rank == 0:
        # Fewer than `k` hospitals planned: no LoRA coordinate is published; the head (the layout's last
        # entries) is, should `k` upload after all.
        held = np.ones(layout.size, dtype=bool)
        held[layout.size - sum(entry.size for entry in layout.head) :] = False
        return held
    return layout.lora_column_mask(published_rank) == 0


@dataclass(frozen=True)
class SumReach:
    """How far the hospitals inside one sum the cloud decrypts on its own reach (ranks are nested)."""

    rank: int  # the k-th largest of their ranks: columns below it reach at least k of them; 0: fewer than k
    top: int  # the largest: columns from it on reach none of them

    @property
    def short(self) -> bool:
        """Some column (or the head, below `k` hospitals) is reached by between 1 and `k - 1` of them."""
        return self.rank < self.top


def sum_reach(contributions: Iterable[Contribution], *, k: int) -> SumReach:
    """The reach of one decrypted sum of `contributions`; a hospital inside it twice counts once, at the larger
    of its ranks."""
    ranks: dict[str, int] = {}
    for c in contributions:
        ranks[c.client_id] = max(ranks.get(c.client_id, 0), c.rank)
    return SumReach(published_rank(ranks.values(), k=k), max(ranks.values(), default=0))


def fits(group: SumReach, on_time: SumReach) -> bool:
    """Whether a late group may be decrypted beside the on-time sum without holding back any column the
    on-time sum publishes: it holds at least `k` hospitals, and none of those columns is reached by between 1
    and `k - 1` of them. A group that does not fit is left out of the round rather than cut the fresh
    columns of every hospital."""
    return group.rank > 0 and group.rank >= min(on_time.rank, group.top)


def reach(
    layout: AdapterLayout,
    contributions: Iterable[Contribution],
    *,
    k: int,
    late: Sequence[Iterable[Contribution]] = (),
) -> Reach:
    """Per coordinate, whether it is held back: some sum the cloud decrypts on its own (the on-time sum of
    `contributions`, each group of `late`) reaches it with between 1 and `k - 1` hospitals, or none reaches it
    with `k`. The published rank is the smallest rank of a short sum, and at most the largest rank of any."""
    sums = [sum_reach(contributions, k=k), *(sum_reach(group, k=k) for group in late)]
    rank = min(max(s.rank for s in sums), *(s.rank for s in sums if s.short), layout.r_max)
    if rank == 0:
        return Reach(0, np.ones(layout.size, dtype=bool))
    return Reach(rank, layout.lora_column_mask(rank) == 0)
