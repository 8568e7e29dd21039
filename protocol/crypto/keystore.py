"""Secrets at rest: sealed with AES-256-GCM under a 32-byte key-encryption key (KEK).

The HE secret key, version 3: `b"FLKS" | version u8 | scheme u8 | fingerprint (32) | KEK id (8) | fid length
u8 | federation id | nonce (12) | AES-GCM(secret) + tag`. The associated data is a type tag
(`fedlora/he-secret`) followed by everything before the nonce, so a sealed key cannot be relabelled as another
scheme's, another federation's or another public key's without the tag failing; opening checks the federation
id and the fingerprint in the clear first (`KeyBindingError`), so a key moved between federations, or set
beside a swapped public key, is told apart from a wrong KEK. Version 2 is the same without the KEK id.

Any other small secret (`seal_bytes`), version 2: `b"FLSB" | version u8 | KEK id (8) | nonce (12) |
AES-GCM(data) + tag`, bound to a label (its store key) through the associated data; version 1 is the same
without the KEK id.

Opening takes the KEKs a process holds (`KekRing`: the current one and, during a rotation, the previous
one) and uses the one the envelope names; an envelope without a KEK id is tried with each. `reseal_secret`
and `reseal_bytes` re-seal a record under the current KEK for `fedlora kek rotate`. Where the KEKs come
from (environment, file, KMS) is the services' business (`services.keys.load_keks`); this module does no I/O.
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from protocol.crypto.base import AnyParams, HEScheme
from protocol.crypto.envelope import FINGERPRINT_BYTES, SCHEME_CODES, SCHEMES_BY_CODE, short_hex
from protocol.crypto.errors import KeyBindingError, KeyMaterialError, KeyStoreError
from protocol.crypto.factory import scheme_from_secret
from protocol.crypto.kek_ring import KEK_BYTES, KEK_ID_BYTES, KekRing, check_kek, kek_id

SEALED_MAGIC = b"FLKS"
SEALED_VERSION = 3  # 3: names its KEK; 2: does not (still opened); 1: not bound to the federation (refused)
_UNNAMED_SECRET_VERSION = 2
BLOB_VERSION = 2  # 2: names its KEK; 1: does not (still opened)
_UNNAMED_BLOB_VERSION = 1
#: The first bytes of the associated data of a sealed HE secret: what kind of thing it is.
SECRET_TYPE_TAG = b"fedlora/he-secret\x00"
_NONCE_BYTES = 12
_TAG_BYTES = 16
_AAD = struct.Struct(f">4sBB{FINGERPRINT_BYTES}s")
MIN_SALT_BYTES = 16
# scrypt cost (RFC 7914): 2^15 x 8 x 128 bytes = 32 MiB and ~0.1 s per derivation here.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 1 << 15, 8, 1


@dataclass(frozen=True)
class _Envelope:
    """A sealed record split at its nonce: `header` (the associated data after any type tag) names the KEK
    (`kek_id`, None in an envelope from before envelopes named it)."""

    version: int
    header: bytes
    kek_id: bytes | None
    nonce: bytes
    body: bytes


@dataclass(frozen=True)
class _SealedSecret:
    envelope: _Envelope
    code: int
    fingerprint: bytes
    federation_id: str


def seal_secret(scheme: HEScheme[Any], kek: bytes, *, federation_id: str) -> bytes:
    """The scheme's secret key, encrypted and bound to its scheme, its fingerprint and `federation_id`."""
    return _seal_secret_bytes(
        scheme.secret_bytes(),
        kek,
        code=SCHEME_CODES[scheme.kind],
        fingerprint=scheme.fingerprint,
        fid=federation_id,
    )


def open_secret(
    params: AnyParams, sealed: bytes, kek: bytes | KekRing, *, federation_id: str, fingerprint: bytes
) -> HEScheme[Any]:
    """The scheme `seal_secret` sealed for `federation_id`, whose public key has `fingerprint` (the one the
    federation publishes). Raises `KeyBindingError` when it was sealed for another federation or key,
    `WrongKekError` when it names a KEK not in `kek`, `KeyStoreError` on tampering or parameters that
    changed."""
    keks = KekRing.of(kek)
    parsed = _parse_secret(sealed)
    kind = SCHEMES_BY_CODE.get(parsed.code)
    if kind != params.kind:
        named = kind.value if kind is not None else f"unknown scheme code {parsed.code}"
        raise KeyStoreError(f"sealed key is for {named}, the parameters are for {params.kind.value}")
    _check_federation(parsed, federation_id)
    if parsed.fingerprint != fingerprint:
        raise KeyBindingError(
            f"sealed key has fingerprint {short_hex(parsed.fingerprint)}, the federation's public key "
            f"{short_hex(fingerprint)}: the public key or the sealed key was swapped in the store"
        )
    secret, _ = _decrypt(parsed.envelope, keks, aad_prefix=SECRET_TYPE_TAG, what="the sealed key")
    try:
        scheme = scheme_from_secret(params, secret)
    except KeyMaterialError as e:
        raise KeyStoreError(f"sealed key does not fit the parameters: {e}") from e
    if scheme.fingerprint != parsed.fingerprint:
        raise KeyStoreError(
            f"sealed key has fingerprint {short_hex(parsed.fingerprint)}, with these parameters it gives "
            f"{short_hex(scheme.fingerprint)}: the parameters changed since it was sealed"
        )
    return scheme


