"""The edge process's life: enrol, fetch the federation's public key, build the aggregator, follow plans,
check deadlines; all of it in background tasks so that `/healthz` answers while the cloud is still away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from edge_aggregator.aggregator import EdgeAggregator
from edge_aggregator.cloud_link import CloudLink, FederationNotActiveError
from edge_aggregator.config import EdgeConfig
from edge_aggregator.errors import NotReadyError
from protocol.crypto import HEScheme, KeyMaterialError, scheme_from_public
from protocol.messages import EdgeEnrolment, FederationInfo
from services.clock import Clock
from services.identity import SigningKey
from services.metrics import EdgeMetrics
from services.settings import EdgeSettings
from services.store import StateStore
from services.stored_records import report

log = logging.getLogger("edge_aggregator")
T = TypeVar("T")

#: Longest pause between two attempts to reach the cloud during start-up or while following plans.
MAX_BACKOFF_S = 30.0
FIRST_BACKOFF_S = 0.5
#: How long one plan long-poll may wait at the cloud (the cloud caps it at its `long_poll_s`).
PLAN_WAIT_S = 25.0


class EdgeRuntime:
    """Owns the background tasks; `aggregator` is None until the edge is enrolled and holds the key."""

    def __init__(
        self,
        settings: EdgeSettings,
        *,
        store: StateStore,
        link: CloudLink,
        signing_key: SigningKey,
        clock: Clock,
        plan_wait_s: float = PLAN_WAIT_S,
        metrics: EdgeMetrics,
    ) -> None:
        self.settings = settings
        self._store = store
        self._link = link
        self._key = signing_key
        self._clock = clock
        self._plan_wait_s = plan_wait_s
        self.metrics = metrics
        # Built now so that a malformed public_url stops the process at start, not in a retry loop.
        self._enrolment = EdgeEnrolment(
            edge_id=settings.edge_id, url=settings.public_url, public_key=signing_key.public_bytes
        )
        self.aggregator: EdgeAggregator | None = None
        self.enrolled = False
        self.last_error: str | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def ready_aggregator(self) -> EdgeAggregator:
        """The aggregator once the edge has enrolled and holds the federation's key; `NotReadyError` (503,
        `Retry-After`) before, naming the last error of the start-up."""
        if self.aggregator is None:
            raise NotReadyError(
                "edge is starting: not yet enrolled with the cloud or without the federation's key"
                + (f" ({self.last_error})" if self.last_error else "")
            )
        return self.aggregator

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._run(), name="edge-bootstrap"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.aggregator is not None:
            await self.aggregator.close()

    async def store_ok(self) -> bool:
        return await self._store.ping()

    async def sample_store(self) -> None:
        """The store's memory use into the metrics, for a scrape."""
        await self.metrics.sample_store(self._store)

    def health(self) -> dict[str, Any]:
        edge = self.aggregator
        plan = edge.plan if edge is not None else None
        ended = edge.ended if edge is not None else None
        return {
            "status": "ok",
            "edge_id": self.settings.edge_id,
            "federation_id": self.settings.federation_id,
            "enrolled": self.enrolled,
            "ready": edge is not None,
            "round": plan.round if plan is not None else None,
            "federation_ended": ended.value if ended is not None else None,
            "last_error": self.last_error,
        }

    # -- start-up ---------------------------------------------------------------------------------------
    async def _run(self) -> None:
        edge = await self._bootstrap()
        self.aggregator = edge
        self._tasks.append(asyncio.create_task(self._follow_plans(edge), name="edge-plans"))
        self._tasks.append(asyncio.create_task(self._tick(edge), name="edge-ticker"))
        self._tasks.append(asyncio.create_task(self._fold(edge), name="edge-folder"))

    async def _bootstrap(self) -> EdgeAggregator:
        enrolled = await self._until_done(
            "enrol with the cloud", lambda: self._link.enrol(self._enrolment, self._key)
        )
        self.enrolled = True
        log.info("enrolled with the cloud", extra={"edge_id": enrolled.subject})
        info = await self._until_done("fetch the federation", self._link.federation)
        scheme = await self._until_done(
            "fetch the federation's public key", lambda: self._public_scheme(info)
        )
        edge = EdgeAggregator(
            EdgeConfig(
                edge_id=self.settings.edge_id,
                federation=info,
                masking_stage_s=self.settings.masking_stage_s,
                retain_round_s=self.settings.retain_round_s,
            ),
            store=self._store,
            link=self._link,
            scheme=scheme,
            signing_key=self._key,
            clock=self._clock,
            metrics=self.metrics,
        )
        try:
            await edge.refresh_plan(wait_s=0.0)
        except FederationNotActiveError as e:
            edge.mark_ended(e.state)
        except Exception as e:  # the plan loop tries again
            log.warning("no plan yet", extra={"data": {"error": str(e)}})
        self.last_error = None
        log.info(
            "edge ready", extra={"edge_id": self.settings.edge_id, "federation_id": info.spec.federation_id}
        )
        return edge

    async def _public_scheme(self, info: FederationInfo) -> HEScheme[Any]:
        data = await self._link.public_context()
        scheme = scheme_from_public(info.spec.he, data)
        if scheme.fingerprint.hex() != info.he_fingerprint:
            raise KeyMaterialError(
                f"the public context's fingerprint {scheme.fingerprint.hex()[:16]}… is not the federation's "
                f"{info.he_fingerprint[:16]}…"
            )
        return scheme

    async def _until_done(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """`call()` until it succeeds: the cloud may start after the edge, or be restarting."""
        delay = FIRST_BACKOFF_S
        while True:
            try:
                return await call()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.last_error = f"cannot {what}: {e}"
                log.warning(f"cannot {what}; retrying in {delay:.1f} s", extra={"data": {"error": str(e)}})
            await asyncio.sleep(delay)
            delay = min(2 * delay, MAX_BACKOFF_S)

    # -- background loops -------------------------------------------------------------------------------
    async def _follow_plans(self, edge: EdgeAggregator) -> None:
        """Long-poll the cloud for the next plan for as long as the federation lives."""
        delay = FIRST_BACKOFF_S
        loop = asyncio.get_running_loop()
        while edge.ended is None:
            started = loop.time()
            try:
                adopted = await edge.refresh_plan(wait_s=self._plan_wait_s)
            except FederationNotActiveError as e:
                edge.mark_ended(e.state)
                edge.wake.set()
                return
            except Exception as e:
                self.last_error = f"cannot follow plans: {e}"
                log.warning("cannot follow plans", extra={"data": {"error": str(e)}})
                await asyncio.sleep(delay)
                delay = min(2 * delay, MAX_BACKOFF_S)
                continue
            delay = FIRST_BACKOFF_S
            if not adopted and loop.time() - started < FIRST_BACKOFF_S:
                await asyncio.sleep(FIRST_BACKOFF_S)  # a cloud that answers at once must not make us spin

    async def _fold(self, edge: EdgeAggregator) -> None:
        """Fold stored uploads into their round's sum as they arrive (`EdgeAggregator.fold_pending`), and every
        `deadline_check_s` in case another process's folder stopped (its lease lapsed)."""
        await self._on_wake(edge.fold_wake, edge.fold_pending, what="the folder")

    async def _tick(self, edge: EdgeAggregator) -> None:
        """Check quorum and deadlines every `deadline_check_s`, and at once when an upload may complete a
        quorum or a plan arrives."""
        await self._on_wake(edge.wake, edge.tick, what="the deadline check")

    async def _on_wake(self, wake: asyncio.Event, work: Callable[[], Awaitable[None]], *, what: str) -> None:
        """`work()` whenever `wake` is set, and every `deadline_check_s`; a failure is reported and the loop
        goes on."""
        while True:
            # `asyncio.timeout`, not `wait_for`, which on 3.11 can swallow the shutdown's cancellation.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.deadline_check_s):
                    await wake.wait()
            wake.clear()
            try:
                await work()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if not await report(self._store, e, what=what, extra={}):
                    log.exception(f"{what} failed")
