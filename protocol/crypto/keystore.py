"""The secret key at rest: sealed with AES-256-GCM under a 32-byte key-encryption key (KEK).

Sealed layout: `b"FLKS" | version u8 | scheme u8 | fingerprint (32) | fid length u8 | federation id |
nonce (12) | AES-GCM(secret) + tag`. The associated data is a type tag (`fedlora/he-secret`) followed by
everything before the nonce, so a sealed key cannot be relabelled as another scheme's, another federation's
or another public key's without the tag failing; opening checks the federation id and the fingerprint in
the clear first (`KeyBindingError`), so a key moved between federations, or set beside a swapped public key,
is told apart from a wrong KEK. Where the KEK comes from (environment, file, KMS) is the services' business
(`services.keys.load_kek`); this module does no I/O.
"""

from __future__ import annotations

import secrets
import struct
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from protocol.crypto.base import AnyParams, HEScheme
from protocol.crypto.envelope import FINGERPRINT_BYTES, SCHEME_CODES, SCHEMES_BY_CODE, short_hex
from protocol.crypto.errors import KeyBindingError, KeyMaterialError, KeyStoreError
from protocol.crypto.factory import scheme_from_secret

KEK_BYTES = 32
SEALED_MAGIC = b"FLKS"
SEALED_VERSION = 2  # 2: bound to the federation id (version 1 was not; such a key is refused)
BLOB_VERSION = 1
#: The first bytes of the associated data of a sealed HE secret: what kind of thing it is.
SECRET_TYPE_TAG = b"fedlora/he-secret\x00"
_NONCE_BYTES = 12
_TAG_BYTES = 16
_AAD = struct.Struct(f">4sBB{FINGERPRINT_BYTES}s")
MIN_SALT_BYTES = 16
# scrypt cost (RFC 7914): 2^15 x 8 x 128 bytes = 32 MiB and ~0.1 s per derivation here.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 1 << 15, 8, 1


def seal_secret(scheme: HEScheme[Any], kek: bytes, *, federation_id: str) -> bytes:
    """The scheme's secret key, encrypted and bound to its scheme, its fingerprint and `federation_id`."""
    aead = AESGCM(_check_kek(kek))
    header = _header(SCHEME_CODES[scheme.kind], scheme.fingerprint, federation_id)
    nonce = secrets.token_bytes(_NONCE_BYTES)
    return header + nonce + aead.encrypt(nonce, scheme.secret_bytes(), SECRET_TYPE_TAG + header)


def open_secret(
    params: AnyParams, sealed: bytes, kek: bytes, *, federation_id: str, fingerprint: bytes
) -> HEScheme[Any]:
    """The scheme `seal_secret` sealed for `federation_id`, whose public key has `fingerprint` (the one the
    federation publishes). Raises `KeyBindingError` when it was sealed for another federation or key,
    `KeyStoreError` on a wrong KEK, tampering or parameters that changed."""
    aead = AESGCM(_check_kek(kek))
    if len(sealed) < _AAD.size + 1 + _NONCE_BYTES + _TAG_BYTES:
        raise KeyStoreError(f"sealed key is truncated: {len(sealed)} bytes")
    magic, version, code, sealed_fingerprint = _AAD.unpack_from(sealed)
    if magic != SEALED_MAGIC or version != SEALED_VERSION:
        raise KeyStoreError(
            f"not a sealed fedlora key of version {SEALED_VERSION} (magic {magic!r}, version {version}): a key "
            "sealed before keys were bound to their federation cannot be opened; create the federation again"
        )
    kind = SCHEMES_BY_CODE.get(code)
    if kind != params.kind:
        named = kind.value if kind is not None else f"unknown scheme code {code}"
        raise KeyStoreError(f"sealed key is for {named}, the parameters are for {params.kind.value}")
    fid_end = _AAD.size + 1 + sealed[_AAD.size]
    sealed_fid = sealed[_AAD.size + 1 : fid_end].decode(errors="replace")
    if sealed_fid != federation_id:
        raise KeyBindingError(
            f"sealed key belongs to federation {sealed_fid!r}, not {federation_id!r}: it was moved in the store"
        )
    if sealed_fingerprint != fingerprint:
        raise KeyBindingError(
            f"sealed key has fingerprint {short_hex(sealed_fingerprint)}, the federation's public key "
            f"{short_hex(fingerprint)}: the public key or the sealed key was swapped in the store"
        )
    header, nonce = sealed[:fid_end], sealed[fid_end : fid_end + _NONCE_BYTES]
    if len(sealed) < fid_end + _NONCE_BYTES + _TAG_BYTES:
        raise KeyStoreError(f"sealed key is truncated: {len(sealed)} bytes")
    try:
        secret = aead.decrypt(nonce, sealed[fid_end + _NONCE_BYTES :], SECRET_TYPE_TAG + header)
    except InvalidTag as e:
        raise KeyStoreError("wrong key-encryption key, or the sealed key was altered") from e
    try:
        scheme = scheme_from_secret(params, secret)
    except KeyMaterialError as e:
        raise KeyStoreError(f"sealed key does not fit the parameters: {e}") from e
    if scheme.fingerprint != sealed_fingerprint:
        raise KeyStoreError(
            f"sealed key has fingerprint {short_hex(sealed_fingerprint)}, with these parameters it gives "
            f"{short_hex(scheme.fingerprint)}: the parameters changed since it was sealed"
        )
    return scheme


