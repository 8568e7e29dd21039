"""Every parser of bytes from the network, under hypothesis: arbitrary bytes and mutations of valid inputs
raise nothing but the parser's own typed error (no IndexError, struct.error, bare ValueError or
MemoryError leaking to a caller that handles only the typed one), and valid inputs round-trip.

Parsers: the HE ciphertext envelope and each scheme's ciphertexts and public keys (protocol.crypto), the
wire models (signed uploads and aggregates with their manifests, plans, specs, enrolments, the masking
messages), the edge's manifest checks at the cloud (cloud_server.manifests), Ed25519 signatures over
enrolled keys (services.identity), X25519 keys, sealed shares, Shamir shares and masked residues
(protocol.secagg), and the basis a hospital downloads (protocol.ffa).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from cloud_server.manifests import check_contributions, check_line_signature
from protocol import examples
from protocol.crypto import (
    CiphertextError,
    CKKSParams,
    HEScheme,
    KeyMaterialError,
    PaillierParams,
    PlainParams,
    envelope,
    generate_scheme,
    scheme_from_public,
)
from protocol.crypto.params import HEKind
from protocol.ffa import (
    AdapterLayout,
    LayoutError,
    basis_bytes,
    basis_from_bytes,
    seeded_bases,
    vector_from_wire,
)
from protocol.messages import (
    AdapterEvaluation,
    ClientEnrolment,
    ClientInfo,
    ClientUpdate,
    Contribution,
    EdgeAggregate,
    EdgeEnrolment,
    FederationSpec,
    RoundPlan,
)
from protocol.secagg import primitives
from protocol.secagg.cohort import residue_bytes, residues_from_bytes
from protocol.secagg.messages import CohortId, KeyAdvert, ShareBundle, UnmaskShares
from services.errors import ServiceError
from services.identity import IdentityError, SigningKey, verify

PROPERTIES = settings(
    max_examples=60,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
T0 = datetime(2026, 3, 1, tzinfo=UTC)
NONCE = "0123456789abcdef0123456789abcdef"
HOSPITAL_KEY = SigningKey.from_bytes(bytes(range(32))).public_bytes  # a prime-order point, as enrolled


@st.composite
def mutated(draw: st.DrawFn, valid: bytes) -> bytes:
    """`valid` with some bytes flipped, a slice cut out, bytes inserted, or cut short."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "truncate"]))
        if not data:
            data = bytearray(draw(st.binary(max_size=8)))
            continue
        at = draw(st.integers(0, len(data) - 1))
        if action == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[at : at + draw(st.integers(1, 16))]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[at:]
    return bytes(data)


def only(error: type[Exception] | tuple[type[Exception], ...], parse: Callable[[], Any]) -> None:
    """Run `parse`; it may succeed or raise `error`, nothing else (pytest shows any other exception)."""
    with contextlib.suppress(error):
        parse()


# -- HE: the envelope, each scheme's ciphertexts and public keys -----------------------------------------
SCHEME_PARAMS = {
    "ckks": CKKSParams(),
    "paillier": PaillierParams(masking=False),
    "none": PlainParams(),
}


@pytest.fixture(scope="module", params=sorted(SCHEME_PARAMS))
def scheme(request: pytest.FixtureRequest) -> HEScheme[Any]:
    return generate_scheme(SCHEME_PARAMS[request.param])


def ciphertext(scheme: HEScheme[Any], length: int = 5) -> bytes:
    vector = np.linspace(-0.5, 0.5, length)
    return scheme.serialize(scheme.sum([scheme.encrypt(vector), scheme.encrypt(vector)]))


@PROPERTIES
@given(data=st.binary(max_size=512))
def test_arbitrary_bytes_are_no_ciphertext(scheme: HEScheme[Any], data: bytes) -> None:
    only(CiphertextError, lambda: scheme.deserialize(data, expected_length=5))


@PROPERTIES
@given(data=st.data())
def test_a_mutated_ciphertext_is_refused_with_a_ciphertext_error_or_parses(
    scheme: HEScheme[Any], data: st.DataObject
) -> None:
    valid = ciphertext(scheme)
    only(CiphertextError, lambda: scheme.deserialize(data.draw(mutated(valid)), expected_length=5))


