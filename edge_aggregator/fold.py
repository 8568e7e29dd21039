"""The edge's arithmetic, without a store or an event loop: read one upload's ciphertext, add it into a
round's running sum, sum stored uploads again.

`EdgeAggregator` checks uploads on its crypto thread, and its folder (`edge_aggregator.folder`) adds stored
uploads into a `RunningSum` on its own thread, between its store reads and checkpoints; the one-process simulation
(`fedlora.simulation_rounds.EdgeSums`) runs them to hold its edges' sums, so that what the experiments
measure is what an edge adds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from edge_aggregator.errors import BadCiphertextError, SumFullError, UnreadableSumError
from protocol.crypto import CryptoError, EncryptedVector, HEScheme


def parse_upload(scheme: HEScheme[Any], data: bytes, *, length: int) -> EncryptedVector[Any]:
    """One hospital's ciphertext, checked against the federation's key and the layout's `length`; raises
    `BadCiphertextError` for anything else, a sum of several encryptions included."""
    try:
        vector = scheme.deserialize(data, expected_length=length)
    except CryptoError as e:
        raise BadCiphertextError(str(e), field="ciphertext") from e
    if vector.count != 1:
        raise BadCiphertextError(
            f"an upload is one encryption, this one claims to be a sum of {vector.count}", field="ciphertext"
        )
    return vector


def fold(
    scheme: HEScheme[Any],
    stored: bytes | None,
    incoming: EncryptedVector[Any],
    *,
    length: int,
    added: Callable[[float], None] | None = None,
) -> bytes:
    """The new running sum `stored + incoming`, serialised (`incoming` itself if nothing is stored yet).
    `added(seconds)` hears how long the homomorphic addition took; raises `SumFullError` when the sum
    cannot take another term, `UnreadableSumError` when `stored` does not read back (the store's fault, not
    the client's: the ledger quarantines it)."""
    if stored is None:
        return scheme.serialize(incoming)
    try:
        total = scheme.deserialize(stored, expected_length=length)
    except CryptoError as e:
        raise UnreadableSumError(f"the running sum does not deserialise: {e}") from e
    started = time.perf_counter()
    try:
        scheme.add_into(total, incoming)
    except CryptoError as e:
        raise SumFullError(f"cannot add this upload to the round's sum: {e}") from e
    if added is not None:
        added(time.perf_counter() - started)
    return scheme.serialize(total)


class RunningSum:
    """A round's sum while the folder adds stored uploads into it: the stored sum read once, then one upload
    at a time, so that memory holds the sum and one upload, whatever the cohort. `added(seconds)` hears how
    long each homomorphic addition took."""

    def __init__(
        self,
        scheme: HEScheme[Any],
        stored: bytes | None,
        *,
        length: int,
        added: Callable[[float], None] | None = None,
    ) -> None:
        self._scheme = scheme
        self._length = length
        self._added = added
        self._total: EncryptedVector[Any] | None = None
        if stored is not None:
            try:
                self._total = scheme.deserialize(stored, expected_length=length)
            except CryptoError as e:
                raise UnreadableSumError(f"the running sum does not deserialise: {e}") from e

    def add(self, incoming: EncryptedVector[Any]) -> None:
        """Add one upload (`parse_upload` of a stored one); `SumFullError` when the sum cannot take another
        term."""
        if self._total is None:
            self._total = incoming
            return
        started = time.perf_counter()
        try:
            self._scheme.add_into(self._total, incoming)
        except CryptoError as e:
            raise SumFullError(f"cannot add this upload to the round's sum: {e}") from e
        if self._added is not None:
            self._added(time.perf_counter() - started)

    @property
    def count(self) -> int:
        """The encryptions the sum holds (its envelope's count; 0 before the first)."""
        return self._total.count if self._total is not None else 0

    def dump(self) -> bytes:
        if self._total is None:
            raise ValueError("a sum needs at least one upload")
        return self._scheme.serialize(self._total)


def sum_uploads(scheme: HEScheme[Any], uploads: Sequence[bytes], *, length: int) -> bytes:
    """The sum of `uploads` (the edge's own stored, already checked ciphertexts), serialised: a round's sum
    rebuilt without the clients the cloud would not count in it."""
    if not uploads:
        raise ValueError("a sum needs at least one upload")
    total = scheme.deserialize(uploads[0], expected_length=length)
    for upload in uploads[1:]:
        scheme.add_into(total, scheme.deserialize(upload, expected_length=length))
    return scheme.serialize(total)
