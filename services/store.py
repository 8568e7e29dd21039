"""`StateStore`: where the cloud and the edges keep everything that must survive a restart.

Two implementations share one contract (tests/contract/test_store_contract.py): `MemoryStore`, embedded,
for `fedlora demo` and single-process tests, and `RedisStore`, for services that must survive a crash and
for several replicas of a service sharing one state. Keys come from `services.keyspace` only. Every write
that must happen once goes through `set_if_absent` (`SET NX`), `transaction` (WATCH/MULTI/EXEC),
`hset_if_absent_with` (a hash field and plain keys in one WATCH/MULTI/EXEC) or `fields_transaction` (a
read-modify-write of hash fields and plain keys), so a retried request never counts twice and concurrent
ones lose no write. A transaction writes a value that must expire as `Expiring(value, ttl_s)`: the value and its
TTL land in the same step (Redis `SET ... PX` inside the MULTI), so no crash leaves it without its TTL; one
that replaces a value in place as `KeepingExpiry(value)` (Redis `SET ... KEEPTTL`), which keeps its TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.store_tls import StoreTLS


@dataclass(frozen=True)
class Expiring:
    """A transaction's write of `value` that the store forgets `ttl_s` seconds later."""

    value: bytes
    ttl_s: float

    def __post_init__(self) -> None:
        if not self.ttl_s > 0:
            raise ValueError(f"ttl_s must be positive, got {self.ttl_s}")


@dataclass(frozen=True)
class MemoryUse:
    """What the store holds in memory: Redis's `used_memory` and `maxmemory` (None: no limit), or the
    memory store's estimate of the bytes of its keys and values."""

    used_bytes: int
    max_bytes: int | None


@dataclass(frozen=True)
class KeepingExpiry:
    """A transaction's write of `value` over a key that keeps the key's remaining TTL (or its lack of one):
    a record rewritten in place, such as one re-sealed under a new KEK, expires when it would have."""

    value: bytes


# A key's new value (with a TTL: `Expiring`; keeping the key's own: `KeepingExpiry`); None deletes it.
Write = bytes | Expiring | KeepingExpiry | None
Updates = Mapping[str, Write]  # key -> its write
TransactionFn = Callable[[dict[str, bytes | None]], Updates | Awaitable[Updates]]
T = TypeVar("T")
HashField = tuple[str, str]  # (hash key, field)
FieldUpdates = Mapping[HashField, bytes | None]  # hash field -> new value, None deletes the field
FieldsTransactionFn = Callable[
    [dict[HashField, bytes | None], dict[str, bytes | None]], tuple[FieldUpdates, Updates]
]


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
    async def delete_if_equals(self, key: str, value: bytes) -> bool:
        """Delete `key` only if it holds `value` (a lease's holder releasing it, never its successor's).
        True if this call deleted it."""

    @abstractmethod
    async def expire_if_equals(self, key: str, value: bytes, *, ttl_s: float) -> bool:
        """Give `key` a TTL of `ttl_s` from now, only if it holds `value` (a lease's holder renewing it).
        True if this call did; False if the key is gone or holds another value."""

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
    async def hkeys(self, key: str) -> list[str]:
        """The fields of the hash at `key`, sorted, without reading their values (which may be large)."""

    @abstractmethod
    async def scan(self, prefix: str) -> list[str]:
        """Every key starting with `prefix`, sorted."""

    @abstractmethod
    async def transaction(self, keys: Sequence[str], fn: TransactionFn) -> Updates:
        """Read `keys`, let `fn` compute the writes from their values, apply them atomically.

        If another writer changed one of `keys` in between, the transaction retries with fresh values
        (Redis WATCH/MULTI). `fn` may raise to abort; nothing is written then. Returns what was written.
        """

    @abstractmethod
    async def hset_if_absent_with(
        self, key: str, field: str, value: bytes, *, keys: Sequence[str], fn: TransactionFn
    ) -> bool:
        """`hset_if_absent(key, field, value)` and, in the same atomic step, the writes `fn` computes from
        `keys` (as `transaction`): both or neither. False, with nothing written and `fn` not called, if the
        field exists; `fn` may raise to abort. A write to the hash `key` in between retries it, as one to
        `keys` does."""

    @abstractmethod
    async def expire(self, keys: Sequence[str], *, ttl_s: float) -> int:
        """Give each of `keys` that exists (a value or a hash) a TTL of `ttl_s` seconds, replacing any it had
        (Redis `PEXPIRE`); how many exist."""

    @abstractmethod
    async def ttl_s(self, key: str) -> float | None:
        """Seconds until `key` expires; None if it has no TTL or does not exist (Redis `PTTL`)."""

    @abstractmethod
    async def memory_use(self) -> MemoryUse:
        """The memory the store's data takes now, and its limit (for the services' `/metrics`)."""

    @abstractmethod
    async def fields_transaction(
        self, fields: Sequence[HashField], fn: FieldsTransactionFn, *, keys: Sequence[str] = ()
    ) -> None:
        """`transaction` over hash fields too: read the hash `fields` and the plain `keys`, let `fn` compute
        the writes to both ((field writes, key writes); None deletes), apply them atomically. A write to any
        of those hashes or keys in between retries it with fresh values; `fn` may raise to abort (nothing is
        written), and may write only what it read."""

    @abstractmethod
    async def time(self) -> datetime:
        """The store's clock (UTC): the one "now" that every process sharing the store reads, whatever its
        own clock says. Deadlines are opened and checked on it (`services.clock.store_time`)."""

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None

    def describe(self) -> str:
        """Where the state lives, fit for logs (no password)."""
        return "memory://"