def test_a_ciphertext_round_trips(scheme: HEScheme[Any]) -> None:
    valid = ciphertext(scheme)
    parsed = scheme.deserialize(valid, expected_length=5)
    assert scheme.serialize(parsed) == valid
    assert parsed.count == 2


@PROPERTIES
@given(data=st.data())
def test_a_mutated_public_key_is_refused_with_a_key_material_error_or_loads(
    scheme: HEScheme[Any], data: st.DataObject
) -> None:
    public = scheme.public_bytes()
    drawn = data.draw(
        st.one_of(st.binary(max_size=256), mutated(public[:4096] if len(public) > 4096 else public))
    )
    only(KeyMaterialError, lambda: scheme_from_public(scheme.params, drawn))


@PROPERTIES
@given(
    length=st.integers(1, 64),
    count=st.integers(1, 2**32 - 1),
    fingerprint=st.binary(min_size=32, max_size=32),
    chunk=st.binary(min_size=1, max_size=64),
)
def test_an_envelope_round_trips(length: int, count: int, fingerprint: bytes, chunk: bytes) -> None:
    expect = envelope.Expectation(
        kind=HEKind.NONE,
        fingerprint=fingerprint,
        slots=64,
        max_count=2**32 - 1,
        chunk_bytes=lambda values: (1, 64),
    )
    encoded = envelope.encode(
        kind=HEKind.NONE, fingerprint=fingerprint, length=length, count=count, chunks=[chunk]
    )
    decoded = envelope.decode(encoded, expect)
    assert (decoded.length, decoded.count, [bytes(c) for c in decoded.chunks]) == (length, count, [chunk])


# -- wire models: uploads, aggregates and their manifests, plans, specs, enrolments, masking ----------------
def valid_messages() -> dict[str, BaseModel]:
    """The documents' own examples (`protocol.examples`) of what peers send, and the masking messages."""
    from_examples = {
        ClientUpdate: examples.CLIENT_UPDATE,
        EdgeAggregate: examples.EDGE_AGGREGATE,
        RoundPlan: examples.ROUND_PLAN,
        FederationSpec: examples.FEDERATION_SPEC,
        EdgeEnrolment: examples.EDGE_ENROLMENT,
        ClientEnrolment: examples.CLIENT_ENROLMENT,
        AdapterEvaluation: examples.ADAPTER_EVALUATION,
    }
    messages = {
        model.__name__: model.model_validate_json(json.dumps(example))
        for model, example in from_examples.items()
    }
    cohort = CohortId(federation_id="fed-1", round=3, edge_id="edge-1")
    return messages | {
        "KeyAdvert": KeyAdvert(
            cohort=cohort,
            client_id="hospital-a",
            share_key=bytes(32),
            mask_key=bytes(range(32)),
            seed_commitment=bytes(32),
            signature=b"\x00" * 64,
        ),
        "ShareBundle": ShareBundle(
            cohort=cohort, client_id="hospital-a", sealed={"hospital-b": bytes(40)}, signature=b"\x01" * 64
        ),
        "UnmaskShares": UnmaskShares(
            cohort=cohort,
            client_id="hospital-a",
            seed_shares={"hospital-b": bytes(16)},
            key_shares={},
            signature=b"\x02" * 64,
        ),
    }


MESSAGES = valid_messages()


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_a_wire_model_round_trips(name: str) -> None:
    message = MESSAGES[name]
    assert type(message).model_validate_json(message.model_dump_json()) == message


@pytest.mark.parametrize("name", sorted(MESSAGES))
@PROPERTIES
@given(data=st.data())
def test_mutated_or_arbitrary_json_is_refused_with_a_validation_error(name: str, data: st.DataObject) -> None:
    model = type(MESSAGES[name])
    valid = MESSAGES[name].model_dump_json().encode()
    drawn = data.draw(st.one_of(st.binary(max_size=256), mutated(valid)))
    only(ValidationError, lambda: model.model_validate_json(drawn))


