"""What the exact CSPRNG noise sampler costs against the numpy draw it replaced.

For a vector of `--size` values (default 1e6, about an adapter of a large LoRA), the cloud's central noise
as `protocol.aggregation.draw_central` draws it (OpenDP's discrete Gaussian or Laplace over OpenSSL's
CSPRNG, `protocol.samplers.OpenDPSampler`, on CKKS's noise lattice) beside what the closer drew before
(numpy's PCG64 `normal` / `laplace` in floating point), the same std, best of `--repeat` runs, in the same
process. OpenDP's calls release the GIL, so `OpenDPSampler` draws chunks on one thread per CPU. Prints seconds and the ratio. Run: `.venv/bin/python bench/noise_sampler.py`.
"""

from __future__ import annotations

import argparse
import math
import os
import secrets
import time
from collections.abc import Callable

import numpy as np

from protocol.distributions import Distribution
from protocol.noise import lattice_draw
from protocol.samplers import OpenDPSampler

STEP = 2.0**-40  # protocol.crypto.params.FINE_NOISE_STEP: CKKS's noise lattice
STD = 1.0  # z C with z = C = 1


def best(run: Callable[[], object], repeat: int) -> float:
    """The fastest of `repeat` runs, in seconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sampler = OpenDPSampler()
    rng = np.random.default_rng(secrets.randbits(128))  # the baseline only: never used for noise
    print(
        f"{args.size:,} values, std {STD}, best of {args.repeat}, {os.cpu_count()} CPUs (OpenDP: one thread each)"
    )
    print(f"{'distribution':<12} {'numpy PCG64 (s)':>16} {'OpenDP exact (s)':>17} {'ratio':>7}")
    for distribution, baseline in (
        (Distribution.GAUSSIAN, lambda: rng.normal(0.0, STD, args.size)),
        (Distribution.LAPLACE, lambda: rng.laplace(0.0, STD / math.sqrt(2.0), args.size)),
    ):
        numpy_s = best(baseline, args.repeat)
        exact_s = best(
            lambda d=distribution: lattice_draw(d, std=STD, size=args.size, sampler=sampler, step=STEP),
            args.repeat,
        )
        print(f"{distribution.value:<12} {numpy_s:>16.3f} {exact_s:>17.2f} {exact_s / numpy_s:>7.0f}")


if __name__ == "__main__":
    main()
