"""Adversarial review of issue 24's causal language models (items 1, 2 and 5): FFACausalLM, the answer loss
under DP-SGD, the cloud's layout from the config alone, the stock PEFT export and the bad input a causal
federation can be given.

Tiny random Llama and GPT-2 models from configs (tests/decoders.py), MiniLM's tokenizer, nothing from a hub.
Each strict xfail is a reproduction of a promise that does not hold; the plain tests are promises the review
tried to break and found kept (they guard them from now on).
"""

from __future__ import annotations

import io
import os
import zipfile

import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from client_agent.causal_export import export_causal_adapter
from client_agent.causal_lm import FFACausalLM, load_causal_lm
from client_agent.causal_train import encode_pairs, exact_match, train_causal
from client_agent.model import AdapterSpec, ModelError
from client_agent.train import DPSettings, LocalConfig, TrainingError
from protocol.ffa import frozen_basis
from protocol.messages import FederationSpec, TaskType, TrainingConfig
from services.model_layout import LayoutError, federation_layout
from tests.cloud.harness import Federation, bearer, running_cloud, small_spec
from tests.decoders import save_decoder, tiny_gpt2, tiny_llama

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPTS = ["Review: it cleared my skin in weeks\nCondition?", "Review: no more cramps\nCondition?"]
ANSWERS = ["Acne", "Birth Control"]
#: `pytest.raises` that did not see its exception fails the test with this.
DID_NOT_RAISE = pytest.fail.Exception


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return save_decoder(tiny_llama(), tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return save_decoder(tiny_gpt2(), tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="module")
def tokenizer(llama_dir):
    return AutoTokenizer.from_pretrained(llama_dir, local_files_only=True)


def adapter(target_modules: tuple[str, ...], layers: tuple[int, ...] | None = None) -> AdapterSpec:
    return AdapterSpec(
        num_labels=2, r_max=4, alpha=8.0, seed=7, target_modules=target_modules, layers_to_transform=layers
    )


def federation(target_modules: tuple[str, ...], layers: tuple[int, ...] | None = None) -> FederationSpec:
    return FederationSpec(
        federation_id="causal",
        task_type=TaskType.CAUSAL_LM,
        r_max=4,
        seed=7,
        target_modules=target_modules,
        layers_to_transform=layers,
    )


# -- (3) the cloud's layout from the config against the hospital's model -------------------------------------
@pytest.mark.xfail(
    strict=True,
    raises=KeyError,
    reason="peft adapts an nn.Embedding target with lora_embedding_A/B, not lora_A: FFACausalLM's "
    "_install_frozen_basis dies with KeyError 'default', while the cloud's federation_layout skips the "
    "embedding and accepts the federation with a layout that lacks it",
)
@pytest.mark.parametrize(
    ("family", "targets"), [("llama", ("q_proj", "embed_tokens")), ("gpt2", ("c_attn", "wte"))]
)
def test_an_embedding_target_is_refused_by_name_or_laid_out_as_the_hospital_does(
    request, family, targets
) -> None:
    folder = request.getfixturevalue(f"{family}_dir")
    try:
        cloud, cloud_in = federation_layout(federation(targets), folder)
    except LayoutError as e:
        assert targets[1] in str(e)
        return
    # The cloud accepted it: the hospital's model must then have the cloud's layout.
    model = FFACausalLM(load_causal_lm(folder), adapter(targets), rank=2)
    assert model.layout.digest == cloud.digest and model.in_features() == cloud_in


@pytest.mark.xfail(
    strict=True,
    raises=DID_NOT_RAISE,
    reason="the cloud keeps only nn.Linear/Conv1D targets and accepts ('q_proj', 'self_attn'); every "
    "hospital then refuses the same spec (peft: 'Target module LlamaAttention is not supported'), so the "
    "federation is created and can never run a round",
)
def test_the_cloud_refuses_a_target_that_no_hospital_can_adapt(llama_dir) -> None:
    targets = ("q_proj", "self_attn")
    with pytest.raises(ModelError, match="self_attn"):  # the hospital refuses it (this part holds)
        FFACausalLM(load_causal_lm(llama_dir), adapter(targets), rank=2)
    with pytest.raises(LayoutError, match="self_attn"):
        federation_layout(federation(targets), llama_dir)


@pytest.mark.xfail(
    strict=True,
    raises=TypeError,
    reason="federation_layout builds AutoModel.from_config(config, add_pooling_layer=False) for a "
    "sequence_classification spec (the default task_type) whatever the model: on a Llama cloud it raises "
    "TypeError (LlamaModel.__init__ got an unexpected keyword argument), which the cloud's _compute_layout "
    "does not catch (it maps only LayoutError to a 4xx)",
)
def test_a_classification_spec_on_a_decoder_cloud_is_refused_by_name(llama_dir) -> None:
    spec = FederationSpec(federation_id="causal", target_modules=("q_proj",))  # task_type left at its default
    with pytest.raises(LayoutError, match="task_type"):
        federation_layout(spec, llama_dir)


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="peft matches a target equal to a whole module name ('lm_head') before it looks at "
    "layers_to_transform, so the hospital adapts lm_head whatever the layers (Llama: 122,216 values = "
    "lm_head 30,522 x 4 + q_proj 32 x 4); the cloud's lora_targets drops lm_head, which has no layer index "
    "(128 values): the federation is created with a layout no hospital's upload can match",
)
@pytest.mark.parametrize(
    ("family", "targets"), [("llama", ("q_proj", "lm_head")), ("gpt2", ("c_attn", "lm_head"))]
)
def test_a_top_level_target_with_layers_is_laid_out_as_the_hospital_does(request, family, targets) -> None:
    folder = request.getfixturevalue(f"{family}_dir")
    try:
        cloud, cloud_in = federation_layout(federation(targets, (1,)), folder)
    except LayoutError as e:
        assert "lm_head" in str(e)
        return
    model = FFACausalLM(load_causal_lm(folder), adapter(targets, (1,)), rank=2)
    assert [e.name for e in model.layout.entries] == [e.name for e in cloud.entries]
    assert model.layout.digest == cloud.digest and model.in_features() == cloud_in


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="target_modules allows dots (ModuleName) and peft matches a dotted suffix ('self_attn.v_proj', "
    "GPT-2's 'mlp.c_proj' as opposed to 'attn.c_proj'), so the hospital adapts it; the cloud's lora_targets "
    "compares only the last name part and drops it (Llama: hospital 384 values, cloud 256)",
)
@pytest.mark.parametrize(
    ("family", "targets"),
    [("llama", ("q_proj", "self_attn.v_proj")), ("gpt2", ("c_attn", "mlp.c_proj"))],
)
def test_a_dotted_target_is_laid_out_as_the_hospital_does(request, family, targets) -> None:
    folder = request.getfixturevalue(f"{family}_dir")
    try:
        cloud, cloud_in = federation_layout(federation(targets), folder)
    except LayoutError as e:
        assert targets[1] in str(e)
        return
    model = FFACausalLM(load_causal_lm(folder), adapter(targets), rank=2)
    assert [e.name for e in model.layout.entries] == [e.name for e in cloud.entries]
    assert model.layout.digest == cloud.digest and model.in_features() == cloud_in


