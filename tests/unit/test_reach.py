"""`k` per coordinate: which coordinates of a round's release at least `k` hospitals reach, and what
`aggregate` publishes of the others. Expected masks are written out by hand from the layout's order
(`B` columns, then `A` rows, then the head)."""

from __future__ import annotations

import numpy as np
import pytest

from protocol.aggregation import LateGroup, RoundNoise, aggregate, fold_in
from protocol.crypto import generate_scheme
from protocol.crypto.params import PlainParams
from protocol.ffa import AdapterLayout
from protocol.messages import Contribution, NoiseMechanism
from protocol.reach import fits, planned_hold, published_rank, reach, sum_reach
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


def lines(spec: str) -> list[Contribution]:
    """`"a1 b2"`: hospital a at rank 1, b at rank 2."""
    return [line(word[:-1], int(word[-1])) for word in spec.split()]


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


def test_a_hospital_twice_in_one_sum_counts_once_at_its_larger_rank() -> None:
    twice = [line("a", 1), line("b", 1), line("d", 2), line("d", 2, weight=0.5)]

    assert reach(LAYOUT, twice, k=2).rank == 1
    assert reach(LAYOUT, [*twice, line("c", 2, weight=0.5)], k=2).held_back == 0
    assert reach(LAYOUT, [line("a", 2), line("a", 1)], k=1).rank == 2


@pytest.mark.parametrize(
    ("on_time", "late", "expected"),
    [
        # e alone on time and d alone late on column 1: two hospitals reach it, but no decryption holds two.
        ("a1 b1 e2 f1", ["c1 d2"], 1),
        # The on-time sum reaches column 1 with two; a late group reaching it with one holds it back too.
        ("a2 b2 e1 f1", ["c1 d2"], 1),
        # A late group that reaches column 1 with two publishes it beside an on-time sum that reaches it with none.
        ("a1 b1", ["c2 d2"], 2),
        # ... but not beside one that reaches it with one.
        ("a1 b1 e2", ["c2 d2"], 1),
        # Every decrypted sum reaches column 1 with none or two.
        ("a2 b2 e1", ["c2 d2", "f1 g1"], 2),
        # A late group of one hospital holds back everything, the head included.
        ("a2 b2", ["d2"], 0),
    ],
)
def test_each_sum_decrypted_on_its_own_reaches_a_published_column_with_none_or_k_hospitals(
    on_time: str, late: list[str], expected: int
) -> None:
    """Worked out by hand per column: a column is published when no sum reaches it with one hospital (k = 2)
    and some sum reaches it with two; the published rank is the first column that is not."""
    reached = reach(LAYOUT, lines(on_time), k=2, late=[lines(group) for group in late])

    assert reached.rank == expected
    assert reached.held.tolist() == (
        [False] * 6 + NONE_HEAD if expected == 2 else COLUMN_1 + NONE_HEAD if expected == 1 else [True] * 8
    )


@pytest.mark.parametrize(
    ("group", "on_time", "expected"),
    [
        ("c1 d2", "a2 b2", False),  # d alone on column 1, which the on-time sum publishes: left out
        ("c1 d2", "a1 b1 e2", True),  # the on-time sum holds column 1 back anyway
        ("c2 d2", "a2 b2", True),
        ("c1 d1", "a2 b2", True),  # reaches column 1 with none
        ("c2 d2 e4", "a2 b2", True),  # e alone beyond what the on-time sum publishes
        ("d2", "a1 b1", False),  # fewer than k hospitals: its head alone
        ("d2 d1", "a1 b1", False),  # one hospital twice is one hospital
    ],
)
def test_a_late_group_fits_when_it_holds_back_no_column_the_on_time_sum_publishes(
    group: str, on_time: str, expected: bool
) -> None:
    assert fits(sum_reach(lines(group), k=2), sum_reach(lines(on_time), k=2)) is expected


def test_fold_in_keeps_the_late_groups_that_fit_and_leaves_out_the_others() -> None:
    fitting = LateGroup(1, 0.5, [], lines("c2 d2"), [])
    short = LateGroup(2, 0.25, [], lines("e1 f2"), [])

    kept, left_out = fold_in(lines("a2 b2"), [fitting, short], k=2)

    assert kept == [fitting] and left_out == [short]


def test_a_hospital_zeroes_what_its_plan_holds_back_in_advance() -> None:
    """`planned_hold`: the columns of B (rows of A) from the plan's published rank on; nothing without a
    published rank or at r_max; at published rank 0 every LoRA coordinate but never the head."""
    assert planned_hold(LAYOUT, 1).tolist() == COLUMN_1 + NONE_HEAD
    assert planned_hold(LAYOUT_A, 1).tolist() == COLUMN_1 + [False] * 4 + [True] * 4 + NONE_HEAD
    assert planned_hold(LAYOUT, 0).tolist() == [True] * 6 + NONE_HEAD
    assert planned_hold(LAYOUT, None) is None and planned_hold(LAYOUT, 2) is None
    with pytest.raises(ValueError, match="published_rank"):
        planned_hold(LAYOUT, -1)


def test_fewer_than_k_hospitals_hold_back_everything_the_head_included() -> None:
    reached = reach(LAYOUT, [line("a", 2), line("a", 2)], k=2)

    assert reached.rank == 0 and bool(reached.held.all())


def test_aggregate_counts_the_on_time_sum_and_each_late_group_on_their_own() -> None:
    """With d alone on column 1 on time, column 1 is held back although c and d reach it in the late group;
    with c and d on time as well, everything is published. Column 0 and the head are the plain mean (late
    uploads at weight 0.5) either way."""
    scheme = generate_scheme(PlainParams())
    rng = np.random.default_rng(7)
    previous = rng.normal(size=LAYOUT.size).astype(np.float32)
    mask = LAYOUT.lora_column_mask
    ranks = {"a": 1, "b": 1, "c": 2, "d": 2}
    delta = {c: rng.normal(0.0, 0.1, LAYOUT.size) * mask(r) for c, r in ranks.items()}
    late_delta = {c: rng.normal(0.0, 0.1, LAYOUT.size) * mask(2) for c in ("c", "d")}
    noise = RoundNoise(NoiseMechanism.NONE, 0.0, 1.0, False, 0.0, 0.0)

    def close(on_time: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """The published adapter, and the plain mean over every coordinate."""
        late = LateGroup(
            1,
            0.5,
            [scheme.serialize(scheme.sum(scheme.encrypt(late_delta[c]) for c in ("c", "d")))],
            [line(c, 2) for c in ("c", "d")],
            ["edge-1"],
        )
        result = aggregate(
            scheme,
            [scheme.serialize(scheme.sum(scheme.encrypt(delta[c]) for c in on_time))],
            global_vector=previous,
            contributions=[line(c, ranks[c]) for c in on_time],
            layout=LAYOUT,
            strategy=FFAStrategy(),
            noise=noise,
            central=None,
            k=2,
            late=[late],
        )
        total = sum(delta[c] for c in on_time) + 0.5 * (late_delta["c"] + late_delta["d"])
        return result.vector, previous + total / (len(on_time) + 0.5 * 2)

    alone, mean = close(("a", "b", "d"))
    np.testing.assert_array_equal(alone[HELD], previous[HELD])
    np.testing.assert_allclose(alone[~HELD], mean[~HELD], atol=1e-6)
    both, mean = close(("a", "b", "c", "d"))
    np.testing.assert_allclose(both, mean, atol=1e-6)
