"""A fenced lease on a state-store key: one holder at a time, renewed while it works, released only by it.

    lease = await Lease.take(store, key, ttl_s=120.0)      # None: someone else holds it
    if lease is not None:
        async with lease.renewed():                         # renews every ttl_s / 3; releases on exit
            ...  # work; a transaction that must be the holder's reads `lease.key` and checks `lease.holds`

Each holder writes a random token (`SET NX` with a TTL). Renewal and release compare the token first
(`StateStore.expire_if_equals`, `delete_if_equals`): a holder whose lease lapsed (a pause longer than the TTL,
a store that did not answer its renewals) neither extends nor deletes its successor's. A lapsed holder may
still be running, so renewal alone does not make it the only writer: a write that must be the holder's is a
transaction that reads `key` and writes nothing unless `holds(current)` (fencing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from services.store import StateStore, StoreError

log = logging.getLogger("fedlora.lease")

Pause = Callable[[float], Awaitable[None]]


class Lease:
    """One holder's claim on `key`, taken by `take`."""

    def __init__(self, store: StateStore, key: str, token: bytes, *, ttl_s: float, pause: Pause) -> None:
        self._store = store
        self.key = key
        self.token = token
        self.ttl_s = ttl_s
        self._pause = pause
        self.lost = False  # a renewal found the key gone or another holder's
        self._keep_s: float | None = None

    @classmethod
    async def take(
        cls, store: StateStore, key: str, *, ttl_s: float, pause: Pause = asyncio.sleep
    ) -> Lease | None:
        """The lease on `key` if nobody holds it, else None. `pause` waits between renewals (tests pass one
        they drive)."""
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        token = secrets.token_hex(16).encode()
        if not await store.set_if_absent(key, token, ttl_s=ttl_s):
            return None
        return cls(store, key, token, ttl_s=ttl_s, pause=pause)

    def holds(self, current: Mapping[str, bytes | None]) -> bool:
        """Whether the values a transaction read show the key still holds this holder's token."""
        return current.get(self.key) == self.token

    def keep_for(self, seconds: float) -> None:
        """At exit, leave the lease to lapse `seconds` from then instead of releasing it: nobody takes it
        meanwhile (a back-off that needs no new data in the store, which a full Redis still grants)."""
        if seconds <= 0:
            raise ValueError(f"seconds must be positive, got {seconds}")
        self._keep_s = seconds

    @contextlib.asynccontextmanager
    async def renewed(self) -> AsyncIterator[Lease]:
        """Renew the lease every `ttl_s / 3` while the body runs; stop renewing and release it on exit
        (or give it the TTL `keep_for` set)."""
        renewal = asyncio.create_task(self._renew())
        try:
            yield self
        finally:
            renewal.cancel()
            try:
                # `wait`, not `await renewal`: a cancellation of this task arriving here must propagate, and
                # suppressing the renewal's CancelledError would swallow it (the caller's loop would go on).
                await asyncio.wait({renewal})
            finally:
                await self._release()

    async def _renew(self) -> None:
        while True:
            await self._pause(self.ttl_s / 3)
            try:
                renewed = await self._store.expire_if_equals(self.key, self.token, ttl_s=self.ttl_s)
            except StoreError as e:
                # The next renewal may get through before the TTL runs out; if not, fencing holds.
                log.warning("lease %s not renewed: %s", self.key, e)
                continue
            if not renewed:
                self.lost = True
                log.warning("lease %s lapsed and is gone or held by another: renewal stopped", self.key)
                return

    async def release(self) -> None:
        """Give the lease back now (or leave it to lapse as `keep_for` set), outside `renewed`."""
        await self._release()

    async def _release(self) -> None:
        try:
            if self._keep_s is not None:
                await self._store.expire_if_equals(self.key, self.token, ttl_s=self._keep_s)
            else:
                await self._store.delete_if_equals(self.key, self.token)
        except StoreError as e:
            # Not raised over whatever ended the work: the lease lapses at its TTL instead.
            log.warning("lease %s not released (it lapses in at most %s s): %s", self.key, self.ttl_s, e)
