"""Wire models: round trips through JSON, bounds, enums and the signing payload."""

import hashlib
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from protocol.crypto.params import CKKSParams, HEKind, PaillierParams, PlainParams
from protocol.messages import (
    MAX_CIPHERTEXT_BYTES,
    PROTOCOL_VERSION,
    ClientUpdate,
    Contribution,
    EdgeAggregate,
    ErrorBody,
    ErrorCode,
    FederationSpec,
    PrivacyReport,
    RoundPlan,
    RoundState,
    RoundStatus,
    Strategy,
)
from services.identity import IdentityError, SigningKey, verify

NONCE = "ab" * 16


def _update(**overrides):
    fields = dict(
        federation_id="fed-1",
        round=0,
        basis_version=0,
        client_id="hospital-a",
        rank=4,
        weight=1.0,
        num_examples=120,
        nonce=NONCE,
        ciphertext=b"\x00\x01binary\xff",
    )
    return ClientUpdate(**{**fields, **overrides})


def test_spec_defaults_follow_the_design():
    spec = FederationSpec(federation_id="fed-1")
    assert spec.protocol_version == PROTOCOL_VERSION
    assert spec.strategy is Strategy.FFA
    # The default federation masks uploads below packed Paillier (docs/security.md): nothing to opt into.
    assert isinstance(spec.he, PaillierParams)
    assert spec.he.masking and spec.protection() == []
    assert (spec.he.key_bits, spec.he.quant_bits, spec.he.clip) == (2048, 20, 4.0)
    assert spec.target_modules == ("query", "value")
    ckks = CKKSParams()
    assert (ckks.poly_modulus_degree, ckks.coeff_mod_bit_sizes, ckks.global_scale_bits) == (
        8192,
        (60, 60),
        40,
    )


@pytest.mark.parametrize("he", [CKKSParams(), PaillierParams(), PlainParams()])
def test_spec_round_trips_every_scheme(he):
    spec = FederationSpec(
        federation_id="fed-1", he=he, strategy=Strategy.CLAIR if he.kind == "none" else "ffa"
    )
    back = FederationSpec.model_validate_json(spec.model_dump_json())
    assert back == spec
    assert back.he.kind is HEKind(he.kind)


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        (dict(federation_id="Fed With Spaces"), "federation_id"),
        (dict(r_max=0), "r_max"),
        (dict(target_modules=()), "at least 1 item"),
        (dict(target_modules=("query", "query")), "duplicates"),
        (dict(target_modules=("query; rm -rf",)), "should match pattern"),
        (dict(upload_deadline_s=700, round_deadline_s=600), "upload_deadline_s (700.0) must not exceed"),
        (
            dict(upload_deadline_s=600, round_deadline_s=600),
            "round_deadline_s - upload_deadline_s (600.0 - 600.0 = 0) must cover forward_budget_s (30.0) + "
            "max_clock_skew_s (5.0) = 35",
        ),
        (
            dict(upload_deadline_s=50, round_deadline_s=60, forward_budget_s=8, max_clock_skew_s=3),
            "(60.0 - 50.0 = 10) must cover forward_budget_s (8.0) + max_clock_skew_s (3.0) = 11",
        ),
        (dict(forward_budget_s=0), "forward_budget_s"),
        (dict(max_clock_skew_s=0), "max_clock_skew_s"),
        (dict(strategy="clair"), "strategy 'clair' needs per-client plaintext"),
        (dict(strategy="fedavg"), "strategy"),
        (dict(he={"kind": "ckks", "coeff_mod_bit_sizes": [60, 60, 60, 60]}), "128-bit security"),
        (dict(he={"kind": "rsa"}), "kind"),
        (dict(unknown_field=1), "unknown_field"),
        (dict(protocol_version=2), "protocol_version"),
    ],
)
def test_spec_refuses_bad_fields_and_names_them(fields, needle):
    with pytest.raises(ValidationError) as err:
        FederationSpec(**{"federation_id": "fed-1", **fields})
    assert needle in str(err.value)


