"""The primitives of masking below the encryption, each from a maintained library.

- Key agreement: X25519 (`cryptography`), one key pair per hospital per cohort for share encryption
  (`c`) and one for pairwise masks (`s`); the `s` key is derived from a 16-byte seed so that the seed is
  all that needs secret sharing.
- Key derivation: HKDF-SHA256, every output bound to the cohort's context and to what it is for.
- Mask expansion: AES-256 in counter mode as a PRG, read as uint64 words reduced into `Z_(2^bits)`
  (`bits <= 64` divides 2^64, so the residues are exactly uniform).
- Share encryption: AES-256-GCM, the sender, the recipient and the cohort in the associated data.
- Threshold sharing: Shamir over GF(2^128) for 16-byte secrets (pycryptodome's `Shamir`).
"""

from __future__ import annotations

import secrets

import numpy as np
import numpy.typing as npt
from Crypto.Protocol.SecretSharing import Shamir
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SEED_BYTES = 16
KEY_BYTES = 32
NONCE_BYTES = 12
_DOMAIN = b"fedlora/secagg/v1\x00"
# A 16-byte counter block of zeros: every PRG key is used for one stream only.
_ZERO_COUNTER = bytes(16)
_PRG_BLOCK_VALUES = 1 << 20  # uint64 words per AES call: bounds the keystream buffer at 8 MiB


class SecAggError(ValueError):
    """A masking message or secret is malformed, forged, or inconsistent with the cohort."""


def new_seed() -> bytes:
    """16 bytes from the OS: masks protect privacy, so they are never seeded by anyone."""
    return secrets.token_bytes(SEED_BYTES)


def derive(secret: bytes, *, purpose: bytes, context: bytes, length: int = KEY_BYTES) -> bytes:
    """HKDF-SHA256 of `secret`, bound to what it is for and to the cohort."""
    return HKDF(
        algorithm=hashes.SHA256(), length=length, salt=None, info=_DOMAIN + purpose + b"\x00" + context
    ).derive(secret)


def public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def mask_key(seed: bytes, context: bytes) -> X25519PrivateKey:
    """The pairwise-mask key pair a hospital derives from its secret-shared seed."""
    return X25519PrivateKey.from_private_bytes(derive(seed, purpose=b"mask-key", context=context))


def agree(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    """The X25519 shared secret with `peer_public`; raises `SecAggError` for a malformed or low-order key."""
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as e:  # wrong length, or an all-zero shared secret (a low-order point)
        raise SecAggError(f"public key {peer_public.hex()[:16]}...: {e}") from e


def check_public_key(public: bytes) -> None:
    """Raise `SecAggError` unless `public` agrees a secret with others: X25519 with a low-order point gives
    the all-zero secret whoever the peer is, so every hospital would refuse a roster holding it."""
    agree(X25519PrivateKey.generate(), public)


def expand(key: bytes, length: int, bits: int) -> npt.NDArray[np.uint64]:
    """`length` uniform residues in `Z_(2^bits)` from a 32-byte PRG key (AES-256-CTR keystream)."""
    if not 1 <= bits <= 64:
        raise ValueError(f"bits must lie in [1, 64], got {bits}")
    encryptor = Cipher(algorithms.AES(key), modes.CTR(_ZERO_COUNTER)).encryptor()
    out = np.empty(length, dtype=np.uint64)
    for start in range(0, length, _PRG_BLOCK_VALUES):
        count = min(_PRG_BLOCK_VALUES, length - start)
        out[start : start + count] = np.frombuffer(encryptor.update(bytes(8 * count)), dtype="<u8")
    if bits < 64:
        out &= np.uint64((1 << bits) - 1)
    return out


def seal(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def open_sealed(key: bytes, sealed: bytes, associated: bytes) -> bytes:
    if len(sealed) < NONCE_BYTES + 16:
        raise SecAggError(f"a sealed share is at least {NONCE_BYTES + 16} bytes, got {len(sealed)}")
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)
    except InvalidTag as e:
        raise SecAggError("a sealed share does not open: it was altered, or sealed for someone else") from e


def split(secret: bytes, *, threshold: int, holders: int) -> list[bytes]:
    """Shamir shares of a 16-byte secret for holders 1..`holders`; any `threshold` of them rebuild it."""
    if len(secret) != SEED_BYTES:
        raise ValueError(f"a shared secret is {SEED_BYTES} bytes, got {len(secret)}")
    if not 1 <= threshold <= holders:
        raise ValueError(f"threshold must lie in [1, {holders}], got {threshold}")
    if threshold == 1:  # a degree-0 polynomial: every share is the secret (pycryptodome wants k >= 2)
        return [secret] * holders
    return [share for _, share in Shamir.split(threshold, holders, secret)]


def combine(shares: dict[int, bytes], *, threshold: int) -> bytes:
    """The secret from shares keyed by holder index (1-based); uses the `threshold` lowest indices."""
    if len(shares) < threshold:
        raise SecAggError(f"{len(shares)} shares cannot rebuild a secret split with threshold {threshold}")
    for index, share in shares.items():
        if index < 1 or len(share) != SEED_BYTES:
            raise SecAggError(
                f"a share is {SEED_BYTES} bytes for a holder index from 1, got {len(share)} bytes for {index}"
            )
    chosen = sorted(shares.items())[:threshold]
    if threshold == 1:
        return chosen[0][1]
    return bytes(Shamir.combine(chosen))
