"""Ed25519 public keys as peers send them: 32 bytes that must encode, canonically, a point of the curve's
prime-order subgroup.

A small-order key (the identity point among them) verifies one fixed signature for every message, and a
non-canonical encoding names the same point as another key (Chalkias, Garillot and Nikolaenko 2020, "Taming
the many EdDSAs"), so such a key is refused wherever one is parsed. The check is libsodium's
(`crypto_core_ed25519_is_valid_point`, through PyNaCl).
"""

from __future__ import annotations

from nacl.bindings import crypto_core_ed25519_is_valid_point

PUBLIC_KEY_BYTES = 32


class PublicKeyError(ValueError):
    """Bytes that are not a usable Ed25519 public key."""


def check_public_key(raw: bytes) -> bytes:
    """`raw`, unless it is not a canonical Ed25519 point of prime order (`PublicKeyError`)."""
    if len(raw) != PUBLIC_KEY_BYTES:
        raise PublicKeyError(f"an Ed25519 public key is {PUBLIC_KEY_BYTES} bytes, got {len(raw)}")
    if not crypto_core_ed25519_is_valid_point(raw):
        raise PublicKeyError(
            "not an Ed25519 public key: not a canonical point of prime order (a small-order key such as the "
            "identity point verifies a forged signature for any message)"
        )
    return raw
