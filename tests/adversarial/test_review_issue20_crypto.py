"""Issue 20, item 5: the crypto edges. Each test reproduced a way a crafted ciphertext, a spec or a key file
slipped past the encryption layer on main; each holds now."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from client_agent.errors import PolicyRefusalError
from client_agent.update import contribution
from cloud_server.plans import open_round
from protocol import examples
from protocol.crypto import CKKSParams, CryptoError, EncryptedVector, PaillierParams, generate_scheme
from protocol.crypto.envelope import HEADER_BYTES
from protocol.messages import CentralDPConfig, ClientInfo, ClientUpdate, EdgeAggregate, RoundPlan
from protocol.secagg.messages import CohortId, KeyAdvert, ShareBundle, StageRequest, SurvivorSet, UnmaskShares
from services.identity import IdentityError, SigningKey, verify
from services.keys import KEK_FILE_ENV, KekError, load_kek
from tests.cloud.harness import small_spec

T0 = datetime(2026, 1, 1, tzinfo=UTC)
#: Where the envelope keeps the key fingerprint (protocol.crypto.envelope: magic, version, scheme, flags).
FINGERPRINT_AT = 4 + 1 + 1 + 2


def test_a_ckks_value_past_the_wrap_point_is_refused_when_decrypted() -> None:
    """Property: no decryption wraps silently. 524,289 is past the wrap point of the default CKKS context
    (q / 2 / 2^40 = 2^19): the sum of three encryptions of 174,763 decrypts to -524,287; `decrypt` refuses
    it with a typed error."""
    scheme = generate_scheme(CKKSParams())
    third = scheme._encrypt(np.array([174_763.0]))
    payload = scheme._add(scheme._add(third, third), third)
    crafted = EncryptedVector(scheme.kind, scheme.fingerprint, 1, 3, payload)
    assert scheme._decrypt(crafted, 1)[0] == pytest.approx(-524_287.0, abs=1e-3)
    with pytest.raises(CryptoError, match="outside"):
        scheme.decrypt(crafted)


def test_a_ciphertext_under_another_key_with_a_rewritten_fingerprint_does_not_decrypt() -> None:
    """Property: the fingerprint in an envelope is a label the payload does not prove; a ciphertext made
    under another key pair with the cloud's fingerprint written into its header parses, and decrypting it
    under the cloud's key gives noise far outside what a sum can hold: the range check refuses it."""
    cloud, other = generate_scheme(CKKSParams()), generate_scheme(CKKSParams())
    data = bytearray(other.serialize(other.encrypt(np.full(16, 0.5))))
    data[FINGERPRINT_AT : FINGERPRINT_AT + 32] = cloud.fingerprint
    assert FINGERPRINT_AT + 32 <= HEADER_BYTES
    parsed = cloud.deserialize(bytes(data), expected_length=16)
    with pytest.raises(CryptoError, match="outside"):
        cloud.decrypt(parsed)


def test_a_spec_whose_ckks_range_is_below_the_clip_norm_is_refused() -> None:
    """Property: a spec is refused (422 at `POST /federations`, naming `he`) where one coordinate holding
    the whole clip norm would not fit the scheme's range: at scale 2^50 a 60-bit prime leaves 0.0625 per
    value for 4096 summands, below a clip norm of 1."""
    with pytest.raises(ValidationError, match="max_abs_value"):
        small_spec(he=CKKSParams(global_scale_bits=50), central_dp=CentralDPConfig(clip_norm=1.0))
    with pytest.raises(ValidationError, match="max_abs_value"):
        small_spec(he=PaillierParams(clip=0.5), central_dp=CentralDPConfig(clip_norm=1.0))
    small_spec(he=CKKSParams(global_scale_bits=40), central_dp=CentralDPConfig(clip_norm=1.0))


def test_the_agent_refuses_a_coordinate_outside_the_range_instead_of_clamping_it() -> None:
    """Property: a coordinate the scheme cannot encode is an error the agent reports (a typed refusal that
    names the field), never a value silently clamped (0.9 became 0.0625 at scale 2^50)."""
    scheme = generate_scheme(CKKSParams(global_scale_bits=50))
    with pytest.raises(PolicyRefusalError) as refused:
        contribution(scheme, np.array([0.9, 0.0]), weight=1.0, clip_norm=1.0)
    assert refused.value.field == "delta"


def _clients(count: int, *, edges: int) -> dict[str, ClientInfo]:
    key = SigningKey.generate().public_bytes
    return {
        f"h{i:03d}": ClientInfo(
            client_id=f"h{i:03d}",
            edge_id=f"edge-{i % edges}",
            public_key=key,
            num_examples=10,
            rank=2,
            enrolled_at=T0,
        )
        for i in range(count)
    }


@pytest.mark.parametrize("edges", [1, 3])
def test_65_hospitals_on_packed_paillier_for_64_are_planned_within_its_capacity(edges: int) -> None:
    """Property: a round never plans more hospitals than the scheme can sum (packed Paillier: `max_clients`,
    64 by default), so the 65th upload cannot overflow its edge's or the cloud's sum and fail the round;
    the plan takes turns, so that every hospital is planned within two rounds."""
    spec = small_spec(he=PaillierParams(clip=4.0, quant_bits=20), max_clients=100)
    clients = _clients(65, edges=edges)
    planned: set[str] = set()
    for round_ in range(2):
        plan, status = open_round(
            spec,
            round_=round_,
            adapter_version=0,
            layout_digest="0" * 64,
            clients=clients,
            now=T0,
            rounds_closed=0,
        )
        assert len(plan.client_ranks) <= 64
        assert sum(edge.expected_clients for edge in status.edges) == len(plan.client_ranks)
        planned |= set(plan.client_ranks)
    assert planned == set(clients)


