"""Adversarial review of three changes after d154fac: the head's learning rate under DP-SGD noise
(`client_agent.recipe.head_rate_under_noise`, applied by `client_agent.train.run_steps`), the CLI's
`--head-learning-rate` (`fedlora.cli._head_learning_rate`), and `FEDLORA_DEVICE` for whatever trains outside
an agent (`client_agent.device.training_device`).

The review reproduced twelve broken promises as strict xfails (the head's rate computed for the fractional
batch, the central row's reported rate, a NaN or out-of-range rate, devices checked after loading, Ray
workers' device, CPU inputs meeting a model on a GPU); all are fixed and are plain tests now, beside the
promises it tried to break and found kept. Tiny random models built from configs (tests/unit/test_recipe.py's classifier, the
e2e tests' saved 2-layer BERT, tests/decoders.py's GPT-2), nothing from a hub. The tests marked `cuda` need
a GPU: they reproduce what only a model on another device than its CPU inputs meets, and are skipped here.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset
from typer.testing import CliRunner

from client_agent.device import DeviceError
from client_agent.model import AdapterSpec
from client_agent.train import (
    DPSettings,
    Features,
    LocalConfig,
    PrivacyHistory,
    parameter_groups,
    run_steps,
    train_local,
)
from fedlora.cli import app
from tests.unit.test_recipe import _features, _tiny_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REFERENCE = 0.0065  # sigma / expected batch at which the head keeps its full rate (the promise's constant)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: the model must sit elsewhere")


def _flat(text: str) -> str:
    return " ".join(text.split())


def _quiet_train(model, share, vector, config, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return train_local(model, share, global_vector=vector, config=config, **kwargs)


def _dp_config(**overrides) -> LocalConfig:
    settings = dict(
        steps=4,
        batch_size=64,
        learning_rate=2.0,
        head_learning_rate=20.0,
        insecure_seed=3,
        progress=False,
        dp=DPSettings(epsilon=8.0, rounds=2),
    )
    settings.update(overrides)
    return LocalConfig(**settings)  # type: ignore[arg-type]


# -- 1. the head's rate under DP noise ---------------------------------------------------------------------


def test_the_head_rate_follows_the_batch_the_noise_is_actually_divided_by():
    """1,000 examples in batches of 64: q = 1/16, expected batch 62.5, and Opacus divides the noise by 62.
    The promise: rate = max(adapter, head * min(1, 0.0065 / (sigma / 62)))."""
    share = _features(1000, torch.Generator().manual_seed(5))
    model = _tiny_model()
    vector = model.layout.initial_vector(seed=0, basis_version=0)
    result = _quiet_train(model, share, vector, _dp_config())

    assert result.noise_multiplier is not None and result.sample_rate == 1 / 16
    divisor = int(1000 * result.sample_rate)  # DPOptimizer(expected_batch_size=max(1, int(expected_batch)))
    assert divisor == 62
    expected = max(2.0, 20.0 * min(1.0, REFERENCE / (result.noise_multiplier / divisor)))
    assert 2.0 < expected < 20.0  # the lowered, unfloored branch
    assert result.head_learning_rate == pytest.approx(expected, rel=1e-9)


def test_only_the_head_weight_group_is_lowered_and_a_second_round_starts_again_from_the_full_rate():
    """The adapter and the bias keep `learning_rate`; a second round (same config, new optimiser as every
    runner builds) reports the same rate as the first instead of lowering the lowered rate again; the same
    group object the optimiser steps with is what `train_local` reports from."""
    share = _features(600, torch.Generator().manual_seed(5))
    model = _tiny_model()
    vector = model.layout.initial_vector(seed=0, basis_version=0)
    config = _dp_config()
    history = PrivacyHistory()
    first = _quiet_train(model, share, vector, config, history=history)
    second = _quiet_train(model, share, vector + first.delta, config, history=history)
    assert first.noise_multiplier is not None and first.sample_rate is not None
    expected = max(2.0, 20.0 * min(1.0, REFERENCE / (first.noise_multiplier / (600 * first.sample_rate))))
    assert 2.0 < expected < 20.0
    assert first.head_learning_rate == pytest.approx(expected) == second.head_learning_rate

    groups = parameter_groups(model, config)
    optimizer = torch.optim.SGD(groups, lr=config.learning_rate)
    dataset = TensorDataset(share.hidden, share.mask, share.labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_steps(model, optimizer, dataset, config, history=None, public_examples=600)
    weight, bias = model.head.weight, model.head.bias
    rates = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert rates[id(weight)] == pytest.approx(expected)
    assert rates[id(bias)] == 2.0
    assert all(rate == 2.0 for key, rate in rates.items() if key not in (id(weight), id(bias)))


def test_the_lowered_rate_spends_exactly_the_epsilon_and_sigma_of_the_adapters_rate():
    """The rate acts after clipping and noise: the accounting of the recipe and of the old recipe agree."""
    share = _features(600, torch.Generator().manual_seed(5))
    model = _tiny_model()
    vector = model.layout.initial_vector(seed=0, basis_version=0)
    recipe = _quiet_train(model, share, vector, _dp_config())
    old = _quiet_train(model, share, vector, _dp_config(head_learning_rate=None))
    assert recipe.head_learning_rate is not None and recipe.head_learning_rate > 2.0
    assert old.head_learning_rate == 2.0
    assert (recipe.epsilon, recipe.noise_multiplier, recipe.sample_rate) == (
        old.epsilon,
        old.noise_multiplier,
        old.sample_rate,
    )


def test_the_central_dp_row_reports_the_head_rate_it_trained_at(tiny_model_dir, tmp_path):
    """The quick central run: 16-example batches at epsilon 8 put far more noise on each step than the
    reference, so the DP row's head must report a rate below 20; the row without DP keeps 20."""
    from fedlora.experiments.central import CentralConfig, run_central

    quick = CentralConfig.quick()
    federation = replace(
        quick.federation,
        model_path=tiny_model_dir,
        deidentify=False,
        target_modules=("value",),
        layers_to_transform=(1,),
        threads=1,
    )
    rows, _ = run_central(replace(quick, federation=federation), tmp_path)
    plain, noisy = (row for row in rows if row.batch_size is not None)
    assert plain.epsilon is None and plain.head_learning_rate == 20.0
    assert noisy.epsilon is not None and noisy.batch_size == 16
    assert noisy.head_learning_rate is not None and 2.0 <= noisy.head_learning_rate < 20.0


