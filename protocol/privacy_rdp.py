"""Rényi-DP curves of the federation's noise mechanisms, and their conversion to (epsilon, delta).

Each curve is the RDP of one run of a mechanism at every order of a grid, in nats; composition adds
curves (Mironov 2017, "Rényi Differential Privacy", arXiv:1702.07476, Proposition 1). The functions take
parameters that the events of `protocol.privacy` have already validated.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

# Fractional orders in steps of 0.1 below 11 because heavily composed accounts (many DP-SGD steps) reach
# their optimum there and a coarse grid would overstate epsilon; integers up to 64 and a few large
# orders for lightly composed, strongly noised accounts. The grid contains Opacus' default orders
# (1.1 ... 10.9, 12 ... 63), so a ledger built on it never reports more than the hospital's Opacus does,
# and dp_accounting's (which adds 128 ... 1024).
DEFAULT_ORDERS: tuple[float, ...] = (
    *(1.0 + k / 10.0 for k in range(1, 100)),
    *(float(a) for a in range(11, 65)),
    80.0,
    96.0,
    128.0,
    256.0,
    512.0,
    1024.0,
)


def subsampled_gaussian_rdp(*, noise_multiplier: float, sample_rate: float, orders: np.ndarray) -> np.ndarray:
    """RDP of the Gaussian mechanism (std `noise_multiplier`, L2 sensitivity 1) on a Poisson sample.

    Add/remove adjacency, as in Opacus. Mironov, Talwar, Zhang 2019, "Rényi Differential Privacy of the
    Sampled Gaussian Mechanism" (arXiv:1908.10530), Section 3: the RDP at order `a` is
    `log(A_a) / (a - 1)` with `A_a = E_{z ~ N(0, s^2)}[((1 - q) + q exp((2z - 1) / (2 s^2)))^a]`.
    """
    sigma, q = noise_multiplier, sample_rate
    if q == 1.0:
        # No subsampling: Mironov 2017, Proposition 7 (Gaussian mechanism of sensitivity 1).
        return orders / (2.0 * sigma**2)
    integer = np.equal(np.mod(orders, 1.0), 0.0)
    log_a = np.empty_like(orders)
    log_a[integer] = [_log_a_integer(q, sigma, int(a)) for a in orders[integer]]
    if not integer.all():
        log_a[~integer] = _log_a_fractional(q, sigma, orders[~integer])
    return log_a / (orders - 1.0)


def _log_a_integer(q: float, sigma: float, order: int) -> float:
    # Mironov, Talwar, Zhang 2019, Section 3.3: for an integer order the binomial expansion of the
    # integrand is finite and each term's Gaussian expectation is closed form,
    # A_a = sum_k C(a, k) q^k (1 - q)^(a - k) exp((k^2 - k) / (2 s^2)); summed in log space because the
    # terms reach exp(a^2 / (2 s^2)).
    k = np.arange(order + 1, dtype=float)
    log_binomial = special.gammaln(order + 1.0) - special.gammaln(k + 1.0) - special.gammaln(order - k + 1.0)
    log_terms = log_binomial + k * math.log(q) + (order - k) * math.log1p(-q) + (k * k - k) / (2.0 * sigma**2)
    return float(special.logsumexp(log_terms))


def _log_a_fractional(q: float, sigma: float, orders: np.ndarray) -> np.ndarray:
    # A fractional order has no finite expansion, and the alternating series of Mironov, Talwar, Zhang
    # 2019 (Section 3.3) converges only polynomially when q is large. We integrate the definition of A_a
    # instead, in log space, with the trapezoid rule on a uniform grid:
    # - the log-integrand is -z^2/(2 s^2) plus `a` times an increasing function whose slope is below
    #   1/s^2, so it falls at least like exp(-t^2 / (2 s^2)) at a distance t below 0 or above `a`;
    #   twelve standard deviations beyond [0, a] leave out less than exp(-72) of the mass;
    # - the integrand is analytic in a strip of half-width pi s^2 around the real axis (the base of the
    #   power vanishes at Im z = pi s^2), where the trapezoid rule converges like exp(-2 pi d / h)
    #   (Trefethen & Weideman 2014, "The exponentially convergent trapezoidal rule", SIAM Review,
    #   Theorem 5.1); h = min(s, s^2) / 4 puts that error below exp(-70).
    step = min(sigma, sigma**2) / 4.0
    z = np.arange(-12.0 * sigma, float(orders.max()) + 12.0 * sigma + step, step)
    log_base = np.logaddexp(math.log1p(-q), math.log(q) + (2.0 * z - 1.0) / (2.0 * sigma**2))
    log_density = -(z**2) / (2.0 * sigma**2) - math.log(sigma * math.sqrt(2.0 * math.pi))
    log_integrand = orders[:, None] * log_base[None, :] + log_density[None, :]
    return np.asarray(special.logsumexp(log_integrand, axis=1) + math.log(step))


def laplace_rdp(*, noise_multiplier: float, orders: np.ndarray) -> np.ndarray:
    """RDP of the Laplace mechanism with scale `noise_multiplier` on a query of L1 sensitivity 1.

    Mironov 2017, Proposition 6 (exact):
    `log(a / (2a - 1) exp((a - 1) / b) + (a - 1) / (2a - 1) exp(-a / b)) / (a - 1)`, in log space.
    """
    b = noise_multiplier
    first = np.log(orders / (2.0 * orders - 1.0)) + (orders - 1.0) / b
    second = np.log((orders - 1.0) / (2.0 * orders - 1.0)) - orders / b
    return np.asarray(np.logaddexp(first, second) / (orders - 1.0))


def skellam_rdp(
    *, variance: float, l1_sensitivity: float, l2_sensitivity: float, orders: np.ndarray
) -> np.ndarray:
    """RDP bound of the multi-dimensional Skellam mechanism; `variance` is that of the total noise.

    Agarwal, Kairouz, Liu 2021, "The Skellam Mechanism for Differentially Private Federated Learning"
    (NeurIPS 2021, arXiv:2110.04995), Section 3, the RDP bound of the multi-dimensional Skellam
    mechanism: with noise Sk(lam, lam) = Poisson(lam) - Poisson(lam) per coordinate, L1 and L2
    sensitivities D1, D2 and an integer order `a > 1`,
    `eps(a) = a D2^2 / (4 lam) + min(((2a - 1) D2^2 + 6 D1) / (16 lam^2), 3 D1 / (4 lam))`.
    With the variance `v = 2 lam`, the form of the authors' accounting code (google-research/federated,
    distributed_dp/accounting_utils.py `_skellam_rdp` at scale 1, whose sampler draws Poisson(v / 2)):
    `a D2^2 / (2v) + min(((2a - 1) D2^2 + 6 D1) / (4 v^2), 3 D1 / (2v))`; the first term is the
    Gaussian mechanism's RDP at the same variance, the minimum the price of the integer noise.
    """
    # The bound holds at integer orders; Rényi divergence does not decrease with the order (van Erven &
    # Harremoës 2014, "Rényi Divergence and Kullback-Leibler Divergence", Theorem 3), so a fractional
    # order takes the bound of the next integer.
    a = np.ceil(orders)
    # ||x||_2 <= ||x||_1, so an L1 bound is an L2 bound too; bounds of integer vectors below 1 (where
    # ||q||_1 <= ||q||_2^2 is the smaller) can come in either order.
    d1, d2_squared, v = l1_sensitivity, min(l1_sensitivity, l2_sensitivity) ** 2, variance
    discretisation = np.minimum(
        ((2.0 * a - 1.0) * d2_squared + 6.0 * d1) / (4.0 * v**2), 3.0 * d1 / (2.0 * v)
    )
    return np.asarray(a * d2_squared / (2.0 * v) + discretisation)


def rdp_to_epsilon(*, orders: np.ndarray, rdp: np.ndarray, delta: float) -> tuple[float, float]:
    """The smallest epsilon over the orders at which the RDP curve gives (epsilon, delta)-DP, and that order.

    Balle, Barthe, Gaboardi, Hsu, Sato 2020, "Hypothesis Testing Interpretations and Renyi Differential
    Privacy" (arXiv:1905.09982), Theorem 21: `eps = rdp + log((a - 1) / a) - (log(delta) + log(a)) / (a - 1)`.
    Returns `(inf, inf)` when every order's RDP is infinite.
    """
    with np.errstate(invalid="ignore"):
        candidates = rdp + np.log1p(-1.0 / orders) - (math.log(delta) + np.log(orders)) / (orders - 1.0)
    candidates = np.where(np.isnan(candidates), np.inf, candidates)
    best = int(np.argmin(candidates))
    if not math.isfinite(candidates[best]):
        return math.inf, math.inf
    # A negative bound still certifies (0, delta)-DP.
    return max(0.0, float(candidates[best])), float(orders[best])