@pytest.mark.parametrize("name", sorted(MESSAGES))
@PROPERTIES
@given(data=st.data())
def test_json_values_of_any_type_in_any_field_are_refused_with_a_validation_error(
    name: str, data: st.DataObject
) -> None:
    """Each field in turn replaced by any JSON value (huge numbers, nested lists, strings that are not
    base64, ...): still only a `ValidationError`."""
    body = json.loads(MESSAGES[name].model_dump_json())
    field = data.draw(st.sampled_from(sorted(body)))
    body[field] = data.draw(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=64),
            lambda inner: (
                st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
            ),
            max_leaves=8,
        )
    )
    only(ValidationError, lambda: type(MESSAGES[name]).model_validate_json(json.dumps(body)))


# -- the cloud's manifest checks ----------------------------------------------------------------------------
@PROPERTIES
@given(
    client_ids=st.lists(
        st.sampled_from(["hospital-north-1", "hospital-north-2", "hospital-nowhere"]), min_size=1, max_size=4
    ),
    weight=st.floats(1e-6, 1e6),
    rank=st.integers(1, 256),
    signature=st.binary(max_size=80),
)
def test_a_manifest_is_refused_with_a_service_error_or_passes(
    client_ids: list[str], weight: float, rank: int, signature: bytes
) -> None:
    plan = MESSAGES["RoundPlan"]
    assert isinstance(plan, RoundPlan)
    clients = {
        cid: ClientInfo(
            client_id=cid,
            edge_id="edge-north",
            public_key=HOSPITAL_KEY,
            num_examples=100,
            rank=2,
            enrolled_at=T0,
        )
        for cid in ("hospital-north-1", "hospital-north-2")
    }
    lines = tuple(
        Contribution(
            client_id=cid,
            weight=weight,
            num_examples=100,
            rank=rank,
            nonce=NONCE,
            ciphertext_sha256=hashlib.sha256(cid.encode()).hexdigest(),
            signature=signature,
        )
        for cid in client_ids
    )
    only(
        ServiceError,
        lambda: check_contributions(lines, edge_id="edge-north", plan=plan, clients=clients, min_clients=2),
    )
    for index, line in enumerate(lines):
        if line.client_id in clients:
            only(
                ServiceError,
                lambda line=line, index=index: check_line_signature(
                    line,
                    clients[line.client_id],
                    federation_id=plan.federation_id,
                    round_=plan.round,
                    field=f"contributions.{index}",
                ),
            )


# -- keys and signatures ------------------------------------------------------------------------------------
@PROPERTIES
@given(public_key=st.binary(max_size=40), payload=st.binary(max_size=64), signature=st.binary(max_size=80))
def test_an_arbitrary_ed25519_key_or_signature_is_refused_with_an_identity_error(
    public_key: bytes, payload: bytes, signature: bytes
) -> None:
    only(IdentityError, lambda: verify(public_key, payload, signature))


@PROPERTIES
@given(seed=st.binary(min_size=32, max_size=32), payload=st.binary(max_size=64))
def test_an_ed25519_signature_round_trips(seed: bytes, payload: bytes) -> None:
    key = SigningKey.from_bytes(seed)
    verify(key.public_bytes, payload, key.sign(payload))


@PROPERTIES
@given(public_key=st.binary(max_size=40))
def test_an_arbitrary_x25519_key_is_refused_with_a_secagg_error_or_agrees(public_key: bytes) -> None:
    only(primitives.SecAggError, lambda: primitives.check_public_key(public_key))


def test_an_x25519_agreement_round_trips() -> None:
    a, b = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    assert primitives.agree(a, primitives.public_bytes(b)) == primitives.agree(b, primitives.public_bytes(a))


@PROPERTIES
@given(
    key=st.binary(min_size=32, max_size=32), sealed=st.binary(max_size=300), associated=st.binary(max_size=16)
)
def test_an_arbitrary_sealed_share_is_refused_with_a_secagg_error(
    key: bytes, sealed: bytes, associated: bytes
) -> None:
    only(primitives.SecAggError, lambda: primitives.open_sealed(key, sealed, associated))