def test_the_deadline_margin_covers_the_forward_budget_and_the_clock_skew():
    """The margin between the edges' upload deadline and the cloud's round deadline, and the two parts it
    must cover, are named values of the spec (the clock-skew alert compares with half the margin)."""
    default = FederationSpec(federation_id="fed-1")
    tight = FederationSpec(
        federation_id="fed-1",
        upload_deadline_s=50,
        round_deadline_s=61,
        forward_budget_s=8,
        max_clock_skew_s=3,
    )

    assert (default.deadline_margin_s, default.forward_budget_s, default.max_clock_skew_s) == (
        60.0,
        30.0,
        5.0,
    )
    assert tight.deadline_margin_s == 11.0


def test_paillier_slot_arithmetic():
    p = PaillierParams(key_bits=2048, quant_bits=16, max_clients=64)
    # 6 bits of headroom for 64 summands, 22 bits per slot, 2047 // 22 = 93 slots (DESIGN.md's figure).
    assert (p.headroom_bits, p.slot_bits, p.slots) == (6, 22, 93)
    assert p.step == pytest.approx(1.0 / 32767)
    assert PaillierParams(max_clients=65).headroom_bits == 7


def test_client_update_bytes_travel_as_base64():
    update = _update()
    text = update.model_dump_json()
    assert '"ciphertext":"AAFiaW5hcnn_"' in text  # URL-safe base64 of the bytes, computed by hand
    assert ClientUpdate.model_validate_json(text) == update
    # Standard base64 from other clients decodes to the same bytes.
    assert ClientUpdate.model_validate_json(text.replace("AAFiaW5hcnn_", "AAFiaW5hcnn/")) == update


def test_client_update_bounds():
    with pytest.raises(ValidationError, match="nonce"):
        _update(nonce="short")
    with pytest.raises(ValidationError, match="weight"):
        _update(weight=0)
    with pytest.raises(ValidationError, match="ciphertext"):
        _update(ciphertext=b"")
    assert ClientUpdate.model_fields["ciphertext"].metadata[-1].max_bytes == MAX_CIPHERTEXT_BYTES


def test_signing_payload_covers_every_field_but_the_signature():
    update = _update()
    payload = update.signing_payload()
    assert update.model_copy(update={"signature": b"sig"}).signing_payload() == payload
    for change in (dict(round=1), dict(weight=2.0), dict(ciphertext=b"other"), dict(nonce="cd" * 16)):
        assert update.model_copy(update=change).signing_payload() != payload, change
    assert b"ciphertext_sha256" in payload and b"binary" not in payload
    # The plan digest a hospital trained under is signed too; unset, it is absent (older uploads verify).
    assert b"plan_sha256" not in payload
    assert update.model_copy(update={"plan_sha256": "1" * 64}).signing_payload() != payload


def test_a_hospital_signs_its_manifest_line_for_its_federation_and_round():
    # Prepare
    key = SigningKey.generate()
    update = _update(noise_share_std=0.2).signed(key.sign)

    # Execute: the line as an edge stores it, through JSON (bytes as base64), as the cloud reads it.
    line = Contribution.model_validate_json(update.manifest_line().model_dump_json())

    # Assert: the line's signature verifies for the upload's federation and round only, over every field.
    payload = line.signing_payload(federation_id="fed-1", round_=0)
    verify(key.public_bytes, payload, line.signature)
    verify(key.public_bytes, update.signing_payload(), update.signature)
    assert line.ciphertext_sha256 == hashlib.sha256(b"\x00\x01binary\xff").hexdigest()
    assert b"signature" not in payload and b'"noise_share_std":0.2' in payload
    for where in (dict(federation_id="fed-2", round_=0), dict(federation_id="fed-1", round_=1)):
        with pytest.raises(IdentityError):
            verify(key.public_bytes, line.signing_payload(**where), line.signature)
    for change in (dict(weight=0.5), dict(rank=2), dict(num_examples=1), dict(ciphertext_sha256="1" * 64)):
        with pytest.raises(IdentityError):
            changed = line.model_copy(update=change)
            verify(key.public_bytes, changed.signing_payload(federation_id="fed-1", round_=0), line.signature)
    # The upload's own payload leaves the line's signature out (it is a signature by the same key).
    assert (
        update.model_copy(update={"contribution_signature": b""}).signing_payload()
        == update.signing_payload()
    )


