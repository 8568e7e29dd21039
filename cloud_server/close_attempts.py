"""Bounded close attempts: a round whose close keeps failing is retried with back-off, then failed.

A close that raises (the store refusing writes at `maxmemory`, a bug) is one failed attempt, recorded in the
store (`keyspace.fed_round_close_failures`), so that a restarted cloud counts on from it. The next attempt
waits `retry_s * 2**(n - 1)` seconds after the n-th failure (at most `retry_max_s`); after `max_attempts`
failures the round is failed with the last error as its reason. A failure to unwrap the federation's key
(a replica started with the wrong KEK), closing a round or failing it at its deadline (which signs the next
round's plan), is counted and shown in the round's status too, but never fails the round, and only the
replica that failed backs off (`KeyBackoff`, in its memory): it is that replica's fault, not the round's, and
a replica with the right key closes the round at its next check.

The count is bookkeeping: a stored count that does not read back is quarantined and counting starts afresh
(`services.stored_records.Discards`), so that it never stops the deadline check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from services import keyspace
from services.settings import CloudSettings
from services.store import StateStore, Updates
from services.stored_records import Discards, read_record

MAX_ERROR_CHARS = 1000


@dataclass(frozen=True)
class ClosePolicy:
    """How a round is closed: the lease's TTL, how often a failing close is tried, and the worker processes
    its decryption may use (None: every core) (CloudSettings)."""

    lease_ttl_s: float
    max_attempts: int
    retry_s: float
    retry_max_s: float
    decrypt_workers: int | None = None

    @classmethod
    def from_settings(cls, settings: CloudSettings) -> ClosePolicy:
        return cls(
            lease_ttl_s=settings.close_lease_ttl_s,
            max_attempts=settings.close_max_attempts,
            retry_s=settings.close_retry_s,
            retry_max_s=settings.close_retry_max_s,
            decrypt_workers=settings.decrypt_workers,
        )

    def delay_s(self, failures: int) -> float:
        """How long after the `failures`-th failed attempt the next one may start."""
        return min(self.retry_s * 2 ** (failures - 1), self.retry_max_s)


class CloseFailures(BaseModel):
    """A round's failed close attempts so far, as stored."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    attempts: int = Field(ge=0)  # failures counted against the round
    key_failures: int = Field(default=0, ge=0)  # the federation's key did not unwrap: the replica's fault
    last_at: datetime
    last_error: str = Field(max_length=MAX_ERROR_CHARS)

    @property
    def tries(self) -> int:
        """Every failed attempt, whatever failed it (the round's status shows this)."""
        return self.attempts + self.key_failures

    def retry_at(self, policy: ClosePolicy) -> datetime:
        """When any replica may try again: the back-off doubles with each failure counted against the round."""
        if self.attempts == 0:
            return self.last_at
        return self.last_at + timedelta(seconds=policy.delay_s(self.attempts))


@dataclass
class KeyBackoff:
    """One replica's back-off after its own failures to unwrap a federation's key, per round."""

    policy: ClosePolicy
    _failures: dict[tuple[str, int], tuple[int, datetime]] = field(default_factory=dict)

    def waiting(self, fid: str, round_: int, now: datetime) -> bool:
        failed = self._failures.get((fid, round_))
        return failed is not None and now < failed[1] + timedelta(seconds=self.policy.delay_s(failed[0]))

    def failed(self, fid: str, round_: int, now: datetime) -> float:
        """Count one more failure; the seconds until this replica tries again."""
        count = self._failures.get((fid, round_), (0, now))[0] + 1
        self._failures[(fid, round_)] = (count, now)
        return self.policy.delay_s(count)


def describe_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS]


async def close_failures(store: StateStore, fid: str, round_: int) -> CloseFailures | None:
    key = keyspace.fed_round_close_failures(fid, round_)
    return await read_record(store, key, CloseFailures, bookkeeping=True)


async def record_failure(
    store: StateStore, fid: str, round_: int, now: datetime, error: BaseException, *, of_key: bool = False
) -> CloseFailures:
    """Count one more failed attempt to close `round_`, with `error` as the last; `of_key`: the federation's
    key did not unwrap, which is not counted against the round."""
    failures_key = keyspace.fed_round_close_failures(fid, round_)
    recorded: list[CloseFailures] = []
    discards = Discards()

    def count(current: dict[str, bytes | None]) -> Updates:
        discards.clear()
        none = CloseFailures(attempts=0, last_at=now, last_error="")
        before = discards.parse(current[failures_key], key=failures_key, reader=CloseFailures, empty=none)
        failures = before.model_copy(
            update={
                "attempts": before.attempts + (0 if of_key else 1),
                "key_failures": before.key_failures + (1 if of_key else 0),
                "last_at": now,
                "last_error": describe_error(error),
            }
        )
        recorded[:] = [failures]
        return {failures_key: failures.model_dump_json().encode()}

    await store.transaction([failures_key], count)
    await discards.settle(store)
    return recorded[0]
