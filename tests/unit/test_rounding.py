"""Conditional randomised rounding (`protocol.rounding`): unbiased, and never longer than its stated bound.

The bound is Kairouz, Liu, Steinke 2021 (arXiv:2102.06387), section 4, at `beta = 2^-40` (the paper's
experiments use `exp(-1/2)`, which some tests pass to compare); the expected values below are worked from that
formula, and the conditioning's bias from the Cauchy-Schwarz bound `(g / 2) sqrt(beta) / (1 - beta)` of
`protocol/rounding.py`'s docstring, by hand, not read from the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from protocol.rounding import RoundingError, conditional_round, rounding_bias, rounding_bound

PAPER_BETA = math.exp(-0.5)  # sqrt(2 ln(1 / beta)) = 1
TAIL = math.sqrt(2 * 40 * math.log(2))  # sqrt(2 ln(1 / beta)) at the default beta = 2^-40: 7.447


def test_the_bound_is_the_papers_formula_capped_by_a_step_a_coordinate() -> None:
    # C = 1, g = 0.01, d = 10_000: sqrt(1 + 1e-4 * 1e4 / 4 + 1 * 0.01 * (1 + 0.01 * 100 / 2)) = sqrt(1.265).
    assert rounding_bound(1.0, step=0.01, size=10_000, beta=PAPER_BETA) == pytest.approx(math.sqrt(1.265))
    # The default beta: sqrt(1 + 0.25 + 7.447 * 0.015) = sqrt(1.3617).
    assert rounding_bound(1.0, step=0.01, size=10_000) == pytest.approx(math.sqrt(1.25 + TAIL * 0.015))
    # d = 1, g = 1: sqrt(1 + 1/4 + 1 * (1 + 1/2)) = sqrt(2.75), below the cap 1 + 1 = 2.
    assert rounding_bound(1.0, step=1.0, size=1, beta=PAPER_BETA) == pytest.approx(math.sqrt(2.75))
    # ... and at the default beta the cap: sqrt(1.25 + 7.447 * 1.5) = 3.52 > 2.
    assert rounding_bound(1.0, step=1.0, size=1) == pytest.approx(2.0)
    # A smaller beta, sqrt(2 ln(1e10)) = 6.786: d = 1, g = 4 gives sqrt(1 + 4 + 6.786 * 4 * 3) = 9.3, above
    # the cap 1 + 4 = 5, which every rounding meets (each coordinate moves by less than a step).
    assert rounding_bound(1.0, step=4.0, size=1, beta=1e-10) == pytest.approx(5.0)


def test_rounding_is_unbiased_coordinate_by_coordinate() -> None:
    # Prepare: 64 coordinates at random fractions of a step, a norm far below the bound (conditioning on
    # it almost never draws again, so the rounding is the plain unbiased one).
    rng = np.random.default_rng(3)
    step = 0.05
    x = rng.uniform(-0.2, 0.2, 64)
    bound = rounding_bound(float(np.linalg.norm(x)), step=step, size=x.size)
    trials = 4000

    # Execute
    draws = np.array([conditional_round(x, step=step, bound=bound, rng=rng) for _ in range(trials)])

    # Assert: each coordinate's rounding is one of its two neighbours, and its mean over the trials lies
    # within 6 standard errors (std at most step / 2 per draw) of x.
    floor = np.floor(x / step)
    assert np.all((draws == floor) | (draws == floor + 1))
    mean = draws.mean(axis=0) * step
    assert np.max(np.abs(mean - x)) <= 6 * (step / 2) / math.sqrt(trials)


def test_the_norm_bound_holds_on_every_draw_for_the_worst_vector_and_bias_stays_small() -> None:
    # Prepare: every coordinate half a step from its neighbours (each rounding a coin toss), the norm at
    # the clip C = 1: rounding to the nearest could lengthen it to C + sqrt(d) g / 2 = 2.
    rng = np.random.default_rng(4)
    size, clip = 10_000, 1.0
    step = 2 * clip / math.sqrt(size)
    x = rng.choice([-1.0, 1.0], size) * step / 2
    bound = rounding_bound(clip, step=step, size=size)
    assert bound < clip + math.sqrt(size) * step / 2  # far below what nearest rounding is charged

    # Execute
    draws = [conditional_round(x, step=step, bound=bound, rng=rng) for _ in range(300)]

    # Assert: every draw meets the bound; the mean magnitude stays half a step within the standard error of
    # 3 million coin tosses plus the conditioning's bias bound (g / 2) sqrt(beta) / (1 - beta), 2^-21 g.
    norms = np.array([np.linalg.norm(q * step) for q in draws])
    assert norms.max() <= bound
    toward_x = np.mean([np.sign(x) * q * step for q in draws])  # x's own direction: +step/2 on average
    conditioning = (step / 2) * 2**-20 / (1 - 2**-40)
    assert abs(toward_x - step / 2) <= 6 * (step / 2) / math.sqrt(300 * size) + conditioning


@pytest.mark.parametrize(("beta", "bias_steps"), [(PAPER_BETA, 0.4), (2**-40, 0.0)])
def test_the_conditionings_bias_stays_within_its_bound(beta: float, bias_steps: float) -> None:
    """Property: conditioning on a bound a try fails with probability at most `beta` moves the rounding's
    mean by at most `(g / 2) sqrt(beta) / (1 - beta)` in L2. Input: d = 16, one coordinate at norm
    `c = (K + 0.4) g` (a concentrated update), the rest zero. At the paper's `beta = exp(-1/2)` going up
    (`c + 0.6 g`) breaks `rounding_bound(c)` (about `c + g / 2 + 3 g^2 / c`), so the coordinate always goes
    down: a bias of 0.4 step, within the bound's 0.99 step. At `2^-40` the bound's tail lets it go up: no
    bias beyond the draws' standard error."""
    step, size, trials = 0.02, 16, 4000
    x = np.zeros(size)
    x[0] = (math.floor(0.9 / step) + 0.4) * step
    bound = rounding_bound(float(x[0]), step=step, size=size, beta=beta)
    rng = np.random.default_rng(16)

    draws = np.array([conditional_round(x, step=step, bound=bound, rng=rng) for _ in range(trials)])

    bias = draws.mean(axis=0) * step - x
    noise = 6 * step * math.sqrt(0.4 * 0.6 / trials)
    by_hand = (step / 2) * math.sqrt(beta) / (1 - beta)
    assert rounding_bias(step=step, beta=beta) == pytest.approx(by_hand)
    assert abs(float(np.linalg.norm(bias)) - bias_steps * step) <= noise
    assert float(np.linalg.norm(bias)) <= by_hand + noise


def test_the_default_draws_from_the_operating_system() -> None:
    # Two roundings of 256 coin tosses without a generator differ unless the OS repeated itself (2^-256).
    x = np.full(256, 0.5)
    bound = rounding_bound(float(np.linalg.norm(x)), step=1.0, size=x.size)
    assert not np.array_equal(
        conditional_round(x, step=1.0, bound=bound), conditional_round(x, step=1.0, bound=bound)
    )


def test_a_vector_longer_than_its_bound_is_refused() -> None:
    x = np.full(16, 1.0)  # norm 4
    with pytest.raises(RoundingError, match="longer than the norm"):
        conditional_round(
            x, step=0.5, bound=rounding_bound(1.0, step=0.5, size=16), rng=np.random.default_rng(0)
        )
    with pytest.raises(RoundingError, match="step"):
        conditional_round(x, step=0.0, bound=4.0)
