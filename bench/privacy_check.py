"""Recompute every epsilon of a finished run's privacy ledger with accountants fedlora does not contain.

    .venv/bin/python bench/privacy_check.py runs/demo/report.json

Client-level: Google's `dp_accounting` (RDP, and PLD for the exact figure) over the realised noise
multipliers of the closed rounds, less the noise share a participating hospital knows (distributed noise);
against the decrypting cloud, over the shares of each round's smallest edge sum less the colluders'.
Rounds whose noise is Skellam on the fixed-point lattice (distributed shares under packed Paillier) are
checked against the Skellam mechanism's RDP bound, written here with numpy from the paper (Agarwal, Kairouz,
Liu 2021) at integer orders and converted by `dp_accounting`; its Gaussian figure at the same variance
stays beside it as a lower reference (the bound adds the price of integer noise to the Gaussian's RDP). Example-level: Opacus' RDP accountant (what hospitals run)
over each hospital's histories of `(sigma, q, steps)` releases (its noisy count, DP-SGD, noisy held-out
losses; the larger of the training and held-out parts), with `dp_accounting`'s on integer orders beside it
for reference (its
fractional-order series for the subsampled Gaussian overstates at large sampling rates in 0.6.0, and integer
orders alone can only give a larger epsilon). Prints one row per figure with the relative difference and
exits 1 if any differs by more than 1% from the reference it is checked against.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import dp_accounting
import numpy as np
from opacus.accountants import RDPAccountant
from rich.console import Console
from rich.table import Table

TOLERANCE = 0.01
# The Skellam bound holds at integer orders only; every integer up to 1024 (the ledger's grid reaches there).
INTEGER_ORDERS = np.arange(2.0, 1025.0)
COLUMNS = ("figure", "ledger", "dp_accounting", "Skellam RDP", "Opacus", "PLD (exact)", "max rel. diff")


def google_central(multipliers: list[float], mechanism: str, delta: float) -> float:
    accountant = dp_accounting.rdp.RdpAccountant()
    for z in multipliers:
        event = (
            dp_accounting.LaplaceDpEvent(z) if mechanism == "laplace" else dp_accounting.GaussianDpEvent(z)
        )
        accountant.compose(event)
    return float(accountant.get_epsilon(delta))


def skellam_rdp(*, variance: float, l1: float, l2: float) -> np.ndarray:
    """RDP at INTEGER_ORDERS of Skellam noise of `variance` per coordinate on a sum that one party moves by an
    integer vector of L1 norm `l1` and L2 norm `l2`, everything in lattice steps.

    Agarwal, Kairouz, Liu 2021, "The Skellam Mechanism for Differentially Private Federated Learning"
    (arXiv:2110.04995), Section 3, with the variance v = 2 lam as the authors' accounting code writes it
    (google-research/federated, distributed_dp/accounting_utils.py `_skellam_rdp`):
    `eps(a) = a D2^2 / (2v) + min(((2a - 1) D2^2 + 6 D1) / (4 v^2), 3 D1 / (2v))`.
    """
    a = INTEGER_ORDERS
    discretisation = np.minimum(((2 * a - 1) * l2**2 + 6 * l1) / (4 * variance**2), 3 * l1 / (2 * variance))
    return a * l2**2 / (2 * variance) + discretisation


def skellam_round(row: dict, noise: float) -> np.ndarray:
    """The Skellam RDP of a round whose noise unknown to the reader has std `noise` clip norms: the report
    gives the lattice step and the coordinates of one upload, whose quantised difference is an integer vector,
    so its L1 norm is at most the square of its L2 norm and at most sqrt(coordinates) times it."""
    steps = row["clip_norm"] / row["lattice_step"]  # one clip norm, in lattice steps
    l2 = row["sensitivity"] * steps
    l1 = min(l2 * l2, math.sqrt(row["coordinates"]) * l2)
    return skellam_rdp(variance=(noise * steps) ** 2, l1=l1, l2=l2)


def rdp_epsilon(rdp: np.ndarray, delta: float) -> float:
    """`dp_accounting`'s conversion of an RDP curve at INTEGER_ORDERS to epsilon at `delta`."""
    return float(dp_accounting.rdp.rdp_privacy_accountant.compute_epsilon(INTEGER_ORDERS, rdp, delta)[0])


def google_central_exact(multipliers: list[float], delta: float) -> float:
    accountant = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-4)
    for z in multipliers:
        accountant.compose(dp_accounting.GaussianDpEvent(z))
    return float(accountant.get_epsilon(delta))


History = list[tuple[float, float, int]]


def opacus_local(history: History, delta: float) -> float:
    accountant = RDPAccountant()
    accountant.history = [tuple(entry) for entry in history if entry[2] > 0]
    return float(accountant.get_epsilon(delta=delta)) if accountant.history else 0.0


def google_local(history: History, delta: float) -> float:
    accountant = dp_accounting.rdp.RdpAccountant(orders=[float(a) for a in range(2, 257)])
    for sigma, rate, steps in history:
        event: dp_accounting.DpEvent = dp_accounting.GaussianDpEvent(sigma)
        if rate < 1.0:
            event = dp_accounting.PoissonSampledDpEvent(rate, event)
        accountant.compose(dp_accounting.SelfComposedDpEvent(event, steps))
    return float(accountant.get_epsilon(delta))