def _header(code: int, fingerprint: bytes, federation_id: str) -> bytes:
    fid = federation_id.encode()
    if not 0 < len(fid) < 256:
        raise KeyStoreError(f"federation_id must be 1 to 255 bytes, got {len(fid)}")
    return _AAD.pack(SEALED_MAGIC, SEALED_VERSION, code, fingerprint) + bytes([len(fid)]) + fid


_BLOB_MAGIC = b"FLSB"
_BLOB_HEADER = struct.Struct(">4sB")


def seal_bytes(data: bytes, kek: bytes, *, label: bytes) -> bytes:
    """Any small secret (a round's central noise) sealed under the KEK and bound to `label`, so it cannot be
    moved to another federation or round: `b"FLSB" | version u8 | nonce (12) | AES-GCM(data) + tag`."""
    aead = AESGCM(_check_kek(kek))
    header = _BLOB_HEADER.pack(_BLOB_MAGIC, BLOB_VERSION)
    nonce = secrets.token_bytes(_NONCE_BYTES)
    return header + nonce + aead.encrypt(nonce, data, header + label)


def open_bytes(sealed: bytes, kek: bytes, *, label: bytes) -> bytes:
    """What `seal_bytes` sealed under the same label. Raises `KeyStoreError` otherwise."""
    aead = AESGCM(_check_kek(kek))
    if len(sealed) < _BLOB_HEADER.size + _NONCE_BYTES + _TAG_BYTES:
        raise KeyStoreError(f"sealed value is truncated: {len(sealed)} bytes")
    magic, version = _BLOB_HEADER.unpack_from(sealed)
    if magic != _BLOB_MAGIC or version != BLOB_VERSION:
        raise KeyStoreError(f"not a sealed fedlora value (magic {magic!r}, version {version})")
    header = sealed[: _BLOB_HEADER.size]
    nonce = sealed[_BLOB_HEADER.size : _BLOB_HEADER.size + _NONCE_BYTES]
    try:
        return aead.decrypt(nonce, sealed[_BLOB_HEADER.size + _NONCE_BYTES :], header + label)
    except InvalidTag as e:
        raise KeyStoreError(
            f"wrong key-encryption key, or the value sealed for {label.decode(errors='replace')!r} was "
            "altered or belongs elsewhere"
        ) from e


def derive_kek(passphrase: str, salt: bytes) -> bytes:
    """A KEK from a passphrase with scrypt. Keep the salt (random, at least 16 bytes) with the sealed key."""
    if not passphrase:
        raise KeyStoreError("passphrase must not be empty")
    if len(salt) < MIN_SALT_BYTES:
        raise KeyStoreError(f"salt must be at least {MIN_SALT_BYTES} bytes, got {len(salt)}")
    kdf = Scrypt(salt=salt, length=KEK_BYTES, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
    return kdf.derive(passphrase.encode())


def _check_kek(kek: bytes) -> bytes:
    if not isinstance(kek, bytes | bytearray) or len(kek) != KEK_BYTES:
        size = len(kek) if isinstance(kek, bytes | bytearray) else type(kek).__name__
        raise KeyStoreError(f"key-encryption key must be {KEK_BYTES} bytes, got {size}")
    if len(set(kek)) == 1:
        raise KeyStoreError("key-encryption key is one byte repeated: a placeholder, not a key")
    return bytes(kek)