@PROPERTIES
@given(key=st.binary(min_size=32, max_size=32), plaintext=st.binary(max_size=64), data=st.data())
def test_a_sealed_share_round_trips_and_refuses_any_mutation(
    key: bytes, plaintext: bytes, data: st.DataObject
) -> None:
    sealed = primitives.seal(key, plaintext, b"cohort")
    assert primitives.open_sealed(key, sealed, b"cohort") == plaintext
    altered = data.draw(mutated(sealed))
    if altered != sealed:
        with pytest.raises(primitives.SecAggError):
            primitives.open_sealed(key, altered, b"cohort")


@PROPERTIES
@given(
    shares=st.dictionaries(st.integers(-3, 300), st.binary(max_size=24), max_size=5),
    threshold=st.integers(1, 4),
)
def test_arbitrary_shamir_shares_are_refused_with_a_secagg_error_or_combine(
    shares: dict[int, bytes], threshold: int
) -> None:
    only(primitives.SecAggError, lambda: primitives.combine(shares, threshold=threshold))


@PROPERTIES
@given(secret=st.binary(min_size=16, max_size=16), threshold=st.integers(1, 4), extra=st.integers(0, 3))
def test_shamir_shares_round_trip(secret: bytes, threshold: int, extra: int) -> None:
    shares = primitives.split(secret, threshold=threshold, holders=threshold + extra)
    assert primitives.combine(dict(enumerate(shares, start=1)), threshold=threshold) == secret


@PROPERTIES
@given(data=st.binary(max_size=200), bits=st.integers(1, 64), length=st.integers(0, 40))
def test_arbitrary_residue_bytes_are_refused_with_a_secagg_error(data: bytes, bits: int, length: int) -> None:
    only(primitives.SecAggError, lambda: residues_from_bytes(data, bits=bits, length=length))


@PROPERTIES
@given(values=st.lists(st.integers(0, 2**64 - 1), max_size=40), bits=st.integers(1, 64))
def test_residues_round_trip(values: list[int], bits: int) -> None:
    ring = np.array([v % (1 << bits) for v in values], dtype=np.uint64)
    parsed = residues_from_bytes(residue_bytes(ring, bits), bits=bits, length=len(values))
    assert parsed.tolist() == ring.tolist()


# -- the basis a hospital downloads ------------------------------------------------------------------------
LAYOUT = AdapterLayout.build(lora_out_features={"m.0": 3, "m.1": 3}, r_max=2)
IN_FEATURES = {"m.0": 4, "m.1": 4}


@PROPERTIES
@given(data=st.data())
def test_an_arbitrary_or_mutated_basis_is_refused_with_a_layout_error(data: st.DataObject) -> None:
    valid = basis_bytes(LAYOUT, seeded_bases(LAYOUT, IN_FEATURES, seed=1, basis_version=0))
    drawn = data.draw(st.one_of(st.binary(max_size=128), mutated(valid)))
    only(LayoutError, lambda: basis_from_bytes(drawn, LAYOUT, IN_FEATURES))


def test_a_basis_round_trips() -> None:
    bases = seeded_bases(LAYOUT, IN_FEATURES, seed=1, basis_version=0)
    parsed = basis_from_bytes(basis_bytes(LAYOUT, bases), LAYOUT, IN_FEATURES)
    assert all(np.array_equal(parsed[name], bases[name].astype(np.float32)) for name in bases)


@PROPERTIES
@given(raw=st.binary(max_size=64), length=st.integers(1, 16))
def test_arbitrary_adapter_vector_bytes_are_refused_with_a_layout_error(raw: bytes, length: int) -> None:
    only(LayoutError, lambda: vector_from_wire(raw, length))


@PROPERTIES
@given(values=st.lists(st.floats(width=32, allow_nan=False), min_size=1, max_size=16))
def test_an_adapter_vector_round_trips(values: list[float]) -> None:
    vector = np.array(values, dtype=np.float32)
    assert np.array_equal(vector_from_wire(vector.astype("<f4").tobytes(), len(values)), vector)