class MemoryStore(StateStore):
    """In-process store: one asyncio lock makes every operation and transaction atomic.

    Good for one process (the demo's services each have their own). Lost when the process exits: use
    the Redis store for anything that must survive a restart. `clock` counts seconds since the epoch: TTLs
    run on it and `time()` reads it.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
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
        _check_bytes(key, value)
        self._values[key] = bytes(value)
        if ttl_s is None:
            self._expiry.pop(key, None)
        else:
            self._expiry[key] = self._clock() + ttl_s

    async def time(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

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

    async def delete_if_equals(self, key: str, value: bytes) -> bool:
        _check_bytes(key, value)
        async with self._lock:
            if self._get(key) != value:
                return False
            self._values.pop(key, None)
            self._expiry.pop(key, None)
            return True

    async def expire_if_equals(self, key: str, value: bytes, *, ttl_s: float) -> bool:
        _check_bytes(key, value)
        async with self._lock:
            if self._get(key) != value:
                return False
            self._expiry[key] = self._clock() + ttl_s
            return True

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

    async def hkeys(self, key: str) -> list[str]:
        async with self._lock:
            self._expire(key)
            return sorted(self._hashes.get(key, {}))

    async def scan(self, prefix: str) -> list[str]:
        async with self._lock:
            for key in list(self._expiry):
                self._expire(key)
            return sorted(k for k in {*self._values, *self._hashes} if k.startswith(prefix))

    async def transaction(self, keys: Sequence[str], fn: TransactionFn) -> Updates:
        async with self._lock:
            return await self._apply(keys, fn)

    async def expire(self, keys: Sequence[str], *, ttl_s: float) -> int:
        async with self._lock:
            found = 0
            for key in keys:
                self._expire(key)
                if key in self._values or key in self._hashes:
                    self._expiry[key] = self._clock() + ttl_s
                    found += 1
            return found

    async def ttl_s(self, key: str) -> float | None:
        async with self._lock:
            self._expire(key)
            deadline = self._expiry.get(key)
            return None if deadline is None else deadline - self._clock()

    async def memory_use(self) -> MemoryUse:
        """An estimate: the bytes of every key, field and value (Python's own overhead left out)."""
        async with self._lock:
            values = sum(len(k) + len(v) for k, v in self._values.items())
            hashes = sum(
                len(k) + sum(len(f) + len(v) for f, v in fields.items()) for k, fields in self._hashes.items()
            )
            return MemoryUse(used_bytes=values + hashes, max_bytes=None)

    async def hset_if_absent_with(
        self, key: str, field: str, value: bytes, *, keys: Sequence[str], fn: TransactionFn
    ) -> bool:
        _check_bytes(key, value)
        async with self._lock:
            self._expire(key)
            if field in self._hashes.get(key, {}):
                return False
            await self._apply(keys, fn)
            self._hashes.setdefault(key, {})[field] = bytes(value)
            return True

    async def fields_transaction(
        self, fields: Sequence[HashField], fn: FieldsTransactionFn, *, keys: Sequence[str] = ()
    ) -> None:
        async with self._lock:
            for key in {name for name, _ in fields}:
                self._expire(key)
            read = {(key, name): self._hashes.get(key, {}).get(name) for key, name in fields}
            field_updates, updates = fn(read, {key: self._get(key) for key in keys})
            _check_field_updates(fields, field_updates)
            _check_updates(keys, updates)
            for (key, name), value in field_updates.items():
                if value is None:
                    self._hashes.get(key, {}).pop(name, None)
                else:
                    self._hashes.setdefault(key, {})[name] = bytes(value)
            self._write(updates)

    async def _apply(self, keys: Sequence[str], fn: TransactionFn) -> Updates:
        """`fn`'s writes on `keys`, under the lock the caller holds."""
        current = {key: self._get(key) for key in keys}
        result = fn(current)
        updates = await result if isinstance(result, Awaitable) else result
        _check_updates(keys, updates)
        self._write(updates)
        return updates

    def _write(self, updates: Updates) -> None:
        for key, value in updates.items():
            if value is None:
                self._values.pop(key, None)
                self._expiry.pop(key, None)
            elif isinstance(value, Expiring):
                self._set(key, value.value, value.ttl_s)
            elif isinstance(value, KeepingExpiry):
                _check_bytes(key, value.value)
                self._values[key] = bytes(value.value)  # its deadline in `_expiry`, if any, stays
            else:
                self._set(key, value, None)


class RedisStore(StateStore):
    """The store in a Redis server (6.0 or newer: ACL users, `SET ... KEEPTTL`), through `redis.asyncio`.

    - once-only writes are `SET NX` (with `PX` for a TTL) and `HSETNX`;
    - `transaction` is optimistic: WATCH the keys, read them, let `fn` compute, then MULTI/EXEC the writes;
      EXEC fails if another client (another replica) changed a watched key, and the transaction starts
      again with fresh values, up to `max_transaction_attempts` times;
    - a lost connection is retried with exponential backoff for a few seconds (a Redis restart), then
      raises `StoreError`, which the services answer with 503 `store_unavailable`.

    Durability is the server's: run it with `appendonly yes` (docs/operations.md, "Running on Redis by hand"), or an update
    acknowledged just before a Redis crash can be lost.
    """

    def __init__(
        self,
        url: str,
        *,
        max_transaction_attempts: int = 64,
        connect_timeout_s: float = 2.0,
        command_timeout_s: float = 10.0,
        reconnect_attempts: int = 8,
        max_connections: int = 32,
        username: str | None = None,
        password: str | None = None,
        tls: StoreTLS | None = None,
    ) -> None:
        self.url = url
        self._max_attempts = max_transaction_attempts
        tls_options = _tls_options(url, tls)
        retry = Retry(ExponentialBackoff(cap=2.0, base=0.05), reconnect_attempts)
        # A blocking pool: a burst of requests waits for a free connection instead of failing.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=command_timeout_s,
            socket_connect_timeout=connect_timeout_s,
            socket_timeout=command_timeout_s,
            retry=retry,
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            health_check_interval=30,
            # An ACL user of the service's tier (`fedlora.store_users`); a URL that names one wins.
            **({"username": username} if username is not None else {}),
            **({"password": password} if password is not None else {}),
            **tls_options,
        )
        self._redis: aioredis.Redis = aioredis.Redis.from_pool(pool)  # owns the pool: aclose closes it

    def fail_fast_pool(self, *, timeout_s: float, max_connections: int = 16) -> aioredis.ConnectionPool:
        """Connections to the store's server as its ACL user (and over its TLS), without the store's retries:
        for `services.limits`' rate windows, which a request must not wait seconds on while Redis is away."""
        own = self._redis.connection_pool
        kwargs = {
            **own.connection_kwargs,
            "retry": Retry(NoBackoff(), 0),
            "socket_timeout": timeout_s,
            "socket_connect_timeout": timeout_s,
        }
        return aioredis.ConnectionPool(
            connection_class=own.connection_class, max_connections=max_connections, **kwargs
        )

    @contextlib.asynccontextmanager
    async def _errors(self, what: str) -> AsyncIterator[None]:
        task = asyncio.current_task()
        cancelling = task.cancelling() if task is not None else 0
        try:
            yield
        except (RedisConnectionError, RedisTimeoutError, OSError) as e:
            raise StoreError(
                f"redis at {redacted_url(self.url)} unreachable during {what}: {e}{_plain_hint(self.url, e)}"
            ) from e
        except WatchError:
            raise
        except RedisError as e:
            raise StoreError(f"redis refused {what}: {e}") from e
        # redis-py can swallow a cancellation that lands while it returns a connection to its pool; the
        # task would then run on after `cancel()` (a service that never stops). Give it back.
        if task is not None and task.cancelling() > cancelling:
            raise asyncio.CancelledError(f"cancelled during {what}")

    async def time(self) -> datetime:
        # Redis `TIME`: seconds and microseconds of the server's clock, the same for every replica.
        async with self._errors("TIME"):
            seconds, micros = await self._redis.time()
        return datetime.fromtimestamp(int(seconds) + int(micros) / 1e6, UTC)

    async def get(self, key: str) -> bytes | None:
        async with self._errors(f"GET {key}"):
            return _raw(await self._redis.get(key))

    async def set(self, key: str, value: bytes, *, ttl_s: float | None = None) -> None:
        _check_bytes(key, value)
        async with self._errors(f"SET {key}"):
            await self._redis.set(key, value, px=_millis(ttl_s))

    async def set_if_absent(self, key: str, value: bytes, *, ttl_s: float | None = None) -> bool:
        _check_bytes(key, value)
        async with self._errors(f"SET NX {key}"):
            return bool(await self._redis.set(key, value, px=_millis(ttl_s), nx=True))

    async def delete(self, *keys: str) -> int:
        if not keys:
            return 0
        async with self._errors("DEL"):
            return int(await self._redis.delete(*keys))

    async def delete_if_equals(self, key: str, value: bytes) -> bool:
        _check_bytes(key, value)
        async with self._errors(f"DEL {key} if it holds the value"):
            return bool(await self._redis.eval(_DELETE_IF_EQUALS, 1, key, value))

    async def expire_if_equals(self, key: str, value: bytes, *, ttl_s: float) -> bool:
        _check_bytes(key, value)
        async with self._errors(f"PEXPIRE {key} if it holds the value"):
            return bool(await self._redis.eval(_EXPIRE_IF_EQUALS, 1, key, value, _millis(ttl_s) or 1))

    async def incr(self, key: str, by: int = 1) -> int:
        async with self._errors(f"INCRBY {key}"):
            return int(await self._redis.incrby(key, by))

    async def hset(self, key: str, field: str, value: bytes) -> None:
        _check_bytes(key, value)
        async with self._errors(f"HSET {key}"):
            await self._redis.hset(key, field, value)

    async def hset_if_absent(self, key: str, field: str, value: bytes) -> bool:
        _check_bytes(key, value)
        async with self._errors(f"HSETNX {key}"):
            return bool(await self._redis.hsetnx(key, field, value))

    async def hget(self, key: str, field: str) -> bytes | None:
        async with self._errors(f"HGET {key}"):
            return _raw(await self._redis.hget(key, field))

    async def hgetall(self, key: str) -> dict[str, bytes]:
        async with self._errors(f"HGETALL {key}"):
            raw = await self._redis.hgetall(key)
            return {_text(name): _raw(value) or b"" for name, value in raw.items()}

    async def hkeys(self, key: str) -> list[str]:
        async with self._errors(f"HKEYS {key}"):
            return sorted(_text(name) for name in await self._redis.hkeys(key))

    async def scan(self, prefix: str) -> list[str]:
        pattern = _glob_escape(prefix) + "*"
        async with self._errors(f"SCAN {pattern}"):
            keys = {_text(key) async for key in self._redis.scan_iter(match=pattern, count=1000)}
            return sorted(keys)

    async def transaction(self, keys: Sequence[str], fn: TransactionFn) -> Updates:
        if not keys:
            raise StoreError("a transaction needs at least one key")
        written = await self._watched(keys, fn, hash_field=None)
        return written if written is not None else {}

    async def hset_if_absent_with(
        self, key: str, field: str, value: bytes, *, keys: Sequence[str], fn: TransactionFn
    ) -> bool:
        _check_bytes(key, value)
        return await self._watched(keys, fn, hash_field=(key, field, value)) is not None

    async def _watched(
        self, keys: Sequence[str], fn: TransactionFn, *, hash_field: tuple[str, str, bytes] | None
    ) -> Updates | None:
        """WATCH `keys` (and the hash of `hash_field`), read, let `fn` compute, MULTI/EXEC the writes with
        `HSET hash_field`; None, with nothing written, if that field exists."""

        async def attempt(pipe: Pipeline) -> Updates | None:
            if hash_field is not None and await pipe.hexists(hash_field[0], hash_field[1]):
                return None
            values = await pipe.mget(*keys) if keys else []
            current = {key: _raw(value) for key, value in zip(keys, values, strict=True)}
            result = fn(current)
            updates = await result if inspect.isawaitable(result) else result
            _check_updates(keys, updates)
            if not updates and hash_field is None:
                return updates
            pipe.multi()
            _queue_writes(pipe, updates)
            if hash_field is not None:
                pipe.hset(*hash_field)
            await pipe.execute()
            return updates

        return await self._optimistic([*keys, *([hash_field[0]] if hash_field else [])], attempt)

    async def fields_transaction(
        self, fields: Sequence[HashField], fn: FieldsTransactionFn, *, keys: Sequence[str] = ()
    ) -> None:
        async def attempt(pipe: Pipeline) -> None:
            read = {(key, name): _raw(await pipe.hget(key, name)) for key, name in fields}
            values = await pipe.mget(*keys) if keys else []
            field_updates, updates = fn(read, {k: _raw(v) for k, v in zip(keys, values, strict=True)})
            _check_field_updates(fields, field_updates)
            _check_updates(keys, updates)
            pipe.multi()
            for (key, name), value in field_updates.items():
                if value is None:
                    pipe.hdel(key, name)
                else:
                    pipe.hset(key, name, value)
            _queue_writes(pipe, updates)
            await pipe.execute()

        watched = sorted({key for key, _ in fields} | set(keys))
        if not watched:
            raise StoreError("a transaction needs at least one key")
        await self._optimistic(watched, attempt)

    async def _optimistic(self, watched: Sequence[str], attempt: Callable[[Pipeline], Awaitable[T]]) -> T:
        """`attempt` on a pipeline WATCHing `watched`, again with fresh values (after a short jittered back-off)
        while another writer changes one of them before its EXEC, up to `max_transaction_attempts` times."""
        for tries in range(self._max_attempts):
            try:
                what = f"a transaction on {list(watched)}"
                async with self._errors(what), self._redis.pipeline(transaction=True) as pipe:
                    await pipe.watch(*watched)
                    return await attempt(pipe)
            except WatchError:
                await asyncio.sleep(random.uniform(0, min(0.2, 0.002 * 2**tries)))  # noqa: S311
        raise StoreError(
            f"transaction on {list(watched)} did not commit after {self._max_attempts} attempts "
            "(other writers kept changing the keys)"
        )

    async def expire(self, keys: Sequence[str], *, ttl_s: float) -> int:
        if not keys:
            return 0
        async with self._errors("PEXPIRE"), self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.pexpire(key, _millis(ttl_s) or 1)
            return sum(bool(found) for found in await pipe.execute())

    async def ttl_s(self, key: str) -> float | None:
        async with self._errors(f"PTTL {key}"):
            millis = int(await self._redis.pttl(key))
        return None if millis < 0 else millis / 1000  # -1: no TTL, -2: no key

    async def memory_use(self) -> MemoryUse:
        async with self._errors("INFO memory"):
            info = await self._redis.info("memory")
        limit = int(info.get("maxmemory", 0))
        return MemoryUse(used_bytes=int(info["used_memory"]), max_bytes=limit or None)

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        await self._redis.aclose()

    def describe(self) -> str:
        return redacted_url(self.url)


