"""The folder: adds a round's stored uploads into its running sum, off the request path.

An accepted upload is stored and acknowledged (`RoundLedger.add`); the folder adds it in later. One folder per
round's sum across every process and replica of the edge: it holds the sum's lease in the store
(`RoundLedger.take_fold_lease`, `services.lease`), reads the last checkpoint (the stored sum and the clients
it covers), adds the manifest's other uploads one at a time (memory holds the sum and one upload, however
large the cohort) and every `batch` uploads writes the new sum with the clients it now covers in one fenced
transaction (`RoundLedger.checkpoint`). A folder killed at any point loses nothing and counts nothing twice:
what it added since its last checkpoint is in no stored sum, and its successor starts from that checkpoint.

Uploads this process stored come to its folder checked and deserialised (`edge_aggregator.handoff`, the last
`FOLD_BATCH` of them), so it adds those without reading them back from the store or deserialising them
again; it adds them first, and reads any other from the store.

The additions run on one thread of their own: TenSEAL's and gmpy2's additions and deserialisation hold the
GIL (more threads made them slower, docs/operations.md), so a second thread would only take turns with the
first; the edge's request path checks uploads on another thread, so that acceptance never waits behind a
fold. More cores fold more rounds (or replicas share the rounds), one sum per folder.

A forward waits until the round's sums hold every accepted upload (`settle`); a stored upload that is gone
from the store (evicted, deleted by hand), is not the bytes its client signed (its SHA-256 is not its signed
manifest line's: another valid ciphertext written over it) or no longer reads back (altered) is taken out of the round, counted
dropped (`record_quarantined`), as a sum that does not read back is, and the fold goes on with the others.
Taking an upload out sums nothing (`RoundLedger.exclude`): one the sum does not hold yet simply leaves the
manifest; one it holds resets the sum, and the folder adds the others again, in checkpointed batches.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from functools import partial
from typing import Any, TypeVar

from edge_aggregator.errors import BadCiphertextError, UnreadableSumError
from edge_aggregator.fold import RunningSum, parse_upload
from edge_aggregator.handoff import Handoff
from edge_aggregator.ledger import FoldStart, RoundLedger
from protocol.crypto import EncryptedVector, HEScheme
from protocol.messages import DropReason, ErrorCode
from services import keyspace
from services.lease import Lease, Pause
from services.metrics import UploadPhase

log = logging.getLogger("edge_aggregator")
T = TypeVar("T")

#: Uploads added between two checkpoints: each checkpoint writes the whole sum once.
FOLD_BATCH = 8

Run = Callable[[Callable[[], T]], Awaitable[T]]


class FoldStep(StrEnum):
    """Where a folder is, for a hook that watches it (tests stop a folder there, as a kill would)."""

    ADDED = "added"  # an upload is in the sum in memory, not yet in any checkpoint
    CHECKPOINTED = "checkpointed"  # a checkpoint landed; the next batch has not started


Step = Callable[[FoldStep], Awaitable[None]]


async def _no_step(step: FoldStep) -> None:
    return None


class Folder:
    """Adds one edge's stored uploads into their rounds' sums, one folder per sum across processes."""

    def __init__(
        self,
        ledger: RoundLedger,
        *,
        scheme: HEScheme[Any],
        length: int,
        run: Run[Any],
        added: Callable[[float], None] | None = None,
        observe: Callable[[UploadPhase, float], None] | None = None,
        batch: int = FOLD_BATCH,
        lease_ttl_s: float = keyspace.EDGE_FOLD_LEASE_TTL_S,
        pause: Pause = asyncio.sleep,
        step: Step = _no_step,
        handoff: Handoff | None = None,
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        self._ledger = ledger
        self._scheme = scheme
        self._length = length
        self._run = run
        self._added = added
        self._observe = observe or (lambda phase, seconds: None)
        self._batch = batch
        self._lease_ttl_s = lease_ttl_s
        self._pause = pause
        self._step = step
        self._handoff = handoff if handoff is not None else Handoff(capacity=0)
        # In this process, one caller at a time per sum: a second one waits for the first instead of finding
        # the lease held and giving up (the ticker settling a round the background folder is adding to).
        self._local: dict[tuple[int, int], asyncio.Lock] = {}

    async def settle(self, round_: int) -> bool:
        """Fold every accepted upload of round `round_` (its own and its late buckets') into their sums; True
        once they all are, False while another process holds a lease (try again later)."""
        settled = True
        for origin in await self._ledger.origins(round_):
            settled = await self.fold(round_, origin) and settled
        return settled

    async def fold(self, round_: int, origin: int) -> bool:
        """Fold round `round_`'s pending uploads for `origin`; True once none is pending, False while another
        process holds the lease or this one lost it."""
        if not await self._ledger.unfolded(round_, origin):
            return True
        async with self._lock(round_, origin):
            lease = await self._take(round_, origin)
            if lease is None:
                return False
            async with lease.renewed():
                return await self._fold_held(round_, origin, lease)

    async def _take(self, round_: int, origin: int) -> Lease | None:
        """The sum's lease, or None. A cancellation (the process shutting down) that arrives while the store
        takes it waits for the answer and gives a lease taken back: else it would stay held, by nobody, until
        its TTL, and hold up the round's forward after a restart."""
        taking = asyncio.ensure_future(
            self._ledger.take_fold_lease(round_, origin, ttl_s=self._lease_ttl_s, pause=self._pause)
        )
        try:
            return await asyncio.shield(taking)
        except asyncio.CancelledError:
            lease = await taking
            if lease is not None:
                await lease.release()
            raise

    async def _fold_held(self, round_: int, origin: int, lease: Lease) -> bool:
        while not lease.lost:
            if await self._ledger.outcome(round_) is not None:
                return True  # forwarded or given up: the sums are final, and the uploads forgotten
            resumed = time.perf_counter()
            start = await self._ledger.fold_start(round_, origin)
            if not start.pending:
                return True
            try:
                batch = await self._add_batch(round_, origin, start, resumed=resumed)
            except UnreadableSumError as e:
                # Altered in the store: quarantined, as the ledger does with a record that does not read back.
                raw = start.stored or b""
                await self._ledger.quarantine_unreadable_sum(round_, origin, raw=raw, reason=str(e))
                continue
            if batch is None:
                continue  # an upload was taken out (or had left the round): read the round again
            running, clients = batch
            started = time.perf_counter()
            total = await self._run(running.dump)
            landed = await self._ledger.checkpoint(
                round_, origin, lease=lease, start=start, total=total, added=clients
            )
            self._observe("checkpoint", time.perf_counter() - started)
            if not landed:
                if not await self._ledger.holds(lease):
                    return False
                continue  # another write to the sum came first (`exclude`, `carry`): from the new state
            await self._step(FoldStep.CHECKPOINTED)
        return False

    async def _add_batch(
        self, round_: int, origin: int, start: FoldStart, *, resumed: float
    ) -> tuple[RunningSum, list[str]] | None:
        """The sum `start` read plus the next `batch` pending uploads, and their clients; None when one of
        them is gone from the store or no longer reads back (taken out: the caller starts again). `resumed`:
        when the folder started reading `start` (`sum_read` times that and the sum's deserialisation)."""
        total = await self._run(
            lambda: RunningSum(self._scheme, start.stored, length=self._length, added=self._added)
        )
        self._observe("sum_read", time.perf_counter() - resumed)
        if total.count != len(start.checkpoint.covers):
            # Its checkpoint's MAC verified: the sum's envelope lies about its count, or the MAC key is out.
            raise UnreadableSumError(
                f"the running sum holds {total.count} encryptions, its checkpoint names "
                f"{len(start.checkpoint.covers)} uploads"
            )
        clients: list[str] = []
        # Uploads the hand-off holds first (the order of a batch changes nothing in the sum), then by client.
        handed = partial(self._handoff.holds, round_, origin)
        for client_id in sorted(start.pending, key=lambda cid: not handed(cid))[: self._batch]:
            digest = start.digests.get(client_id, "")
            incoming = self._handoff.take(round_, origin, client_id, digest=digest)
            if incoming is None:
                incoming = await self._read(round_, origin, client_id, digest=digest)
            if incoming is None:
                return None  # taken out: the caller reads the round again
            added = time.perf_counter()
            await self._run(partial(total.add, incoming))
            self._observe("fold_add", time.perf_counter() - added)
            clients.append(client_id)
            await self._step(FoldStep.ADDED)
        return total, clients

    async def _read(
        self, round_: int, origin: int, client_id: str, *, digest: str
    ) -> EncryptedVector[Any] | None:
        """A stored upload, read from the store, checked against `digest` (the SHA-256 its client signed in its
        manifest line) and deserialised; None once one that is gone, is not the bytes its client signed (a
        valid ciphertext written over it: it would deserialise) or no longer reads back was taken out of its
        round."""
        started = time.perf_counter()
        upload = await self._ledger.stored_upload(round_, origin, client_id)
        read = time.perf_counter()
        try:
            if upload is None:
                raise BadCiphertextError("the stored upload is gone from the store", field="ciphertext")
            stored_digest = await self._run(partial(_sha256, upload))
            if not hmac.compare_digest(stored_digest, digest):
                raise BadCiphertextError(
                    f"the stored upload's SHA-256 {stored_digest[:16]}… is not the {digest[:16]}… its client "
                    "signed in its manifest line",
                    field="ciphertext",
                )
            incoming = await self._run(partial(parse_upload, self._scheme, upload, length=self._length))
        except BadCiphertextError as e:
            await self._take_out_unreadable(round_, origin, client_id, e)
            return None
        self._observe("fold_read", read - started)
        self._observe("fold_parse", time.perf_counter() - read)
        return incoming

    async def _take_out_unreadable(
        self, round_: int, origin: int, client_id: str, error: BadCiphertextError
    ) -> None:
        """Take a stored upload that is gone or no longer reads back (altered in the store) out of its round,
        counted dropped (`record_quarantined`), and log it, as the ledger does for a sum. Nothing is taken out
        when the manifest no longer names it (taken out meanwhile, and its upload deleted with it)."""
        reason = DropReason.RECORD_QUARANTINED
        taken = await self._ledger.exclude(round_, [client_id], origin=origin, reason=reason)
        log.error(
            "a stored upload does not read back: taken out of its round's sum",
            extra={
                "round": round_,
                "client_id": client_id,
                "code": ErrorCode.STORED_RECORD_CORRUPT.value,
                "data": {"origin": origin, "error": str(error), "taken_out": bool(taken)},
            },
        )

    def _lock(self, round_: int, origin: int) -> asyncio.Lock:
        return self._local.setdefault((round_, origin), asyncio.Lock())


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
