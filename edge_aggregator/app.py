"""The edge aggregator's app factory and entry point."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI
from limits.aio.storage import MemoryStorage

from edge_aggregator.cloud_link import CloudLink, HttpCloudLink
from edge_aggregator.credentials import StoredToken
from edge_aggregator.errors import internal_error, invalid_request
from edge_aggregator.limits import EdgeAdmission
from edge_aggregator.routes import TAGS, install_openapi, router
from edge_aggregator.runtime import PLAN_WAIT_S, EdgeRuntime
from services import logs
from services.asgi import install_error_handlers
from services.clock import Clock, OffsetClock, utc_now
from services.identity import SigningKey
from services.limits import RateLimits, RequestLimits
from services.metrics import EdgeMetrics, HttpMetrics, routes_named
from services.openapi import document_unreadable_bodies
from services.settings import EdgeSettings, describe
from services.store import StateStore
from services.tls import TLSSettingsError, check_peer_url, client_context, serving_options

log = logging.getLogger("edge_aggregator")


def create_app(
    settings: EdgeSettings,
    *,
    store: StateStore | None = None,
    link: CloudLink | None = None,
    clock: Clock | None = None,
    plan_wait_s: float = PLAN_WAIT_S,
) -> FastAPI:
    """The edge's FastAPI app. Store, signing key and cloud link are built in the lifespan unless given
    (a given store or link is left open at shutdown: its owner closes it). The edge runs on `clock` (this
    process's) corrected by the offset to the cloud's time that the link it builds measures on each plan
    poll: the cloud sets the deadlines, so the edge checks them in the cloud's time."""
    metrics = EdgeMetrics()  # per app: tests build many in one process

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        the_store = store if store is not None else settings.open_store()
        app.state.store = the_store  # the error handlers quarantine a record that does not read back
        # In memory: the edge's ACL user runs no scripts, and one edge is one process.
        app.state.rate_limits = RateLimits(
            MemoryStorage(), per_caller=settings.rate_limit, anonymous=settings.anonymous_rate_limit
        )
        cloud_time = OffsetClock(clock or utc_now)
        the_link = link
        if the_link is None:
            # Fewer attempts per call than Peer's default: every caller here tries again on its own
            # (start-up, the plan loop, the next tick), and a failure shows in the log and /healthz sooner.
            the_link = HttpCloudLink(
                check_peer_url(
                    settings.cloud_url,
                    field="cloud_url",
                    ca_file=settings.tls_ca_file,
                    allow_plain_http=settings.allow_plain_http,
                ),
                # The cloud verified against the federation's CA, and this edge's certificate presented:
                # the cloud binds the edge's API token to it (mutual TLS).
                verify=client_context(
                    ca_file=settings.tls_ca_file,
                    cert_file=settings.tls_cert_file,
                    key_file=settings.tls_key_file,
                ),
                federation_id=settings.federation_id,
                enrolment_token=(
                    settings.enrolment_token.get_secret_value()
                    if settings.enrolment_token is not None
                    else None
                ),
                attempts=5,
                give_up_after_s=60.0,
                tokens=StoredToken(the_store, edge_id=settings.edge_id, federation_id=settings.federation_id),
                clock=cloud_time,
            )
        runtime = EdgeRuntime(
            settings,
            store=the_store,
            link=the_link,
            signing_key=SigningKey.load_or_create(settings.key_file),
            clock=cloud_time,
            plan_wait_s=plan_wait_s,
            metrics=metrics,
        )
        app.state.runtime = runtime
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()
            if link is None:
                await the_link.close()
            if store is None:
                await the_store.close()

    app = FastAPI(
        title="fedlora edge aggregator",
        summary="Takes hospitals' encrypted uploads, sums them homomorphically and forwards one signed "
        "aggregate per round to the cloud",
        version="1",
        openapi_tags=TAGS,
        lifespan=lifespan,
    )
    install_openapi(app)
    document_unreadable_bodies(app)
    app.add_middleware(RequestLimits, settings=settings, admit=EdgeAdmission(settings), routes=router.routes)
    install_error_handlers(
        app, log=log, invalid_request=invalid_request, internal_error=internal_error, omit_nulls=False
    )
    app.include_router(router)
    app.state.metrics = metrics

    async def own_federation(fid: str) -> bool:
        return fid == settings.federation_id

    # Outermost, so that it sees the request limits' refusals too.
    app.add_middleware(
        HttpMetrics,
        metrics=metrics,
        routes=router.routes,
        uploads=routes_named(router.routes, "upload"),
        federation_param="federation_id",
        known_federation=own_federation,
    )
    return app


def run(settings: EdgeSettings | None = None) -> None:
    """`python -m edge_aggregator`: settings from `FEDLORA_*` (and `FEDLORA_CONFIG`), served by uvicorn."""
    settings = settings or EdgeSettings()  # type: ignore[call-arg]  # pydantic-settings reads the environment
    try:
        settings.require_durable_store()
    except ValueError as e:
        raise SystemExit(f"edge aggregator not started: {e}") from e
    logs.configure("edge_aggregator", level=settings.log_level, json_lines=settings.log_json)
    log.info("starting edge aggregator", extra={"data": describe(settings)})
    tls = serving_options(settings, service="edge", log=log)
    try:  # checked in the lifespan too (where the link is built); here it stops the edge before it serves
        check_peer_url(
            settings.cloud_url,
            field="cloud_url",
            ca_file=settings.tls_ca_file,
            allow_plain_http=settings.allow_plain_http,
        )
    except TLSSettingsError as e:
        sys.exit(f"edge settings: {e}")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None, **tls)
