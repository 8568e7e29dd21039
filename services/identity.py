"""Identities: Ed25519 signing keys for clients and edges, and bearer tokens stored only as digests.

Clients sign every `ClientUpdate` and edges every `EdgeAggregate` (`signing_payload()`), so an edge can
prove which enrolled hospital sent a ciphertext and the cloud which edge sent a sum. Bearer tokens
authenticate requests; the cloud keeps only their SHA-256.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from protocol.ed25519 import PublicKeyError, check_public_key
from services.secret_files import write_secret


class IdentityError(ValueError):
    """A key or signature is malformed, or a signature does not verify."""


class SigningKey:
    """An Ed25519 private key with its raw public key."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_bytes(cls, raw: bytes) -> SigningKey:
        if len(raw) != 32:
            raise IdentityError(f"an Ed25519 private key is 32 bytes, got {len(raw)}")
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    @classmethod
    def load_or_create(cls, path: Path) -> SigningKey:
        """The key in `path`, or a new one written there with mode 0600."""
        if path.exists():
            return cls.from_bytes(path.read_bytes())
        key = cls.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        write_secret(path, key.private_bytes())
        return key

    def private_bytes(self) -> bytes:
        return self._private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    @property
    def public_bytes(self) -> bytes:
        return self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def sign(self, payload: bytes) -> bytes:
        return self._private.sign(payload)


def verify(public_key: bytes, payload: bytes, signature: bytes) -> None:
    """Raise `IdentityError` unless `signature` is `public_key`'s signature of `payload` and `public_key` a
    point of prime order (a small-order key verifies forged signatures)."""
    try:
        check_public_key(public_key)
    except PublicKeyError as e:
        raise IdentityError(str(e)) from e
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, payload)
    except InvalidSignature as e:
        raise IdentityError("signature does not verify") from e


def verifier(public_key_of: Callable[[str], bytes | None]) -> Callable[[str, bytes, bytes], bool]:
    """`(client_id, payload, signature) -> bool` over enrolled keys (`public_key_of` answers None for an id it
    does not know): what a masking cohort checks adverts and survivor lists with (`protocol.secagg.Verifier`)."""

    def check(client_id: str, payload: bytes, signature: bytes) -> bool:
        key = public_key_of(client_id)
        if key is None:
            return False
        try:
            verify(key, payload, signature)
        except IdentityError:
            return False
        return True

    return check


def new_token() -> str:
    """A bearer token: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
