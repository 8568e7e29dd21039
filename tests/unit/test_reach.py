"""`k` per coordinate: which coordinates of a round's release at least `k` hospitals reach, and what
`aggregate` publishes of the others. Expected masks are written out by hand from the layout's order
(`B` columns, then `A` rows, then the head)."""

from __future__ import annotations

import numpy as np
import pytest

from protocol.aggregation import LateGroup, RoundNoise, aggregate
from protocol.crypto import generate_scheme
from protocol.crypto.params import PlainParams
from protocol.ffa import AdapterLayout
from protocol.messages import Contribution, NoiseMechanism
from protocol.reach import published_rank, reach
from protocol.strategies import FFAStrategy

# One module with 3 outputs, r_max 2: B is 3 x 2 (row-major: columns alternate), then a head of 2.
LAYOUT = AdapterLayout.build(lora_out_features={"m": 3}, r_max=2, head_shapes={"head": (2,)})
# The same with A (2 x 4) trained too.
LAYOUT_A = AdapterLayout.build(
    lora_out_features={"m": 3}, r_max=2, head_shapes={"head": (2,)}, lora_in_features={"m": 4}
)
COLUMN_1 = [False, True] * 3  # column 1 of the 3 x 2 B, row-major
NONE_HEAD = [False, False]
HELD = np.array(COLUMN_1 + NONE_HEAD)  # what a round with one hospital above rank 1 holds back


def line(client_id: str, rank: int, weight: float = 1.0) -> Contribution:
    return Contribution(
        client_id=client_id,
        weight=weight,
        num_examples=10,
        rank=rank,
        nonce=client_id.encode().hex().ljust(32, "0")[:32],
        ciphertext_sha256="0" * 64,
    )


@pytest.mark.parametrize(
    ("ranks", "k", "expected"),
    [([8, 4, 8, 6], 2, 8), ([8, 4, 8, 6], 3, 6), ([8, 4, 8, 6], 4, 4), ([8, 4, 8, 6], 5, 0), ([], 1, 0)],
)
def test_the_published_rank_is_the_kth_largest_rank(ranks: list[int], k: int, expected: int) -> None:
    assert published_rank(ranks, k=k) == expected


def test_a_column_fewer_than_k_hospitals_reach_is_held_back() -> None:
    reached = reach(LAYOUT, [line("a", 1), line("b", 1), line("c", 2)], k=2)

    assert reached.rank == 1
    assert reached.held.tolist() == COLUMN_1 + NONE_HEAD
    assert reached.held_back == 3


def test_rows_of_a_are_held_back_with_the_columns_of_b_when_a_is_trained() -> None:
    reached = reach(LAYOUT_A, [line("a", 1), line("b", 2)], k=2)

    assert reached.held.tolist() == COLUMN_1 + [False] * 4 + [True] * 4 + NONE_HEAD


def test_a_hospital_in_time_and_late_counts_once_at_its_larger_rank() -> None:
    twice = [line("a", 1), line("b", 1), line("d", 2), line("d", 2, weight=0.5)]

    assert reach(LAYOUT, twice, k=2).rank == 1
    assert reach(LAYOUT, [*twice, line("c", 2, weight=0.5)], k=2).held_back == 0
    assert reach(LAYOUT, [line("a", 2), line("a", 1)], k=1).rank == 2


def test_fewer_than_k_hospitals_hold_back_everything_the_head_included() -> None:
    reached = reach(LAYOUT, [line("a", 2), line("a", 2)], k=2)

    assert reached.rank == 0 and bool(reached.held.all())


def test_aggregate_publishes_what_k_hospitals_reach_counting_the_late_buckets() -> None:
    """Column 1 is held back while d alone reaches it (in time and late), published once c's late update
    reaches it too; column 0 and the head are the plain mean either way."""
    scheme = generate_scheme(PlainParams())
    rng = np.random.default_rng(7)
    previous = rng.normal(size=LAYOUT.size).astype(np.float32)
    mask = LAYOUT.lora_column_mask
    delta = {
        c: rng.normal(0.0, 0.1, LAYOUT.size) * mask(r) for c, r in (("a", 1), ("b", 1), ("c", 2), ("d", 2))
    }
    fresh = [line("a", 1), line("b", 1), line("d", 2)]
    noise = RoundNoise(NoiseMechanism.NONE, 0.0, 1.0, False, 0.0, 0.0)

    def close(late_ids: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """The published adapter, and the plain mean over every coordinate."""
        late = LateGroup(
            1,
            0.5,
            [scheme.serialize(scheme.sum(scheme.encrypt(delta[c]) for c in late_ids))],
            [line(c, 2) for c in late_ids],
        )
        result = aggregate(
            scheme,
            [scheme.serialize(scheme.sum(scheme.encrypt(delta[c.client_id]) for c in fresh))],
            global_vector=previous,
            contributions=fresh,
            layout=LAYOUT,
            strategy=FFAStrategy(),
            noise=noise,
            rng=rng,
            k=2,
            late=[late],
        )
        total = sum(delta[c.client_id] for c in fresh) + 0.5 * sum(delta[c] for c in late_ids)
        return result.vector, previous + total / (3 + 0.5 * len(late_ids))

    alone, mean = close(("d",))
    np.testing.assert_array_equal(alone[HELD], previous[HELD])
    np.testing.assert_allclose(alone[~HELD], mean[~HELD], atol=1e-6)
    both, mean = close(("c", "d"))
    np.testing.assert_allclose(both, mean, atol=1e-6)