_BOMB_CHILD = """
import json, sys
import numpy as np
from protocol.crypto import CKKSParams, CryptoError, generate_scheme
from tests.adversarial.ciphertext_bombs import repeated_chunk, zero_ciphertext

scheme = generate_scheme(CKKSParams())
honest = scheme.encrypt(np.zeros(10))
scheme.deserialize(scheme.serialize(honest), expected_length=10)  # warm every allocator up
ct = honest.payload[0].ciphertext()[0]
one = zero_ciphertext(list(ct.parms_id()), degree=8192, primes=1, scale=2.0**40)
data = bytearray(scheme.serialize(honest))
table_end = len(data) - len(honest.payload[0].serialize())
chunk = repeated_chunk(one, values=10, scale=2.0**40, limit=int(sys.argv[1]))
envelope = bytes(data[: table_end - 4]) + len(chunk).to_bytes(4, "big") + chunk
def peak_kib():
    status = open("/proc/self/status").read()
    return int(status.split("VmHWM:")[1].split()[0])

with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")  # restart the peak resident size (VmHWM) from the current one
before = peak_kib()
try:
    scheme.deserialize(envelope, expected_length=10)
    refused = ""
except CryptoError as e:
    refused = str(e)
grown = peak_kib() - before
print(json.dumps({"chunk": len(chunk), "grown_kib": grown, "refused": refused}))
"""


def test_a_chunk_of_compressed_ciphertexts_is_refused_before_tenseal_inflates_it() -> None:
    """Property: a CKKS chunk is parsed and bounded before TenSEAL decompresses it. A 135 KB chunk that
    packs about a thousand zstd-compressed zero ciphertexts (4 bytes per 128 KiB of coefficients) made
    TenSEAL allocate over 250 MiB before the chunk was refused; now it is refused while the process grows
    by less than a few MiB (its peak resident size, Linux's VmHWM, measured in a fresh process)."""
    limit = 2 * 8192 * 8 + 4096  # the largest chunk the envelope lets through at the default parameters
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", _BOMB_CHILD, str(limit)], cwd=root, capture_output=True, text=True, check=True
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["chunk"] > 130_000
    assert result["refused"]
    assert result["grown_kib"] < 8 * 1024, result


def test_a_printable_32_byte_kek_file_is_not_taken_as_a_raw_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Property: a KEK file is read as raw bytes only when the operator opts in (`FEDLORA_KEK_RAW=1`) and
    the bytes are not all printable; a 32-character passphrase is never a key."""
    passphrase = tmp_path / "kek"
    passphrase.write_bytes(b"correct horse battery staple 123")
    with pytest.raises(KekError, match=KEK_FILE_ENV):
        load_kek({KEK_FILE_ENV: str(passphrase)})
    with pytest.raises(KekError, match="printable"):
        load_kek({KEK_FILE_ENV: str(passphrase), "FEDLORA_KEK_RAW": "1"})
    raw = tmp_path / "raw"
    key = bytes(range(200, 232))
    raw.write_bytes(key)
    with pytest.raises(KekError, match="FEDLORA_KEK_RAW"):
        load_kek({KEK_FILE_ENV: str(raw)})
    assert load_kek({KEK_FILE_ENV: str(raw), "FEDLORA_KEK_RAW": "1"}) == key


def _signed_payloads() -> dict[str, bytes]:
    cohort = CohortId(federation_id="fed-1", round=0, edge_id="edge-1")
    update = ClientUpdate.model_validate(examples.CLIENT_UPDATE)
    return {
        "upload": update.signing_payload(),
        "contribution": update.manifest_line().signing_payload(federation_id="fed-1", round_=0),
        "aggregate": EdgeAggregate.model_validate(examples.EDGE_AGGREGATE).signing_payload(),
        "plan": RoundPlan.model_validate(examples.ROUND_PLAN).signing_payload(),
        "advert": KeyAdvert(
            cohort=cohort,
            client_id="h1",
            share_key=bytes(32),
            mask_key=bytes(32),
            seed_commitment=bytes(32),
            signature=bytes(64),
        ).signing_payload(),
        "shares": ShareBundle(cohort=cohort, client_id="h1", sealed={}).signing_payload(),
        "survivors": SurvivorSet(cohort=cohort, survivors=["h1"]).signing_payload(),
        "unmask": UnmaskShares(
            cohort=cohort, client_id="h1", seed_shares={}, key_shares={}
        ).signing_payload(),
        "request": StageRequest(cohort=cohort, client_id="h1", stage="roster").signing_payload(),
    }


def test_every_signed_payload_starts_with_its_own_type_tag() -> None:
    """Property: every message signed with an Ed25519 identity starts with a domain tag naming its type,
    `fedlora/<type>/...` then a NUL, and no tag is another's prefix; a signature made over one type's bytes
    (an upload) never verifies as another's (a manifest line, a masking advert)."""
    payloads = _signed_payloads()
    tags = {}
    for name, payload in payloads.items():
        assert payload.startswith(b"fedlora/"), name
        tags[name] = payload[: payload.index(b"\x00") + 1]
    assert len(set(tags.values())) == len(tags), tags
    key = SigningKey.generate()
    upload_signature = key.sign(payloads["upload"])
    for name in ("contribution", "advert", "plan"):
        with pytest.raises(IdentityError):
            verify(key.public_bytes, payloads[name], upload_signature)
    # A signature over bytes chosen by someone else (a challenge, an advert) is not an upload's.
    foreign = payloads["upload"][len(tags["upload"]) :]
    with pytest.raises(IdentityError):
        verify(key.public_bytes, payloads["upload"], key.sign(foreign))
