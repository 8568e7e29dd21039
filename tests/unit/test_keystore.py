"""Sealing the HE secret key at rest, and reading the key-encryption key from the environment."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from protocol.crypto import (
    CKKSParams,
    HEScheme,
    KeyStoreError,
    PaillierParams,
    PlainParams,
    derive_kek,
    generate_scheme,
    open_bytes,
    open_secret,
    seal_bytes,
    seal_secret,
)
from services.keys import KEK_ENV, KEK_FILE_ENV, KekError, load_kek

KEK = bytes.fromhex("8f3b0c5e1d2a4f6b7c9e0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f")
OTHER_KEK = bytes.fromhex("11" * 31 + "12")
FID = "fed-1"
PARAMS = [CKKSParams(), PaillierParams(), PlainParams()]


@pytest.fixture(scope="module", params=PARAMS, ids=lambda p: p.kind.value)
def scheme(request: pytest.FixtureRequest) -> HEScheme[Any]:
    return generate_scheme(request.param)


def _bound(scheme: HEScheme[Any]) -> dict[str, Any]:
    """What the cloud opens a federation's sealed key with: the federation's id and its public key's
    fingerprint."""
    return {"federation_id": FID, "fingerprint": scheme.fingerprint}


# -- seal / open -----------------------------------------------------------------------------------------
def test_open_returns_a_scheme_that_decrypts_what_the_original_encrypted(scheme: HEScheme[Any]) -> None:
    x = np.array([0.25, -0.5, 0.125])
    sealed = seal_secret(scheme, KEK, federation_id=FID)

    opened = open_secret(scheme.params, sealed, KEK, federation_id=FID, fingerprint=scheme.fingerprint)

    assert opened.fingerprint == scheme.fingerprint and opened.has_secret_key
    assert np.max(np.abs(opened.decrypt(scheme.encrypt(x)) - x)) <= scheme.error_bound(count=1, max_abs=0.5)


def test_sealing_twice_uses_fresh_nonces_and_hides_the_secret(scheme: HEScheme[Any]) -> None:
    first, second = seal_secret(scheme, KEK, federation_id=FID), seal_secret(scheme, KEK, federation_id=FID)

    assert first != second
    assert scheme.secret_bytes()[-64:] not in first


def test_wrong_kek_is_refused(scheme: HEScheme[Any]) -> None:
    with pytest.raises(KeyStoreError, match="wrong key-encryption key"):
        open_secret(scheme.params, seal_secret(scheme, KEK, federation_id=FID), OTHER_KEK, **_bound(scheme))


@pytest.mark.parametrize("where", [0, 5, 6, 20, 38, 42, -20, -1])
def test_any_tampered_byte_is_refused(scheme: HEScheme[Any], where: int) -> None:
    sealed = bytearray(seal_secret(scheme, KEK, federation_id=FID))
    sealed[where] ^= 0x01

    with pytest.raises(KeyStoreError):
        open_secret(scheme.params, bytes(sealed), KEK, **_bound(scheme))


@pytest.mark.parametrize("size", [0, 10, 60])
def test_truncated_sealed_key_is_refused(scheme: HEScheme[Any], size: int) -> None:
    with pytest.raises(KeyStoreError):
        open_secret(scheme.params, seal_secret(scheme, KEK, federation_id=FID)[:size], KEK, **_bound(scheme))


def test_parameters_of_another_kind_are_refused() -> None:
    plain = generate_scheme(PlainParams())
    sealed = seal_secret(plain, KEK, federation_id=FID)
    with pytest.raises(KeyStoreError, match="sealed key is for none"):
        open_secret(PaillierParams(), sealed, KEK, **_bound(plain))


def test_changed_parameters_are_refused() -> None:
    scheme = generate_scheme(PaillierParams(quant_bits=16))
    with pytest.raises(KeyStoreError, match="parameters changed"):
        open_secret(
            PaillierParams(quant_bits=12),
            seal_secret(scheme, KEK, federation_id=FID),
            KEK,
            **_bound(scheme),
        )


@pytest.mark.parametrize("kek", [b"", b"short", bytes(32), b"\xff" * 32, bytes(33)])
def test_unusable_keks_are_refused(kek: bytes) -> None:
    scheme = generate_scheme(PlainParams())
    with pytest.raises(KeyStoreError, match="key-encryption key"):
        seal_secret(scheme, kek, federation_id=FID)


def test_sealed_values_open_only_under_their_label_and_kek() -> None:
    seed = bytes(range(32))
    sealed = seal_bytes(seed, KEK, label=b"cloud:fed-1:round:3:noise-seed")
    assert seed not in sealed and len(sealed) == 5 + 8 + 12 + 32 + 16  # header, KEK id, nonce, data, tag
    assert open_bytes(sealed, KEK, label=b"cloud:fed-1:round:3:noise-seed") == seed
    with pytest.raises(KeyStoreError, match="round:4"):
        open_bytes(sealed, KEK, label=b"cloud:fed-1:round:4:noise-seed")  # moved to another round
    with pytest.raises(KeyStoreError, match="wrong key-encryption key"):
        open_bytes(sealed, OTHER_KEK, label=b"cloud:fed-1:round:3:noise-seed")
    flipped = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(KeyStoreError):
        open_bytes(flipped, KEK, label=b"cloud:fed-1:round:3:noise-seed")
    with pytest.raises(KeyStoreError, match="truncated"):
        open_bytes(sealed[:20], KEK, label=b"x")


def test_derive_kek_is_deterministic_per_salt() -> None:
    salt, other_salt = b"s" * 15 + b"1", b"s" * 15 + b"2"

    kek = derive_kek("correct horse battery staple", salt)

    assert len(kek) == 32
    assert kek == derive_kek("correct horse battery staple", salt)
    assert kek != derive_kek("correct horse battery staple", other_salt)
    with pytest.raises(KeyStoreError, match="salt"):
        derive_kek("correct horse battery staple", b"short")
    with pytest.raises(KeyStoreError, match="passphrase"):
        derive_kek("", salt)


# -- services.keys.load_kek ------------------------------------------------------------------------------
@pytest.mark.parametrize("encode", [bytes.hex, lambda k: base64.b64encode(k).decode()], ids=["hex", "base64"])
def test_load_kek_from_the_variable(encode: Any) -> None:
    assert load_kek({KEK_ENV: encode(KEK)}) == KEK
    assert load_kek({KEK_ENV: f"  {encode(KEK)}\n"}) == KEK


@pytest.mark.parametrize(
    ("content", "raw"), [(KEK, True), (KEK.hex().encode() + b"\n", False)], ids=["raw", "hex"]
)
def test_load_kek_from_a_file(tmp_path: Path, content: bytes, raw: bool) -> None:
    """A raw file needs the operator's `FEDLORA_KEK_RAW=1` (tests/adversarial/test_review_issue20_crypto.py)."""
    path = tmp_path / "kek"
    path.write_bytes(content)
    extra = {"FEDLORA_KEK_RAW": "1"} if raw else {}
    assert load_kek({KEK_FILE_ENV: str(path), **extra}) == KEK


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({}, KEK_ENV),
        ({KEK_ENV: "changeme"}, KEK_ENV),
        ({KEK_ENV: "CHANGEME"}, KEK_ENV),
        ({KEK_ENV: ""}, KEK_ENV),
        ({KEK_ENV: "00" * 32}, KEK_ENV),
        ({KEK_ENV: base64.b64encode(bytes(32)).decode()}, KEK_ENV),
        ({KEK_ENV: "ab" * 16}, KEK_ENV),
        ({KEK_ENV: "zz" * 32}, KEK_ENV),
        ({KEK_ENV: KEK.hex(), KEK_FILE_ENV: "/nonexistent"}, KEK_FILE_ENV),
        ({KEK_FILE_ENV: "/nonexistent/kek"}, KEK_FILE_ENV),
    ],
    ids=[
        "unset",
        "changeme",
        "CHANGEME",
        "empty",
        "zero-hex",
        "zero-base64",
        "short",
        "not-hex",
        "both",
        "no-file",
    ],
)
def test_load_kek_refuses_missing_and_placeholder_keys(environ: dict[str, str], names: str) -> None:
    with pytest.raises(KekError, match=names):
        load_kek(environ)


def test_placeholder_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "kek"
    path.write_text("changeme\n")
    with pytest.raises(KekError, match=f"{KEK_FILE_ENV}.*placeholder"):
        load_kek({KEK_FILE_ENV: str(path)})
