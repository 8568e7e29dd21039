"""Causal LMs with FFA-LoRA: structure, the answer loss, DP-SGD per example, the accounting, the PEFT export.

Tiny random Llama and GPT-2 models built from configs and saved to a temporary folder; MiniLM's tokenizer.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import peft
import pytest
import torch
from opacus import GradSampleModule
from opacus.accountants import RDPAccountant
from transformers import AutoModelForCausalLM, AutoTokenizer, BertConfig

from client_agent.causal_export import export_causal_adapter
from client_agent.causal_lm import FFACausalLM, answer_loss, causal_lm_loss, load_causal_lm
from client_agent.causal_train import encode_pairs, exact_match, train_causal
from client_agent.data.tasks import drug_condition, drug_condition_qa, load_task
from client_agent.model import AdapterSpec, FFAClassifier, ModelError, default_model_path
from client_agent.tasks import CausalLM, SequenceClassification, task_for
from client_agent.train import DPSettings, LocalConfig, TrainingError, encode, train_local
from fedlora.simulation import SimulationConfig, SimulationError, simulate
from protocol.ffa import frozen_basis
from protocol.messages import FederationSpec, TaskType
from services.model_layout import federation_layout
from tests.decoders import HIDDEN, save_decoder, tiny_gpt2, tiny_llama
from tests.models import encoder_from_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")

LLAMA = {"target_modules": ("q_proj", "v_proj"), "layers_to_transform": (1,)}
GPT2 = {"target_modules": ("c_attn",), "layers_to_transform": (1,)}
PROMPTS = ["Review: it cleared my skin in weeks\nCondition?", "Review: no more cramps\nCondition?"]
ANSWERS = ["Acne", "Birth Control"]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return save_decoder(tiny_llama(), tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return save_decoder(tiny_gpt2(), tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="module")
def tokenizer(llama_dir):
    return AutoTokenizer.from_pretrained(llama_dir, local_files_only=True)


def spec_of(targets: dict, *, r_max: int = 4) -> AdapterSpec:
    return AdapterSpec(num_labels=2, r_max=r_max, alpha=8.0, seed=7, **targets)


def federation(targets: dict, *, r_max: int = 4) -> FederationSpec:
    return FederationSpec(
        federation_id="causal", task_type=TaskType.CAUSAL_LM, r_max=r_max, seed=7, **targets
    )


# -- structure ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("family", "targets", "expected"),
    [
        # Llama, layer 1: q_proj is hidden x hidden; v_proj has 2 key/value heads of head_dim 32 / 4 = 8.
        (
            "llama",
            LLAMA,
            {"model.layers.1.self_attn.q_proj": (32, 32), "model.layers.1.self_attn.v_proj": (32, 16)},
        ),
        # GPT-2, layer 1: c_attn projects hidden to query, key and value at once.
        ("gpt2", GPT2, {"transformer.h.1.attn.c_attn": (32, 96)}),
    ],
)
def test_layout_comes_from_the_model_and_equals_the_clouds(request, family, targets, expected) -> None:
    folder = request.getfixturevalue(f"{family}_dir")
    model = FFACausalLM(load_causal_lm(folder), spec_of(targets), rank=2)

    assert model.in_features() == {name: shape[0] for name, shape in expected.items()}
    assert [(e.name, e.shape) for e in model.layout.entries] == [
        (name, (shape[1], 4)) for name, shape in expected.items()
    ]
    assert model.layout.head == ()
    assert model.fan_in_fan_out is (family == "gpt2")
    cloud_layout, cloud_in = federation_layout(federation(targets), folder)
    assert cloud_layout.digest == model.layout.digest and cloud_in == model.in_features()


def test_a_is_the_frozen_basis_and_only_b_trains(llama_dir) -> None:
    model = FFACausalLM(load_causal_lm(llama_dir), spec_of(LLAMA), rank=3)

    for name, layer in model.lora_layers().items():
        a_max = frozen_basis(seed=7, basis_version=0, module=name, r_max=4, in_features=HIDDEN)
        np.testing.assert_array_equal(layer.lora_A["default"].weight.detach().numpy(), a_max[:3])
        assert not layer.lora_A["default"].weight.requires_grad
        assert layer.scaling["default"] == pytest.approx(8.0 / 4)  # alpha / r_max whatever the rank
    trained = [name for name, p in model.named_parameters() if p.requires_grad]
    assert len(trained) == 2 and all("lora_B" in name for name in trained)


def test_load_global_and_delta_round_trip(llama_dir) -> None:
    model = FFACausalLM(load_causal_lm(llama_dir), spec_of(LLAMA), rank=2)
    rng = np.random.default_rng(0)
    start = rng.normal(size=model.layout.size).astype(np.float32)
    model.load_global(start)
    with torch.no_grad():
        for layer in model.lora_layers().values():
            layer.lora_B["default"].weight.add_(1.0)
    delta = model.layout.unflatten(model.delta_from(start))
    for name in model.lora_layers():
        np.testing.assert_allclose(delta[name][:, :2], 1.0, atol=1e-6)
        np.testing.assert_array_equal(delta[name][:, 2:], 0.0)  # columns beyond the rank stay zero


def test_bad_rank_and_targets_are_refused_by_name(llama_dir) -> None:
    with pytest.raises(ModelError, match="rank must lie in \\[1, r_max=4\\], got 5"):
        FFACausalLM(load_causal_lm(llama_dir), spec_of(LLAMA), rank=5)
    with pytest.raises(ModelError, match="target_modules \\['query'\\]"):
        FFACausalLM(load_causal_lm(llama_dir), spec_of({"target_modules": ("query",)}), rank=1)


# -- the answer loss ------------------------------------------------------------------------------------------
def test_encode_pairs_masks_the_answer_and_eos_only(tokenizer) -> None:
    features = encode_pairs(tokenizer, PROMPTS[:1], ["Pain"], max_length=20)
    ids, answer = features.input_ids[0].tolist(), features.answer_mask[0].tolist()
    prompt = tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"]
    pain = tokenizer(" Pain", add_special_tokens=False)["input_ids"]
    length = len(prompt) + len(pain) + 1
    assert ids[:length] == [*prompt, *pain, tokenizer.sep_token_id]
    assert ids[length:] == [tokenizer.pad_token_id] * (20 - length)
    assert answer == [0] * len(prompt) + [1] * (len(pain) + 1) + [0] * (20 - length)
    assert features.attention_mask[0].tolist() == [1] * length + [0] * (20 - length)


def test_a_long_prompt_loses_its_start_and_a_long_answer_is_refused(tokenizer) -> None:
    features = encode_pairs(tokenizer, ["word " * 50 + "Condition?"], ["Pain"], max_length=10)
    assert tokenizer.decode(features.prompts[0]).endswith("condition?")
    assert int(features.attention_mask.sum()) == 10
    with pytest.raises(TrainingError, match="max_length 3 leaves no room"):
        encode_pairs(tokenizer, ["Review"], ["Birth Control"], max_length=3)


def test_answer_loss_by_hand() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    ids = torch.tensor([[1, 2, 3, 4, 0], [5, 6, 1, 0, 0]])
    answer = torch.tensor([[0, 0, 1, 1, 0], [0, 1, 1, 0, 0]])
    expected = []
    for row in range(2):
        targets = [t for t in range(1, 5) if answer[row, t]]
        nll = [-torch.log_softmax(logits[row, t - 1], -1)[ids[row, t]] for t in targets]
        expected.append(sum(nll) / len(nll))
    torch.testing.assert_close(answer_loss(logits, ids, answer), torch.stack(expected))


# -- DP-SGD -------------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
@pytest.mark.parametrize(("family", "targets"), [("llama", LLAMA), ("gpt2", GPT2)])
def test_per_example_gradients_are_unaffected_by_padding(request, tokenizer, family, targets) -> None:
    folder = request.getfixturevalue(f"{family}_dir")
    model = FFACausalLM(load_causal_lm(folder), spec_of(targets), rank=2)
    model.load_global(np.random.default_rng(1).normal(size=model.layout.size).astype(np.float32))
    batch = encode_pairs(tokenizer, PROMPTS, ANSWERS, max_length=24)  # the second is the longer
    gs = GradSampleModule(model, batch_first=True, loss_reduction="mean")
    causal_lm_loss(gs, (batch.input_ids, batch.attention_mask, batch.answer_mask)).backward()
    params = [p for p in model.parameters() if p.requires_grad]
    per_example = [p.grad_sample.clone() for p in params]  # type: ignore[attr-defined]
    gs._close()

    for row in range(2):
        # Expected: plain autograd on the example alone, with no padding at all.
        length = int(batch.attention_mask[row].sum())
        alone = encode_pairs(tokenizer, PROMPTS[row : row + 1], ANSWERS[row : row + 1], max_length=length)
        assert int(alone.attention_mask.sum()) == length
        model.zero_grad(set_to_none=True)
        answer_loss(
            model(alone.input_ids, alone.attention_mask), alone.input_ids, alone.answer_mask
        ).sum().backward()
        for p, samples in zip(params, per_example, strict=True):
            assert p.grad is not None and p.grad.abs().max() > 0
            torch.testing.assert_close(samples[row], p.grad, atol=1e-6, rtol=1e-4)


def test_dp_epsilon_equals_the_classifiers_for_the_same_rate_steps_and_noise(llama_dir, tokenizer) -> None:
    n, batch, steps = 24, 8, 3
    dp = DPSettings(epsilon=4.0, delta=1e-5, max_grad_norm=1.0)
    config = LocalConfig(
        steps=steps, batch_size=batch, learning_rate=0.1, progress=False, insecure_seed=3, dp=dp
    )
    decoder = FFACausalLM(load_causal_lm(llama_dir), spec_of(LLAMA), rank=2)
    qa = encode_pairs(tokenizer, PROMPTS * (n // 2), ANSWERS * (n // 2), max_length=20)
    causal = train_causal(decoder, qa, global_vector=np.zeros(decoder.layout.size, np.float32), config=config)

    encoder_config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    encoder_model = FFAClassifier(
        encoder_from_config(encoder_config), AdapterSpec(num_labels=2, target_modules=("value",)), rank=2
    )
    bert_tokenizer = AutoTokenizer.from_pretrained(default_model_path(), local_files_only=True)
    features = encode(encoder_model, bert_tokenizer, PROMPTS * (n // 2), [0, 1] * (n // 2), max_length=16)
    classified = train_local(
        encoder_model, features, global_vector=np.zeros(encoder_model.layout.size, np.float32), config=config
    )

    assert causal.sample_rate == classified.sample_rate == pytest.approx(1 / math.ceil(n / batch))
    assert causal.noise_multiplier == classified.noise_multiplier
    assert causal.epsilon == classified.epsilon
    opacus = RDPAccountant()
    opacus.history = [(causal.noise_multiplier, causal.sample_rate, steps)]
    assert causal.epsilon == pytest.approx(opacus.get_epsilon(delta=1e-5), rel=1e-6)
    assert causal.epsilon == pytest.approx(4.0, rel=1e-3)  # the whole budget, in one round
    assert np.abs(causal.delta).max() > 0


def test_training_without_dp_learns_the_answers_and_exact_match_reads_them(llama_dir, tokenizer) -> None:
    # A tiny random Llama's logits barely move (its final norm and 0.02-scale output layer bound them), so
    # its argmax is what learns: four adapted modules of each layer, seeded.
    targets = {"target_modules": ("q_proj", "v_proj", "o_proj", "down_proj")}
    model = FFACausalLM(load_causal_lm(llama_dir), spec_of(targets), rank=4)
    features = encode_pairs(tokenizer, PROMPTS, ANSWERS, max_length=16)
    swapped = encode_pairs(tokenizer, PROMPTS, ANSWERS[::-1], max_length=16)
    assert exact_match(model, features) == 0.0
    config = LocalConfig(
        steps=300,
        batch_size=2,
        learning_rate=0.1,
        optimizer="adam",
        progress=False,
        insecure_seed=0,
        max_grad_norm=None,
    )
    result = train_causal(
        model, features, global_vector=np.zeros(model.layout.size, np.float32), config=config
    )

    assert result.accuracy_after == 1.0 and result.loss_after < result.loss_before
    assert exact_match(model, features) == 1.0
    assert exact_match(model, swapped) == 0.0


# -- the standard export -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("family", "targets"), [("llama", LLAMA), ("gpt2", GPT2)])
def test_export_loads_with_stock_peft_and_gives_the_same_logits(
    request, tmp_path, tokenizer, family, targets
) -> None:
    folder = request.getfixturevalue(f"{family}_dir")
    model = FFACausalLM(load_causal_lm(folder), spec_of(targets), rank=4)  # the project's model at r_max
    vector = np.random.default_rng(2).normal(scale=0.5, size=model.layout.size).astype(np.float32)
    model.load_global(vector)
    out = export_causal_adapter(model, vector, tmp_path / "adapter", base_model="tiny-decoder")

    config = json.loads((out / "adapter_config.json").read_text())
    assert config["task_type"] == "CAUSAL_LM" and config["base_model_name_or_path"] == "tiny-decoder"
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    # Stock libraries only, from here.
    stock = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(folder), str(out))
    stock.eval()
    assert isinstance(stock, peft.PeftModelForCausalLM)
    batch = encode_pairs(tokenizer, PROMPTS, ANSWERS, max_length=24)
    with torch.no_grad():
        expected = stock(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        with stock.disable_adapter():
            base = stock(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    got = model(batch.input_ids, batch.attention_mask)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert (expected - base).abs().max() > 1e-3  # the adapter changes the model
    prompt = torch.tensor([batch.prompts[0]])
    generated = stock.generate(
        input_ids=prompt, max_new_tokens=4, do_sample=False, eos_token_id=-1, pad_token_id=0
    )
    ours = model.generate(prompt, torch.ones_like(prompt), max_new_tokens=4, eos_token_id=-1, pad_token_id=0)
    assert generated[0, prompt.shape[1] :].tolist() == ours[0].tolist()


# -- the task types and the offline task ---------------------------------------------------------------------------
def test_task_types_resolve_from_the_spec() -> None:
    assert isinstance(task_for(federation(LLAMA)), CausalLM)
    assert isinstance(task_for(FederationSpec(federation_id="cls")), SequenceClassification)


def test_drug_condition_qa_asks_for_the_condition() -> None:
    qa, conditions = drug_condition_qa(), drug_condition()
    assert load_task("drug_condition_qa").texts == qa.texts
    assert qa.labels == conditions.labels and qa.label_names == conditions.label_names
    assert qa.label_names[:3] == ("Birth Control", "Depression", "Pain")  # the answers are the conditions
    for text, prompt in zip(conditions.texts, qa.texts, strict=True):
        assert prompt == f"Review: {text}\nCondition?"


# -- the one-process simulation ------------------------------------------------------------------------------------
def test_the_simulation_runs_a_causal_federation_whose_adapter_loads_with_stock_peft(
    llama_dir, tmp_path
) -> None:
    config = SimulationConfig(
        task="drug_condition_qa",
        hospitals=3,
        edges=1,
        partition="iid",
        rounds=1,
        steps=2,
        batch_size=8,
        learning_rate=0.5,
        max_train_examples=90,
        max_test_examples=16,
        max_seq_length=24,
        epsilon=8.0,
        scheme="ckks",
        target_modules=("q_proj", "v_proj"),
        layers_to_transform=(1,),
        rank=2,
        threads=1,
        deidentify=False,
        model_path=llama_dir,
        out_dir=tmp_path,
        insecure_reproducible=True,
    )
    vectors: list[np.ndarray] = []
    report = simulate(config, on_global=lambda _, vector: vectors.append(vector))

    assert len(vectors) == 1 and vectors[0].shape == ((32 + 16) * 2,)  # B of q_proj and v_proj, no head
    assert np.abs(vectors[0]).max() > 0
    assert all(
        row.epsilon is not None and 0 < row.epsilon <= 8.0 * 1.01 for row in report.rounds[0].hospitals
    )
    stock = peft.PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(llama_dir), report.adapter_dir
    )
    spec = AdapterSpec(num_labels=2, r_max=2, alpha=8.0, **LLAMA)
    ours = FFACausalLM(load_causal_lm(llama_dir), spec, rank=2)
    ours.load_global(vectors[0])
    ids = torch.tensor([[101, 2000, 2001, 2002, 2003]])
    with torch.no_grad():
        expected = stock(input_ids=ids).logits
    torch.testing.assert_close(ours(ids, torch.ones_like(ids)), expected, atol=1e-5, rtol=0)


def test_the_simulation_refuses_label_flipping_on_answers(llama_dir, tmp_path) -> None:
    with pytest.raises(SimulationError, match="contamination 'flip' flips class labels"):
        SimulationConfig(task="drug_condition_qa", contaminated=1, model_path=llama_dir, out_dir=tmp_path)


@pytest.mark.parametrize("strategy", ["fedit", "fedrot"])
def test_a_causal_federation_that_would_train_a_is_refused_by_name(strategy) -> None:
    with pytest.raises(ValueError, match=f"task_type 'causal_lm' trains B alone .* got '{strategy}'"):
        FederationSpec(federation_id="causal", task_type=TaskType.CAUSAL_LM, strategy=strategy)
