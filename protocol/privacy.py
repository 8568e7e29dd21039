"""Privacy accounting: the events a federation spends privacy on, and accountants that add them up.

An event is one noise mechanism run `steps` times on a query whose sensitivity the noise is scaled to.
An `Accountant` records events and answers "what epsilon at this delta has been spent?". Two backends:

- `RdpAccountant` ("rdp"): Rényi DP, for every event type, including Poisson-subsampled Gaussians (the
  number the hospital's Opacus reports for DP-SGD) and the distributed Skellam noise;
- `PrvAccountant` ("prv"): exact accounting of non-subsampled Gaussian rounds through Gaussian DP,
  tighter than RDP for the central noise the cloud adds once per round.

Pure numpy and scipy: the cloud's ledger imports it without torch or Opacus.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, Self

import numpy as np
from scipy import optimize, special

from protocol.privacy_rdp import (
    DEFAULT_ORDERS,
    laplace_rdp,
    rdp_to_epsilon,
    skellam_rdp,
    subsampled_gaussian_rdp,
)

__all__ = [
    "DEFAULT_ORDERS",
    "Accountant",
    "AccountantName",
    "GaussianEvent",
    "LaplaceEvent",
    "PrivacyError",
    "PrivacyEvent",
    "PrvAccountant",
    "RdpAccountant",
    "SkellamEvent",
    "gaussian_noise_for_budget",
    "make_accountant",
]

AccountantName = Literal["rdp", "prv"]


class PrivacyError(ValueError):
    """An event, a delta or a budget that no accountant can give a valid answer for."""


def _require_positive(field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < float(value) < math.inf:
        raise PrivacyError(f"{field} must be positive and finite, got {value!r}")


def _require_steps(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise PrivacyError(f"steps must be a non-negative integer, got {value!r}")


def _require_delta(delta: object) -> float:
    if isinstance(delta, bool) or not isinstance(delta, numbers.Real) or not 0 < float(delta) < 1:
        raise PrivacyError(f"delta must lie in (0, 1), got {delta!r}")
    return float(delta)


@dataclass(frozen=True)
class GaussianEvent:
    """Gaussian noise of std `noise_multiplier` times the L2 sensitivity, on a Poisson sample at `sample_rate`.

    `sample_rate` 1.0 means no subsampling (a federated round); below 1 it is DP-SGD's batch sampling.
    """

    noise_multiplier: float
    sample_rate: float = 1.0
    steps: int = 1

    def __post_init__(self) -> None:
        # A zero multiplier would be an infinite epsilon: refused rather than recorded.
        _require_positive("noise_multiplier", self.noise_multiplier)
        rate = self.sample_rate
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0 < rate <= 1:
            raise PrivacyError(f"sample_rate must lie in (0, 1], got {rate!r}")
        _require_steps(self.steps)


@dataclass(frozen=True)
class LaplaceEvent:
    """Laplace noise of scale `noise_multiplier` times the L1 sensitivity."""

    noise_multiplier: float
    steps: int = 1

    def __post_init__(self) -> None:
        _require_positive("noise_multiplier", self.noise_multiplier)
        _require_steps(self.steps)


@dataclass(frozen=True)
class SkellamEvent:
    """Skellam noise Poisson(lam) - Poisson(lam) per coordinate of an integer sum; `variance` is 2 lam.

    Sensitivities and variance are in the integer units of the quantised sum, after scaling.
    """

    variance: float
    l1_sensitivity: float
    l2_sensitivity: float
    steps: int = 1

    def __post_init__(self) -> None:
        _require_positive("variance", self.variance)
        _require_positive("l1_sensitivity", self.l1_sensitivity)
        _require_positive("l2_sensitivity", self.l2_sensitivity)
        _require_steps(self.steps)


PrivacyEvent = GaussianEvent | LaplaceEvent | SkellamEvent


def _require_event(event: object) -> PrivacyEvent:
    if not isinstance(event, GaussianEvent | LaplaceEvent | SkellamEvent):
        raise PrivacyError(f"event must be a GaussianEvent, LaplaceEvent or SkellamEvent, got {event!r}")
    return event


class Accountant(ABC):
    """Adds up the privacy spent by the events composed into it."""

    name: ClassVar[str]

    def __init__(self) -> None:
        self._events: list[PrivacyEvent] = []

    @abstractmethod
    def compose(self, event: PrivacyEvent) -> None:
        """Record `event`; raise `PrivacyError`, changing nothing, if this accountant cannot handle it."""

    @abstractmethod
    def epsilon(self, *, delta: float) -> float:
        """The epsilon spent at `delta`: 0.0 with nothing composed, `math.inf` if nothing bounds it."""

    def copy(self) -> Self:
        """An independent copy, to ask what one more round would cost without spending it."""
        return copy.deepcopy(self)

    @property
    def events(self) -> tuple[PrivacyEvent, ...]:
        """The events composed so far, oldest first."""
        return tuple(self._events)


class RdpAccountant(Accountant):
    """Rényi-DP accountant for every event type, converted to (epsilon, delta) at the best order."""

    name: ClassVar[str] = "rdp"

    def __init__(self, orders: Sequence[float] = DEFAULT_ORDERS) -> None:
        super().__init__()
        grid = np.asarray(orders, dtype=float)
        if grid.ndim != 1 or grid.size == 0 or not np.all(np.isfinite(grid) & (grid > 1.0)):
            raise PrivacyError(
                f"orders must be a non-empty sequence of finite numbers above 1, got {orders!r}"
            )
        self._orders = grid
        self._rdp = np.zeros_like(grid)
        # One curve per distinct mechanism: a ledger recomputing a long history of rounds at the same
        # noise and rate evaluates it once.
        self._curves: dict[PrivacyEvent, np.ndarray] = {}
        # Laplace noise is also pure DP: basic composition of steps / b (Dwork & Roth 2014, "The
        # Algorithmic Foundations of Differential Privacy", Theorems 3.6 and 3.16), which can beat RDP.
        self._pure_epsilon = 0.0

    def compose(self, event: PrivacyEvent) -> None:
        event = _require_event(event)
        rdp = self._event_rdp(event)
        self._rdp = self._rdp + rdp
        if isinstance(event, LaplaceEvent):
            self._pure_epsilon += event.steps / event.noise_multiplier
        self._events.append(event)

    def _event_rdp(self, event: PrivacyEvent) -> np.ndarray:
        if event.steps == 0:
            return np.zeros_like(self._orders)
        key = dataclasses.replace(event, steps=1)
        if key not in self._curves:
            self._curves[key] = self._curve(key)
        return event.steps * self._curves[key]

    def _curve(self, event: PrivacyEvent) -> np.ndarray:
        if isinstance(event, GaussianEvent):
            return subsampled_gaussian_rdp(
                noise_multiplier=event.noise_multiplier, sample_rate=event.sample_rate, orders=self._orders
            )
        if isinstance(event, LaplaceEvent):
            return laplace_rdp(noise_multiplier=event.noise_multiplier, orders=self._orders)
        return skellam_rdp(
            variance=event.variance,
            l1_sensitivity=event.l1_sensitivity,
            l2_sensitivity=event.l2_sensitivity,
            orders=self._orders,
        )

    def epsilon(self, *, delta: float) -> float:
        return self.epsilon_and_order(delta=delta)[0]

    def epsilon_and_order(self, *, delta: float) -> tuple[float, float]:
        """Epsilon at `delta` and the RDP order that gives it; order `inf` marks a pure-DP bound."""
        delta = _require_delta(delta)
        if not np.any(self._rdp):
            return 0.0, math.inf
        epsilon, order = rdp_to_epsilon(orders=self._orders, rdp=self._rdp, delta=delta)
        only_laplace = all(isinstance(event, LaplaceEvent) for event in self._events)
        if only_laplace and self._pure_epsilon <= epsilon:
            return self._pure_epsilon, math.inf
        return epsilon, order


class PrvAccountant(Accountant):
    """Exact accounting of non-subsampled Gaussian rounds, through Gaussian DP."""

    name: ClassVar[str] = "prv"

    def __init__(self) -> None:
        super().__init__()
        self._mu_squared = 0.0

    def compose(self, event: PrivacyEvent) -> None:
        event = _require_event(event)
        if not isinstance(event, GaussianEvent):
            raise PrivacyError(
                "prv accounting here covers the Gaussian mechanism without subsampling; "
                f"use rdp for {type(event).__name__}, got {event!r}"
            )
        if event.sample_rate < 1.0:
            raise PrivacyError(
                "prv accounting here covers the Gaussian mechanism without subsampling; use rdp for "
                f"subsampled rounds, got sample_rate={event.sample_rate!r}"
            )
        # One Gaussian round of multiplier z is (1/z)-GDP, and mu-GDP rounds compose to
        # sqrt(sum mu_t^2)-GDP (Dong, Roth, Su 2019, "Gaussian Differential Privacy", arXiv:1905.02383,
        # Theorem 2.7 and Corollary 3.3).
        self._mu_squared += event.steps / event.noise_multiplier**2
        self._events.append(event)

    def epsilon(self, *, delta: float) -> float:
        delta = _require_delta(delta)
        return _gdp_epsilon(mu=math.sqrt(self._mu_squared), delta=delta)


def _gdp_log_delta(epsilon: float, mu: float) -> float:
    # mu-GDP is (eps, delta(eps))-DP for every eps with
    # delta(eps) = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2) (Balle & Wang 2018, "Improving the
    # Gaussian Mechanism for Differential Privacy", arXiv:1805.06530, Theorem 8; Dong, Roth, Su 2019,
    # Corollary 2.13). Both terms underflow for large eps, so the difference is taken in log space.
    first = special.log_ndtr(-epsilon / mu + mu / 2.0)
    second = epsilon + special.log_ndtr(-epsilon / mu - mu / 2.0)
    return float(first + np.log(-np.expm1(second - first)))


def _gdp_epsilon(*, mu: float, delta: float) -> float:
    if mu == 0.0:
        return 0.0
    if not math.isfinite(mu):
        return math.inf
    log_delta = math.log(delta)
    if _gdp_log_delta(0.0, mu) <= log_delta:
        return 0.0
    # Phi(-eps/mu + mu/2) alone bounds delta(eps) from above, and reaches delta at this eps.
    upper = mu * (mu / 2.0 - float(special.ndtri(delta)))
    return float(optimize.brentq(lambda eps: _gdp_log_delta(eps, mu) - log_delta, 0.0, upper, xtol=1e-12))


_ACCOUNTANTS: dict[str, type[Accountant]] = {"rdp": RdpAccountant, "prv": PrvAccountant}


def make_accountant(name: AccountantName) -> Accountant:
    """A fresh accountant of the named backend."""
    if name not in _ACCOUNTANTS:
        raise PrivacyError(f"accountant must be one of {sorted(_ACCOUNTANTS)}, got {name!r}")
    return _ACCOUNTANTS[name]()


# Noise multipliers searched by `gaussian_noise_for_budget`. A round at 1e-3 spends an epsilon in the
# hundreds of thousands, and 1e4 is far past the point where the RDP grid stops certifying less.
_NOISE_SEARCH = (1e-3, 1e4)


def gaussian_noise_for_budget(
    *, epsilon: float, delta: float, rounds: int, accountant: AccountantName = "rdp"
) -> float:
    """Smallest noise multiplier (to 1e-4 relative) at which `rounds` Gaussian rounds spend at most `epsilon`.

    Rounds are not subsampled. Never below 1e-3; a budget no multiplier up to 1e4 meets raises `PrivacyError`.
    """
    _require_positive("epsilon", epsilon)
    delta = _require_delta(delta)
    if isinstance(rounds, bool) or not isinstance(rounds, numbers.Integral) or rounds < 1:
        raise PrivacyError(f"rounds must be a positive integer, got {rounds!r}")
    make_accountant(accountant)  # an unknown name fails here, before the search

    def overspend(log_z: float) -> float:
        spent = make_accountant(accountant)
        spent.compose(GaussianEvent(noise_multiplier=math.exp(log_z), steps=int(rounds)))
        return spent.epsilon(delta=delta) - epsilon

    low, high = (math.log(z) for z in _NOISE_SEARCH)
    if overspend(high) > 0:
        raise PrivacyError(
            f"epsilon={epsilon!r} at delta={delta!r} is below what the {accountant} accountant can certify "
            f"for {rounds} rounds with a noise multiplier up to {_NOISE_SEARCH[1]:g}"
        )
    if overspend(low) <= 0:
        return _NOISE_SEARCH[0]
    # Epsilon falls as the noise grows, so the root is the smallest multiplier within budget; stepping
    # up by ten times the tolerance lands on the side that keeps the budget.
    log_z = optimize.brentq(overspend, low, high, xtol=1e-6)
    return math.exp(log_z + 1e-5)
