"""Which coordinates of a round's release at least `k` hospitals reach (`k` enforced per coordinate).

`k` (`FederationSpec.min_clients_per_edge`) is checked per sum, but with mixed ranks a sum of `k` hospitals
can still carry a coordinate that fewer of them reach: a rank-`r` hospital's delta is zero beyond column
`r` of every padded `B` (and row `r` of `A`, for strategies that train it), so a column that only one
hospital's rank reaches is that hospital's update divided by a public weight. Ranks are nested (a hospital
reaching column `j` reaches every column below it), so the hospitals reaching column `j` are those of rank
above `j`, and the columns at least `k` of them reach are those below the k-th largest rank: the
*published rank*. Everything from it on is held back (published unchanged from the previous adapter); the
head is reached by every hospital, so it is held back only when the round has fewer than `k` hospitals.

Pure: no I/O, nothing imported from outside `protocol`.
"""

from __future__ import annotations

from collections.abc import Iterable
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


def reach(layout: AdapterLayout, contributions: Iterable[Contribution], *, k: int) -> Reach:
    """Per coordinate, whether fewer than `k` distinct hospitals among `contributions` (every edge sum and
    late bucket of the round) reach it. A hospital inside the round twice (in time and late) counts once,
    at the larger of its ranks."""
    ranks: dict[str, int] = {}
    for c in contributions:
        ranks[c.client_id] = max(ranks.get(c.client_id, 0), c.rank)
    rank = min(published_rank(ranks.values(), k=k), layout.r_max)
    if rank == 0:
        return Reach(0, np.ones(layout.size, dtype=bool))
    return Reach(rank, layout.lora_column_mask(rank) == 0)