def reseal_secret(sealed: bytes, keks: KekRing, *, federation_id: str) -> bytes | None:
    """`sealed` (a `seal_secret` envelope stored for `federation_id`) sealed again under `keks.current`, for
    the same scheme, fingerprint and federation; None when it already is (the newest envelope, naming the
    current KEK). Errors as `open_secret`'s: a key sealed for another federation is never re-sealed."""
    parsed = _parse_secret(sealed)
    _check_federation(parsed, federation_id)
    secret, used = _decrypt(parsed.envelope, keks, aad_prefix=SECRET_TYPE_TAG, what="the sealed key")
    if _is_current(parsed.envelope, used, keks, newest=SEALED_VERSION):
        return None
    return _seal_secret_bytes(
        secret, keks.current, code=parsed.code, fingerprint=parsed.fingerprint, fid=federation_id
    )


def _seal_secret_bytes(secret: bytes, kek: bytes, *, code: int, fingerprint: bytes, fid: str) -> bytes:
    aead = AESGCM(check_kek(kek))
    fid_bytes = fid.encode()
    if not 0 < len(fid_bytes) < 256:
        raise KeyStoreError(f"federation_id must be 1 to 255 bytes, got {len(fid_bytes)}")
    header = (
        _AAD.pack(SEALED_MAGIC, SEALED_VERSION, code, fingerprint)
        + kek_id(kek)
        + bytes([len(fid_bytes)])
        + fid_bytes
    )
    nonce = secrets.token_bytes(_NONCE_BYTES)
    return header + nonce + aead.encrypt(nonce, secret, SECRET_TYPE_TAG + header)


def _parse_secret(sealed: bytes) -> _SealedSecret:
    if len(sealed) < _AAD.size + 1:
        raise KeyStoreError(f"sealed key is truncated: {len(sealed)} bytes")
    magic, version, code, fingerprint = _AAD.unpack_from(sealed)
    if magic != SEALED_MAGIC or version not in (_UNNAMED_SECRET_VERSION, SEALED_VERSION):
        raise KeyStoreError(
            f"not a sealed fedlora key of version {_UNNAMED_SECRET_VERSION} or {SEALED_VERSION} (magic "
            f"{magic!r}, version {version}): a key sealed before keys were bound to their federation cannot "
            "be opened; create the federation again"
        )
    id_end = _AAD.size + (KEK_ID_BYTES if version == SEALED_VERSION else 0)
    if len(sealed) < id_end + 1:
        raise KeyStoreError(f"sealed key is truncated: {len(sealed)} bytes")
    fid_end = id_end + 1 + sealed[id_end]
    envelope = _split(
        sealed, version=version, header_end=fid_end, id_at=_AAD.size if id_end > _AAD.size else None
    )
    return _SealedSecret(
        envelope=envelope,
        code=code,
        fingerprint=fingerprint,
        federation_id=sealed[id_end + 1 : fid_end].decode(errors="replace"),
    )


def _check_federation(parsed: _SealedSecret, federation_id: str) -> None:
    if parsed.federation_id != federation_id:
        raise KeyBindingError(
            f"sealed key belongs to federation {parsed.federation_id!r}, not {federation_id!r}: it was moved "
            "in the store"
        )


_BLOB_MAGIC = b"FLSB"
_BLOB_HEADER = struct.Struct(">4sB")


def seal_bytes(data: bytes, kek: bytes, *, label: bytes) -> bytes:
    """Any small secret (a round's central noise) sealed under the KEK and bound to `label`, so it cannot be
    moved to another federation or round."""
    aead = AESGCM(check_kek(kek))
    header = _BLOB_HEADER.pack(_BLOB_MAGIC, BLOB_VERSION) + kek_id(kek)
    nonce = secrets.token_bytes(_NONCE_BYTES)
    return header + nonce + aead.encrypt(nonce, data, header + label)


