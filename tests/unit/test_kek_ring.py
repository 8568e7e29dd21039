"""KEK rotation at the envelope level: sealed records name the KEK that sealed it, open under the current or
the previous KEK, and re-seal under the current one; and `FEDLORA_KEK_PREVIOUS` from the environment."""

from __future__ import annotations

import hashlib
import hmac
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from protocol.crypto import (
    KekRing,
    KeyBindingError,
    KeyStoreError,
    PlainParams,
    WrongKekError,
    generate_scheme,
    kek_id,
    open_bytes,
    open_secret,
    reseal_bytes,
    reseal_secret,
    seal_bytes,
    seal_secret,
)
from protocol.crypto.envelope import SCHEME_CODES
from services.keys import (
    KEK_ENV,
    KEK_PREVIOUS_ENV,
    KEK_PREVIOUS_FILE_ENV,
    KekError,
    load_keks,
    new_kek,
)
from tests.keks import FOREIGN_KEK, KEK, NEXT_KEK

LABEL = b"cloud:fed-1:round:3:noise"
NONCE = bytes(12)


def _id(kek: bytes) -> bytes:
    """The KEK id as the format defines it, computed here independently of `kek_id`."""
    return hmac.new(kek, b"fedlora/kek-id/v1", hashlib.sha256).digest()[:8]


def _blob_v1(data: bytes, kek: bytes, label: bytes) -> bytes:
    """A value sealed before envelopes named their KEK: `FLSB | 1 | nonce | AES-GCM(data)`."""
    header = b"FLSB\x01"
    return header + NONCE + AESGCM(kek).encrypt(NONCE, data, header + label)


def _secret_v2(secret: bytes, kek: bytes, *, code: int, fingerprint: bytes, fid: str) -> bytes:
    """An HE secret sealed before envelopes named their KEK (version 2)."""
    header = struct.pack(">4sBB32s", b"FLKS", 2, code, fingerprint) + bytes([len(fid)]) + fid.encode()
    return header + NONCE + AESGCM(kek).encrypt(NONCE, secret, b"fedlora/he-secret\x00" + header)


def test_the_kek_id_is_a_keyed_digest_of_a_fixed_label_and_new_envelopes_carry_it() -> None:
    assert kek_id(NEXT_KEK) == _id(NEXT_KEK) != _id(KEK)
    sealed = seal_bytes(b"noise", NEXT_KEK, label=LABEL)
    assert sealed[5:13] == _id(NEXT_KEK)
    scheme = generate_scheme(PlainParams())
    assert _id(NEXT_KEK) in seal_secret(scheme, NEXT_KEK, federation_id="fed-1")[:64]


def test_a_record_opens_under_the_kek_it_names_current_or_previous_and_no_other() -> None:
    sealed = seal_bytes(b"noise", KEK, label=LABEL)

    assert open_bytes(sealed, KekRing(current=NEXT_KEK, previous=KEK), label=LABEL) == b"noise"
    with pytest.raises(WrongKekError, match=f"{_id(KEK).hex()}.*current {_id(NEXT_KEK).hex()}"):
        open_bytes(sealed, KekRing(current=NEXT_KEK), label=LABEL)
    with pytest.raises(WrongKekError):
        open_bytes(sealed, KekRing(current=NEXT_KEK, previous=FOREIGN_KEK), label=LABEL)


def test_a_record_altered_under_the_kek_it_names_is_not_taken_for_a_wrong_kek() -> None:
    sealed = seal_bytes(b"noise", KEK, label=LABEL)
    flipped = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(KeyStoreError, match="does not open under the KEK it names") as raised:
        open_bytes(flipped, KekRing(current=NEXT_KEK, previous=KEK), label=LABEL)
    assert not isinstance(raised.value, WrongKekError)


