"""Recompute every epsilon of a finished run's privacy ledger with accountants fedlora does not contain.

    .venv/bin/python bench/privacy_check.py runs/demo/report.json

Client-level: Google's `dp_accounting` (RDP, and PLD for the exact figure) over the realised noise
multipliers of the closed rounds, less the noise share a participating hospital knows (distributed noise);
against the decrypting cloud, over the shares of each round's smallest edge sum less the colluders'
(Gaussian shares). Example-level: Opacus' RDP accountant (what hospitals run)
over each hospital's histories of `(sigma, q, steps)` releases (its noisy count, DP-SGD, noisy held-out
losses; the larger of the training and held-out parts), with `dp_accounting`'s on integer orders beside it
for reference (its
fractional-order series for the subsampled Gaussian overstates at large sampling rates in 0.6.0, and integer
orders alone can only give a larger epsilon). Prints one row per figure with the relative difference and
exits 1 if any differs by more than 1% from the reference it is checked against.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import dp_accounting
from opacus.accountants import RDPAccountant
from rich.console import Console
from rich.table import Table

TOLERANCE = 0.01


def google_central(multipliers: list[float], mechanism: str, delta: float) -> float:
    accountant = dp_accounting.rdp.RdpAccountant()
    for z in multipliers:
        event = (
            dp_accounting.LaplaceDpEvent(z) if mechanism == "laplace" else dp_accounting.GaussianDpEvent(z)
        )
        accountant.compose(event)
    return float(accountant.get_epsilon(delta))


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


def public_multiplier(row: dict, colluding: int) -> float:
    """A round's multiplier against a participating hospital: the released noise less the shares it (or the
    colluders) know."""
    if not row.get("distributed"):
        return row["realised_noise_multiplier"]
    sensitivity = row["sensitivity"]
    released = row["realised_noise_multiplier"] * sensitivity
    known = min(max(1, colluding), row["shares_arrived"])
    share = row["share_std"] / row["clip_norm"]
    return max(released**2 - known * share**2, 0.0) ** 0.5 / sensitivity


def both_parts(row: dict, delta: float, accountant) -> float:
    """A hospital's epsilon: the larger of its training and held-out parts' (each example is in one)."""
    parts = [row["history"], row.get("held_out_history") or []]
    return max(accountant(part, delta) for part in parts if part)


def main(path: Path) -> int:
    report = json.loads(path.read_text())
    privacy = report["privacy"]
    delta = privacy["delta"]
    table = Table(title=f"privacy ledger of {path} against independent accountants (tolerance 1%)")
    for column in ("figure", "ledger", "dp_accounting", "Opacus", "PLD (exact)", "max rel. diff"):
        table.add_column(column, justify="right")
    worst = 0.0
    colluding = privacy.get("colluding_clients", 0)
    multipliers: list[float] = []
    for row in privacy["central_rounds"]:
        multipliers.append(public_multiplier(row, colluding))
        ledger = row["epsilon_after"]
        google = google_central(multipliers, row["mechanism"], delta)
        exact = google_central_exact(multipliers, delta) if row["mechanism"] == "gaussian" else None
        diff = abs(ledger - google) / google
        worst = max(worst, diff)
        table.add_row(
            f"client-level, round {row['round']}",
            f"{ledger:.3f}",
            f"{google:.3f}",
            "",
            f"{exact:.3f}" if exact is not None else "",
            f"{diff:.2%}",
        )
    # Against the decrypting cloud: the shares of the smallest edge sum, less the colluders'.
    seen: list[float] = []
    for row in privacy["central_rounds"]:
        ledger = row.get("decryptor_epsilon_after")
        if ledger is None or row["mechanism"] != "gaussian":
            break
        unknown = max(0, row["smallest_sum_shares"] - colluding)
        seen.append(unknown**0.5 * row["share_std"] / row["clip_norm"] / row["sensitivity"])
        google = google_central(seen, "gaussian", delta)
        diff = abs(ledger - google) / google
        worst = max(worst, diff)
        table.add_row(
            f"vs decrypting cloud, round {row['round']}",
            f"{ledger:.3f}",
            f"{google:.3f}",
            "",
            "",
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
                f"{opacus:.3f}",
                "",
                f"{diff:.2%}",
            )
    console = Console(width=max(Console().width, 110))
    console.print(table)
    console.print(
        "example-level rows are checked against Opacus; dp_accounting's figure there uses integer orders only "
        "(a reference, which can only be larger)"
    )
    verdict = "agree" if worst <= TOLERANCE else "DISAGREE"
    console.print(f"largest relative difference {worst:.3%}: the figures {verdict} within {TOLERANCE:.0%}")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/demo/report.json")))
