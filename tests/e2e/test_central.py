"""`fedlora experiment central` on the tiny model: the probe, the tuned no-DP adapter and the DP adapter,
each on the federation's own test set, written where the other experiments write."""

import json

import pytest

from fedlora.experiments.central import CentralConfig, run_central
from fedlora.simulation import SimulationConfig


@pytest.fixture(scope="module")
def central(tiny_model_dir, tmp_path_factory):
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
    config = CentralConfig(federation=federation, learning_rates=(0.5, 2.0))
    out = tmp_path_factory.mktemp("central")
    rows, files = run_central(config, out)
    return config, rows, files


def test_three_models_on_the_same_test_set(central):
    config, rows, _ = central
    probe, plain, private = rows
    assert probe.model.startswith("linear probe") and probe.steps == 0
    # The adapters train for as many steps as the federation's hospitals take in all.
    assert plain.steps == private.steps == config.federation.hospitals * config.federation.steps == 4
    assert plain.epsilon is None and plain.learning_rate in config.learning_rates + config.adam_learning_rates
    assert private.epsilon == pytest.approx(8.0, rel=1e-3)
    assert all(0.0 <= r.test_accuracy <= 1.0 for r in rows)


def test_files_are_where_the_experiments_write(central):
    config, rows, files = central
    assert set(files) == {"config", "csv", "markdown"}
    assert json.loads(files["config"].read_text())["learning_rates"] == list(config.learning_rates)
    assert "linear probe" in files["markdown"].read_text()
    assert len(files["csv"].read_text().strip().splitlines()) == 1 + len(rows)


def test_adam_candidates_are_tried_without_the_head_rate(central):
    config, rows, files = central
    plain = rows[1]
    assert plain.optimizer in ("sgd", "adam")
    if plain.optimizer == "adam":
        assert plain.head_learning_rate is None and plain.learning_rate in config.adam_learning_rates
    assert "Adam 0.001" in files["markdown"].read_text()