def test_a_plans_digest_covers_every_field_but_its_signature_and_survives_the_wire():
    # Prepare: a plan as the cloud stores and serves it (JSON), with an aware deadline.
    plan = RoundPlan(
        federation_id="fed-1",
        round=2,
        adapter_version=2,
        basis_version=0,
        deadline=datetime(2026, 11, 23, 12, 30, 5, 123456, tzinfo=UTC),
        client_ranks={"b": 8, "a": 4},
        clip_norm=0.7,
        vector_sha256="1" * 64,
        basis_sha256="2" * 64,
    )

    # Execute
    digest = plan.sha256
    again = RoundPlan.model_validate_json(plan.model_dump_json())

    # Assert: the digest is SHA-256 of the canonical payload, the same after the wire and with any signature,
    # and another value of any field gives another digest.
    assert digest == hashlib.sha256(plan.signing_payload()).hexdigest()
    assert again.sha256 == digest and plan.model_copy(update={"signature": b"sig"}).sha256 == digest
    for change in (
        dict(round=3),
        dict(clip_norm=0.71),
        dict(client_ranks={"a": 4, "b": 4}),
        dict(training=plan.training.model_copy(update={"batch_size": 1})),
        dict(local_dp=plan.local_dp.model_copy(update={"epsilon": 50.0})),
        dict(vector_sha256="3" * 64),
        dict(basis_sha256="3" * 64),
        dict(deadline=datetime(2026, 11, 23, 12, 30, 6, tzinfo=UTC)),
    ):
        assert plan.model_copy(update=change).sha256 != digest, change


def _contribution(client_id):
    return Contribution(
        client_id=client_id, weight=1.0, num_examples=10, rank=4, nonce=NONCE, ciphertext_sha256="0" * 64
    )


def test_edge_aggregate_manifest():
    agg = EdgeAggregate(
        federation_id="fed-1",
        round=3,
        basis_version=0,
        edge_id="edge-eu",
        ciphertext=b"sum",
        contributions=(_contribution("a"), _contribution("b")),
        idempotency_key="fed-1:3:edge-eu",
    )
    assert agg.count == 2 and agg.total_weight == 2.0
    with pytest.raises(ValidationError, match=r"more than once: \['a'\]"):
        agg.model_copy(update={}).model_validate(
            {**agg.model_dump(), "contributions": [_contribution("a").model_dump()] * 2}
        )
    with pytest.raises(ValidationError, match="contributions"):
        EdgeAggregate.model_validate({**agg.model_dump(), "contributions": []})


def test_round_models_use_enums():
    now = datetime(2026, 11, 23, tzinfo=UTC)
    plan = RoundPlan(
        federation_id="fed-1",
        round=0,
        adapter_version=0,
        basis_version=0,
        deadline=now,
        client_ranks={"a": 4, "b": 8},
        clip_norm=1.0,
    )
    assert RoundPlan.model_validate_json(plan.model_dump_json()) == plan
    status = RoundStatus(
        federation_id="fed-1", round=0, state="collecting", opened_at=now, adapter_version_in=0
    )
    assert status.state is RoundState.COLLECTING
    with pytest.raises(ValidationError, match="state"):
        RoundStatus(federation_id="fed-1", round=0, state="done", opened_at=now, adapter_version_in=0)
    with pytest.raises(ValidationError, match="client_ranks"):
        RoundPlan.model_validate({**plan.model_dump(), "client_ranks": {"a": 0}})


def test_privacy_report_and_error_body():
    report = PrivacyReport(federation_id="fed-1", delta=1e-5, central_epsilon=1.5)
    assert PrivacyReport.model_validate_json(report.model_dump_json()) == report
    body = ErrorBody(code=ErrorCode.REPLAY, message="nonce already used", field="nonce")
    assert body.model_dump(mode="json")["code"] == "replay"
