"""`fedlora experiment yardstick` on the tiny model: every row on each seed's one test set, the gaps paired by
seed, and the verdicts computed from the rows."""

import csv
import json
from dataclasses import replace

import pytest

from fedlora.experiments.yardstick import (
    ALONE_MEAN,
    ALONE_WORST,
    CENTRAL_DP,
    CENTRAL_PLAIN,
    PROBE,
    Measurement,
    YardstickConfig,
    YardstickConfigError,
    federated_row,
    run_yardstick,
    summarise,
    verdicts,
)
from fedlora.simulation import SimulationConfig


@pytest.fixture(scope="module")
def yardstick(tiny_model_dir, tmp_path_factory):
    federation = SimulationConfig(
        hospitals=2,
        edges=1,
        rounds=1,
        steps=2,
        batch_size=16,
        max_train_examples=80,
        max_test_examples=40,
        epsilon=8.0,
        scheme="none",
        target_modules=("query", "value"),
        layers_to_transform=(1,),
        threads=1,
        deidentify=False,
        model_path=tiny_model_dir,
        insecure_reproducible=True,
    )
    config = YardstickConfig(federation=federation, learning_rates=(2.0,), seeds=(0, 1))
    out = tmp_path_factory.mktemp("yardstick")
    return config, run_yardstick(config, out)


def test_every_row_for_every_seed(yardstick):
    config, result = yardstick
    expected = {PROBE, CENTRAL_PLAIN, CENTRAL_DP, ALONE_MEAN, ALONE_WORST}
    expected |= {federated_row(p, "ffa") for p in config.partitions} | {federated_row("mild", "fedit")}
    for seed in config.seeds:
        rows = {m.row for m in result.measurements if m.seed == seed}
        assert rows == expected
        # One test set per seed: every row saw the same majority rate.
        assert len({m.majority_rate for m in result.measurements if m.seed == seed}) == 1
    private = [m for m in result.measurements if m.row == CENTRAL_DP or m.row.startswith("federated")]
    assert all(m.epsilon == pytest.approx(8.0, rel=1e-3) for m in private)
    assert all(m.epsilon is None for m in result.measurements if m.row in (CENTRAL_PLAIN, ALONE_MEAN))
    # LoRA (FedIT) trains at its own rate, FFA-LoRA at the federation's.
    rates = {m.row: m.learning_rate for m in result.measurements if m.row.startswith("federated")}
    assert rates[federated_row("mild", "fedit")] == config.lora_learning_rate == 0.5
    assert {rates[federated_row(p, "ffa")] for p in config.partitions} == {config.federation.learning_rate}


def test_files_and_the_csv_round_trip(yardstick):
    config, result = yardstick
    assert set(result.files) == {"config", "csv", "plot", "markdown"}
    assert json.loads(result.files["config"].read_text())["seeds"] == list(config.seeds)
    with result.files["csv"].open() as handle:
        read = list(csv.DictReader(handle))
    assert len(read) == len(result.measurements)
    text = result.files["markdown"].read_text()
    assert federated_row("iid", "ffa") in text and "vs centralised no-DP" in text


def _m(row, seed, accuracy, majority=0.5):
    return Measurement(row, seed, accuracy, majority, None, 1.0)


def test_gaps_are_paired_by_seed_and_verdicts_follow():
    # Seed 0: central 0.80, federated 0.78; seed 1: central 0.70, federated 0.66. Paired gaps -2 and -4 points.
    iid = federated_row("iid", "ffa")
    ms = [_m(CENTRAL_PLAIN, 0, 0.80), _m(CENTRAL_PLAIN, 1, 0.70), _m(iid, 0, 0.78), _m(iid, 1, 0.66)]
    by_row = {s.row: s for s in summarise(ms)}
    assert by_row[iid].gap == pytest.approx(-3.0)
    assert by_row[iid].gap_spread == pytest.approx(2**0.5)
    assert by_row[CENTRAL_PLAIN].gap is None
    assert by_row[iid].lowest_margin == pytest.approx(16.0)
    config = YardstickConfig(seeds=(0, 1))
    lines = verdicts(config, list(by_row.values()))
    assert any("**met**" in line for line in lines)
    lines = verdicts(replace(config, goal_points=2.0), list(by_row.values()))
    assert any("missed by 1.0" in line for line in lines)
    # An IID run at the majority class is called out.
    at_majority = summarise([_m(CENTRAL_PLAIN, 0, 0.8), _m(iid, 0, 0.5)])
    assert any("did NOT end above" in line for line in verdicts(config, at_majority))


def test_bad_config_is_refused():
    with pytest.raises(YardstickConfigError, match="seeds"):
        YardstickConfig(seeds=(0, 0))
    with pytest.raises(YardstickConfigError, match="learning_rates"):
        YardstickConfig(learning_rates=(0.0,))
    for bad in (0.0, -2.0, 1e4):
        with pytest.raises(YardstickConfigError, match=f"lora_learning_rate.*{bad}"):
            YardstickConfig(lora_learning_rate=bad)


def test_config_json_reads_back(yardstick, tmp_path):
    config, result = yardstick
    # What run_yardstick wrote into config.json, read back: the same config, paths and tuples included.
    assert YardstickConfig.from_dict(json.loads(result.files["config"].read_text())) == config
    changed = replace(
        YardstickConfig(),
        federation=replace(config.federation, out_dir=tmp_path / "runs"),
        partitions=("severe", "iid"),
        lora_partition="iid",
        seeds=(3,),
    )
    assert YardstickConfig.from_dict(json.loads(json.dumps(changed.to_dict()))) == changed
    # A config.json from before the LoRA row had its own rate reruns it at the federation's.
    old = changed.to_dict()
    del old["lora_learning_rate"]
    assert YardstickConfig.from_dict(old) == replace(changed, lora_learning_rate=None)
    with pytest.raises(YardstickConfigError, match="lora_partition"):
        YardstickConfig.from_dict({**changed.to_dict(), "lora_partition": "mild-ish"})
