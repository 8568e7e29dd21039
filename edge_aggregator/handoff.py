"""Uploads this process checked and stored, handed to its own folder in memory.

The request path deserialises every upload to check it against the federation's key and layout before it
stores it (`parse_upload`); without a hand-off the folder then reads the same bytes back from the store and
deserialises them again. The hand-off keeps the checked ciphertext of the last few uploads this process
stored, so that its folder adds them as they are: the store still holds every upload (what the 202
promises, and what a folder in another process, or after a restart, reads), and an upload the hand-off no
longer holds is read from the store as before.

An entry is keyed by the round's sum it belongs to and its client, and taken only for the ciphertext the
manifest names (its SHA-256, from the signed manifest line): one taken out and uploaded again, or replaced
in the store, never reaches the sum from here. Taking an entry removes it: the folder adds it into a sum it
owns from then on. At most `capacity` entries are held (memory: that many ciphertexts, whatever the
cohort); when full, the oldest is dropped and its upload read from the store when the folder gets to it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from protocol.crypto import EncryptedVector


@dataclass(frozen=True)
class _Entry:
    digest: str
    vector: EncryptedVector[Any]


class Handoff:
    """Checked ciphertexts of stored uploads, by (round, origin, client), for this process's folder."""

    def __init__(self, *, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be at least 0, got {capacity}")
        self._capacity = capacity
        self._entries: OrderedDict[tuple[int, int, str], _Entry] = OrderedDict()

    def put(
        self, round_: int, origin: int, client_id: str, *, digest: str, vector: EncryptedVector[Any]
    ) -> None:
        """Hold `vector`, the checked ciphertext whose bytes (SHA-256 `digest`) are stored for `client_id` in
        round `round_`'s sum for `origin` (`discard` it if the store refuses them)."""
        if self._capacity == 0:
            return
        key = (round_, origin, client_id)
        self._entries.pop(key, None)
        self._entries[key] = _Entry(digest, vector)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def discard(self, round_: int, origin: int, client_id: str, *, digest: str) -> None:
        """Forget the ciphertext `put` held for an upload the store then refused (if it is still that one)."""
        key = (round_, origin, client_id)
        entry = self._entries.get(key)
        if entry is not None and entry.digest == digest:
            del self._entries[key]

    def holds(self, round_: int, origin: int, client_id: str) -> bool:
        return (round_, origin, client_id) in self._entries

    def take(self, round_: int, origin: int, client_id: str, *, digest: str) -> EncryptedVector[Any] | None:
        """The held ciphertext of `client_id`'s upload if it is the one whose digest the manifest names
        (removed from the hand-off either way); None otherwise (read it from the store)."""
        entry = self._entries.pop((round_, origin, client_id), None)
        if entry is None or entry.digest != digest:
            return None
        return entry.vector

    def __len__(self) -> int:
        return len(self._entries)
