"""The training recipe on a tiny model: a short IID federation under DP-SGD learns past the class prior with
the head's own learning rate, and ends at the majority class without it (docs/results.md, "A recipe that
learns").

The inputs are synthetic hidden states at the adapted layer of a tiny random BERT (no text, no tokenizer):
every example shares one large offset, as every sentence's embedding shares one direction in MiniLM, and
the class moves it a little along another direction. Three hospitals hold IID shares (60% of one class
each), train from the global adapter with the agent's `train_local` under DP-SGD at epsilon 8, and the
global adapter moves by the plain mean of their deltas (FFA-LoRA's aggregate).
"""

import warnings

import numpy as np
import pytest
import torch
from transformers import BertConfig

from client_agent.model import AdapterSpec, FFAClassifier
from client_agent.recipe import HEAD_LEARNING_RATE, head_rate_under_noise
from client_agent.releases import epsilon_of
from client_agent.train import DPSettings, Features, LocalConfig, PrivacyHistory, evaluate, train_local
from tests.models import encoder_from_config

HOSPITALS, ROUNDS, STEPS, BATCH, EPSILON = 3, 2, 8, 32, 8.0
HIDDEN = 64


def _tiny_model() -> FFAClassifier:
    config = BertConfig(
        vocab_size=64, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128
    )
    spec = AdapterSpec(num_labels=2, target_modules=("value",), layers_to_transform=(1,), r_max=2)
    return FFAClassifier(encoder_from_config(config, seed=0), spec, rank=2)


def _features(n: int, generator: torch.Generator) -> Features:
    """`n` examples of 4 tokens: a shared offset, unit noise per token, and +-0.1 along a class direction."""
    labels = (torch.rand(n, generator=generator) < 0.4).long()  # 60% class 0
    fixed = torch.Generator().manual_seed(123)
    offset, direction = 0.7 * torch.randn(HIDDEN, generator=fixed), torch.randn(HIDDEN, generator=fixed)
    sign = (2.0 * labels.float() - 1.0)[:, None, None]
    hidden = offset + torch.randn(n, 4, HIDDEN, generator=generator) + 0.1 * sign * direction
    return Features(hidden=hidden, mask=torch.ones(n, 4, dtype=torch.long), labels=labels)


def _federation(head_learning_rate: float | None) -> tuple[float, float, list[float]]:
    """(test accuracy, majority share of the test set, each hospital's epsilon) after the rounds."""
    generator = torch.Generator().manual_seed(0)
    shares = [_features(600, generator) for _ in range(HOSPITALS)]
    test = _features(1000, generator)
    model = _tiny_model()
    vector = model.layout.initial_vector(seed=0, basis_version=0)
    histories = [PrivacyHistory() for _ in shares]
    for round_ in range(ROUNDS):
        deltas = []
        for index, (share, history) in enumerate(zip(shares, histories, strict=True)):
            config = LocalConfig(
                steps=STEPS,
                batch_size=BATCH,
                learning_rate=2.0,
                head_learning_rate=head_learning_rate,
                insecure_seed=1000 * round_ + index,  # the test repeats draw for draw
                progress=False,
                dp=DPSettings(epsilon=EPSILON, rounds=ROUNDS),
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = train_local(model, share, global_vector=vector, config=config, history=history)
            deltas.append(result.delta)
        vector = vector + np.mean(deltas, axis=0)
    model.load_global(vector)
    majority = float(np.bincount(test.labels.numpy()).max() / len(test))
    epsilons = [epsilon_of(h.entries, delta=1e-5, accountant="rdp") for h in histories]
    return evaluate(model, test)[1], majority, epsilons


@pytest.fixture(scope="module")
def runs() -> dict[str, tuple[float, float, list[float]]]:
    return {"old": _federation(None), "recipe": _federation(HEAD_LEARNING_RATE)}


def test_without_the_head_rate_an_iid_federation_ends_at_the_majority_class(runs):
    accuracy, majority, _ = runs["old"]
    assert accuracy == pytest.approx(majority, abs=0.01)


def test_with_the_head_rate_an_iid_federation_learns_past_the_class_prior(runs):
    accuracy, majority, _ = runs["recipe"]
    assert accuracy > majority + 0.05


def test_the_head_rate_spends_no_privacy_budget(runs):
    """The rate acts after clipping and noise: both recipes spend the same epsilon, within the target."""
    assert runs["recipe"][2] == runs["old"][2]
    assert max(runs["recipe"][2]) <= EPSILON * (1 + 1e-6)


def test_the_head_keeps_its_full_rate_up_to_the_reference_noise_and_loses_it_in_proportion_above():
    """`rate * min(1, 0.0065 / (sigma / batch))`, never below the adapter's rate (worked by hand)."""
    assert head_rate_under_noise(20.0, 2.0, noise_multiplier=0.83, expected_batch=128) == 20.0  # 0.0065
    assert head_rate_under_noise(20.0, 2.0, noise_multiplier=0.4, expected_batch=128) == 20.0
    # The privacy table's federation at epsilon 6: sigma 0.891 over batches of 64, noise 0.0139.
    assert head_rate_under_noise(20.0, 2.0, noise_multiplier=0.891, expected_batch=64) == pytest.approx(
        20.0 * 0.0065 * 64 / 0.891
    )
    assert head_rate_under_noise(20.0, 2.0, noise_multiplier=10.0, expected_batch=64) == 2.0  # the floor
    assert head_rate_under_noise(20.0, 2.0, noise_multiplier=0.0, expected_batch=64) == 20.0
    assert head_rate_under_noise(1.0, 2.0, noise_multiplier=5.0, expected_batch=8) == 1.0  # no higher rate


def test_train_local_lowers_the_heads_rate_for_its_own_noise_and_keeps_it_without_dp():
    """A hospital with 600 examples in batches of 64 at epsilon 8 draws more noise than the reference:
    its head trains at the lowered rate, which the result reports; without DP at the full rate."""
    generator = torch.Generator().manual_seed(5)
    share = _features(600, generator)
    model = _tiny_model()
    vector = model.layout.initial_vector(seed=0, basis_version=0)
    dp = DPSettings(epsilon=8.0, rounds=1)
    common = dict(steps=4, batch_size=64, learning_rate=2.0, head_learning_rate=20.0, insecure_seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        noisy = train_local(
            model, share, global_vector=vector, config=LocalConfig(**common, dp=dp, progress=False)
        )
        plain = train_local(model, share, global_vector=vector, config=LocalConfig(**common, progress=False))
    assert noisy.noise_multiplier is not None and noisy.sample_rate is not None
    expected = max(2.0, 20.0 * 0.0065 / (noisy.noise_multiplier / (600 * noisy.sample_rate)))
    assert 2.0 < expected < 20.0
    assert noisy.head_learning_rate == pytest.approx(expected)
    assert plain.head_learning_rate == 20.0
