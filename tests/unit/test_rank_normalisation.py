"""What `normalize_rank_columns` computes, and the noise it leaves on each LoRA column (issue 19, item 7).

Expected values are worked out here with numpy from the hospitals' factors, never from the strategy's code.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedlora.seeded_sampler import SeededSampler
from protocol.aggregation import RoundNoise, aggregate, draw_central, noise_on_mean
from protocol.crypto import generate_scheme
from protocol.crypto.params import PlainParams
from protocol.ffa import AdapterLayout
from protocol.messages import NoiseMechanism
from protocol.strategies import FFAStrategy, RoundSum
from tests.unit.test_reach import line

# Issue 19's reproduction: ranks 2, 4 and 8 at weights 1, 0.5 and 0.25.
RANKS = {"a": 2, "b": 4, "c": 8}
WEIGHTS = {"a": 1.0, "b": 0.5, "c": 0.25}
OUT, IN, R_MAX = 6, 5, 8
LAYOUT = AdapterLayout.build(lora_out_features={"m": OUT}, r_max=R_MAX, head_shapes={"head": (2,)})
# B (3 x 2), then A (2 x 4), then a head of 2.
LAYOUT_A = AdapterLayout.build(
    lora_out_features={"m": 3}, r_max=2, head_shapes={"head": (2,)}, lora_in_features={"m": 4}
)


def hospitals(rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each hospital's `dB` (zero beyond its rank) and the shared `A_max`."""
    b = {}
    for cid, rank in RANKS.items():
        b[cid] = np.zeros((OUT, R_MAX))
        b[cid][:, :rank] = rng.normal(size=(OUT, rank))
    return b, rng.normal(size=(R_MAX, IN))


def next_b(b: dict[str, np.ndarray], *, normalize: bool) -> np.ndarray:
    """The strategy's mean `dB` from the weighted sum (no noise), through its template method."""
    total = sum(WEIGHTS[c] * LAYOUT.flatten({"m": b[c], "head": np.zeros(2)}) for c in b)
    contributions = [line(c, RANKS[c], WEIGHTS[c]) for c in b]
    strategy = FFAStrategy(normalize_rank_columns=normalize)
    stepped = strategy.next_global(np.zeros(LAYOUT.size), RoundSum(total, contributions, LAYOUT))
    return LAYOUT.unflatten(stepped)["m"]


def test_normalize_rank_columns_averages_each_column_over_its_clients_not_the_products() -> None:
    """Property (docs/strategies.md): dividing by the total weight gives exactly the weighted mean of the
    hospitals' `dB A`; `normalize_rank_columns` gives each column `j` the mean over the hospitals whose
    rank reaches it, which with mixed ranks is not that mean (the issue measured a relative error of 1.5
    and 2.2 in `delta W`, far beyond rounding)."""
    b, a = hospitals(np.random.default_rng(3))
    total = sum(WEIGHTS.values())
    products = sum(WEIGHTS[c] * b[c] @ a for c in b) / total
    reach = np.array([sum(WEIGHTS[c] for c in b if RANKS[c] > j) for j in range(R_MAX)])
    per_column = sum(WEIGHTS[c] * b[c] for c in b) / reach

    plain, normalized = next_b(b, normalize=False), next_b(b, normalize=True)

    np.testing.assert_allclose(plain @ a, products, rtol=1e-6, atol=1e-6)  # the layout holds float32
    np.testing.assert_allclose(normalized, per_column, rtol=1e-6)
    error = np.linalg.norm(normalized @ a - products) / np.linalg.norm(products)
    assert error > 0.5, error


def test_one_rank_for_all_makes_both_divisions_the_same() -> None:
    b = {c: np.random.default_rng(4).normal(size=(OUT, R_MAX)) for c in RANKS}
    ranks = dict.fromkeys(RANKS, R_MAX)
    total = sum(WEIGHTS[c] * LAYOUT.flatten({"m": b[c], "head": np.zeros(2)}) for c in b)
    contributions = [line(c, ranks[c], WEIGHTS[c]) for c in b]
    steps = [
        FFAStrategy(normalize_rank_columns=n).next_global(
            np.zeros(LAYOUT.size), RoundSum(total, contributions, LAYOUT)
        )
        for n in (False, True)
    ]
    np.testing.assert_allclose(steps[0], steps[1], rtol=1e-6)


def test_each_row_of_a_and_column_of_b_reports_the_noise_of_its_own_divisor() -> None:
    """Under `fedit`/`fedrot` row `j` of `A` is a coordinate of rank direction `j` too; the figure for a
    direction is the largest over its coordinates, held-back ones (no noise this round) left out."""
    divisors = {
        "m": np.array([[2.0, 8.0]] * 3),  # B's columns 0 and 1
        "m.lora_A": np.array([[4.0] * 4, [1.0] * 4]),  # A's rows 0 and 1
        "head": np.array([2.0, 2.0]),
    }
    divisor = LAYOUT_A.flatten(divisors)
    nothing_held = np.zeros(LAYOUT_A.size, dtype=bool)
    a_row_1 = np.array([[0.0] * 4, [1.0] * 4])
    row_1_held = LAYOUT_A.flatten({"m": np.zeros((3, 2)), "m.lora_A": a_row_1, "head": np.zeros(2)}) > 0

    largest, by_column = noise_on_mean(LAYOUT_A, divisor, nothing_held, std=1.0)
    # Column 0: B's 1/2 and A's 1/4; column 1: B's 1/8 and A's 1/1; the head 1/2.
    assert largest == pytest.approx(1.0) and by_column == pytest.approx((0.5, 1.0))
    largest, by_column = noise_on_mean(LAYOUT_A, divisor, row_1_held, std=1.0)
    assert largest == pytest.approx(0.5) and by_column == pytest.approx((0.5, 0.125))


@pytest.mark.parametrize(
    ("normalize", "k", "expected"),
    [
        # Columns 0-1 reached by a, b, c (W 1.75), 2-3 by b, c (0.75), 4-7 by c alone (0.25).
        (True, 1, [2 / 1.75] * 2 + [2 / 0.75] * 2 + [2 / 0.25] * 4),
        # k = 2: c's columns 4-7 are held back and carry none of the round's noise.
        (True, 2, [2 / 1.75] * 2 + [2 / 0.75] * 2 + [0.0] * 4),
        (False, 1, [2 / 1.75] * 8),
    ],
    ids=["rank-columns", "rank-columns-held-back", "total-weight"],
)
def test_the_noise_reported_per_column_is_the_sum_s_over_that_column_s_divisor(
    normalize: bool, k: int, expected: list[float]
) -> None:
    scheme = generate_scheme(PlainParams())
    sampler = SeededSampler(np.random.default_rng(5))
    noise = RoundNoise(NoiseMechanism.GAUSSIAN, 2.0, 1.0, False, 0.0, 2.0)  # std 2 on the sum
    result = aggregate(
        scheme,
        [scheme.serialize(scheme.encrypt(np.zeros(LAYOUT.size)))],
        global_vector=np.zeros(LAYOUT.size, dtype=np.float32),
        contributions=[line(c, RANKS[c], WEIGHTS[c]) for c in RANKS],
        layout=LAYOUT,
        strategy=FFAStrategy(normalize_rank_columns=normalize),
        noise=noise,
        central=draw_central(noise, scheme.params, size=LAYOUT.size, sampler=sampler),
        k=k,
    )

    assert result.column_noise_std == pytest.approx(expected)
    assert result.noise_std == pytest.approx(max(expected))  # the head's, 2 / 1.75, is never above it
