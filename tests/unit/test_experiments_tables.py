"""The FFA-LoRA paper's tables as experiments: the grid each expands to, the writers, the config's
round trip, and one quick run of `privacy` end to end with the real MiniLM."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from client_agent.recipe import HEAD_LEARNING_RATE
from fedlora.cli import app
from fedlora.experiments import EXPERIMENTS
from fedlora.experiments.paper_tables import (
    EXPERIMENT_NAMES,
    FEDIT_LEARNING_RATE,
    Row,
    TableConfig,
    TableConfigError,
    expand,
    simulation_config,
)
from fedlora.experiments.paper_tables_report import (
    CSV_COLUMNS,
    plot_bars,
    table_markdown,
    write_config,
    write_csv,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_config(path: Path) -> TableConfig:
    """The configuration a run wrote into its `config.json`."""
    return TableConfig.from_dict(json.loads(path.read_text())["config"])


def _grid(config: TableConfig) -> list[tuple[str, float | None, str, int, float, str]]:
    """(setting, epsilon, partition, rank, alpha, method) of every run the config makes."""
    return [
        (s.label, s.epsilon, s.partition, s.rank, s.alpha, sim.strategy)
        for s in expand(config)
        for sim in (simulation_config(config, s, m, seed=0, out_dir=Path("x")) for m in config.methods)
    ]


def test_every_table_is_registered() -> None:
    assert set(EXPERIMENT_NAMES) == {"privacy", "heterogeneity", "rank", "alpha"}
    assert set(EXPERIMENT_NAMES) <= EXPERIMENTS.keys()


def test_privacy_sweeps_epsilon_1_3_6_and_no_dp_for_both_methods() -> None:
    config = TableConfig.default("privacy")
    expected = [
        (label, eps, "mild", 8, 8.0, method)
        for label, eps in (("eps=1", 1.0), ("eps=3", 3.0), ("eps=6", 6.0), ("no DP", None))
        for method in ("ffa", "fedit")
    ]
    assert _grid(config) == expected


def test_heterogeneity_sweeps_iid_mild_severe_at_one_epsilon() -> None:
    config = TableConfig.default("heterogeneity")
    expected = [
        (split, split, 6.0, method) for split in ("iid", "mild", "severe") for method in ("ffa", "fedit")
    ]
    assert [(g[0], g[2], g[1], g[5]) for g in _grid(config)] == expected


def test_rank_sweeps_2_4_8_16_at_epsilon_1() -> None:
    config = TableConfig.default("rank")
    expected = [(f"r={r}", 1.0, r, method) for r in (2, 4, 8, 16) for method in ("ffa", "fedit")]
    assert [(g[0], g[1], g[3], g[5]) for g in _grid(config)] == expected


def test_alpha_scales_the_learning_rate_so_lr_times_alpha_is_fixed() -> None:
    config = TableConfig.default("alpha")  # base: alpha 8, learning rate 2, so lr * alpha = 16
    settings = expand(config)
    assert [s.alpha for s in settings] == [2.0, 8.0, 32.0, 128.0]
    assert [s.learning_rate for s in settings] == pytest.approx([8.0, 2.0, 0.5, 0.125])
    sims = [simulation_config(config, s, "ffa", seed=0, out_dir=Path("x")) for s in settings]
    assert [(sim.alpha, sim.learning_rate) for sim in sims] == [
        (2.0, 8.0),
        (8.0, 2.0),
        (32.0, 0.5),
        (128.0, 0.125),
    ]
    # LoRA's own rate (0.5 at alpha 8) keeps its `lr * alpha` = 4 fixed the same way.
    sims = [simulation_config(config, s, "fedit", seed=0, out_dir=Path("x")) for s in settings]
    assert [(sim.alpha, sim.learning_rate) for sim in sims] == [
        (2.0, 2.0),
        (8.0, 0.5),
        (32.0, 0.125),
        (128.0, 0.03125),
    ]


@pytest.mark.parametrize("experiment", ["privacy", "heterogeneity", "rank"])
def test_lora_trains_at_its_own_rate_and_ffa_at_the_tables(experiment: str) -> None:
    config = TableConfig.default(experiment)  # type: ignore[arg-type]
    rates = {
        (m, simulation_config(config, s, m, seed=0, out_dir=Path("x")).learning_rate)
        for s in expand(config)
        for m in config.methods
    }
    assert rates == {("ffa", 2.0), ("fedit", FEDIT_LEARNING_RATE)}
    assert FEDIT_LEARNING_RATE == 0.5
    same = replace(config, fedit_learning_rate=None)
    assert {
        simulation_config(same, s, "fedit", seed=0, out_dir=Path("x")).learning_rate for s in expand(same)
    } == {2.0}


@pytest.mark.parametrize("value", [0.0, -1.0, 1001.0])
def test_a_bad_lora_rate_names_the_field(value: float) -> None:
    with pytest.raises(TableConfigError, match=f"`fedit_learning_rate`.*{value}"):
        TableConfig("privacy", fedit_learning_rate=value)


def test_every_run_shares_the_base_federation() -> None:
    config = TableConfig.default("privacy")
    sims = [
        simulation_config(config, s, m, seed=seed, out_dir=Path("x"))
        for s in expand(config)
        for m in config.methods
        for seed in config.seeds
    ]
    assert {(sim.hospitals, sim.rounds, sim.max_seq_length, sim.layers_to_transform) for sim in sims} == {
        (3, 2, 32, (4, 5))
    }
    assert config.seeds == (0, 1, 2)
    assert sorted({sim.seed for sim in sims}) == [0, 1, 2]
    assert {sim.clip_norm for sim in sims} == {None}  # CKKS: the tables clip nothing


@pytest.mark.parametrize("experiment", ["privacy", "heterogeneity", "rank", "alpha"])
def test_a_paillier_table_clips_to_the_services_default(experiment: str) -> None:
    # Packed Paillier's fixed-point range holds only clipped deltas: every run clips to 1.0, as
    # `fedlora simulate --scheme paillier` does.
    config = replace(TableConfig.default(experiment), scheme="paillier")  # type: ignore[arg-type]
    sims = [
        simulation_config(config, s, m, seed=0, out_dir=Path("x"))
        for s in expand(config)
        for m in config.methods
    ]
    assert {(sim.scheme, sim.clip_norm) for sim in sims} == {("paillier", 1.0)}


def test_a_bad_config_names_the_field() -> None:
    with pytest.raises(TableConfigError, match="`methods`"):
        TableConfig("privacy", methods=("fedavg",))  # type: ignore[arg-type]
    with pytest.raises(TableConfigError, match="`epsilons`"):
        TableConfig("privacy", epsilons=(0.0,))
    with pytest.raises(TableConfigError, match="axis"):
        TableConfig("rank", ranks=())
    with pytest.raises(TableConfigError, match="`seeds`"):
        TableConfig("rank", seeds=(1, 1))
    with pytest.raises(TableConfigError, match="`seeds`"):
        TableConfig("rank", seeds=())


@pytest.mark.parametrize("name", EXPERIMENT_NAMES)
@pytest.mark.parametrize("quick", [False, True])
def test_config_json_round_trips(name: str, quick: bool, tmp_path: Path) -> None:
    config = TableConfig.quick(name) if quick else TableConfig.default(name)  # type: ignore[arg-type]
    path = write_config(config, tmp_path / "config.json", hospitals={"eps=1": {"hospital-a": 20}})
    assert read_config(path) == config
    assert json.loads(path.read_text())["experiment"] == name


def test_quick_is_small_and_otherwise_the_full_run() -> None:
    full, quick = TableConfig.default("privacy"), TableConfig.quick("privacy")
    assert (quick.rounds, quick.steps, quick.max_train_examples, quick.seeds) == (1, 2, 60, (0,))
    assert expand(quick) == expand(full)
    assert replace(quick, rounds=2, steps=8, batch_size=64, max_train_examples=1500) == replace(
        full, max_test_examples=30, scheme="none", seeds=(0,)
    )


def test_a_config_written_with_one_seed_reads_back_as_that_seed(tmp_path: Path) -> None:
    path = write_config(TableConfig.default("rank"), tmp_path / "config.json", hospitals={})
    written = json.loads(path.read_text())
    del written["config"]["seeds"]
    written["config"]["seed"] = 4
    path.write_text(json.dumps(written))
    assert read_config(path) == replace(TableConfig.default("rank"), seeds=(4,))


def test_a_config_written_before_the_head_had_its_own_rate_reruns_the_old_recipe(tmp_path: Path) -> None:
    """A table's config.json from before `head_learning_rate` ran the head at the adapter's rate, and a rerun
    from it must too (None), not the new default."""
    path = write_config(TableConfig.default("privacy"), tmp_path / "config.json", hospitals={})
    written = json.loads(path.read_text())
    assert written["config"]["head_learning_rate"] == HEAD_LEARNING_RATE
    del written["config"]["head_learning_rate"]
    path.write_text(json.dumps(written))
    assert read_config(path) == replace(TableConfig.default("privacy"), head_learning_rate=None)


def test_a_config_written_before_lora_had_its_own_rate_reruns_both_at_one_rate(tmp_path: Path) -> None:
    path = write_config(TableConfig.default("heterogeneity"), tmp_path / "config.json", hospitals={})
    written = json.loads(path.read_text())
    assert written["config"]["fedit_learning_rate"] == FEDIT_LEARNING_RATE
    del written["config"]["fedit_learning_rate"]
    path.write_text(json.dumps(written))
    assert read_config(path) == replace(TableConfig.default("heterogeneity"), fedit_learning_rate=None)


def _rows() -> list[Row]:
    def row(setting: str, method: str, *accuracies: float) -> Row:
        return Row(setting, method, 0.5, accuracies, 1.0, 0.0 if method == "ffa" else 0.1, 12.0)

    return [
        row("eps=1", "ffa", 0.6, 0.7),
        row("eps=1", "fedit", 0.55, 0.6),
        row("no DP", "ffa", 0.7, 0.8),
        row("no DP", "fedit", 0.75, 0.85),
    ]


def test_the_table_has_a_row_per_setting_and_a_column_per_method() -> None:
    table = table_markdown(_rows(), settings=["eps=1", "no DP"], methods=["ffa", "fedit"])
    assert table.splitlines() == [
        "| setting | FFA-LoRA | LoRA (FedIT) | FFA - LoRA |",
        "| --- | --- | --- | --- |",
        "| eps=1 | 70.0 | 60.0 | +10.0 |",
        "| no DP | 80.0 | 85.0 | -5.0 |",
    ]


def _seeded_rows() -> list[Row]:
    """Three seeds of one setting: FFA-LoRA 0.70, 0.60, 0.65; LoRA 0.60, 0.62, 0.55."""
    finals = {"ffa": (0.70, 0.60, 0.65), "fedit": (0.60, 0.62, 0.55)}
    return [
        Row("eps=1", method, 0.5, (0.55, final), 1.0, 0.0, 12.0, seed=seed)
        for method, values in finals.items()
        for seed, final in enumerate(values)
    ]


def test_several_seeds_give_the_mean_the_spread_and_the_paired_difference() -> None:
    # By hand: FFA-LoRA mean 0.65, sample std 0.05; LoRA mean 0.59, std sqrt(((0.01)^2 + (0.03)^2 +
    # (0.04)^2) / 2) = 0.0361; the gaps per seed +0.10, -0.02, +0.10: mean 0.06, std 0.0693, ahead in 2.
    table = table_markdown(_seeded_rows(), settings=["eps=1"], methods=["ffa", "fedit"])
    assert table.splitlines()[-1] == "| eps=1 | 65.0 ± 5.0 | 59.0 ± 3.6 | +6.0 ± 6.9 (ahead in 2/3) |"


def test_the_csv_names_the_seed_of_every_line(tmp_path: Path) -> None:
    path = write_csv("privacy", _seeded_rows(), tmp_path / "results.csv")
    with path.open() as handle:
        lines = list(csv.DictReader(handle))
    assert [line["seed"] for line in lines if line["method"] == "ffa" and line["round"] == "2"] == [
        "0",
        "1",
        "2",
    ]


def test_the_bar_plot_of_several_seeds_is_a_png(tmp_path: Path) -> None:
    path = plot_bars(
        _seeded_rows(), tmp_path / "bars.png", settings=["eps=1"], methods=["ffa", "fedit"], title="t"
    )
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_a_missing_run_shows_a_dash() -> None:
    table = table_markdown(_rows()[:1], settings=["eps=1"], methods=["ffa", "fedit"])
    assert table.splitlines()[-1] == "| eps=1 | 70.0 | - | - |"


def test_the_csv_has_a_line_per_round_of_every_run(tmp_path: Path) -> None:
    path = write_csv("privacy", _rows(), tmp_path / "results.csv")
    with path.open() as handle:
        lines = list(csv.DictReader(handle))
    assert tuple(lines[0]) == CSV_COLUMNS
    assert len(lines) == 4 * 3  # round 0 and two rounds, for four runs
    first = [line for line in lines if line["setting"] == "eps=1" and line["method"] == "fedit"]
    assert [line["test_accuracy"] for line in first] == ["0.500000", "0.550000", "0.600000"]
    assert {line["final_accuracy"] for line in first} == {"0.600000"}


def test_the_bar_plot_is_a_png(tmp_path: Path) -> None:
    path = plot_bars(
        _rows(), tmp_path / "bars.png", settings=["eps=1", "no DP"], methods=["ffa", "fedit"], title="t"
    )
    assert path.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.slow
def test_quick_privacy_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "privacy"
    result = CliRunner().invoke(app, ["experiment", "privacy", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in ("results.md", "results.csv", "config.json", "final_accuracy.png", "accuracy_by_round.png"):
        assert (out / name).is_file(), name
    for name in ("final_accuracy.png", "accuracy_by_round.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    markdown = (out / "results.md").read_text()
    table_rows = [
        line.split(" | ")[0].removeprefix("| ") for line in markdown.splitlines() if line.startswith("| ")
    ]
    assert table_rows[:6] == ["setting", "---", "eps=1", "eps=3", "eps=6", "no DP"]
    with (out / "results.csv").open() as handle:
        lines = list(csv.DictReader(handle))
    assert len(lines) == 4 * 2 * 2  # four settings, two methods, rounds 0 and 1
    dp = [line for line in lines if line["setting"] == "eps=1" and line["round"] == "1"]
    assert all(0 < float(line["epsilon"]) <= 1.0 + 1e-6 for line in dp)
    assert read_config(out / "config.json") == TableConfig.quick("privacy")


def test_set_changes_a_tables_settings_and_its_config_json_records_them(tmp_path: Path) -> None:
    """`--set` values are JSON: a list, null and a bare word each reach the table, and nothing else moves."""
    out = tmp_path / "variant"
    args = ["experiment", "privacy", "--quick", "--out", str(out)]
    args += ["--set", 'methods=["ffa"]', "--set", "epsilons=[1.0]", "--set", "head_learning_rate=null"]
    args += ["--set", "partition=iid"]
    result = CliRunner().invoke(app, args)

    assert result.exit_code == 0, result.output
    expected = replace(
        TableConfig.quick("privacy"),
        methods=("ffa",),
        epsilons=(1.0,),
        head_learning_rate=None,
        partition="iid",
    )
    assert read_config(out / "config.json") == expected
    with (out / "results.csv").open() as handle:
        assert {(line["setting"], line["method"]) for line in csv.DictReader(handle)} == {("eps=1", "ffa")}


@pytest.mark.parametrize(
    ("name", "item", "reason"),
    [
        ("privacy", "epsilon_s=[1]", "privacy has no setting epsilon_s"),
        ("privacy", "experiment=rank", "privacy has no setting experiment"),
        ("privacy", 'methods=["fedavg"]', "fedavg"),
        ("privacy", "noequals", "must be KEY=VALUE, got 'noequals'"),
        (
            "secagg",
            "rounds=2",
            "--set applies to privacy, heterogeneity, rank, alpha; 'secagg' takes no settings",
        ),
    ],
)
def test_set_refuses_what_the_table_cannot_take_before_anything_runs(
    name, item, reason, tmp_path: Path
) -> None:
    out = tmp_path / "refused"
    result = CliRunner().invoke(app, ["experiment", name, "--quick", "--out", str(out), "--set", item])

    assert result.exit_code == 2, result.output
    assert reason in " ".join(result.output.replace("│", " ").split())
    assert not out.exists()