#: Every command `RedisStore` sends (with the connection's own: AUTH, HELLO, SELECT; redis-py shrugs off a refused CLIENT SETINFO), the
#: whole of what a service's Redis ACL user may run (`fedlora.store_users`); scripts run these under the
#: caller's user too. A new command here is a new grant to every tier's user.
REDIS_COMMANDS = (
    *("get", "set", "mget", "del", "incrby", "pexpire", "pttl", "scan"),
    # `limits`' fixed windows (services.limits, the cloud's rate limits): a script of INCRBY and EXPIRE,
    # loaded once, and TTL for Retry-After
    *("expire", "ttl", "script|load"),
    *("hget", "hset", "hsetnx", "hgetall", "hkeys", "hexists", "hdel"),
    *("watch", "unwatch", "multi", "exec", "discard", "eval", "evalsha"),
    *("time", "info", "ping", "echo", "auth", "hello", "select", "quit", "reset"),
)
# An edge's user: no scripts. Only the cloud's closer lease compares and deletes in a script
# (`delete_if_equals`, `expire_if_equals`); a script that never returns would hold Redis' one thread, every
# other tier answered `BUSY` until the operator's user kills it.
# Without scripts its rate windows are in each replica's memory (services.limits).
EDGE_REDIS_COMMANDS = tuple(
    command for command in REDIS_COMMANDS if command not in ("eval", "evalsha", "script|load")
)