def test_envelopes_from_before_kek_ids_open_under_either_kek_and_are_resealed_into_named_ones() -> None:
    """Property: an envelope without a KEK id stays readable (current KEK first, then previous), and
    re-sealing turns it into one naming the current KEK, which needs no further re-seal."""
    old_blob = _blob_v1(b"noise", KEK, LABEL)
    keks = KekRing(current=NEXT_KEK, previous=KEK)
    assert open_bytes(old_blob, keks, label=LABEL) == b"noise"
    assert open_bytes(_blob_v1(b"noise", NEXT_KEK, LABEL), keks, label=LABEL) == b"noise"
    with pytest.raises(KeyStoreError, match="wrong key-encryption key"):
        open_bytes(old_blob, KekRing(current=NEXT_KEK), label=LABEL)

    fresh = reseal_bytes(old_blob, keks, label=LABEL)
    assert fresh is not None and fresh[4] == 2 and fresh[5:13] == _id(NEXT_KEK)
    assert open_bytes(fresh, KekRing(current=NEXT_KEK), label=LABEL) == b"noise"
    assert reseal_bytes(fresh, keks, label=LABEL) is None
    # Under the current KEK but without its id: re-sealed once, so that `kek check` can tell.
    assert reseal_bytes(_blob_v1(b"noise", NEXT_KEK, LABEL), keks, label=LABEL) is not None
    with pytest.raises(KeyStoreError, match="round:4"):
        reseal_bytes(fresh, keks, label=b"cloud:fed-1:round:4:noise")


def test_an_he_secret_is_resealed_for_its_own_federation_only() -> None:
    scheme = generate_scheme(PlainParams())
    code, fingerprint = SCHEME_CODES[scheme.kind], scheme.fingerprint
    keks = KekRing(current=NEXT_KEK, previous=KEK)
    for sealed in (
        seal_secret(scheme, KEK, federation_id="fed-1"),
        _secret_v2(scheme.secret_bytes(), KEK, code=code, fingerprint=fingerprint, fid="fed-1"),
    ):
        fresh = reseal_secret(sealed, keks, federation_id="fed-1")
        assert fresh is not None and reseal_secret(fresh, keks, federation_id="fed-1") is None
        opened = open_secret(scheme.params, fresh, NEXT_KEK, federation_id="fed-1", fingerprint=fingerprint)
        assert opened.secret_bytes() == scheme.secret_bytes()
        with pytest.raises(WrongKekError):
            open_secret(scheme.params, fresh, KEK, federation_id="fed-1", fingerprint=fingerprint)
        with pytest.raises(KeyBindingError, match="belongs to federation 'fed-1'"):
            reseal_secret(sealed, keks, federation_id="fed-2")


def test_the_previous_kek_must_not_be_the_current_one() -> None:
    with pytest.raises(KeyStoreError, match="previous KEK is the current one"):
        KekRing(current=NEXT_KEK, previous=NEXT_KEK)


def test_load_keks_reads_the_previous_kek_from_the_environment_or_its_file(tmp_path: Path) -> None:
    assert load_keks({KEK_ENV: NEXT_KEK.hex()}) == KekRing(current=NEXT_KEK)
    assert load_keks({KEK_ENV: NEXT_KEK.hex(), KEK_PREVIOUS_ENV: KEK.hex()}) == KekRing(
        current=NEXT_KEK, previous=KEK
    )
    path = tmp_path / "kek-previous"
    path.write_text(KEK.hex() + "\n")
    assert load_keks({KEK_ENV: NEXT_KEK.hex(), KEK_PREVIOUS_FILE_ENV: str(path)}).previous == KEK


@pytest.mark.parametrize(
    ("previous", "names"),
    [
        ({KEK_PREVIOUS_ENV: NEXT_KEK.hex()}, f"{KEK_PREVIOUS_ENV} holds the same key as {KEK_ENV}"),
        ({KEK_PREVIOUS_ENV: "changeme"}, f"{KEK_PREVIOUS_ENV} is the placeholder"),
        ({KEK_PREVIOUS_ENV: KEK.hex(), KEK_PREVIOUS_FILE_ENV: "/x"}, f"only one of {KEK_PREVIOUS_ENV}"),
        ({KEK_PREVIOUS_FILE_ENV: "/nonexistent/kek"}, KEK_PREVIOUS_FILE_ENV),
    ],
    ids=["same", "placeholder", "both", "no-file"],
)
def test_load_keks_refuses_a_previous_kek_that_cannot_be_one(previous: dict[str, str], names: str) -> None:
    with pytest.raises(KekError, match=names):
        load_keks({KEK_ENV: NEXT_KEK.hex(), **previous})


def test_a_new_kek_is_what_load_keks_reads() -> None:
    first, second = new_kek(), new_kek()
    assert first != second
    assert load_keks({KEK_ENV: first}).current == bytes.fromhex(first)
