"""`fedlora experiment NAME --engine ray` reaches every simulated federation of the experiment, and
config.json keeps it; the one experiment with its own loop refuses it."""

import pytest

from fedlora.experiments import EXPERIMENTS, Engine, ExperimentEngineError, on_engine
from fedlora.experiments.paper_tables import TableConfig, expand, simulation_config
from fedlora.experiments.sim_runs import SimSettings


def test_a_grid_experiments_federations_run_on_the_engine_asked_for(tmp_path):
    settings = on_engine(SimSettings.quick(), Engine("ray", "10.0.0.5:6379"))

    config = settings.simulation(tmp_path, strategy="ffa")

    assert (config.engine, config.ray_address) == ("ray", "10.0.0.5:6379")
    assert SimSettings.from_dict(vars(settings)) == settings  # config.json reads it back


def test_a_paper_tables_federations_run_on_the_engine_asked_for(tmp_path):
    table = TableConfig.from_dict(TableConfig.quick("rank").to_dict() | {"engine": "ray"})

    config = simulation_config(table, expand(table)[0], table.methods[0], seed=0, out_dir=tmp_path)

    assert (config.engine, config.ray_address) == ("ray", None)


def test_vit_baseline_refuses_the_ray_engine_before_running(tmp_path):
    with pytest.raises(ExperimentEngineError, match=r"vit-baseline .* engine 'ray'"):
        EXPERIMENTS["vit-baseline"].run(tmp_path, quick=True, engine=Engine("ray"))

    assert not any(tmp_path.iterdir())