# Compare-and-delete and compare-and-expire: one script each, so the check and the write are one step on the
# server. No `#!lua` line: DEL and PEXPIRE still run when Redis is at `maxmemory` (a shebang script would be
# refused then), so a closer can release its lease when the store is full.
_DELETE_IF_EQUALS = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""
_EXPIRE_IF_EQUALS = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


def _raw(value: bytes | str | None) -> bytes | None:
    """Redis answers bytes here (the client never decodes); the type says bytes or str."""
    return value.encode() if isinstance(value, str) else value


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _check_bytes(key: str, value: object) -> None:
    if not isinstance(value, bytes | bytearray):
        raise TypeError(f"store values are bytes, got {type(value).__name__} for key {key!r}")


def _queue_writes(pipe: Pipeline, updates: Updates) -> None:
    for key, value in updates.items():
        if value is None:
            pipe.delete(key)
        elif isinstance(value, Expiring):
            pipe.set(key, value.value, px=_millis(value.ttl_s))
        elif isinstance(value, KeepingExpiry):
            pipe.set(key, value.value, keepttl=True)
        else:
            pipe.set(key, value)


def _check_field_updates(fields: Sequence[HashField], updates: FieldUpdates) -> None:
    unknown = set(updates) - set(fields)
    if unknown:
        raise StoreError(f"transaction wrote hash fields it did not read: {sorted(unknown)}")
    for (key, name), value in updates.items():
        if value is not None:
            _check_bytes(f"{key} {name}", value)


