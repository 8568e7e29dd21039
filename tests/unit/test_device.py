"""Issue 24, item 3: where a hospital trains (`FEDLORA_DEVICE`), and that the update comes back to the CPU.

This machine has no GPU, so the CUDA paths are checked through `resolve_device`'s injected device count;
`test_dp_training_runs_on_the_resolved_device` trains on whatever `FEDLORA_DEVICE` (default auto) resolves
to, so on a machine with a GPU the same test trains on it.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig

from client_agent.agent import ClientAgent
from client_agent.device import DeviceError, resolve_device
from client_agent.model import AdapterSpec, FFAClassifier, default_model_path
from client_agent.train import DPSettings, LocalConfig, encode, generators, train_local
from services.settings import ClientSettings
from tests.models import encoder_from_config


@pytest.mark.parametrize(
    ("setting", "cuda_devices", "expected"),
    [
        ("auto", 0, "cpu"),
        ("auto", 2, "cuda:0"),
        ("cpu", 4, "cpu"),
        (" CPU ", 0, "cpu"),
        ("cuda", 1, "cuda:0"),
        ("cuda:1", 2, "cuda:1"),
    ],
)
def test_a_setting_names_its_device(setting, cuda_devices, expected):
    assert resolve_device(setting, cuda_devices=cuda_devices) == torch.device(expected)


def test_auto_on_this_machine_is_the_gpu_when_torch_sees_one_else_the_cpu():
    expected = torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    assert resolve_device("auto") == expected
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("setting", ["gpu", "", "cuda:", "cuda:-1", "cuda:x", "cpu:0", "mps"])
def test_a_malformed_setting_is_refused_naming_the_variable_and_the_value(setting):
    with pytest.raises(
        DeviceError, match=rf"FEDLORA_DEVICE must be auto, cpu, cuda or cuda:N, got '{setting}'"
    ):
        resolve_device(setting, cuda_devices=1)


def test_a_cuda_device_that_is_not_there_is_refused_not_replaced_by_the_cpu():
    with pytest.raises(DeviceError, match=r"FEDLORA_DEVICE='cuda:2' but torch sees 2 CUDA device\(s\)$"):
        resolve_device("cuda:2", cuda_devices=2)
    with pytest.raises(
        DeviceError, match=r"FEDLORA_DEVICE='cuda' but torch sees 0 CUDA device\(s\) \(no CUDA"
    ):
        resolve_device("cuda", cuda_devices=0)


def agent_settings(tmp_path, monkeypatch, device: str | None) -> ClientSettings:
    if device is not None:
        monkeypatch.setenv("FEDLORA_DEVICE", device)
    return ClientSettings(  # type: ignore[call-arg]
        client_id="client-a",
        federation_id="fed-1",
        edge_id="edge-1",
        cloud_url="https://cloud.invalid",
        state_dir=tmp_path / "state",
    )


def test_the_agent_reads_fedlora_device(tmp_path, monkeypatch):
    monkeypatch.delenv("FEDLORA_DEVICE", raising=False)
    assert agent_settings(tmp_path, monkeypatch, None).device == "auto"
    agent = ClientAgent(agent_settings(tmp_path, monkeypatch, "cpu"))
    assert agent.device == torch.device("cpu")


def test_the_agent_refuses_to_start_on_a_bad_device(tmp_path, monkeypatch):
    with pytest.raises(DeviceError, match=r"FEDLORA_DEVICE must be .* got 'gpu0'"):
        ClientAgent(agent_settings(tmp_path, monkeypatch, "gpu0"))


def test_the_noise_generator_lives_where_the_gradients_are():
    sampling, noise = generators(None, noise_device=torch.device("cpu"))
    assert sampling.device == torch.device("cpu") and noise.device == torch.device("cpu")


def test_dp_training_runs_on_the_resolved_device():
    device = resolve_device(os.environ.get("FEDLORA_DEVICE", "auto"))
    tokenizer = AutoTokenizer.from_pretrained(default_model_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=64,
    )
    spec = AdapterSpec(
        num_labels=2, target_modules=("value",), layers_to_transform=(1, 2), r_max=2, alpha=2.0
    )
    model = FFAClassifier(encoder_from_config(config, seed=1), spec, rank=2).to(device)
    texts = [f"{'good fine' if i % 2 else 'bad poor'} case {i}" for i in range(48)]
    features = encode(model, tokenizer, texts, [i % 2 for i in range(48)], max_length=16)
    start = np.zeros(model.layout.size, dtype=np.float32)
    dp = DPSettings(epsilon=8.0, rounds=1)

    result = train_local(
        model,
        features,
        global_vector=start,
        config=LocalConfig(steps=3, batch_size=16, dp=dp, insecure_seed=3, progress=False),
    )

    assert all(p.device.type == device.type for p in model.parameters())
    assert features.hidden.device == torch.device("cpu")  # cached features stay on the CPU
    # The update comes back as a CPU numpy vector: clipping, noise shares, masking and encryption use it.
    assert isinstance(result.delta, np.ndarray) and result.delta.dtype == np.float32
    assert result.delta.shape == (model.layout.size,) and np.isfinite(result.delta).all()
    assert np.abs(result.delta).max() > 0
    assert result.epsilon is not None and 0 < result.epsilon <= 8.0 * (1 + 1e-6)


def test_training_device_reads_fedlora_device_from_the_environment_and_defaults_to_auto():
    from client_agent.device import training_device

    expected_auto = torch.device("cuda:0") if torch.cuda.device_count() else torch.device("cpu")
    assert training_device({}) == expected_auto
    assert training_device({"FEDLORA_DEVICE": "cpu"}) == torch.device("cpu")
    with pytest.raises(DeviceError, match="FEDLORA_DEVICE must be auto, cpu, cuda or cuda:N, got 'tpu'"):
        training_device({"FEDLORA_DEVICE": "tpu"})