# -- (5) bad input: a typed error naming the field and the value ---------------------------------------------
@pytest.mark.xfail(
    strict=True,
    raises=DID_NOT_RAISE,
    reason="a misspelt target beside a real one ('v_prj' beside 'q_proj') is silently dropped by peft and by "
    "the cloud: the federation trains q_proj alone and nobody is told",
)
def test_an_unknown_target_module_beside_a_known_one_is_refused_by_name(llama_dir) -> None:
    targets = ("q_proj", "v_prj")
    with pytest.raises(LayoutError, match="v_prj"):
        federation_layout(federation(targets), llama_dir)
    with pytest.raises(ModelError, match="v_prj"):
        FFACausalLM(load_causal_lm(llama_dir), adapter(targets), rank=2)


@pytest.mark.xfail(
    strict=True,
    raises=DID_NOT_RAISE,
    reason="layers_to_transform (1, 5) on a 2-layer model is accepted by the cloud and the hospital alike: "
    "layer 5 does not exist and is silently ignored (only a tuple with no existing layer is refused)",
)
def test_a_layer_index_out_of_range_is_refused_by_name(llama_dir) -> None:
    layers = (1, 5)
    with pytest.raises(LayoutError, match="5"):
        federation_layout(federation(("q_proj",), layers), llama_dir)
    with pytest.raises(ModelError, match="5"):
        FFACausalLM(load_causal_lm(llama_dir), adapter(("q_proj",), layers), rank=2)


@pytest.mark.xfail(
    strict=True,
    raises=DID_NOT_RAISE,
    reason="encode_pairs accepts an empty (or blank) answer: ' ' tokenises to nothing, the example trains the "
    "model to answer with eos at once and exact match counts an empty generation as correct",
)
@pytest.mark.parametrize("answer", ["", "   "])
def test_an_empty_answer_is_refused_by_name(tokenizer, answer) -> None:
    with pytest.raises((TrainingError, ValueError), match="answer"):
        encode_pairs(tokenizer, PROMPTS[:1], [answer], max_length=24)