def _check_updates(keys: Sequence[str], updates: Updates) -> None:
    """A transaction's writes, checked in full before any is applied."""
    unknown = set(updates) - set(keys)
    if unknown:
        raise StoreError(f"transaction wrote keys it did not read: {sorted(unknown)}")
    for key, value in updates.items():
        if value is not None:
            _check_bytes(key, value.value if isinstance(value, Expiring | KeepingExpiry) else value)


def _millis(ttl_s: float | None) -> int | None:
    return None if ttl_s is None else max(1, round(ttl_s * 1000))


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def redacted_url(url: str) -> str:
    """`url` with every credential masked, for logs, errors and health answers: the password of its user
    part, and the value of each query parameter redis-py logs in with (`?password=...`, `?username=...`)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user = parts.username or ""
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        netloc = f"{user}:***@{host}{port}"
    query = [
        (name, "***" if name.lower() in _CREDENTIAL_PARAMETERS else value)
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
    ]
    masked = urlencode(query, safe="*") if any(value == "***" for _, value in query) else parts.query
    return urlunsplit(parts._replace(netloc=netloc, query=masked))


#: The URL query parameters redis-py reads a login from (`redis.connection.parse_url`).
_CREDENTIAL_PARAMETERS = frozenset({"password", "username"})


REDIS_SCHEMES = ("redis", "rediss", "unix")
TLS_SCHEME = "rediss"


def _plain_hint(url: str, error: Exception) -> str:
    """A hint for a plain `redis://` connection cut at once: what a Redis that serves TLS only does to one."""
    cut = any(sign in str(error) for sign in ("reset by peer", "closed by server"))
    if urlsplit(url).scheme != "redis" or not cut:
        return ""
    return " (a Redis that serves TLS only cuts a plain connection: if this one does, use rediss://)"


def _tls_options(url: str, tls: StoreTLS | None) -> dict[str, Any]:
    """redis-py's TLS arguments for `url`: the server verified, host name included, for every `rediss://`;
    a TLS setting on a plain URL, or a URL query that would loosen the check, is refused."""
    parts = urlsplit(url)
    if parts.scheme != TLS_SCHEME:
        if tls is not None:
            raise StoreError(
                f"store_url {redacted_url(url)!r} is not rediss:// but TLS settings are given "
                "(store_ca_file, store_cert_file, store_key_file): use rediss://host:port/db"
            )
        return {}
    loosening = sorted(name for name, _ in parse_qsl(parts.query) if name.startswith("ssl_"))
    if loosening:
        raise StoreError(
            f"store_url {redacted_url(url)!r} sets {', '.join(loosening)}: TLS comes from store_ca_file, "
            "store_cert_file and store_key_file only, and the server's certificate is always verified"
        )
    return (tls or StoreTLS()).redis_options()


def open_store(
    url: str, *, username: str | None = None, password: str | None = None, tls: StoreTLS | None = None
) -> StateStore:
    """A store from its URL: `memory://` (embedded, lost at exit) or `redis://[:password@]host:port/db`
    (also `rediss://` for TLS, with `tls`'s CA and client certificate, and `unix:///path/redis.sock`), logged
    in as the ACL user `username` if given."""
    if url == "memory://":
        if tls is not None:
            raise StoreError(
                "memory:// takes no TLS settings (store_ca_file, store_cert_file, store_key_file)"
            )
        return MemoryStore()
    if urlsplit(url).scheme in REDIS_SCHEMES:
        return RedisStore(url, username=username, password=password, tls=tls)
    raise StoreError(
        f"store_url {redacted_url(url)!r} is not supported: use memory://, redis://host:port/db or "
        "rediss://host:port/db"
    )
