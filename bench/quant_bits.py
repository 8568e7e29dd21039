"""Upload compression: the quantisation bits the DP noise allows, and what they buy packed Paillier.

    PYTHONPATH=. .venv/bin/python bench/quant_bits.py            # d in {150k, 1M}, n in {10, 100}
    PYTHONPATH=. .venv/bin/python bench/quant_bits.py --quick    # the same table, a smaller timing vector

For each adapter size `d` and most hospitals per sum `n`, the cloud's plan (`protocol.compression
.plan_compression`) of a federation with Gaussian noise z = 1 on the sum (clip norm C = 1, tolerances at
their defaults: rounding error std at most 0.1 of the noise's, sensitivity at most 1.05 C), in two
settings: the cloud adds the noise to unmasked uploads, and the default secure federation (hospitals add
Skellam shares sized for k = 2 and mask below the encryption). Each row prints the bits chosen, the range,
the aggregate's rounding error against the noise std, the sensitivity inflation, the slots per 2048-bit
ciphertext and the bytes per value against float32 (4 bytes); what nearest rounding would be charged at
the same bits, `sqrt(d) g / 2`; and, as a baseline, packed Paillier rounded to the nearest step at 16 bits
over [-1, 1] (the round_scale bench's `paillier`) or the secure default's 20 bits over [-4, 4].

Then the cost of the hospital's randomised rounding at 1 M values (150 k with --quick) against rounding to
the nearest step in the same run (`packing.quantise`), as a ratio, with the load average.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from protocol.compression import plan_compression, spec_plan
from protocol.crypto import PaillierParams, packing
from protocol.messages import CentralDPConfig, Compression, FederationSpec
from protocol.rounding import conditional_round
from protocol.sensitivity import upload_sensitivity

SIZES = (150_000, 1_000_000)
COHORTS = (10, 100)
Z, C = 1.0, 1.0
FLOAT32 = 4.0


def ciphertext_bytes_per_value(he: PaillierParams) -> float:
    """One ciphertext (an element of Z_(n^2): 2 key_bits) carries `slots` values."""
    return 2 * he.key_bits / 8 / he.slots


def nearest_inflation(he: PaillierParams, size: int) -> float:
    """What nearest rounding adds to one upload's L2 sensitivity, over C."""
    return upload_sensitivity(he, clip_norm=C, size=size, ord=2) / C - 1.0


def planned(size: int, cohort: int, *, secure: bool) -> tuple[PaillierParams, float, float]:
    """The cloud's plan: its parameters, the rounding error over the noise std, the sensitivity inflation."""
    spec = FederationSpec(
        federation_id="bench",
        he=PaillierParams(max_clients=cohort, masking=secure),
        central_dp=CentralDPConfig(noise_multiplier=Z, clip_norm=C, distributed=secure),
        compression=Compression(),
    )
    spec = plan_compression(spec, layout_size=size)
    assert isinstance(spec.he, PaillierParams)
    plan = spec_plan(spec, layout_size=size)
    return spec.he, plan.error_ratio, plan.inflation


def table(console: Console) -> None:
    grid = Table(
        title=f"Quantisation bits for Gaussian noise z = {Z:g} on the sum, C = {C:g} (2048-bit Paillier)"
    )
    for name in (
        "d",
        "n",
        "setting",
        "bits",
        "clip",
        "err / noise std",
        "sens. +",
        "nearest: sens. +",
        "slots/ct",
        "B/value",
        "x f32",
        "baseline: B/value",
        "x f32",
        "sens. +",
    ):
        grid.add_column(name, justify="left" if name == "setting" else "right")
    for size in SIZES:
        for cohort in COHORTS:
            for secure in (False, True):
                he, error, inflation = planned(size, cohort, secure=secure)
                # The baseline: 16 bits over [-1, 1] (unmasked), or the secure default's 20 over [-4, 4].
                base = (
                    PaillierParams(quant_bits=20, clip=4.0, max_clients=cohort, masking=True)
                    if secure
                    else PaillierParams(quant_bits=16, clip=1.0, max_clients=cohort)
                )
                grid.add_row(
                    f"{size:,}",
                    str(cohort),
                    "shares + masks" if secure else "cloud noise",
                    str(he.quant_bits),
                    f"{he.clip:.3g}",
                    f"{error:.4f}",
                    f"{inflation:.3f}",
                    f"{nearest_inflation(he.model_copy(update={'rounding': 'nearest'}), size):.3f}",
                    str(he.slots),
                    f"{ciphertext_bytes_per_value(he):.2f}",
                    f"{ciphertext_bytes_per_value(he) / FLOAT32:.2f}",
                    f"{ciphertext_bytes_per_value(base):.2f} ({base.quant_bits} bits)",
                    f"{ciphertext_bytes_per_value(base) / FLOAT32:.2f}",
                    f"{nearest_inflation(base, size):.3f}",
                )
    console.print(grid)
    console.print(
        "err / noise std: the sum's rounding error bound sqrt(n / (1 - beta)) g / 2 over the noise std z C; "
        "sens. +: "
        "what rounding adds to one upload's L2 sensitivity, over C (randomised: the conditional bound; "
        "nearest: sqrt(d) g / 2, at the chosen bits and at the baseline's); baseline: packed Paillier "
        "rounded to the nearest step, 16 bits over [-1, 1] unmasked, the secure default's 20 over [-4, 4] "
        "masked; shares + masks: Skellam shares for k = 2 widen the range to "
        "C + 8 share std, masking adds headroom + 1 bits a slot."
    )


def timing(console: Console, size: int) -> None:
    he, _, _ = planned(size, 100, secure=False)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(size)
    x *= C / np.linalg.norm(x)
    bound = upload_sensitivity(he, clip_norm=C, size=size, ord=2)
    repeats = 5
    began = time.perf_counter()
    for _ in range(repeats):
        packing.quantise(x, he)
    nearest = (time.perf_counter() - began) / repeats
    began = time.perf_counter()
    for _ in range(repeats):
        conditional_round(x, step=he.step, bound=bound)  # from the OS, as a hospital draws
    randomised = (time.perf_counter() - began) / repeats
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    console.print(
        f"rounding {size:,} values: randomised {randomised * 1e3:.1f} ms, nearest {nearest * 1e3:.1f} ms, "
        f"ratio {randomised / nearest:.2f}; {size / randomised / 1e6:.0f} M values/s (load {load})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="time the rounding at 150 k values, not 1 M")
    args = parser.parse_args()
    console = Console(width=max(Console().width, 170))
    table(console)
    timing(console, SIZES[0] if args.quick else SIZES[1])


if __name__ == "__main__":
    main()