@pytest.mark.xfail(
    strict=True,
    raises=RuntimeError,
    reason="with a tokenizer that has no bos (MiniLM's, the tests' and the demo's) an empty prompt encodes to "
    "zero prompt tokens: encode_pairs accepts it, and greedy generation then crashes mid-round on a "
    "0-length input ('cannot reshape tensor of 0 elements')",
)
def test_an_empty_prompt_is_refused_by_name_or_scored(llama_dir, tokenizer) -> None:
    try:
        features = encode_pairs(tokenizer, [""], ["Acne"], max_length=16)
    except (TrainingError, ValueError) as e:
        assert "prompt" in str(e)
        return
    model = FFACausalLM(load_causal_lm(llama_dir), adapter(("q_proj",)), rank=2)
    assert 0.0 <= exact_match(model, features) <= 1.0


@pytest.mark.xfail(
    strict=True,
    raises=IndexError,
    reason="TrainingConfig allows max_seq_length up to 4096 and every sequence is right-padded to it; GPT-2 "
    "has n_positions positions (128 here, 1024 for the real one), so training crashes mid-round with "
    "IndexError in the position embedding instead of a typed error naming max_seq_length",
)
def test_a_max_seq_length_beyond_the_models_positions_is_refused_by_name(gpt2_dir, tokenizer) -> None:
    model = FFACausalLM(load_causal_lm(gpt2_dir), adapter(("c_attn",)), rank=2)
    config = LocalConfig(steps=1, batch_size=2, learning_rate=0.1, progress=False, insecure_seed=0)
    try:
        features = encode_pairs(tokenizer, PROMPTS, ANSWERS, max_length=200)
        train_causal(model, features, global_vector=np.zeros(model.layout.size, np.float32), config=config)
    except (TrainingError, ModelError) as e:
        assert "200" in str(e) and "max" in str(e)


# -- promises that held (kept as guards) ---------------------------------------------------------------------
FAMILIES = [("llama", ("q_proj", "v_proj")), ("gpt2", ("c_attn",))]


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
@pytest.mark.filterwarnings("ignore:Secure RNG turned off")
@pytest.mark.parametrize(("family", "targets"), FAMILIES)
def test_dp_sgd_moves_only_b_by_the_noise_it_charges_for(request, tokenizer, family, targets) -> None:
    """(1, 2) After DP-SGD only `B` moved, `A` is still the seeded basis, and `B` moved by the Gaussian noise
    whose sigma the accountant charged: with the example gradients clipped to C and sigma large, the delta's
    norm is that of T steps of N(0, (lr sigma C / expected batch)^2) per coordinate (within 15%; the clipped
    gradients add at most T lr C batch / expected batch)."""
    folder = request.getfixturevalue(f"{family}_dir")
    model = FFACausalLM(load_causal_lm(folder), adapter(targets, (1,)), rank=4)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    n, batch, steps, clip, lr = 32, 8, 4, 1.0, 1.0
    dp = DPSettings(epsilon=0.5, delta=1e-5, max_grad_norm=clip)
    config = LocalConfig(steps=steps, batch_size=batch, learning_rate=lr, progress=False, dp=dp)
    features = encode_pairs(tokenizer, PROMPTS * (n // 2), ANSWERS * (n // 2), max_length=24)
    result = train_causal(
        model, features, global_vector=np.zeros(model.layout.size, np.float32), config=config
    )

    moved = [name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])]
    assert moved and all(".lora_B." in name for name in moved)
    for name, layer in model.lora_layers().items():
        a_max = frozen_basis(seed=7, basis_version=0, module=name, r_max=4, in_features=layer.in_features)
        np.testing.assert_array_equal(layer.lora_A["default"].weight.detach().numpy(), a_max)
        assert not layer.lora_A["default"].weight.requires_grad

    assert result.noise_multiplier is not None and result.sample_rate is not None
    sigma, rate = result.noise_multiplier, result.sample_rate
    assert sigma > 3.0  # the gradients' share of the delta stays under 5 %
    accountant = RDPAccountant()
    accountant.history = [(sigma, rate, steps)]
    assert result.epsilon == pytest.approx(accountant.get_epsilon(delta=dp.delta), rel=1e-6)
    assert result.epsilon <= dp.epsilon * (1 + 1e-6)
    expected_batch = n * rate
    noise_norm = np.sqrt(model.layout.size * steps) * lr * sigma * clip / expected_batch
    assert np.linalg.norm(result.delta) / noise_norm == pytest.approx(1.0, abs=0.15)


