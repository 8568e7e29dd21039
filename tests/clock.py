"""The tests' clock: it stands still until a test moves it, so a deadline or a TTL passes without waiting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


class FakeClock:
    """Call it for the time (a `services.clock.Clock`); `seconds` reads the same time as the seconds a
    `MemoryStore` counts its TTLs in."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def seconds(self) -> float:
        return self.now.timestamp()

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