def test_a_causal_lm_under_dp_sgd_keeps_one_rate_and_reports_no_head(tmp_path):
    """The causal path shares run_steps: no group of its optimiser is the head's, so DP-SGD changes no rate,
    and its result reports no head rate."""
    from transformers import AutoTokenizer

    from client_agent.causal_lm import FFACausalLM, causal_lm_loss, load_causal_lm
    from client_agent.causal_train import encode_pairs, train_causal
    from tests.decoders import save_decoder, tiny_gpt2

    folder = save_decoder(tiny_gpt2(), tmp_path / "gpt2")
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    spec = AdapterSpec(num_labels=2, r_max=2, alpha=8.0, seed=7, target_modules=("c_attn",))
    model = FFACausalLM(load_causal_lm(folder), spec, rank=2)
    features = encode_pairs(
        tokenizer, ["Review: no more cramps\nCondition?"] * 40, ["Birth Control"] * 40, max_length=24
    )
    config = _dp_config(steps=2, batch_size=8, learning_rate=0.5, head_learning_rate=None)
    vector = model.layout.initial_vector(seed=7, basis_version=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train_causal(model, features, global_vector=vector, config=config)
        optimizer = torch.optim.SGD(model.trainable_parameters(), lr=0.5)
        dataset = TensorDataset(features.input_ids, features.attention_mask, features.answer_mask)
        run_steps(
            model, optimizer, dataset, config, history=None, public_examples=40, batch_loss=causal_lm_loss
        )
    assert result.epsilon is not None and result.head_learning_rate is None
    assert [group["lr"] for group in optimizer.param_groups] == [0.5]


# -- 2. --head-learning-rate -------------------------------------------------------------------------------


def test_a_nan_head_rate_is_refused_by_name_not_read_as_zero(tmp_path):
    """`--hospitals 0` makes the run stop at the config either way: a refusal of the rate would come first."""
    args = ["simulate", "--head-learning-rate", "nan", "--hospitals", "0", "--out", str(tmp_path)]
    result = CliRunner().invoke(app, args)

    assert result.exit_code == 2
    assert "--head-learning-rate" in _flat(result.output) and "nan" in _flat(result.output)


def test_the_demo_refuses_a_head_rate_its_spec_cannot_hold_before_anything_starts(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--head-learning-rate", "5000", "--out", str(out)])

    assert result.exit_code == 2, (result.exit_code, repr(result.exception))
    assert "--head-learning-rate" in _flat(result.output)
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize(
    ("given", "task", "expected"),
    [
        (None, "rt_sentiment", 20.0),  # unset: the recipe's rate
        (0.0, "rt_sentiment", None),  # 0: the adapter's
        (-0.0, "rt_sentiment", None),
        (7.5, "rt_sentiment", 7.5),
        (None, "drug_condition_qa", None),  # a causal LM: no head, nothing given, nothing refused
        (0.0, "drug_condition_qa", None),
    ],
)
def test_the_head_rate_option_maps_unset_zero_and_positive_as_promised(given, task, expected):
    from fedlora.cli import _head_learning_rate

    assert _head_learning_rate(given, task=task) == expected


@pytest.mark.parametrize("command", ["simulate", "demo"])
@pytest.mark.parametrize("rate", ["0.5", "1e-9", "inf"])
def test_any_positive_head_rate_for_a_causal_lm_is_refused_by_name_before_anything_loads(
    command, rate, tmp_path
):
    result = CliRunner().invoke(
        app, [command, "--task", "drug_condition_qa", "--head-learning-rate", rate, "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "--head-learning-rate" in _flat(result.output) and "no head" in _flat(result.output)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("command", ["simulate", "demo"])
def test_a_negative_head_rate_is_refused_by_name_for_either_command(command, tmp_path):
    result = CliRunner().invoke(app, [command, "--head-learning-rate", "-0.5", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "must be positive or 0, got -0.5" in _flat(result.output)
    assert not any(tmp_path.iterdir())


# -- 3. FEDLORA_DEVICE outside the agent ---------------------------------------------------------------------


@pytest.fixture
def absent_device(monkeypatch):
    monkeypatch.setenv("FEDLORA_DEVICE", "cuda:7")


def _simulation(out_dir: Path, model_dir: Path):
    from fedlora.simulation import SimulationConfig

    return SimulationConfig(
        hospitals=2,
        edges=1,
        rounds=1,
        steps=2,
        batch_size=16,
        head_learning_rate=None,
        max_train_examples=60,
        max_test_examples=20,
        epsilon=None,
        scheme="none",
        target_modules=("value",),
        layers_to_transform=(1,),
        rank=2,
        threads=1,
        deidentify=False,
        model_path=model_dir,
        out_dir=out_dir,
    )


def test_simulate_as_the_experiments_call_it_refuses_an_absent_device_before_anything_loads(
    absent_device, tiny_model_dir, tmp_path
):
    from fedlora.simulation import simulate

    out = tmp_path / "run"
    with pytest.raises(DeviceError, match="FEDLORA_DEVICE='cuda:7'"):
        simulate(_simulation(out, tiny_model_dir))
    assert not out.exists()


def test_prepared_run_refuses_an_absent_device_before_it_loads_the_model(absent_device, tmp_path):
    from fedlora.simulation import prepared_run

    with pytest.raises(DeviceError, match="FEDLORA_DEVICE='cuda:7'"):
        prepared_run(_simulation(tmp_path / "run", tmp_path / "no-model-here"))


def _hospital_csv(tmp_path: Path) -> Path:
    path = tmp_path / "notes.csv"
    rows = "".join(f"a good film {i},pos\na bad film {i},neg\n" for i in range(20))
    path.write_text("text,label\n" + rows)
    return path


def test_the_local_preflight_refuses_an_absent_device_before_it_loads_the_encoder(absent_device, tmp_path):
    from client_agent.local_run import LocalRunConfig, run_local

    config = LocalRunConfig(
        task=None,
        data_file=_hospital_csv(tmp_path),
        deidentify=False,
        model_path=tmp_path / "no-model-here",
        layers_to_transform=(1,),
        steps=1,
        batch_size=8,
        progress=False,
    )
    with pytest.raises(DeviceError, match="FEDLORA_DEVICE='cuda:7'"):
        run_local(config)


def test_train_local_refuses_an_absent_device_by_name_with_exit_2(absent_device, tmp_path):
    args = [
        "train-local",
        "--data",
        str(_hospital_csv(tmp_path)),
        "--no-deidentify",
        "--i-understand-raw-text-stays-local",
        "--steps",
        "1",
        "--batch-size",
        "8",
    ]
    result = CliRunner().invoke(app, args)

    assert result.exit_code == 2, (result.exit_code, repr(result.exception))
    assert "FEDLORA_DEVICE='cuda:7'" in _flat(result.output)


def test_simulate_on_the_cpu_trains_where_fedlora_device_says(monkeypatch, tiny_model_dir, tmp_path):
    """FEDLORA_DEVICE=cpu: the whole run (model built, moved, trained, evaluated, AUC) completes and learns
    something: a CPU-only machine loses nothing to the device plumbing."""
    from fedlora.simulation import simulate

    monkeypatch.setenv("FEDLORA_DEVICE", "cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = simulate(_simulation(tmp_path / "run", tiny_model_dir))
    assert len(report.rounds) == 1 and report.rounds[0].update_norm > 0
    assert report.macro_auc_after is not None and math.isfinite(report.macro_auc_after)


def test_ray_workers_train_where_the_driver_s_fedlora_device_says(monkeypatch, tiny_model_dir, tmp_path):
    """A Ray session opened earlier in this process (a notebook's, as RayEngine allows) while FEDLORA_DEVICE
    named a device this machine lacks; the run then says cpu. The hospitals must train on the cpu."""
    ray = pytest.importorskip("ray")
    from fedlora.simulation import simulate

    if ray.is_initialized():
        pytest.skip("another Ray session is open in this process")
    monkeypatch.setenv("FEDLORA_DEVICE", "cuda:7")
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        monkeypatch.setenv("FEDLORA_DEVICE", "cpu")
        config = replace(_simulation(tmp_path / "run", tiny_model_dir), engine="ray", workers=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                report = simulate(config)
            except ray.exceptions.ActorDiedError as e:  # the worker's HospitalSite refused its own device
                raise AssertionError(f"a Ray worker ignored the driver's FEDLORA_DEVICE=cpu: {e}") from e
        assert len(report.rounds) == 1
    finally:
        ray.shutdown()


# -- 3b. CPU inputs meeting a model on the GPU (only a GPU can show these) -----------------------------------


def _cpu_features(n: int) -> Features:
    return _features(n, torch.Generator().manual_seed(9))


@cuda
def test_the_auc_of_a_model_on_the_gpu_is_computed_from_cpu_features():
    from fedlora.simulation_rounds import class_probabilities

    model = _tiny_model().to(torch.device("cuda"))
    features = _cpu_features(32)
    probabilities = class_probabilities(model, features)
    assert probabilities.shape == (32, 2) and np.allclose(probabilities.sum(axis=1), 1.0)


@cuda
def test_the_linear_probe_of_a_model_on_the_gpu_embeds_cpu_features():
    from fedlora.experiments.central import _embeddings

    model = _tiny_model().to(torch.device("cuda"))
    assert _embeddings(model, _cpu_features(16)).shape == (16, 64)


@cuda
def test_a_causal_lm_on_the_gpu_trains_and_evaluates_from_cpu_token_ids(tmp_path):
    from transformers import AutoTokenizer

    from client_agent.causal_lm import FFACausalLM, load_causal_lm
    from client_agent.causal_train import encode_pairs, train_causal
    from tests.decoders import save_decoder, tiny_gpt2

    folder = save_decoder(tiny_gpt2(), tmp_path / "gpt2")
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    spec = AdapterSpec(num_labels=2, r_max=2, alpha=8.0, seed=7, target_modules=("c_attn",))
    model = FFACausalLM(load_causal_lm(folder), spec, rank=2).to(torch.device("cuda"))
    features = encode_pairs(
        tokenizer, ["Review: no more cramps\nCondition?"] * 8, ["Birth Control"] * 8, max_length=24
    )
    config = LocalConfig(steps=1, batch_size=4, learning_rate=0.5, progress=False)
    vector = model.layout.initial_vector(seed=7, basis_version=0)
    result = train_causal(model, features, global_vector=vector, config=config)
    assert np.isfinite(result.delta).all()
