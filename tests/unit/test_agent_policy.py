"""The hospital's policy on its own: safe defaults in its settings, the limits at their boundaries, the
peers it talks to, and the demo's federations (which must pass it, or opt in loudly)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from client_agent.errors import InsecurePeerError, PlanRefusedError, SpecRefusedError
from client_agent.policy import HospitalPolicy, verify_plan
from fedlora.launcher import DemoConfig
from protocol.messages import FederationSpec, LocalDPConfig, Strategy, TrainingConfig
from services.identity import SigningKey
from services.settings import ClientSettings

REQUIRED = {
    "client_id": "hosp-a",
    "federation_id": "onco",
    "edge_id": "edge-1",
    "cloud_url": "https://cloud.example",
    "enrolment_token": "enrol-token-0123456789abcdef",
}


def policy(**overrides: object) -> HospitalPolicy:
    return HospitalPolicy.from_settings(ClientSettings(**(REQUIRED | overrides)))  # type: ignore[arg-type]


def test_the_defaults_are_the_safe_ones_and_the_floors_cannot_be_lowered_to_nothing() -> None:
    settings = ClientSettings(**REQUIRED)  # type: ignore[arg-type]

    assert (settings.local_epsilon_budget, settings.min_batch_size, settings.min_clients_per_edge) == (
        10,
        16,
        2,
    )
    assert settings.max_rank == 16 and settings.plan_public_key is None
    assert not (settings.allow_plaintext or settings.allow_without_local_dp or settings.allow_insecure_http)
    assert policy().warnings() == []
    for field, value in (("min_clients_per_edge", 1), ("min_batch_size", 1), ("plan_public_key", "ab")):
        with pytest.raises(ValidationError, match=field):
            ClientSettings(**(REQUIRED | {field: value}))  # type: ignore[arg-type]


def test_the_limits_hold_at_their_boundaries() -> None:
    # delta = 1/n and a batch exactly at the floor pass; just above / below is refused.
    spec = FederationSpec(
        federation_id="onco",
        local_dp=LocalDPConfig(epsilon=10.0, delta=1 / 200),
        training=TrainingConfig(batch_size=16),
    )
    policy().check_spec(spec, num_examples=200)

    with pytest.raises(SpecRefusedError) as delta:
        policy().check_spec(spec, num_examples=201)
    with pytest.raises(SpecRefusedError) as epsilon:
        policy(local_epsilon_budget=9.99).check_spec(spec, num_examples=200)
    with pytest.raises(SpecRefusedError) as batch:
        policy(min_batch_size=17).check_spec(spec, num_examples=200)
    with pytest.raises(SpecRefusedError) as k:
        policy(min_clients_per_edge=3).check_spec(spec, num_examples=200)

    assert (delta.value.field, delta.value.value, delta.value.limit) == ("local_dp.delta", 1 / 200, 1 / 201)
    assert "above 1/n" in str(delta.value) and "201 examples" in str(delta.value)
    assert (epsilon.value.field, epsilon.value.limit) == ("local_dp.epsilon", 9.99)
    assert (batch.value.field, batch.value.value, batch.value.limit) == ("training.batch_size", 16, 17)
    assert (k.value.field, k.value.value, k.value.limit) == ("min_clients_per_edge", 2, 3)


def test_dp_off_passes_only_with_the_opt_in_and_says_so() -> None:
    spec = FederationSpec(federation_id="onco", local_dp=LocalDPConfig(enabled=False))
    with pytest.raises(SpecRefusedError, match=r"local_dp\.enabled"):
        policy().check_spec(spec, num_examples=500)
    opted = policy(allow_without_local_dp=True)
    opted.check_spec(spec, num_examples=500)
    assert any("FEDLORA_ALLOW_WITHOUT_LOCAL_DP" in line for line in opted.warnings())


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://cloud.example", True),
        ("https://10.0.0.7:8700", True),
        ("http://127.0.0.1:8700", True),
        ("http://127.3.4.5:8700", True),
        ("http://localhost:8710", True),
        ("http://[::1]:8710", True),
        ("http://cloud.example:8700", False),
        ("http://10.0.0.7:8700", False),
        ("http://localhost.evil.example", False),
        ("ftp://127.0.0.1/x", False),
    ],
)
def test_plain_http_is_allowed_to_this_machine_only(url: str, allowed: bool) -> None:
    if allowed:
        assert policy().check_peer_url(url, field="cloud_url") == url
    else:
        with pytest.raises(InsecurePeerError) as refused:
            policy().check_peer_url(url, field="cloud_url")
        assert (refused.value.field, refused.value.value) == ("cloud_url", url)
    if url.startswith("http://"):
        policy(allow_insecure_http=True).check_peer_url(url, field="cloud_url")


def test_a_vector_must_be_finite_and_within_the_norm_bound() -> None:
    from tests.unit.test_agent_update import plan

    the_plan = plan()
    edge = np.full(4, 50.0, dtype=np.float32)  # norm 100 exactly
    policy(max_global_norm=100.0).check_vector(edge, plan=the_plan)

    with pytest.raises(PlanRefusedError) as over:
        policy(max_global_norm=99.0).check_vector(edge, plan=the_plan)
    with pytest.raises(PlanRefusedError) as nan:
        policy().check_vector(np.array([0.0, np.nan, np.inf], dtype=np.float32), plan=the_plan)

    assert (over.value.field, over.value.value, over.value.limit) == ("vector", 100.0, 99.0)
    assert (nan.value.field, nan.value.value) == ("vector", "2 non-finite")


def test_a_plan_verifies_only_with_its_federations_key() -> None:
    from tests.unit.test_agent_update import plan

    key = SigningKey.generate()
    unsigned = plan(edge_id="edge-1")
    signed = unsigned.model_copy(update={"signature": key.sign(unsigned.signing_payload())})
    verify_plan(signed, key.public_bytes, edge_id="edge-1")
    for bad, key_bytes in ((unsigned, key.public_bytes), (signed, SigningKey.generate().public_bytes)):
        with pytest.raises(PlanRefusedError, match="signed"):
            verify_plan(bad, key_bytes, edge_id="edge-1")


def test_a_plan_verifies_only_as_the_view_of_the_hospitals_own_edge() -> None:
    """Property: a hospital follows only its own edge's view of a round plan, though another edge's (or the
    whole plan) carries the cloud's signature too: the edge id is signed, and names the hospitals it shows."""
    from tests.unit.test_agent_update import plan

    key = SigningKey.generate()
    refused = []
    for edge_id in ("edge-2", None):
        view = plan(edge_id=edge_id)
        view = view.model_copy(update={"signature": key.sign(view.signing_payload())})
        with pytest.raises(PlanRefusedError) as e:
            verify_plan(view, key.public_bytes, edge_id="edge-1")
        refused.append((e.value.field, e.value.value, e.value.limit))

    assert refused == [("edge_id", "edge-2", "edge-1"), ("edge_id", None, "edge-1")]