def public_noise(row: dict, colluding: int) -> float:
    """In clip norms, a round's noise std against a participating hospital: the released noise less the
    shares it (or the colluders) know."""
    released = row["realised_noise_multiplier"] * row["sensitivity"]
    if not row.get("distributed"):
        return released
    known = min(max(1, colluding), row["shares_arrived"])
    share = row["share_std"] / row["clip_norm"]
    return max(released**2 - known * share**2, 0.0) ** 0.5


def decryptor_noise(row: dict, colluding: int) -> float:
    """In clip norms, a round's noise std against the decrypting cloud: the shares of the smallest edge sum,
    less the colluders'."""
    unknown = max(0, row["smallest_sum_shares"] - colluding)
    return unknown**0.5 * row["share_std"] / row["clip_norm"]


Row = tuple[str, float, float, float | None, float | None, float]


def client_level(
    rows: list[dict], *, noise: Callable[[dict], float], ledger_key: str, delta: float, exact: bool
) -> Iterator[Row]:
    """One column of the ledger, round by round: (round, ledger, dp_accounting, Skellam bound, PLD, relative
    difference). A Gaussian or Laplace round is checked against `dp_accounting` at the unknown noise over the
    sensitivity; a Skellam round against the Skellam bound (a federation's rounds share one distribution: its
    spec fixes the scheme and whether noise is distributed), with dp_accounting's Gaussian at the same
    variance beside it. Stops at the first round the column has no figure for."""
    multipliers: list[float] = []
    curve = np.zeros_like(INTEGER_ORDERS)
    for row in rows:
        ledger = row.get(ledger_key)
        if ledger is None:
            return
        unknown = noise(row)
        multipliers.append(unknown / row["sensitivity"])
        google = google_central(multipliers, row["mechanism"], delta)
        skellam = None
        if row.get("noise_distribution") == "skellam":
            curve = curve + skellam_round(row, unknown)
            skellam = rdp_epsilon(curve, delta)
        pld = google_central_exact(multipliers, delta) if exact and skellam is None else None
        reference = google if skellam is None else skellam
        yield row["round"], ledger, google, skellam, pld, abs(ledger - reference) / reference


def both_parts(row: dict, delta: float, accountant) -> float:
    """A hospital's epsilon: the larger of its training and held-out parts' (each example is in one)."""
    parts = [row["history"], row.get("held_out_history") or []]
    return max(accountant(part, delta) for part in parts if part)


def main(path: Path) -> int:
    report = json.loads(path.read_text())
    privacy = report["privacy"]
    delta = privacy["delta"]
    table = Table(title=f"privacy ledger of {path} against independent accountants (tolerance 1%)")
    for column in COLUMNS:
        table.add_column(column, justify="right")
    worst = 0.0
    colluding = privacy.get("colluding_clients", 0)
    released = [row for row in privacy["central_rounds"] if row.get("released", True)]
    columns = (
        ("client-level", released, lambda row: public_noise(row, colluding), "epsilon_after", True),
        # Against the decrypting cloud: every round it held sums of, released or not.
        (
            "vs decrypting cloud",
            privacy["central_rounds"],
            lambda row: decryptor_noise(row, colluding),
            "decryptor_epsilon_after",
            False,
        ),
    )
    for label, rows, noise, key, exact in columns:
        for round_, ledger, google, skellam, pld, diff in client_level(
            rows, noise=noise, ledger_key=key, delta=delta, exact=exact
        ):
            worst = max(worst, diff)
            table.add_row(
                f"{label}, round {round_}",
                f"{ledger:.3f}",
                f"{google:.3f}",
                f"{skellam:.3f}" if skellam is not None else "",
                "",
                f"{pld:.3f}" if pld is not None else "",
                f"{diff:.2%}",
            )
    for client in privacy["clients"]:
        for row in client["rounds"]:
            local_delta = client.get("local_delta") or delta
            ledger = row["local_epsilon"]
            opacus = both_parts(row, local_delta, opacus_local)
            google = both_parts(row, local_delta, google_local)
            diff = abs(ledger - opacus) / opacus
            worst = max(worst, diff)
            table.add_row(
                f"{client['client_id']}, round {row['round']}",
                f"{ledger:.3f}",
                f"{google:.3f}",
                "",
                f"{opacus:.3f}",
                "",
                f"{diff:.2%}",
            )
    console = Console(width=max(Console().width, 120))
    console.print(table)
    console.print(
        "client-level rows with Skellam noise are checked against the Skellam RDP bound (integer orders); "
        "dp_accounting's Gaussian at the same variance there is a reference, which can only be smaller"
    )
    console.print(
        "example-level rows are checked against Opacus; dp_accounting's figure there uses integer orders only "
        "(a reference, which can only be larger)"
    )
    verdict = "agree" if worst <= TOLERANCE else "DISAGREE"
    console.print(f"largest relative difference {worst:.3%}: the figures {verdict} within {TOLERANCE:.0%}")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/demo/report.json")))
