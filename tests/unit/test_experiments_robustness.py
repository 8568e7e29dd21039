"""The simulation experiments (`strategies`, `clair`, `secagg`): their grids, CLAIR's detection figures,
the writers, the configs' round trip, and one quick `secagg` run end to end on the real MiniLM."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from fedlora.cli import app
from fedlora.experiments import EXPERIMENTS
from fedlora.experiments.robustness import (
    ClairConfig,
    Detection,
    contaminated_count,
    detection,
    pooled,
)
from fedlora.experiments.robustness import summarise as clair_summary
from fedlora.experiments.secagg import SecAggConfig, run_secagg
from fedlora.experiments.secagg import summarise as secagg_summary
from fedlora.experiments.sim_report import markdown_table, plot_bars, plot_lines, write_csv
from fedlora.experiments.sim_runs import SimSettings
from fedlora.experiments.strategies import StrategiesConfig
from protocol.crypto import generate_scheme
from protocol.crypto.params import CKKSParams, PaillierParams, PlainParams

PNG = b"\x89PNG\r\n\x1a\n"

# --- the grids --------------------------------------------------------------------------------------


def test_strategies_grid_is_every_strategy_at_3_and_10_hospitals(tmp_path):
    # Prepare: the list, written out
    expected = {(s, n) for s in ("fedrot", "fedit", "ffa") for n in (3, 10)}
    # Execute
    grid = StrategiesConfig().grid()
    # Assert
    assert {(cell["strategy"], cell["hospitals"]) for _, cell in grid} == expected
    assert len(grid) == 6
    assert {cell["scheme"] for _, cell in grid} == {"ckks"}
    for _, cell in grid:
        SimSettings().simulation(tmp_path, **cell)  # a federation the services would accept


def test_clair_grid_is_20_and_30_percent_flipped_or_random_with_one_row_per_hospital(tmp_path):
    # Prepare: 10 hospitals, 20% and 30% contaminated are 2 and 3; CLAIR and the plain FFA mean per cell
    expected = {
        (strategy, kind, bad)
        for strategy in ("clair", "ffa")
        for kind in ("flip", "random")
        for bad in (2, 3)
    }
    # Execute
    grid = ClairConfig().grid()
    # Assert
    assert {(c["strategy"], c["contamination"], c["contaminated"]) for _, c in grid} == expected
    for _, cell in grid:
        assert cell["edges"] == cell["hospitals"] == 10
        assert cell["scheme"] == "none"
        SimSettings().simulation(tmp_path, **cell)


def test_clair_grid_with_encryption_is_refused_by_the_spec_validator(tmp_path):
    (_, cell), *_ = ClairConfig().grid()
    with pytest.raises(ValueError, match=r"he\.kind"):
        SimSettings().simulation(tmp_path, **{**cell, "scheme": "ckks"})


def test_secagg_grid_changes_only_the_scheme():
    grid = SecAggConfig().grid()

    assert [cell["scheme"] for _, cell in grid] == ["none", "ckks", "paillier"]
    others = [{k: v for k, v in cell.items() if k != "scheme"} for _, cell in grid]
    assert all(o == others[0] for o in others)
    assert others[0]["clip_norm"] == 1.0  # the services' default, recorded in config.json


def test_an_old_secagg_config_clips_only_the_paillier_cell(tmp_path, caplog):
    # Prepare: config.json's "config" as written before `clip_norm` existed (those runs clipped nothing)
    old = SecAggConfig.quick().to_dict()
    del old["clip_norm"]
    # Execute
    config = SecAggConfig.from_dict(old)
    with caplog.at_level("WARNING", logger="fedlora.experiments.secagg"):
        cells = dict(config.grid())
    # Assert: none and ckks rerun unclipped, Paillier clips to 1.0 (it cannot run without), and says so
    assert config.clip_norm is None
    assert {scheme: cell["clip_norm"] for scheme, cell in cells.items()} == {
        "none": None,
        "ckks": None,
        "paillier": 1.0,
    }
    assert "cannot run unclipped" in caplog.text
    for scheme, cell in cells.items():
        assert config.simulation.simulation(tmp_path / scheme, **cell).clip_norm == cell["clip_norm"]


def test_a_paillier_strategies_cell_clips_to_the_services_default(tmp_path):
    for _, cell in StrategiesConfig(scheme="paillier").grid():
        assert SimSettings().simulation(tmp_path, **cell).clip_norm == 1.0
    for _, cell in StrategiesConfig(scheme="ckks").grid():
        assert SimSettings().simulation(tmp_path, **cell).clip_norm is None


def test_contaminated_count_rounds_a_fraction_of_the_hospitals():
    assert contaminated_count(10, 0.2) == 2
    assert contaminated_count(10, 0.3) == 3
    assert contaminated_count(3, 0.2) == 1  # 0.6 rounds to one
    assert contaminated_count(4, 0.1) == 1  # never none


# --- CLAIR's detection ---------------------------------------------------------------------------------


def test_precision_and_recall_of_a_flag_set():
    # flagged {a, b, c}, contaminated {a, d}: a is right, b and c are false alarms, d is missed
    d = detection(["a", "b", "c"], ["a", "d"])

    assert (d.true_positives, d.false_positives, d.false_negatives) == (1, 2, 1)
    assert d.precision == pytest.approx(1 / 3)
    assert d.recall == pytest.approx(1 / 2)


def test_nothing_flagged_has_no_precision_and_nothing_contaminated_no_recall():
    silent = detection([], ["a", "b"])
    clean = detection(["a"], [])

    assert silent.precision is None and silent.recall == 0.0
    assert clean.precision == 0.0 and clean.recall is None


def test_pooled_detection_adds_the_rounds_counts():
    # round 1: flagged {a}, contaminated {a, b} -> tp 1, fn 1; round 2: flagged {a, b, c} -> tp 2, fp 1
    rounds = [detection(["a"], ["a", "b"]), detection(["a", "b", "c"], ["a", "b"])]

    total = pooled(rounds)

    assert total == Detection(3, 1, 1)
    assert total.precision == pytest.approx(3 / 4)
    assert total.recall == pytest.approx(3 / 4)


def test_clair_summary_pools_flags_and_averages_local_accuracy():
    row = dict(contamination="flip", fraction=0.2, contaminated=["h-a", "h-b"])
    rows = [
        {**row, "method": "clair", "round": 1, "accuracy": 0.6, "flagged": ["h-a"], **_counts(1, 0, 1)},
        {
            **row,
            "method": "clair",
            "round": 2,
            "accuracy": 0.7,
            "flagged": ["h-a", "h-c"],
            **_counts(1, 1, 1),
        },
        {**row, "method": "fedavg", "round": 1, "accuracy": 0.5, "flagged": [], **_counts(0, 0, 2)},
        {**row, "method": "fedavg", "round": 2, "accuracy": 0.55, "flagged": [], **_counts(0, 0, 2)},
    ]
    local = [{"fraction": 0.2, "accuracy": a} for a in (0.5, 0.6, 0.7)]

    (summary,) = clair_summary(rows, local)

    assert summary["precision"] == pytest.approx(2 / 3)  # tp 2, fp 1
    assert summary["recall"] == pytest.approx(2 / 4)  # tp 2, fn 2
    assert summary["clair_accuracy"] == 0.7 and summary["fedavg_accuracy"] == 0.55
    assert summary["local_accuracy"] == pytest.approx(0.6)
    assert summary["flagged_per_round"] == "h-a / h-a, h-c"


def _counts(tp, fp, fn):
    return {"true_positives": tp, "false_positives": fp, "false_negatives": fn}


# --- the writers ---------------------------------------------------------------------------------------


def test_csv_holds_every_key_of_every_row(tmp_path):
    rows = [{"a": 1, "b": 0.5}, {"a": 2, "c": ["x", "y"], "b": None}]

    path = write_csv(rows, tmp_path / "rows.csv")

    with path.open() as handle:
        read = list(csv.DictReader(handle))
    assert read == [{"a": "1", "b": "0.5", "c": ""}, {"a": "2", "b": "", "c": "x;y"}]


def test_markdown_table_formats_numbers_none_and_lists():
    rows = [{"name": "ckks", "bytes": 12345, "s": 0.12345, "tiny": 1e-7, "flags": ["a", "b"], "p": None}]
    columns = [("name", "scheme"), ("bytes", "B"), ("s", "s"), ("tiny", "err"), ("flags", "f"), ("p", "p")]

    table = markdown_table(rows, columns)

    assert table.splitlines() == [
        "| scheme | B | s | err | f | p |",
        "| --- | --- | --- | --- | --- | --- |",
        "| ckks | 12,345 | 0.123 | 1.00e-07 | a, b | — |",
    ]


def test_plots_are_png_files(tmp_path):
    lines = plot_lines({"x": [(1, 0.5), (2, 0.6)]}, tmp_path / "l.png", title="t", xlabel="r", ylabel="a")
    bars = plot_bars(
        ["a", "b"], {"s": [1.0, 2.0], "t": [0.5, 1.5]}, tmp_path / "b.png", title="t", ylabel="y"
    )

    assert lines.read_bytes()[:8] == PNG and bars.read_bytes()[:8] == PNG


def test_secagg_summary_means_rounds_and_divides_by_plaintext_bytes():
    def row(scheme, round_, size, seconds):
        return {
            "scheme": scheme,
            "round": round_,
            "accuracy": 0.5 + round_ / 10,
            "upload_bytes_per_client": size,
            "adapter_size": 100,
            "encrypt_s_per_client": seconds,
            "add_s": seconds,
            "decrypt_s": seconds,
            "crypto_s": 3 * seconds,
            "round_s": 10 * seconds,
            "he_max_abs_error": seconds / 100,
        }

    rows = [
        row("none", 1, 800, 0.0),
        row("none", 2, 800, 0.0),
        row("ckks", 1, 4000, 1.0),
        row("ckks", 2, 4000, 3.0),
    ]

    none, ckks = secagg_summary(rows)

    assert none["bytes_vs_plain"] == 1.0 and none["bytes_per_value"] == 8.0
    assert ckks["bytes_vs_plain"] == 5.0 and ckks["bytes_per_value"] == 40.0
    assert ckks["encrypt_s_per_client"] == pytest.approx(2.0)  # mean of 1 and 3
    assert ckks["round_s"] == pytest.approx(20.0)
    assert ckks["he_max_abs_error"] == pytest.approx(0.03)  # the worst round
    assert ckks["final_accuracy"] == pytest.approx(0.7)


# --- configs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        SecAggConfig(),
        SecAggConfig.quick(),
        StrategiesConfig(),
        StrategiesConfig.quick(),
        ClairConfig(),
        ClairConfig.quick(),
    ],
)
def test_config_round_trips_through_json(config):
    assert type(config).from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_configs_refuse_bad_values():
    with pytest.raises(ValueError, match="schemes"):
        SecAggConfig(schemes=("rsa",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fractions"):
        ClairConfig(fractions=(0.6,))
    with pytest.raises(ValueError, match="strategies"):
        StrategiesConfig(strategies=("clair",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps"):
        SimSettings(steps=0)


def test_the_experiments_are_registered_and_listed():
    result = CliRunner().invoke(app, ["experiment", "--list"])

    assert result.exit_code == 0
    assert {"strategies", "clair", "secagg"} <= EXPERIMENTS.keys()
    for name in ("strategies", "clair", "secagg"):
        assert name in result.output


# --- secagg end to end ---------------------------------------------------------------------------------


def _ciphertext_bytes(params, length: int) -> int:
    scheme = generate_scheme(params)
    return len(scheme.serialize(scheme.encrypt(np.zeros(length))))


@pytest.mark.slow
def test_quick_secagg_writes_its_files_and_measures_each_schemes_ciphertext(tmp_path):
    config = SecAggConfig.quick()

    result = run_secagg(config, tmp_path)

    for name in ("results.md", "results.csv", "summary.csv", "config.json"):
        assert (tmp_path / name).stat().st_size > 0
    for name in ("crypto_seconds.png", "upload_bytes.png", "accuracy.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG
    recorded = json.loads((tmp_path / "config.json").read_text())
    assert SecAggConfig.from_dict(recorded["config"]) == config
    assert set(recorded["simulations"]) == {"none", "ckks", "paillier"}
    assert all(sim["seed"] == config.simulation.seed for sim in recorded["simulations"].values())
    with (tmp_path / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["scheme"] for r in rows] == ["none", "ckks", "paillier"]  # one round each
    size = {r["scheme"]: int(r["upload_bytes_per_client"]) for r in rows}
    length = int(rows[0]["adapter_size"])
    # The relation the schemes' own ciphertexts of this length give, not a hardcoded one.
    paillier, ckks = _ciphertext_bytes(PaillierParams(), length), _ciphertext_bytes(CKKSParams(), length)
    assert (size["paillier"] > size["ckks"]) == (paillier > ckks)
    assert size["paillier"] == pytest.approx(paillier, rel=0.05)
    assert size["ckks"] == pytest.approx(ckks, rel=0.05)
    # Plaintext is no floor: packed Paillier's 16-bit slots can undercut float64 values.
    assert size["none"] == pytest.approx(_ciphertext_bytes(PlainParams(), length), rel=0.05)
    assert "| paillier |" in result.files["markdown"].read_text()
