"""`StateStore`: where the cloud and the edges keep everything that must survive a restart.

Two implementations share one contract (tests/contract/test_store_contract.py): `MemoryStore`, embedded,
for `fedlora demo` and single-process tests, and the Redis store (issue 5). Keys come from
`services.keyspace` only. Every write that must happen once goes through `set_if_absent` or
`transaction`, so a retried request never counts twice.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence

Updates = Mapping[str, bytes | None]  # key -> new value, None deletes
TransactionFn = Callable[[dict[str, bytes | None]], Updates | Awaitable[Updates]]


class StoreError(RuntimeError):
    """The store is unreachable or a transaction could not commit."""


class StateStore(ABC):
    """Async key-value store with TTLs, counters, hashes and optimistic multi-key transactions."""

    @abstractmethod
    async def get(self, key: str) -> bytes | None: ...

    @abstractmethod
    async def set(self, key: str, value: bytes, *, ttl_s: float | None = None) -> None: ...

    @abstractmethod
    async def set_if_absent(self, key: str, value: bytes, *, ttl_s: float | None = None) -> bool:
        """Write only if `key` does not exist (Redis `SET NX`). True if this call wrote it."""

    @abstractmethod
    async def delete(self, *keys: str) -> int: ...

    @abstractmethod
    async def incr(self, key: str, by: int = 1) -> int: ...

    @abstractmethod
    async def hset(self, key: str, field: str, value: bytes) -> None: ...

    @abstractmethod
    async def hset_if_absent(self, key: str, field: str, value: bytes) -> bool: ...

    @abstractmethod
    async def hget(self, key: str, field: str) -> bytes | None: ...

    @abstractmethod
    async def hgetall(self, key: str) -> dict[str, bytes]: ...

    @abstractmethod
    async def scan(self, prefix: str) -> list[str]:
        """Every key starting with `prefix`, sorted."""

    @abstractmethod
    async def transaction(self, keys: Sequence[str], fn: TransactionFn) -> Updates:
        """Read `keys`, let `fn` compute the writes from their values, apply them atomically.

        If another writer changed one of `keys` in between, the transaction retries with fresh values
        (Redis WATCH/MULTI). `fn` may raise to abort; nothing is written then. Returns what was written.
        """

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None


class MemoryStore(StateStore):
    """In-process store: one asyncio lock makes every operation and transaction atomic.

    Good for one process (the demo's services each have their own). Lost when the process exits: use
    the Redis store for anything that must survive a restart.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._values: dict[str, bytes] = {}
        self._hashes: dict[str, dict[str, bytes]] = {}
        self._expiry: dict[str, float] = {}
        self._clock = clock
        self._lock = asyncio.Lock()

    def _expire(self, key: str) -> None:
        deadline = self._expiry.get(key)
        if deadline is not None and self._clock() >= deadline:
            self._values.pop(key, None)
            self._hashes.pop(key, None)
            self._expiry.pop(key, None)

    def _get(self, key: str) -> bytes | None:
        self._expire(key)
        return self._values.get(key)

    def _set(self, key: str, value: bytes, ttl_s: float | None) -> None:
        if not isinstance(value, bytes | bytearray):
            raise TypeError(f"store values are bytes, got {type(value).__name__} for key {key!r}")
        self._values[key] = bytes(value)
        if ttl_s is None:
            self._expiry.pop(key, None)
        else:
            self._expiry[key] = self._clock() + ttl_s

    async def get(self, key: str) -> bytes | None:
        async with self._lock:
            return self._get(key)

    async def set(self, key: str, value: bytes, *, ttl_s: float | None = None) -> None:
        async with self._lock:
            self._set(key, value, ttl_s)

    async def set_if_absent(self, key: str, value: bytes, *, ttl_s: float | None = None) -> bool:
        async with self._lock:
            if self._get(key) is not None:
                return False
            self._set(key, value, ttl_s)
            return True

    async def delete(self, *keys: str) -> int:
        async with self._lock:
            removed = 0
            for key in keys:
                self._expire(key)
                found = key in self._values or key in self._hashes
                self._values.pop(key, None)
                self._hashes.pop(key, None)
                self._expiry.pop(key, None)
                removed += int(found)
            return removed

    async def incr(self, key: str, by: int = 1) -> int:
        async with self._lock:
            current = self._get(key)
            try:
                value = int(current or b"0") + by
            except ValueError as e:
                raise StoreError(f"key {key!r} does not hold an integer") from e
            self._values[key] = str(value).encode()
            return value

    async def hset(self, key: str, field: str, value: bytes) -> None:
        async with self._lock:
            self._expire(key)
            self._hashes.setdefault(key, {})[field] = bytes(value)

    async def hset_if_absent(self, key: str, field: str, value: bytes) -> bool:
        async with self._lock:
            self._expire(key)
            fields = self._hashes.setdefault(key, {})
            if field in fields:
                return False
            fields[field] = bytes(value)
            return True

    async def hget(self, key: str, field: str) -> bytes | None:
        async with self._lock:
            self._expire(key)
            return self._hashes.get(key, {}).get(field)

    async def hgetall(self, key: str) -> dict[str, bytes]:
        async with self._lock:
            self._expire(key)
            return dict(self._hashes.get(key, {}))

    async def scan(self, prefix: str) -> list[str]:
        async with self._lock:
            for key in list(self._expiry):
                self._expire(key)
            return sorted(k for k in {*self._values, *self._hashes} if k.startswith(prefix))

    async def transaction(self, keys: Sequence[str], fn: TransactionFn) -> Updates:
        async with self._lock:
            current = {key: self._get(key) for key in keys}
            result = fn(current)
            updates = await result if isinstance(result, Awaitable) else result
            unknown = set(updates) - set(keys)
            if unknown:
                raise StoreError(f"transaction wrote keys it did not read: {sorted(unknown)}")
            for key, value in updates.items():
                if value is None:
                    self._values.pop(key, None)
                    self._expiry.pop(key, None)
                else:
                    self._set(key, value, None)
            return updates


def open_store(url: str) -> StateStore:
    """A store from its URL: `memory://` (embedded). Redis URLs arrive with the Redis store."""
    if url == "memory://":
        return MemoryStore()
    raise StoreError(f"store_url {url!r} is not supported: use memory://")
