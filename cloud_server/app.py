"""The cloud's FastAPI app: federations, enrolment, rounds and adapters over one state store.

    app = create_app(CloudSettings())          # store from settings.store_url, KEKs from the environment
    app = create_app(settings, store=MemoryStore(), keks=KekRing(kek), time=fake_clock.time)   # tests

The lifespan builds the store, the services and a deadline task that calls `RoundService.tick` every
`deadline_check_s`; it also finishes, from the store, any round a previous process left half done.

Every replica opens rounds and checks deadlines on one time, the store's clock (`services.clock.store_time`,
Redis `TIME`), never on its own: `clock`, the replica's own clock, is only compared with it at start-up
and the difference logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from cloud_server.context import build_context
from cloud_server.errors import NotFoundError, internal_error, invalid_request
from cloud_server.limits import CloudAdmission
from cloud_server.rounds import RoundService
from cloud_server.routes import TAGS, adapters, dashboard, enrolment, federations, health, metrics, rounds
from protocol.crypto import KekRing
from services import keyspace
from services.asgi import install_error_handlers
from services.clock import Clock, TimeSource, store_time, utc_now
from services.keys import load_keks
from services.limits import RateLimits, RequestLimits
from services.metrics import CloudMetrics, HttpMetrics, routes_named
from services.openapi import document_unreadable_bodies
from services.settings import CloudSettings
from services.store import StateStore

log = logging.getLogger("fedlora.cloud")


async def deadline_loop(rounds: RoundService, time: TimeSource, every_s: float) -> None:
    """Tick now (recovery after a restart) and then every `every_s` seconds until cancelled."""
    while True:
        try:
            await rounds.tick(await time())
        except Exception:
            log.exception("deadline check failed")
        await asyncio.sleep(every_s)


def create_app(
    settings: CloudSettings,
    *,
    store: StateStore | None = None,
    keks: KekRing | None = None,
    clock: Clock | None = None,
    time: TimeSource | None = None,
) -> FastAPI:
    """The cloud app. A `store` passed in stays open after shutdown (its owner closes it). Deadlines run
    on `time` (the store's clock unless a test gives its own); `clock` is this process's own clock."""
    own_clock = clock or utc_now
    app_metrics = CloudMetrics()  # per app: tests build many in one process

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_store = store is None
        the_store = settings.open_store() if store is None else store
        shared = time or store_time(the_store)
        app.state.store = the_store  # the error handlers quarantine a record that does not read back
        rate_limits = app.state.rate_limits = RateLimits.over_store(
            the_store,
            prefix=keyspace.CLOUD_LIMITS_PREFIX,
            per_caller=settings.rate_limit,
            anonymous=settings.anonymous_rate_limit,
        )
        try:
            context = build_context(
                settings,
                store=the_store,
                keks=keks if keks is not None else load_keks(),
                clock=shared,
                metrics=app_metrics,
            )
            app.state.cloud = context
            task = asyncio.create_task(deadline_loop(context.rounds, shared, settings.deadline_check_s))
            log.info(
                "cloud ready",
                extra={"data": {"store": the_store.describe(), **await _own_offset(shared, own_clock)}},
            )
            try:
                yield
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        finally:
            await rate_limits.close()
            if own_store:
                await the_store.close()

    app = FastAPI(
        title="fedlora cloud",
        summary="Federations, round plans, secure aggregation of edge sums and the global FFA-LoRA adapter",
        version="0.1.0",
        openapi_tags=TAGS,
        lifespan=lifespan,
    )
    install_error_handlers(
        app, log=log, invalid_request=invalid_request, internal_error=internal_error, omit_nulls=True
    )
    document_unreadable_bodies(app)
    routers = [m.router for m in (health, federations, enrolment, rounds, adapters, dashboard, metrics)]
    for router in routers:
        app.include_router(router)
    api_routes = [route for router in routers for route in router.routes]
    app.add_middleware(RequestLimits, settings=settings, admit=CloudAdmission(settings), routes=api_routes)
    app.state.metrics = app_metrics

    async def known_federation(fid: str) -> bool:
        try:
            await app.state.cloud.federations.spec(fid)
        except NotFoundError:
            return False
        return True

    # Outermost, so that it sees the request limits' refusals too.
    app.add_middleware(
        HttpMetrics,
        metrics=app_metrics,
        routes=api_routes,
        uploads=routes_named(api_routes, "post_aggregate"),
        downloads=routes_named(api_routes, "vector", "peft_adapter"),
        federation_param="fid",
        known_federation=known_federation,
    )
    return app


async def _own_offset(shared: TimeSource, own: Clock) -> dict[str, float]:
    """How far this replica's own clock is behind the shared time (for the log: nothing runs on it)."""
    try:
        return {"clock_offset_s": round((await shared() - own()).total_seconds(), 3)}
    except Exception:  # the store may be down at start-up: the deadline loop retries on its own
        log.warning("could not read the store's clock", exc_info=True)
        return {}
