"""Bounded close attempts: a round whose close keeps failing is retried with back-off, then failed.

A close that raises anything but a crypto error (the store refusing writes at `maxmemory`, a bug) is one
failed attempt, recorded in the store (`keyspace.fed_round_close_failures`), so that a restarted cloud
counts on from it. The next attempt waits `retry_s * 2**(n - 1)` seconds after the n-th failure (at most
`retry_max_s`); after `max_attempts` failures the round is failed with the last error as its reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from services import keyspace
from services.settings import CloudSettings
from services.store import StateStore, Updates

MAX_ERROR_CHARS = 1000


@dataclass(frozen=True)
class ClosePolicy:
    """How a round is closed: the lease's TTL and how often a failing close is tried (CloudSettings)."""

    lease_ttl_s: float
    max_attempts: int
    retry_s: float
    retry_max_s: float

    @classmethod
    def from_settings(cls, settings: CloudSettings) -> ClosePolicy:
        return cls(
            lease_ttl_s=settings.close_lease_ttl_s,
            max_attempts=settings.close_max_attempts,
            retry_s=settings.close_retry_s,
            retry_max_s=settings.close_retry_max_s,
        )

    def delay_s(self, failures: int) -> float:
        """How long after the `failures`-th failed attempt the next one may start."""
        return min(self.retry_s * 2 ** (failures - 1), self.retry_max_s)


class CloseFailures(BaseModel):
    """A round's failed close attempts so far, as stored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(ge=1)
    last_at: datetime
    last_error: str = Field(max_length=MAX_ERROR_CHARS)

    def retry_at(self, policy: ClosePolicy) -> datetime:
        return self.last_at + timedelta(seconds=policy.delay_s(self.attempts))


def describe_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS]


async def close_failures(store: StateStore, fid: str, round_: int) -> CloseFailures | None:
    raw = await store.get(keyspace.fed_round_close_failures(fid, round_))
    return CloseFailures.model_validate_json(raw) if raw else None


async def record_failure(
    store: StateStore, fid: str, round_: int, now: datetime, error: BaseException
) -> CloseFailures:
    """Count one more failed attempt to close `round_`, with `error` as the last."""
    key = keyspace.fed_round_close_failures(fid, round_)
    recorded: list[CloseFailures] = []

    def count(current: dict[str, bytes | None]) -> Updates:
        raw = current[key]
        before = CloseFailures.model_validate_json(raw) if raw else None
        failures = CloseFailures(
            attempts=(before.attempts if before else 0) + 1, last_at=now, last_error=describe_error(error)
        )
        recorded[:] = [failures]
        return {key: failures.model_dump_json().encode()}

    await store.transaction([key], count)
    return recorded[0]
