"""The tests' clock: it stands still until a test moves it, so a deadline or a TTL passes without waiting."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


class FakeClock:
    """Call it for the time (a `services.clock.Clock`); `seconds` reads the same time as the seconds a
    `MemoryStore` counts its TTLs in."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    async def time(self) -> datetime:
        """The same time as a `services.clock.TimeSource`: what a store's `time()` would read."""
        return self.now

    def seconds(self) -> float:
        return self.now.timestamp()

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Turns:
    """A pause (`services.lease.Pause`) that returns when the test gives it its turn: a renewer that would
    sleep between renewals waits for the test instead."""

    def __init__(self, *, bound_s: float = 30.0) -> None:
        self._waiting: asyncio.Queue[asyncio.Event] = asyncio.Queue()
        self._bound_s = bound_s

    async def pause(self, seconds: float) -> None:
        turn = asyncio.Event()
        await self._waiting.put(turn)
        await turn.wait()

    async def next(self) -> asyncio.Event:
        """The next pause, once the pauser is in it (so what it did before it is done)."""
        return await asyncio.wait_for(self._waiting.get(), self._bound_s)