def test_the_demos_federations_pass_the_default_policy_or_opt_in() -> None:
    # The smallest demo hospital holds max_train_examples / hospitals snippets (mild partition: about that).
    demo = DemoConfig()
    examples = demo.max_train_examples // demo.hospitals // 2
    policy().check_spec(demo.spec("demo"), num_examples=examples)
    assert demo.hospital_opt_ins() == {}

    clair = DemoConfig(strategy=Strategy.CLAIR)
    with pytest.raises(SpecRefusedError, match=r"he\.kind"):
        policy().check_spec(clair.spec("demo"), num_examples=examples)
    opt_ins = clair.hospital_opt_ins()
    assert opt_ins == {"FEDLORA_ALLOW_PLAINTEXT": "true"}
    opted = {k.removeprefix("FEDLORA_").lower(): v == "true" for k, v in opt_ins.items()}
    policy(**opted).check_spec(clair.spec("demo"), num_examples=examples)

    assert DemoConfig(epsilon=0.0).hospital_opt_ins() == {"FEDLORA_ALLOW_WITHOUT_LOCAL_DP": "true"}


def test_the_single_example_inversion_works_on_a_batch_of_one_and_the_policy_refuses_that_plan() -> None:
    # Prepare: the real model path on a tiny BERT with MiniLM's tokenizer; one training note, the head at
    # zero as in round 0. The curious cloud knows the frozen base model, so an embedding names the note.
    from transformers import AutoTokenizer, BertConfig

    from client_agent.model import (
        HEAD_WEIGHT,
        AdapterSpec,
        FFAClassifier,
        default_model_path,
    )
    from client_agent.train import LocalConfig, encode, train_local
    from tests.models import encoder_from_config
    from tests.unit.test_agent_update import plan

    tokenizer = AutoTokenizer.from_pretrained(default_model_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    model = FFAClassifier(encoder_from_config(config, seed=0), AdapterSpec(num_labels=2, r_max=2), rank=2)
    note = encode(model, tokenizer, ["patient 4471 relapsed after the second cycle"], [1], max_length=16)
    embedding: list[np.ndarray] = []
    hook = model.head.register_forward_hook(lambda _m, inputs, _o: embedding.append(inputs[0][0].numpy()))
    with torch.no_grad():
        model.forward_from(note.hidden, note.mask)
    hook.remove()

    # Execute: what the cloud's plan asks, batch size 1 and one step (no DP, to show what the update holds).
    start = np.zeros(model.layout.size, dtype=np.float32)
    one_step = LocalConfig(steps=1, batch_size=1, learning_rate=1.0, progress=False, max_grad_norm=None)
    delta = train_local(model, note, global_vector=start, config=one_step).delta
    rows = model.layout.unflatten(delta)[HEAD_WEIGHT]
    curious = plan(training=TrainingConfig(batch_size=1, local_steps=1))

    # Assert: each row of the head's delta is the note's embedding up to sign and scale (cosine 1)...
    for row in rows:
        cosine = abs(row @ embedding[0]) / (np.linalg.norm(row) * np.linalg.norm(embedding[0]))
        assert cosine == pytest.approx(1.0, abs=1e-5)
    # ...so the hospital's policy refuses that plan, whatever the federation signed.
    with pytest.raises(PlanRefusedError) as refused:
        policy().check_plan(curious, client_id="hosp-a", num_examples=5000)
    assert (refused.value.field, refused.value.value, refused.value.limit) == ("training.batch_size", 1, 16)
