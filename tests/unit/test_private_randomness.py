"""A curious cloud against one hospital, as issue 16 reproduced it: DP-SGD's noise regenerated from public
values, a batch of one that gives back a training note, and a crafted head that counts held-out notes near
a chosen sentence. Each attack is run twice: against the randomness a public seed gives (it succeeds, so the
test can fail) and against the hospital agent's own code path (it must learn no more than DP allows)."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig

from client_agent.agent import ClientAgent
from client_agent.model import HEAD_BIAS, HEAD_WEIGHT, FFAClassifier, default_model_path
from client_agent.releases import PublicCounts
from client_agent.train import (
    DPSettings,
    Features,
    LocalConfig,
    encode,
    example_losses,
    generators,
    train_local,
)
from protocol.messages import (
    ConvergenceConfig,
    FederationSpec,
    LocalDPConfig,
    RoundPlan,
    TrainingConfig,
)
from tests.hospitals import hospital_agent
from tests.models import encoder_from_config

HIDDEN = 128
ROUND = 3  # the public round number a seed used to come from


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(default_model_path())


def spec(**overrides) -> FederationSpec:
    values = dict(
        federation_id="onco",
        target_modules=("value",),
        layers_to_transform=(1,),
        r_max=1,
        rounds=1,
        local_dp=LocalDPConfig(epsilon=8.0, max_grad_norm=1.0),
        training=TrainingConfig(local_steps=1, batch_size=1, learning_rate=1.0),
    )
    return FederationSpec(**(values | overrides))


def plan_for(the_spec: FederationSpec) -> RoundPlan:
    return RoundPlan(
        federation_id=the_spec.federation_id,
        round=ROUND,
        adapter_version=ROUND,
        basis_version=0,
        deadline=datetime(2026, 1, 1, tzinfo=UTC),
        client_ranks={"hosp-a": 1},
        clip_norm=1.0,
        training=the_spec.training,
        local_dp=the_spec.local_dp,
        validation_fraction=the_spec.convergence.validation_fraction if the_spec.convergence else None,
    )


def hospital(tmp_path, name: str, **settings) -> ClientAgent:
    return hospital_agent(tmp_path, state=name, **settings)


def model_for(the_spec: FederationSpec, tokenizer) -> FFAClassifier:
    from client_agent.model import AdapterSpec

    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
    )
    return FFAClassifier(encoder_from_config(config, seed=0), AdapterSpec.from_federation(the_spec), rank=1)


def head_parameters(model: FFAClassifier, delta: np.ndarray) -> np.ndarray:
    return model.layout.unflatten(delta, rank=model.rank)[HEAD_WEIGHT].astype(np.float64)


def regenerated_head_noise(model: FFAClassifier, *, seed: int, std: float) -> np.ndarray:
    """What an attacker computes from public values: the noise a generator seeded from them draws, in the
    order the DP optimizer draws it (the model's trainable parameters)."""
    _, noise = generators(seed)
    draws = [torch.normal(0.0, std, p.shape, generator=noise) for p in model.trainable_parameters()]
    head = next(i for i, p in enumerate(model.trainable_parameters()) if p is model.head.weight)
    return draws[head].double().numpy()


def embedding_of(model: FFAClassifier, features: Features, start: np.ndarray) -> np.ndarray:
    """The pooled sentence embedding the head sees for the single example: what the attack recovers."""
    seen: list[torch.Tensor] = []
    hook = model.head.register_forward_hook(lambda _m, args, _o: seen.append(args[0].detach()))
    try:
        model.load_global(start)
        with torch.no_grad():
            model.forward_from(features.hidden, features.mask)
    finally:
        hook.remove()
    return seen[0][0].double().numpy()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(abs(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def best_row_cosine(gradient: np.ndarray, embedding: np.ndarray) -> float:
    """The head's weight gradient for one example is `(p - y) e^T`: its larger row points along `e`."""
    row = gradient[int(np.argmax(np.linalg.norm(gradient, axis=1)))]
    return cosine(row, embedding)


def test_two_hospitals_in_the_same_round_draw_independent_noise(tmp_path, tokenizer) -> None:
    # Prepare: two hospitals with the same data and the same plan (the worst case: only noise differs).
    the_spec = spec(training=TrainingConfig(local_steps=4, batch_size=8, learning_rate=1.0), rounds=2)
    model = model_for(the_spec, tokenizer)
    features = encode(
        model, tokenizer, [f"note {i}" for i in range(40)], [i % 2 for i in range(40)], max_length=8
    )
    start = np.zeros(model.layout.size, dtype=np.float32)
    public = PublicCounts.derive(40, None)

    # Execute: each trains the plan through the agent's own code path; then twice with a public seed.
    deltas = [
        hospital(tmp_path, name)._train(model, features, start, plan_for(the_spec), the_spec, public).delta
        for name in ("a", "b")
    ]
    config = LocalConfig(
        steps=4,
        batch_size=8,
        learning_rate=1.0,
        progress=False,
        insecure_seed=ROUND,
        dp=DPSettings(epsilon=8.0, rounds=2),
    )
    seeded = [train_local(model, features, global_vector=start, config=config).delta for _ in range(2)]

    # Assert: a public seed makes two hospitals' updates identical; the agent's are not.
    np.testing.assert_array_equal(seeded[0], seeded[1])
    assert np.linalg.norm(deltas[0] - deltas[1]) > 0.1 * np.linalg.norm(deltas[0])


def test_the_noise_a_hospital_adds_is_not_predictable_from_public_values(tmp_path, tokenizer) -> None:
    # Prepare: the attacker knows everything public (round, sigma, C, shapes), and here even the data: it
    # replays the round with every seed a public value could give and predicts the hospital's update.
    the_spec = spec(training=TrainingConfig(local_steps=2, batch_size=8, learning_rate=1.0))
    model = model_for(the_spec, tokenizer)
    features = encode(
        model, tokenizer, [f"note {i}" for i in range(24)], [i % 2 for i in range(24)], max_length=8
    )
    start = np.zeros(model.layout.size, dtype=np.float32)
    public = PublicCounts.derive(24, None)
    replay_config = LocalConfig(
        steps=2,
        batch_size=8,
        learning_rate=1.0,
        progress=False,
        insecure_seed=ROUND,
        dp=DPSettings(epsilon=8.0, rounds=1, spent_before=((10.0, 1.0, 1),)),
    )
    predicted = train_local(
        model, features, global_vector=start, config=replay_config, public_examples=public.train
    ).delta

    # Execute: ten hospital rounds through the agent's code path, each from a fresh history.
    agent = hospital(tmp_path, "a")
    actual = []
    for _ in range(10):
        agent.state.privacy = None
        actual.append(agent._train(model, features, start, plan_for(the_spec), the_spec, public).delta)

    # Assert: the prediction misses every round by as much as two independent rounds differ (both are the
    # difference of two independent noise draws); a prediction that worked would miss by zero.
    spread = np.median([np.linalg.norm(a - b) for a, b in itertools.pairwise(actual)])
    misses = [np.linalg.norm(a - predicted) for a in actual]
    assert min(misses) > 0.5 * spread
    assert np.median(misses) == pytest.approx(spread, rel=0.5)


def test_a_batch_of_one_does_not_give_back_the_training_note(tmp_path, tokenizer) -> None:
    # Prepare: the cloud's plan asks for one step on a batch of one, with lr 1: the hospital's head update is
    # minus (its one note's clipped gradient plus noise). A hospital whose noise the attacker regenerates
    # gives the note's embedding back exactly, which is what happened when the seed was the round number.
    the_spec = spec()
    model = model_for(the_spec, tokenizer)
    features = encode(model, tokenizer, ["patient j. doe, hiv positive, relapse"], [1], max_length=12)
    start = np.zeros(model.layout.size, dtype=np.float32)
    public = PublicCounts.derive(1, None)  # q = 1: the note is in the batch for sure
    embedding = embedding_of(model, features, start)
    dp = DPSettings(epsilon=8.0, rounds=1, spent_before=((10.0, 1.0, 1),))
    seeded_config = LocalConfig(
        steps=1, batch_size=1, learning_rate=1.0, progress=False, insecure_seed=ROUND, dp=dp
    )

    # Execute 1: the attack against a public seed.
    seeded = train_local(model, features, global_vector=start, config=seeded_config, public_examples=1)
    assert seeded.noise_multiplier is not None
    std = seeded.noise_multiplier * the_spec.local_dp.max_grad_norm
    recovered = -head_parameters(model, seeded.delta) - regenerated_head_noise(model, seed=ROUND, std=std)
    assert best_row_cosine(recovered, embedding) > 0.999

    # Execute 2: the same attack against the agent's own code path, eight times.
    agent = hospital(tmp_path, "a")
    cosines = []
    for _ in range(8):
        agent.state.privacy = None
        result = agent._train(model, features, start, plan_for(the_spec), the_spec, public)
        assert result.noise_multiplier == pytest.approx(seeded.noise_multiplier)
        guess = -head_parameters(model, result.delta) - regenerated_head_noise(model, seed=ROUND, std=std)
        cosines.append(best_row_cosine(guess, embedding))

    # Assert: the subtraction leaves the note's gradient under two noise draws; with the noise at this
    # budget the recovered direction is mostly noise (a random direction in 128 dimensions has |cos| ~ 0.07).
    assert np.mean(cosines) < 0.35


def crafted_start(
    model: FFAClassifier, sensitive: np.ndarray, *, threshold: float, scale: float
) -> np.ndarray:
    """A head that costs almost nothing on notes far from `sensitive` and a large loss on notes within
    `threshold` cosine of it (every held-out note labelled 1): the held-out loss counts close notes."""
    tensors = model.layout.unflatten(np.zeros(model.layout.size, dtype=np.float32), rank=model.rank)
    unit = sensitive / np.linalg.norm(sensitive)
    weight = np.zeros_like(tensors[HEAD_WEIGHT])
    weight[0] = scale * unit
    tensors[HEAD_WEIGHT] = weight
    tensors[HEAD_BIAS] = np.array([-scale * threshold, 0.0], dtype=np.float32)
    return model.layout.flatten(tensors)


def test_a_crafted_head_learns_no_more_about_held_out_notes_than_dp_allows(tmp_path, tokenizer) -> None:
    # Prepare: two held-out sets that differ in one note, the sensitive sentence the cloud asks about; a
    # hospital with its own budget of epsilon 1 and a federation of 3 rounds with convergence on.
    the_spec = spec(
        rounds=3,
        convergence=ConvergenceConfig(min_delta=0.01, validation_fraction=0.2, loss_clip=3.0),
        local_dp=LocalDPConfig(epsilon=8.0),
    )
    model = model_for(the_spec, tokenizer)
    others = [f"routine visit {i}, blood pressure normal" for i in range(19)]
    sensitive = "patient j. doe, hiv positive, relapse"
    without = encode(model, tokenizer, [*others, "routine visit 99, all clear"], [1] * 20, max_length=12)
    with_note = encode(model, tokenizer, [*others, sensitive], [1] * 20, max_length=12)
    zero = np.zeros(model.layout.size, dtype=np.float32)
    target = embedding_of(model, encode(model, tokenizer, [sensitive], [1], max_length=12), zero)
    closest_other = max(
        cosine(
            embedding_of(
                model,
                Features(without.hidden[i : i + 1], without.mask[i : i + 1], without.labels[i : i + 1]),
                zero,
            ),
            target,
        )
        for i in range(20)
    )
    threshold = (closest_other + 1.0) / 2
    start = crafted_start(model, target, threshold=threshold, scale=20.0 / (1.0 - threshold))
    public = PublicCounts(100, 80, 20)
    model.load_global(start)
    exact = {
        name: float(np.mean(example_losses(model, features)))
        for name, features in (("without", without), ("with", with_note))
    }
    # Without noise the probe separates the two sets perfectly: the test could fail.
    assert exact["with"] - exact["without"] > 0.5

    # Execute: 150 releases of each set's held-out loss through the agent, each from a fresh history.
    agent = hospital(tmp_path, "a", local_epsilon_budget=1.0)
    plan = plan_for(the_spec)
    released: dict[str, list[float]] = {"without": [], "with": []}
    for _ in range(150):
        for name, features in (("without", without), ("with", with_note)):
            agent.state.held_out_privacy = None
            loss = agent._held_out_loss(model, features, start, plan, the_spec, public)
            assert loss is not None
            released[name].append(loss)

    # Assert: the best threshold test on the released losses is no better than (1, 1e-5)-DP allows for
    # any test, e^1 / (1 + e^1) + delta = 0.731 (with four standard errors of room for 300 trials).
    cut = (np.median(released["with"]) + np.median(released["without"])) / 2
    accuracy = (np.mean(np.array(released["with"]) > cut) + np.mean(np.array(released["without"]) <= cut)) / 2
    bound = math.e / (1 + math.e) + 1e-5
    assert accuracy < bound
    assert agent.state.held_out_privacy is not None and len(agent.state.held_out_privacy) == 2
