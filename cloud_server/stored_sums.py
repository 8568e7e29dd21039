"""A sealed round's edge sums, read from the store one edge at a time, never all at once.

Closing a round reads each stored edge sum twice. The first pass (`read_sums`) checks each value
against the digest recorded when the round was sealed and against `receive`'s checks (its `check`:
`cloud_server.sum_checks`), and keeps only its header; a sum is known by its hash field from then on. The decryption then reads
each edge's value again when it is that edge's turn (`StoredSums.ciphertexts`, `corrections`, a late group's
`ciphertexts`: sequences indexed from the decrypting thread), checks its digest once more, and drops it once
added (`protocol.aggregation.fold`): the cloud holds the running sum and one edge's value, however many edges
the round has.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Generic, TypeVar, overload

from cloud_server.records import (
    StoredAggregate,
    readable_aggregates,
    unpack_aggregate,
    unpack_late,
    unpack_mask_correction,
)
from services.store import StateStore


class StoredSumChangedError(RuntimeError):
    """An edge sum in the store is no longer the value recorded when its round was sealed, or is gone, between
    two reads of one close: the attempt fails (counted and retried), and the next one quarantines it."""


Quarantine = Callable[[str, bytes | None, str], Awaitable[None]]
#: Why the value stored under a hash field is not a sum `receive` would have taken from that field's edge
#: (None: it is one): `cloud_server.sum_checks.SumChecks.stored`.
Check = Callable[[str, bytes], Awaitable[str | None]]


async def read_sums(
    store: StateStore,
    key: str,
    sealed: Mapping[str, str],
    *,
    quarantine: Quarantine,
    check: Check | None = None,
) -> tuple[StoredSums, dict[str, str], dict[str, str]]:
    """The sums in the hash `key` that read back (`readable_aggregates` against `sealed`, edge id -> sha256
    of each value when the round was sealed) and pass `check`, one value in memory at a time; hash field ->
    why for each that does not read back; and hash field -> why for each that reads back but fails `check`
    (never decrypted: not a sum its field's edge could have had taken). Each of the last two is handed with
    its value (None: gone) to `quarantine` as it is found. Runs on the loop `store` uses."""
    headers: dict[str, StoredAggregate] = {}
    unreadable: dict[str, str] = {}
    refused: dict[str, str] = {}
    for edge_id in sorted(set(await store.hkeys(key)) | set(sealed)):
        value = await store.hget(key, edge_id)
        held = {} if value is None else {edge_id: value}
        readable, why = readable_aggregates(held, {e: d for e, d in sealed.items() if e == edge_id})
        if not readable:
            unreadable |= why
            await quarantine(edge_id, value, why[edge_id])
        elif value is not None and check is not None and (fails := await check(edge_id, value)) is not None:
            refused[edge_id] = fails
            await quarantine(edge_id, value, fails)
        else:
            headers[edge_id] = unpack_aggregate(readable[edge_id])[0]
        del value, held, readable
    return StoredSums(store, key, headers, sealed, asyncio.get_running_loop()), unreadable, refused


class StoredSums:
    """The readable edge sums of a sealed round: each edge's header, read once, and the values read again
    from the store when indexed. Indexing blocks: it runs from a thread other than the event loop's."""

    def __init__(
        self,
        store: StateStore,
        key: str,
        headers: Mapping[str, StoredAggregate],
        sealed: Mapping[str, str],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        """`key`: the round's hash of edge sums; `headers`: edge id -> header of each sum that read back;
        `sealed`: edge id -> sha256 of its value when the round was sealed; `loop`: the loop `store` runs on."""
        self._store, self._key, self._sealed, self._loop = store, key, dict(sealed), loop
        self.headers = {edge_id: headers[edge_id] for edge_id in sorted(headers)}
        self._edges = list(self.headers)
        self._last: tuple[str, bytes] | None = None  # the value read last: its ciphertext, correction, late

    @property
    def edges(self) -> list[str]:
        return list(self._edges)

    def without(self, edges: Sequence[str]) -> StoredSums:
        """These sums less those stored under the hash fields `edges` (a round that goes on without the sums
        it refused). A sum is known by its hash field everywhere in the close, which `read_sums`'s `check`
        holds to its header's edge id."""
        kept = {e: h for e, h in self.headers.items() if e not in edges}
        return StoredSums(self._store, self._key, kept, self._sealed, self._loop)

    @property
    def ciphertexts(self) -> Sequence[memoryview]:
        """Each edge's own sum, in the order of `edges`."""
        return _Lazy(self._edges, lambda edge_id: unpack_aggregate(self.value(edge_id))[1])

    @property
    def corrections(self) -> Sequence[memoryview | None]:
        """Each edge's mask correction (None where it has none), in the order of `edges`."""
        return _Lazy(self._edges, lambda edge_id: unpack_mask_correction(self.value(edge_id)))

    def late(self, buckets: Sequence[tuple[str, int]]) -> Sequence[memoryview]:
        """The ciphertexts of late `buckets`, each (edge id, index of the bucket in that edge's sum)."""
        return _Lazy(buckets, lambda bucket: unpack_late(self.value(bucket[0]))[bucket[1]][1])

    def value(self, edge_id: str) -> bytes:
        """`edge_id`'s stored value, as sealed; `StoredSumChangedError` if it is no longer that one."""
        if self._last is not None and self._last[0] == edge_id:
            return self._last[1]
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            raise RuntimeError("StoredSums reads block: index it from a worker thread, not the event loop")
        self._last = None  # dropped before the next value arrives: one edge's value in memory at a time
        value = asyncio.run_coroutine_threadsafe(self._store.hget(self._key, edge_id), self._loop).result()
        if value is None or hashlib.sha256(value).hexdigest() != self._sealed.get(edge_id):
            raise StoredSumChangedError(
                f"edge {edge_id!r}'s sum in {self._key} is "
                + ("gone" if value is None else "not the value recorded when the round was sealed")
            )
        self._last = (edge_id, value)
        return value


K = TypeVar("K")
V = TypeVar("V")


class _Lazy(Sequence[V], Generic[K, V]):
    """`load(key)` for each of `keys`, computed when indexed and never kept."""

    def __init__(self, keys: Sequence[K], load: Callable[[K], V]) -> None:
        self._keys, self._load = list(keys), load

    def __len__(self) -> int:
        return len(self._keys)

    @overload
    def __getitem__(self, index: int) -> V: ...

    @overload
    def __getitem__(self, index: slice) -> list[V]: ...

    def __getitem__(self, index: int | slice) -> V | list[V]:
        if isinstance(index, slice):
            return [self._load(key) for key in self._keys[index]]
        return self._load(self._keys[index])
