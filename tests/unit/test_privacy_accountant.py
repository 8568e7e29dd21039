"""Privacy accountants: the contract every backend keeps, and each backend's numbers against independent code.

Expected values come from Google's dp_accounting (RDP and PLD), Opacus' RDP accountant, and direct
evaluation of the definitions with scipy; none of them shares code with `protocol.privacy`.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
import warnings
from abc import ABC, abstractmethod

import dp_accounting
import numpy as np
import pytest
from dp_accounting.pld.pld_privacy_accountant import PLDAccountant
from dp_accounting.rdp.rdp_privacy_accountant import RdpAccountant as GoogleRdpAccountant
from opacus.accountants import RDPAccountant as OpacusRdpAccountant
from opacus.accountants.analysis import rdp as opacus_rdp
from scipy import integrate, special, stats

from protocol.privacy import (
    DEFAULT_ORDERS,
    Accountant,
    GaussianEvent,
    LaplaceEvent,
    PrivacyError,
    PrvAccountant,
    RdpAccountant,
    SkellamEvent,
    gaussian_noise_for_budget,
    make_accountant,
)
from protocol.privacy_rdp import skellam_rdp, subsampled_gaussian_rdp

SAMPLE_RATES = (1 / 240, 0.01, 1 / 24, 0.1, 0.5)
NOISE_MULTIPLIERS = (0.5, 0.7, 1.0, 2.0)
STEPS = (1, 16, 96, 1000)
DELTAS = (1e-5, 1e-6)
# dp_accounting 0.6.0 sums the series for fractional orders (Mironov, Talwar, Zhang 2019, Section 3.3)
# in absolute value and drops an order whose series has not converged after 1000 terms, which happens
# for large sample rates: at q = 0.1, sigma = 0.5, 1000 steps it reports 236 where the exact curve gives
# 136. Its integer-order binomial sum is exact, so the comparison with it uses integer orders; the
# fractional orders are checked against Opacus (which sums the signed series) and a quadrature below.
INTEGER_ORDERS = tuple(a for a in DEFAULT_ORDERS if a.is_integer())


@pytest.fixture(autouse=True)
def _quiet_dp_accounting():
    # dp_accounting logs through absl for every order it drops; the tests compare numbers instead.
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


def _google_rdp(event: dp_accounting.DpEvent, *, orders=INTEGER_ORDERS) -> GoogleRdpAccountant:
    accountant = GoogleRdpAccountant(orders=list(orders))
    accountant.compose(event)
    return accountant


def _google_pld_epsilon(event: dp_accounting.DpEvent, *, delta: float) -> float:
    accountant = PLDAccountant(value_discretization_interval=3e-4)
    accountant.compose(event)
    return float(accountant.get_epsilon(delta))


def _spent(accountant: Accountant, *events: GaussianEvent | LaplaceEvent | SkellamEvent) -> Accountant:
    for event in events:
        accountant.compose(event)
    return accountant


class AccountantContract(ABC):
    """What every accountant must do; one subclass per backend supplies `make`."""

    @abstractmethod
    def make(self) -> Accountant: ...

    def test_no_events_spend_nothing(self):
        assert self.make().epsilon(delta=1e-5) == 0.0

    def test_more_rounds_spend_more(self):
        spent = [
            _spent(self.make(), GaussianEvent(noise_multiplier=1.0, steps=rounds)).epsilon(delta=1e-5)
            for rounds in (1, 2, 4, 16, 64)
        ]
        assert all(earlier < later for earlier, later in itertools.pairwise(spent))

    def test_more_noise_spends_less(self):
        spent = [
            _spent(self.make(), GaussianEvent(noise_multiplier=z, steps=10)).epsilon(delta=1e-5)
            for z in (0.5, 1.0, 2.0, 8.0)
        ]
        assert all(earlier > later for earlier, later in itertools.pairwise(spent))

    def test_composing_twice_equals_composing_the_steps(self):
        twice = _spent(self.make(), GaussianEvent(noise_multiplier=1.5), GaussianEvent(noise_multiplier=1.5))
        once = _spent(self.make(), GaussianEvent(noise_multiplier=1.5, steps=2))
        assert twice.epsilon(delta=1e-5) == pytest.approx(once.epsilon(delta=1e-5), rel=1e-9)

    def test_copy_is_independent(self):
        original = _spent(self.make(), GaussianEvent(noise_multiplier=1.0, steps=3))
        before = original.epsilon(delta=1e-5)

        what_if = original.copy()
        what_if.compose(GaussianEvent(noise_multiplier=1.0))

        assert what_if.epsilon(delta=1e-5) > before
        assert original.epsilon(delta=1e-5) == before
        assert original.events == (GaussianEvent(noise_multiplier=1.0, steps=3),)
        assert len(what_if.events) == 2

    def test_events_are_recorded_in_order(self):
        events = (GaussianEvent(noise_multiplier=1.0), GaussianEvent(noise_multiplier=2.0, steps=5))
        assert _spent(self.make(), *events).events == events

    def test_rejected_event_changes_nothing(self):
        accountant = _spent(self.make(), GaussianEvent(noise_multiplier=1.0))
        before = accountant.epsilon(delta=1e-5)
        with pytest.raises(PrivacyError, match=r"event must be .*got 'noise'"):
            accountant.compose("noise")  # type: ignore[arg-type]
        assert accountant.epsilon(delta=1e-5) == before
        assert len(accountant.events) == 1

    @pytest.mark.parametrize("delta", [0.0, 1.0, -1e-5, 1.5, math.nan, "1e-5"])
    def test_delta_outside_the_unit_interval_is_rejected(self, delta):
        accountant = _spent(self.make(), GaussianEvent(noise_multiplier=1.0))
        with pytest.raises(PrivacyError, match=rf"delta must lie in \(0, 1\), got {re.escape(repr(delta))}"):
            accountant.epsilon(delta=delta)
        with pytest.raises(PrivacyError, match="delta"):
            self.make().epsilon(delta=delta)

    def test_name_selects_this_backend(self):
        accountant = self.make()
        assert type(make_accountant(accountant.name)) is type(accountant)  # type: ignore[arg-type]


class TestRdpContract(AccountantContract):
    def make(self) -> Accountant:
        return RdpAccountant()


class TestPrvContract(AccountantContract):
    def make(self) -> Accountant:
        return PrvAccountant()


# --- events ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "field", "value"),
    [
        (lambda v: GaussianEvent(noise_multiplier=v), "noise_multiplier", -1),
        (lambda v: GaussianEvent(noise_multiplier=v), "noise_multiplier", 0.0),
        (lambda v: GaussianEvent(noise_multiplier=v), "noise_multiplier", math.inf),
        (lambda v: GaussianEvent(noise_multiplier=v), "noise_multiplier", math.nan),
        (lambda v: GaussianEvent(noise_multiplier=v), "noise_multiplier", True),
        (lambda v: GaussianEvent(noise_multiplier=1.0, sample_rate=v), "sample_rate", 0.0),
        (lambda v: GaussianEvent(noise_multiplier=1.0, sample_rate=v), "sample_rate", 1.5),
        (lambda v: GaussianEvent(noise_multiplier=1.0, steps=v), "steps", -1),
        (lambda v: GaussianEvent(noise_multiplier=1.0, steps=v), "steps", 2.0),
        (lambda v: LaplaceEvent(noise_multiplier=v), "noise_multiplier", -0.5),
        (lambda v: LaplaceEvent(noise_multiplier=1.0, steps=v), "steps", -3),
        (lambda v: SkellamEvent(variance=v, l1_sensitivity=4, l2_sensitivity=2), "variance", 0),
        (lambda v: SkellamEvent(variance=100, l1_sensitivity=v, l2_sensitivity=2), "l1_sensitivity", -4),
        (lambda v: SkellamEvent(variance=100, l1_sensitivity=4, l2_sensitivity=v), "l2_sensitivity", 0.0),
        (lambda v: SkellamEvent(variance=100, l1_sensitivity=4, l2_sensitivity=2, steps=v), "steps", -1),
    ],
)
def test_invalid_event_names_the_field_and_value(build, field, value):
    with pytest.raises(PrivacyError, match=rf"{field} .*got .*{re.escape(repr(value))}"):
        build(value)


def test_events_are_frozen():
    event = GaussianEvent(noise_multiplier=1.0)
    with pytest.raises(AttributeError):
        event.noise_multiplier = 0.1  # type: ignore[misc]


@pytest.mark.parametrize(
    "event",
    [
        GaussianEvent(noise_multiplier=1.0, sample_rate=0.5),
        LaplaceEvent(noise_multiplier=1.0),
        SkellamEvent(variance=100.0, l1_sensitivity=4.0, l2_sensitivity=2.0),
    ],
)
def test_prv_refuses_what_it_does_not_cover_and_changes_nothing(event):
    accountant = _spent(PrvAccountant(), GaussianEvent(noise_multiplier=2.0))
    before = accountant.epsilon(delta=1e-5)
    with pytest.raises(PrivacyError, match="use rdp"):
        accountant.compose(event)
    assert accountant.epsilon(delta=1e-5) == before
    assert len(accountant.events) == 1


def test_zero_steps_spend_nothing():
    accountant = _spent(
        RdpAccountant(), GaussianEvent(noise_multiplier=1.0, steps=0), LaplaceEvent(1.0, steps=0)
    )
    assert accountant.epsilon(delta=1e-5) == 0.0
    assert len(accountant.events) == 2


def test_unknown_accountant_name_is_rejected():
    with pytest.raises(PrivacyError, match=r"accountant must be one of .*got 'moments'"):
        make_accountant("moments")  # type: ignore[arg-type]


def test_orders_must_lie_above_one():
    with pytest.raises(PrivacyError, match=r"orders must be .*got \(1.0, 2.0\)"):
        RdpAccountant(orders=(1.0, 2.0))


def test_default_orders_contain_opacus_defaults():
    # So the cloud's ledger never reports more than the hospital's Opacus for the same history.
    assert set(OpacusRdpAccountant.DEFAULT_ALPHAS) <= {round(a, 10) for a in DEFAULT_ORDERS}


# --- RDP against independent implementations ------------------------------------------------------


@pytest.mark.parametrize("q", SAMPLE_RATES)
@pytest.mark.parametrize("sigma", NOISE_MULTIPLIERS)
def test_subsampled_gaussian_matches_dp_accounting(q, sigma):
    for steps in STEPS:
        ours = _spent(RdpAccountant(orders=INTEGER_ORDERS), GaussianEvent(sigma, sample_rate=q, steps=steps))
        event = dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps
        )
        google = _google_rdp(event)
        for delta in DELTAS:
            expected = google.get_epsilon(delta)
            assert ours.epsilon(delta=delta) == pytest.approx(expected, rel=0.01), (steps, delta)


@pytest.mark.parametrize("q", SAMPLE_RATES)
@pytest.mark.parametrize("sigma", NOISE_MULTIPLIERS)
def test_subsampled_gaussian_matches_opacus(q, sigma):
    # The number the hospital's Opacus reports: its RDP curve at its default orders, history (sigma, q, steps).
    alphas = OpacusRdpAccountant.DEFAULT_ALPHAS
    per_step = np.asarray(opacus_rdp.compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=alphas))
    for steps in STEPS:
        ours = _spent(RdpAccountant(), GaussianEvent(sigma, sample_rate=q, steps=steps))
        for delta in DELTAS:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "optimal order is the smallest alpha"
                expected, _ = opacus_rdp.get_privacy_spent(orders=alphas, rdp=steps * per_step, delta=delta)
            # Our grid contains Opacus' orders, so we may only be lower, and by little.
            assert ours.epsilon(delta=delta) <= expected * (1 + 1e-9)
            assert ours.epsilon(delta=delta) == pytest.approx(expected, rel=0.01), (steps, delta)


def test_hospital_history_matches_opacus_accountant():
    history = [(1.1, 1 / 24, 96), (0.9, 1 / 24, 48), (1.3, 0.01, 500)]
    opacus = OpacusRdpAccountant()
    opacus.history = list(history)

    ours = _spent(RdpAccountant(), *(GaussianEvent(z, sample_rate=q, steps=n) for z, q, n in history))

    assert ours.epsilon(delta=1e-5) == pytest.approx(opacus.get_epsilon(delta=1e-5), rel=0.01)


@pytest.mark.parametrize(
    ("q", "sigma", "order"), [(1 / 24, 0.5, 1.5), (0.5, 0.5, 1.1), (0.1, 0.7, 3.3), (0.01, 2.0, 9.7)]
)
def test_fractional_orders_match_quadrature(q, sigma, order):
    # Mironov, Talwar, Zhang 2019, Section 3: RDP = log(A) / (order - 1), A the expectation below.
    def integrand(z):
        return (
            stats.norm.pdf(z, scale=sigma) * ((1 - q) + q * math.exp((2 * z - 1) / (2 * sigma**2))) ** order
        )

    # Beyond 40 standard deviations outside [0, order] the integrand is below exp(-800) of its peak.
    a, _ = integrate.quad(
        integrand,
        -40 * sigma,
        order + 40 * sigma,
        points=[0.0, 0.5, order],
        epsabs=0,
        epsrel=1e-12,
        limit=500,
    )
    ours = subsampled_gaussian_rdp(noise_multiplier=sigma, sample_rate=q, orders=np.array([order]))[0]
    assert ours == pytest.approx(math.log(a) / (order - 1), rel=1e-8)


def test_rdp_is_stable_at_the_extremes():
    orders = np.array(DEFAULT_ORDERS)
    for q in (1e-6, 0.999, 1.0):
        curve = subsampled_gaussian_rdp(noise_multiplier=0.3, sample_rate=q, orders=orders)
        assert np.all(np.isfinite(curve)) and np.all(curve >= 0)
        assert np.all(np.diff(curve) >= -1e-12)  # Rényi divergence does not decrease with the order


@pytest.mark.parametrize(
    ("schedule", "delta"),
    [((0.5, 1.0, 1.5), 1e-5), ((0.8,) * 10 + (1.2,) * 20, 1e-6), (tuple(np.linspace(0.6, 3.0, 50)), 1e-5)],
)
def test_gaussian_noise_schedule_matches_dp_accounting(schedule, delta):
    ours = _spent(RdpAccountant(), *(GaussianEvent(float(z)) for z in schedule))
    google = dp_accounting.ComposedDpEvent([dp_accounting.GaussianDpEvent(float(z)) for z in schedule])
    expected = _google_rdp(google, orders=DEFAULT_ORDERS).get_epsilon(delta)
    assert ours.epsilon(delta=delta) == pytest.approx(expected, rel=0.01)


@pytest.mark.parametrize(
    ("scales", "delta"),
    [((1.0,), 1e-5), ((10.0,) * 50, 1e-5), ((2.0, 5.0, 20.0), 1e-6), ((50.0,) * 1000, 1e-5)],
)
def test_laplace_matches_dp_accounting_or_pure_composition(scales, delta):
    ours = _spent(RdpAccountant(), *(LaplaceEvent(b) for b in scales))
    google = dp_accounting.ComposedDpEvent([dp_accounting.LaplaceDpEvent(b) for b in scales])
    # Either bound is valid; an account of Laplace events only reports the smaller.
    pure = sum(1 / b for b in scales)
    expected = min(_google_rdp(google, orders=DEFAULT_ORDERS).get_epsilon(delta), pure)
    assert ours.epsilon(delta=delta) == pytest.approx(expected, rel=0.01)


def test_laplace_pure_bound_reports_order_infinity():
    epsilon, order = _spent(RdpAccountant(), LaplaceEvent(2.0), LaplaceEvent(4.0)).epsilon_and_order(
        delta=1e-5
    )
    assert (epsilon, order) == (pytest.approx(0.75), math.inf)


def test_mixed_account_uses_rdp_only():
    # The pure-DP bound covers Laplace events only; with a Gaussian in the account it must not be used.
    mixed = _spent(RdpAccountant(), LaplaceEvent(100.0), GaussianEvent(50.0))
    _, order = mixed.epsilon_and_order(delta=1e-5)
    assert math.isfinite(order)


# --- exact Gaussian accounting ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "delta"),
    [
        (((1.0, 1),), 1e-5),
        (((0.8, 10),), 1e-5),
        (((0.5, 1), (1.0, 1), (1.5, 1)), 1e-6),
        (((2.0, 100),), 1e-5),
    ],
)
def test_prv_matches_dp_accounting_pld(schedule, delta):
    ours = _spent(PrvAccountant(), *(GaussianEvent(z, steps=n) for z, n in schedule))
    google = dp_accounting.ComposedDpEvent(
        [dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z), n) for z, n in schedule]
    )
    assert ours.epsilon(delta=delta) == pytest.approx(_google_pld_epsilon(google, delta=delta), rel=0.01)


@pytest.mark.parametrize(("z", "epsilon"), [(1.0, 1.0), (1.0, 3.0), (0.5, 6.0), (4.0, 0.2), (0.2, 40.0)])
def test_prv_inverts_the_analytic_gaussian_delta(z, epsilon):
    # Balle & Wang 2018, Theorem 8, evaluated directly: delta(eps) of one Gaussian round at multiplier z.
    mu = 1 / z
    delta = stats.norm.cdf(-epsilon / mu + mu / 2) - math.exp(epsilon) * stats.norm.cdf(
        -epsilon / mu - mu / 2
    )
    ours = _spent(PrvAccountant(), GaussianEvent(z)).epsilon(delta=delta)
    assert ours == pytest.approx(epsilon, rel=1e-6)


def test_prv_is_tighter_than_rdp_for_gaussian_rounds():
    events = (GaussianEvent(1.0, steps=20),)
    assert _spent(PrvAccountant(), *events).epsilon(delta=1e-5) < _spent(RdpAccountant(), *events).epsilon(
        delta=1e-5
    )


def test_prv_spends_nothing_when_delta_alone_covers_it():
    # A single round at z = 100 is 0.01-GDP; delta(0) = 2 Phi(0.005) - 1 is about 0.004.
    assert _spent(PrvAccountant(), GaussianEvent(100.0)).epsilon(delta=0.01) == 0.0


# --- Skellam ------------------------------------------------------------------------------------------
# No independent library implements the Skellam mechanism's RDP bound, so these tests check it against
# what it must satisfy: the exact Rényi divergence of shifted Skellam distributions (scipy's Bessel
# functions), the Gaussian mechanism it converges to, and monotonicity.


def _exact_skellam_divergence(*, variance: float, shift: int, order: int) -> float:
    # Sk(lam, lam) has pmf exp(-2 lam) I_|k|(2 lam) with 2 lam the variance; ive is I scaled by exp(-z).
    half_width = int(40 * math.sqrt(variance)) + 60
    k = np.arange(-half_width, half_width + order * shift)
    with np.errstate(divide="ignore"):
        log_p = np.log(special.ive(np.abs(k - shift), variance))
        log_q = np.log(special.ive(np.abs(k), variance))
    kept = np.isfinite(log_p) & np.isfinite(log_q)  # the far tails underflow and weigh nothing
    return float(special.logsumexp(order * log_p[kept] + (1 - order) * log_q[kept]) / (order - 1))


@pytest.mark.parametrize("variance", [2.0, 10.0, 100.0, 1000.0])
@pytest.mark.parametrize("shift", [1, 3])
def test_skellam_bound_covers_the_exact_divergence(variance, shift):
    for order in (2, 4, 8, 16):
        bound = skellam_rdp(
            variance=variance, l1_sensitivity=shift, l2_sensitivity=shift, orders=np.array([float(order)])
        )[0]
        exact = _exact_skellam_divergence(variance=variance, shift=shift, order=order)
        assert exact <= bound
        if variance >= 1000:
            # The bound is sharp for large variance: a misread parametrisation would be off by two.
            assert bound <= exact * 1.01


def test_skellam_is_above_the_gaussian_and_converges_to_it():
    orders = np.array(DEFAULT_ORDERS)
    l1, l2 = 40.0, 8.0
    gaps = []
    for variance in (1e2, 1e3, 1e4, 1e5):
        skellam = skellam_rdp(variance=variance, l1_sensitivity=l1, l2_sensitivity=l2, orders=orders)
        # Gaussian mechanism of the same variance and L2 sensitivity at the integer order used.
        gaussian = np.ceil(orders) * l2**2 / (2 * variance)
        assert np.all(skellam >= gaussian)
        gaps.append(float(np.max((skellam - gaussian) / gaussian)))
    assert all(earlier > later for earlier, later in itertools.pairwise(gaps))
    assert gaps[-1] < 1e-3


def test_skellam_l1_bound_caps_a_larger_l2_bound():
    # ||x||_2 <= ||x||_1: an L2 bound above the L1 bound says nothing more.
    orders = np.array(DEFAULT_ORDERS)
    capped = skellam_rdp(variance=50.0, l1_sensitivity=0.5, l2_sensitivity=0.9, orders=orders)
    equal = skellam_rdp(variance=50.0, l1_sensitivity=0.5, l2_sensitivity=0.5, orders=orders)
    np.testing.assert_array_equal(capped, equal)


def test_skellam_epsilon_is_finite_and_falls_with_variance():
    spent = [
        _spent(
            RdpAccountant(), SkellamEvent(variance=v, l1_sensitivity=64.0, l2_sensitivity=8.0, steps=20)
        ).epsilon(delta=1e-5)
        for v in (1e3, 1e4, 1e5, 1e6)
    ]
    assert all(math.isfinite(e) and e > 0 for e in spent)
    assert all(earlier > later for earlier, later in itertools.pairwise(spent))


# --- calibration --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("epsilon", "delta", "rounds"), [(1.0, 1e-5, 10), (8.0, 1e-5, 100), (0.5, 1e-6, 1)])
def test_noise_for_budget_rdp_spends_the_budget(epsilon, delta, rounds):
    z = gaussian_noise_for_budget(epsilon=epsilon, delta=delta, rounds=rounds, accountant="rdp")

    google = dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z), rounds)
    assert _google_rdp(google, orders=DEFAULT_ORDERS).get_epsilon(delta) == pytest.approx(epsilon, rel=0.01)
    assert _spent(RdpAccountant(), GaussianEvent(z, steps=rounds)).epsilon(delta=delta) <= epsilon
    less_noise = _spent(RdpAccountant(), GaussianEvent(z * (1 - 1e-3), steps=rounds))
    assert less_noise.epsilon(delta=delta) > epsilon


@pytest.mark.parametrize(("epsilon", "delta", "rounds"), [(1.0, 1e-5, 10), (8.0, 1e-5, 100), (0.5, 1e-6, 1)])
def test_noise_for_budget_prv_spends_the_budget(epsilon, delta, rounds):
    z = gaussian_noise_for_budget(epsilon=epsilon, delta=delta, rounds=rounds, accountant="prv")

    google = dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z), rounds)
    assert _google_pld_epsilon(google, delta=delta) == pytest.approx(epsilon, rel=0.01)
    assert _spent(PrvAccountant(), GaussianEvent(z, steps=rounds)).epsilon(delta=delta) <= epsilon
    less_noise = _spent(PrvAccountant(), GaussianEvent(z * (1 - 1e-3), steps=rounds))
    assert less_noise.epsilon(delta=delta) > epsilon


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(epsilon=0.0, delta=1e-5, rounds=1), "epsilon must be positive"),
        (dict(epsilon=1.0, delta=0.0, rounds=1), "delta must lie"),
        (dict(epsilon=1.0, delta=1e-5, rounds=0), "rounds must be a positive integer, got 0"),
        (dict(epsilon=1.0, delta=1e-5, rounds=1, accountant="gdp"), "accountant must be one of"),
        (dict(epsilon=1e-4, delta=1e-5, rounds=10), "below what the rdp accountant can certify"),
    ],
)
def test_noise_for_budget_rejects_what_it_cannot_meet(kwargs, message):
    with pytest.raises(PrivacyError, match=message):
        gaussian_noise_for_budget(**kwargs)
