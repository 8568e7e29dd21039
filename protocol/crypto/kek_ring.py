"""The key-encryption keys (KEKs) one process holds: the current one, which seals every new record, and,
while the KEK is being rotated, the previous one, which only opens records sealed before the rotation.

A sealed record names the KEK that sealed it by `kek_id`: the first 8 bytes of HMAC-SHA256 of a fixed label
under the KEK (a PRF output, so it says nothing about the key, and two KEKs share an id only by a 2^-64
chance). Opening picks the KEK by that id, so a record sealed under a KEK this process does not hold is
refused with both ids named (`WrongKekError`) instead of an anonymous tag failure. Records sealed before
envelopes carried the id are tried with the current KEK and then with the previous one.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from protocol.crypto.errors import KeyStoreError, WrongKekError

KEK_BYTES = 32
KEK_ID_BYTES = 8
_KEK_ID_LABEL = b"fedlora/kek-id/v1"


def check_kek(kek: bytes) -> bytes:
    """`kek` as bytes if it is 32 bytes and not one byte repeated; `KeyStoreError` otherwise."""
    if not isinstance(kek, bytes | bytearray) or len(kek) != KEK_BYTES:
        size = len(kek) if isinstance(kek, bytes | bytearray) else type(kek).__name__
        raise KeyStoreError(f"key-encryption key must be {KEK_BYTES} bytes, got {size}")
    if len(set(kek)) == 1:
        raise KeyStoreError("key-encryption key is one byte repeated: a placeholder, not a key")
    return bytes(kek)


def kek_id(kek: bytes) -> bytes:
    """The public name of `kek` that sealed records carry (`KEK_ID_BYTES` bytes)."""
    return hmac.new(check_kek(kek), _KEK_ID_LABEL, hashlib.sha256).digest()[:KEK_ID_BYTES]


@dataclass(frozen=True)
class KekRing:
    """The current KEK and, during a rotation, the previous one (never the same key)."""

    current: bytes
    previous: bytes | None = None

    def __post_init__(self) -> None:
        check_kek(self.current)
        if self.previous is not None:
            check_kek(self.previous)
            if bytes(self.previous) == bytes(self.current):
                raise KeyStoreError(
                    f"the previous KEK is the current one (id {kek_id(self.current).hex()}): give the key "
                    "it replaces, or none"
                )

    @classmethod
    def of(cls, kek: bytes | KekRing) -> KekRing:
        """`kek` itself if it is a ring; a ring of the current KEK alone if it is a key."""
        return kek if isinstance(kek, KekRing) else cls(current=kek)

    @property
    def current_id(self) -> bytes:
        return kek_id(self.current)

    def keys(self) -> tuple[bytes, ...]:
        """The KEKs to try, current first."""
        return (self.current,) if self.previous is None else (self.current, self.previous)

    def named(self, sealed_id: bytes | None) -> tuple[bytes, ...]:
        """The KEKs that may open a record naming `sealed_id` (None: an envelope from before envelopes named
        their KEK, so every KEK held, current first). `WrongKekError` when no KEK held has that id."""
        if sealed_id is None:
            return self.keys()
        for kek in self.keys():
            if kek_id(kek) == sealed_id:
                return (kek,)
        held = ", ".join(
            [f"current {self.current_id.hex()}"]
            + ([f"previous {kek_id(self.previous).hex()}"] if self.previous is not None else [])
        )
        raise WrongKekError(
            f"wrong key-encryption key: sealed under the KEK with id {sealed_id.hex()}, which this process "
            f"does not hold ({held}): "
            "set that KEK as FEDLORA_KEK, or as FEDLORA_KEK_PREVIOUS while `fedlora kek rotate` re-seals"
        )
