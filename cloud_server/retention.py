"""Retention: what the cloud forgets of a finished round and of old adapter versions, and when.

Once a round has ended (closed or failed), its bulky keys, the edges' sums with their late buckets and mask
corrections (`fed_round_aggregates`), their digests and a failed round's sealed noise, expire
`retain_round_s` seconds later: a sum is about 32 bytes per adapter value, per edge and round, and a store
that keeps them all fills up. Adapter vectors older than the last `retain_versions` versions are deleted
(the current version is always among those kept; a re-based basis, `fed_basis`, is never deleted); such a
version answers 410 `version_pruned`. The small records are the audit trail and are never pruned: round
statuses and plans, the privacy ledger, client stats, adapter metas and evaluations, which hospitals each
round counted, each round's failed close attempts, the marks of the edge sums each round took (by which a
retried forward is known after its sum expired) and the ciphertext markers that refuse a sum twice.
docs/operations.md, "Retention".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from services import keyspace
from services.store import StateStore, StoreError

log = logging.getLogger("fedlora.cloud")


@dataclass(frozen=True)
class RetentionPolicy:
    """How long a finished round's sums are kept (seconds) and how many adapter vectors are."""

    round_s: float
    versions: int

    def __post_init__(self) -> None:
        if not self.round_s > 0:
            raise ValueError(f"retain_round_s must be positive, got {self.round_s}")
        if self.versions < 1:
            raise ValueError(f"retain_versions must be at least 1, got {self.versions}")

    def pruned_versions(self, current: int) -> range:
        """The versions whose vectors go once `current` is the federation's adapter version: all below the
        last `versions` (a crash between a commit and its pruning is caught up by the next one)."""
        return range(max(0, current - self.versions + 1))


def round_bulky_keys(fid: str, round_: int) -> list[str]:
    """The keys of a finished round that grow with the adapter (the sums, with their late buckets and mask
    corrections inside); a closed round's noise is already deleted by its commit."""
    return [
        keyspace.fed_round_aggregates(fid, round_),
        keyspace.fed_round_aggregate_digests(fid, round_),
        keyspace.fed_round_noise(fid, round_),
    ]


class Retention:
    """Applies a `RetentionPolicy` after each round's commit."""

    def __init__(self, store: StateStore, policy: RetentionPolicy) -> None:
        self._store = store
        self.policy = policy

    async def round_ended(self, fid: str, round_: int, *, adapter_version: int) -> None:
        """After round `round_` of `fid` ended with `adapter_version` current: its sums expire after the
        window (the previous round's too, should a crash have come between its commit and this step), and
        the vectors past the last `versions` go. A store error is logged, not raised: the round is
        committed, and the next round's end catches up."""
        try:
            await self._store.expire(
                [*round_bulky_keys(fid, round_), *(round_bulky_keys(fid, round_ - 1) if round_ else [])],
                ttl_s=self.policy.round_s,
            )
            stale = [keyspace.fed_adapter(fid, v) for v in self.policy.pruned_versions(adapter_version)]
            if stale:
                await self._store.delete(*stale)
        except StoreError:
            log.warning(
                "retention not applied; the next round's end tries again",
                exc_info=True,
                extra={"federation_id": fid, "round": round_},
            )