def open_bytes(sealed: bytes, kek: bytes | KekRing, *, label: bytes) -> bytes:
    """What `seal_bytes` sealed under the same label. Raises `WrongKekError` when it names a KEK not in
    `kek`, `KeyStoreError` otherwise."""
    data, _ = _decrypt(_parse_blob(sealed), KekRing.of(kek), aad_suffix=label, what=_blob_what(label))
    return data


def reseal_bytes(sealed: bytes, keks: KekRing, *, label: bytes) -> bytes | None:
    """`sealed` (a `seal_bytes` envelope bound to `label`) sealed again under `keks.current`; None when it
    already is (the newest envelope, naming the current KEK). Errors as `open_bytes`'s."""
    envelope = _parse_blob(sealed)
    data, used = _decrypt(envelope, keks, aad_suffix=label, what=_blob_what(label))
    if _is_current(envelope, used, keks, newest=BLOB_VERSION):
        return None
    return seal_bytes(data, keks.current, label=label)


def _parse_blob(sealed: bytes) -> _Envelope:
    if len(sealed) < _BLOB_HEADER.size:
        raise KeyStoreError(f"sealed value is truncated: {len(sealed)} bytes")
    magic, version = _BLOB_HEADER.unpack_from(sealed)
    if magic != _BLOB_MAGIC or version not in (_UNNAMED_BLOB_VERSION, BLOB_VERSION):
        raise KeyStoreError(f"not a sealed fedlora value (magic {magic!r}, version {version})")
    named = version == BLOB_VERSION
    header_end = _BLOB_HEADER.size + (KEK_ID_BYTES if named else 0)
    return _split(sealed, version=version, header_end=header_end, id_at=_BLOB_HEADER.size if named else None)


def _blob_what(label: bytes) -> str:
    return f"the value sealed for {label.decode(errors='replace')!r}"


def _split(sealed: bytes, *, version: int, header_end: int, id_at: int | None) -> _Envelope:
    if len(sealed) < header_end + _NONCE_BYTES + _TAG_BYTES:
        raise KeyStoreError(f"sealed value is truncated: {len(sealed)} bytes")
    return _Envelope(
        version=version,
        header=sealed[:header_end],
        kek_id=None if id_at is None else sealed[id_at : id_at + KEK_ID_BYTES],
        nonce=sealed[header_end : header_end + _NONCE_BYTES],
        body=sealed[header_end + _NONCE_BYTES :],
    )


def _decrypt(
    envelope: _Envelope, keks: KekRing, *, what: str, aad_prefix: bytes = b"", aad_suffix: bytes = b""
) -> tuple[bytes, bytes]:
    """The plaintext and the KEK that opened it: the one the envelope names, or, for an envelope that names
    none, the first of `keks` that opens it."""
    aad = aad_prefix + envelope.header + aad_suffix
    for kek in keks.named(envelope.kek_id):
        try:
            return AESGCM(kek).decrypt(envelope.nonce, envelope.body, aad), kek
        except InvalidTag:
            continue
    if envelope.kek_id is not None:
        raise KeyStoreError(
            f"{what} does not open under the KEK it names ({envelope.kek_id.hex()}): it was altered or "
            "belongs elsewhere"
        )
    raise KeyStoreError(f"wrong key-encryption key, or {what} was altered or belongs elsewhere")


def sealed_kek_id(sealed: bytes) -> bytes | None:
    """The id of the KEK a sealed record (`seal_secret`'s or `seal_bytes`') names; None when it names none
    (an envelope from before envelopes named their KEK). `KeyStoreError` if it is neither kind of record."""
    envelope = _parse_secret(sealed).envelope if sealed.startswith(SEALED_MAGIC) else _parse_blob(sealed)
    return envelope.kek_id


def _is_current(envelope: _Envelope, used: bytes, keks: KekRing, *, newest: int) -> bool:
    return envelope.version == newest and used == keks.current and envelope.kek_id == keks.current_id


def derive_kek(passphrase: str, salt: bytes) -> bytes:
    """A KEK from a passphrase with scrypt. Keep the salt (random, at least 16 bytes) with the sealed key."""
    if not passphrase:
        raise KeyStoreError("passphrase must not be empty")
    if len(salt) < MIN_SALT_BYTES:
        raise KeyStoreError(f"salt must be at least {MIN_SALT_BYTES} bytes, got {len(salt)}")
    kdf = Scrypt(salt=salt, length=KEK_BYTES, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
    return kdf.derive(passphrase.encode())
