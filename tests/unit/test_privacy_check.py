"""`bench/privacy_check.py` recomputes a finished run's client-level figures with accountants fedlora does not
contain: Skellam rounds against the Skellam RDP bound it writes itself, Gaussian rounds against
`dp_accounting`; and it says DISAGREE when a figure is more than 1% off.

The reports are the cloud's own (`cloud_server.privacy.report` over a ledger of closed rounds), as the demo
writes them under `privacy` in its report.json.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from cloud_server.privacy import report
from protocol.crypto import CKKSParams, PaillierParams
from protocol.messages import CentralDPConfig, FederationSpec
from tests.ledger_rounds import SIZE, run_rounds

BENCH = Path(__file__).resolve().parents[2] / "bench" / "privacy_check.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("privacy_check", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def demo_report(
    tmp_path: Path, he: PaillierParams | CKKSParams, *, z: float = 0.25, tamper: float = 1.0
) -> Path:
    """The demo's federation on `he`: `z` (the demo's 0.25) in four shares over three rounds, k = 2 per edge;
    `tamper` scales the last round's public epsilon."""
    dp = CentralDPConfig(noise_multiplier=z, clip_norm=1.0, distributed=True, delta=1e-5)
    spec = FederationSpec(federation_id="f", rounds=3, he=he, central_dp=dp, min_clients_per_edge=2)
    privacy = report(spec, run_rounds(spec, shares=4, rounds=3, planned=4), layout_size=SIZE, rounds_closed=3)
    body = privacy.model_dump(mode="json")
    body["central_rounds"][-1]["epsilon_after"] *= tamper
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"privacy": body}))
    return path


def rows(out: str, label: str) -> list[list[str]]:
    """The cells of the table rows whose figure starts with `label`."""
    cells = [[cell.strip() for cell in line.split("│")[1:-1]] for line in out.splitlines() if "│" in line]
    return [row for row in cells if row[0].startswith(label)]


def test_the_skellam_bound_is_the_papers_formula_at_integer_orders(bench: ModuleType) -> None:
    # eps(a) = a D2^2 / (2v) + min(((2a - 1) D2^2 + 6 D1) / (4 v^2), 3 D1 / (2v)) (Agarwal et al. 2021):
    # v = 2, D1 = D2 = 1: a / 4 + min((2a + 5) / 16, 3 / 4), so 1.0625 at a = 2 and 1.4375 at a = 3;
    # v = 1/2: 2 + min(9, 3) = 5 at a = 2 (the second term of the minimum).
    wide = bench.skellam_rdp(variance=2.0, l1=1.0, l2=1.0)
    narrow = bench.skellam_rdp(variance=0.5, l1=1.0, l2=1.0)

    assert bench.INTEGER_ORDERS[:2].tolist() == [2.0, 3.0]
    assert wide[:2] == pytest.approx([1.0625, 1.4375])
    assert narrow[0] == pytest.approx(5.0)
    assert np.all(np.diff(wide) > 0)


def test_skellam_rounds_are_checked_against_the_skellam_bound(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: the demo's default federation, packed Paillier with Skellam shares on its lattice.
    path = demo_report(tmp_path, PaillierParams(clip=4.0, quant_bits=20))

    # Execute
    code = bench.main(path)

    # Assert: every client-level figure agrees with the Skellam bound; dp_accounting's Gaussian at the same
    # variance (over all orders, fractional ones included) is below it, by more than the tolerance after
    # three rounds, so checking a Skellam round against it would say DISAGREE.
    out = capsys.readouterr().out
    assert code == 0 and "agree within 1%" in out
    public, cloud = rows(out, "client-level"), rows(out, "vs decrypting cloud")
    assert len(public) == 3 and len(cloud) == 3
    for _, ledger, google, skellam, _, pld, diff in public + cloud:
        assert float(ledger) == pytest.approx(float(skellam), rel=0.01) and float(diff.rstrip("%")) <= 1.0
        assert float(google) <= float(skellam) and pld == ""
    assert float(public[-1][2]) < float(public[-1][1]) / 1.01


def test_on_a_coarse_lattice_the_bench_counts_the_price_of_integer_noise(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: 8 bits, a step of 4 / 127: the noise is a few steps, so the Skellam bound's second term
    # matters even in round 0, where the integer orders alone cost the demo's lattice nothing.
    path = demo_report(tmp_path, PaillierParams(clip=4.0, quant_bits=8))

    # Execute
    code = bench.main(path)

    # Assert: the ledger and the bench agree on it, well above the Gaussian at the same variance.
    out = capsys.readouterr().out
    assert code == 0
    _, ledger, google, skellam, *_ = rows(out, "client-level, round 0")[0]
    assert float(ledger) == pytest.approx(float(skellam), rel=0.01)
    assert float(ledger) > 1.1 * float(google)


def test_gaussian_rounds_are_still_checked_against_dp_accounting(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: the same federation under CKKS, whose shares are Gaussian, at z = 1 (PLD is slow at 0.25).
    path = demo_report(tmp_path, CKKSParams(), z=1.0)

    # Execute
    code = bench.main(path)

    # Assert: no Skellam column; the public figures agree with dp_accounting's RDP, PLD beside them.
    out = capsys.readouterr().out
    assert code == 0 and "agree within 1%" in out
    public = rows(out, "client-level")
    assert len(public) == 3 and len(rows(out, "vs decrypting cloud")) == 3
    for _, ledger, google, skellam, _, pld, _ in public:
        assert float(ledger) == pytest.approx(float(google), rel=0.01)
        assert skellam == "" and float(pld) < float(google)


@pytest.mark.parametrize(
    ("he", "z"),
    [(PaillierParams(clip=4.0, quant_bits=20), 0.25), (CKKSParams(), 1.0)],
    ids=["skellam", "gaussian"],
)
def test_a_figure_two_percent_off_is_a_disagreement(
    bench: ModuleType,
    he: PaillierParams | CKKSParams,
    z: float,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = demo_report(tmp_path, he, z=z, tamper=1.02)

    code = bench.main(path)

    assert code == 1 and "DISAGREE" in capsys.readouterr().out