@pytest.mark.parametrize(("family", "targets"), FAMILIES)
def test_a_rebased_adapter_exported_by_the_hospital_loads_with_stock_peft(
    request, tmp_path, family, targets
) -> None:
    """(4) After a re-based basis (a broadcast `A` for every module) the exported folder, loaded by stock
    AutoModelForCausalLM + PeftModel, gives the project's logits (GPT-2's Conv1D included)."""
    folder = request.getfixturevalue(f"{family}_dir")
    model = FFACausalLM(load_causal_lm(folder), adapter(targets, (1,)), rank=4)
    rng = np.random.default_rng(11)
    model.install_basis({name: rng.normal(size=(4, width)) for name, width in model.in_features().items()})
    vector = rng.normal(size=model.layout.size).astype(np.float32)
    model.load_global(vector)
    out = export_causal_adapter(model, vector, tmp_path / "adapter", base_model=family)

    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102, 2054]])
    mask = torch.ones_like(ids)
    stock = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(folder, local_files_only=True), out
    ).eval()
    with torch.no_grad():
        ours = model(ids, mask)
        theirs = stock(input_ids=ids, attention_mask=mask).logits
    assert ours.abs().max() > 0
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)


# -- the cloud's side, in-process on both stores -------------------------------------------------------------
@pytest.mark.anyio
@pytest.mark.filterwarnings("ignore:fan_in_fan_out is set to False")
async def test_the_clouds_gpt2_zip_loads_with_stock_peft_and_gives_the_projects_logits(
    gpt2_dir, tmp_path
) -> None:
    """(4) The cloud writes `fan_in_fan_out: false` in a GPT-2 adapter's config (its `adapter_files` call
    does not pass it); stock peft corrects it per module with a warning, and the logits still agree."""
    spec = small_spec(
        "causal-gpt2",
        task_type=TaskType.CAUSAL_LM,
        base_model="tiny-gpt2",
        target_modules=("c_attn",),
        layers_to_transform=(1,),
    )
    async with running_cloud(model_path=gpt2_dir) as cloud:
        fed = await Federation.create(cloud.http, spec)
        await fed.start(cloud.http)
        rng = np.random.default_rng(5)
        size = federation_layout(spec, gpt2_dir)[0].size
        for edge in fed.edges.values():
            deltas = {cid: rng.normal(0.0, 0.3, size) for cid in edge.clients}
            aggregate = await fed.aggregate(cloud, edge.edge_id, 0, deltas)
            assert (await fed.post(cloud.http, aggregate)).status_code == 202
        vector = (await cloud.vector(fed.fid, 1)).astype(np.float32)
        response = await cloud.http.get(
            f"/federations/{fed.fid}/adapters/1", headers=bearer(fed.client_tokens["client-a"])
        )
    assert response.status_code == 200, response.text
    out = tmp_path / "cloud-zip"
    zipfile.ZipFile(io.BytesIO(response.content)).extractall(out)

    at_r_max = AdapterSpec(
        num_labels=2,
        r_max=spec.r_max,
        alpha=spec.lora_alpha,
        seed=spec.seed,
        target_modules=spec.target_modules,
        layers_to_transform=spec.layers_to_transform,
    )
    model = FFACausalLM(load_causal_lm(gpt2_dir), at_r_max, rank=spec.r_max)
    model.load_global(vector)
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102, 2054]])
    mask = torch.ones_like(ids)
    stock = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(gpt2_dir, local_files_only=True), out
    ).eval()
    with torch.no_grad():
        ours = model(ids, mask)
        theirs = stock(input_ids=ids, attention_mask=mask).logits
    assert np.abs(vector).max() > 0
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)


@pytest.mark.anyio
@pytest.mark.xfail(
    strict=True,
    raises=TypeError,
    reason="POST /federations with a sequence_classification spec (the default) on a cloud whose model is a "
    "decoder: federation_layout's TypeError escapes _compute_layout (it maps only LayoutError to a 4xx), so "
    "the request dies instead of answering 400 with a code naming task_type",
)
async def test_the_cloud_answers_a_classification_spec_on_its_decoder_with_a_4xx(llama_dir) -> None:
    spec = small_spec("classify-on-llama", target_modules=("q_proj",), layers_to_transform=(1,))
    async with running_cloud(model_path=llama_dir) as cloud:
        response = await cloud.http.post("/federations", json=spec.model_dump(mode="json"))
    assert 400 <= response.status_code < 500 and "task_type" in response.text


@pytest.mark.xfail(
    strict=True,
    raises=DID_NOT_RAISE,
    reason="a causal_lm spec accepts training.head_learning_rate, a setting for the classification head a "
    "causal LM does not have: train_causal never reads it, so the federation's stated head rate is silently "
    "ignored (the strategies that train A are refused by name; this head setting is not)",
)
def test_a_causal_spec_with_a_head_setting_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="head_learning_rate"):
        FederationSpec(
            federation_id="causal",
            task_type=TaskType.CAUSAL_LM,
            target_modules=("q_proj",),
            training=TrainingConfig(head_learning_rate=5.0),
        )
