"""Prometheus metrics of the three services (`prometheus_client`), each on a registry of its own.

Every app builds its metrics in its factory and keeps them on `app.state` (the cloud also in its context):
never module-level metrics on the default registry, which every app of a test process would share. The
cloud and the edge serve their registry at `GET /metrics`; a client agent, which serves no HTTP otherwise,
with `serve` when `FEDLORA_METRICS_PORT` is set.

`HttpMetrics` is the ASGI middleware both apps share. It labels requests with the route *template*
(`/federations/{fid}/rounds/{n}`), never the raw path, so that ids in paths cannot make one series each.
For the routes that carry payloads it also counts uploads by outcome (the refusal's reason is the
`ErrorBody.code` the peer received, so the metric and the peer always agree, whichever layer refused:
a handler, a route or the body-size limit) and the bytes that came in and went out.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from protocol.messages import DropReason, ErrorCode
from services.store import StateStore, StoreError

log = logging.getLogger("services.metrics")

Service = Literal["client", "edge", "cloud"]
HeOperation = Literal["encrypt", "add", "decrypt"]
#: What `GET /metrics` answers with (the text exposition format of the installed client library).
CONTENT_TYPE = CONTENT_TYPE_LATEST
#: The `route` label of a request that matched no route (a 404): one series, whatever the path was.
UNMATCHED = "<unmatched>"

# Long-polls for plans wait up to 300 s and uploads of large ciphertexts take seconds.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# From a small CKKS vector (milliseconds) to packed Paillier over a full adapter (minutes).
HE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
ROUND_BUCKETS = (1.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0)
TRAINING_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# An `ErrorBody` is at most a few KiB; past this the refusal's code is not read (its reason is "unknown").
_MAX_ERROR_BODY = 16 * 1024


def _epsilon_gauge(registry: CollectorRegistry) -> Gauge:
    return Gauge(
        "fedlora_epsilon_spent",
        "Privacy spent so far: client-level epsilon of the federation (cloud), or example-level epsilon "
        "(client: this hospital's; cloud: the largest over the hospitals)",
        ["federation", "level"],
        registry=registry,
    )


class Metrics:
    """What every service measures: time spent in homomorphic encryption and payload bytes in and out."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        self.he_seconds = Histogram(
            "fedlora_he_seconds",
            "Seconds per homomorphic-encryption operation (client: encrypt an update; edge: add an upload "
            "into the running sum; cloud: decrypt the round's total)",
            ["service", "operation", "scheme"],
            registry=self.registry,
            buckets=HE_BUCKETS,
        )
        self.bytes_received = Counter(
            "fedlora_bytes_received_total",
            "Bytes of upload bodies received (edge: hospital uploads; cloud: edge aggregates)",
            ["service", "federation"],
            registry=self.registry,
        )
        self.bytes_sent = Counter(
            "fedlora_bytes_sent_total",
            "Bytes of payloads sent (client: upload bodies; edge: forwarded aggregates; cloud: adapter "
            "vectors and zips served)",
            ["service", "federation"],
            registry=self.registry,
        )

    def he_observed(self, operation: HeOperation, scheme: str, seconds: float) -> None:
        self.he_seconds.labels(self.service, operation, scheme).observe(seconds)

    @contextmanager
    def he_timer(self, operation: HeOperation, scheme: str) -> Iterator[None]:
        """Time the block (`time.perf_counter`); an operation that raises is not observed."""
        started = time.perf_counter()
        yield
        self.he_observed(operation, scheme, time.perf_counter() - started)

    def received(self, federation: str, size: int) -> None:
        self.bytes_received.labels(self.service, federation).inc(size)

    def sent(self, federation: str, size: int) -> None:
        self.bytes_sent.labels(self.service, federation).inc(size)

    def exposition(self) -> bytes:
        """The registry in the text format `GET /metrics` answers with (`CONTENT_TYPE`)."""
        return generate_latest(self.registry)


class ServiceMetrics(Metrics):
    """A service with an HTTP API (edge, cloud): requests, and the uploads it takes or refuses."""

    def __init__(self, service: Service) -> None:
        super().__init__(service)
        labels = ["service", "method", "route", "status"]
        self.http_requests = Counter(
            "fedlora_http_requests_total", "HTTP requests answered", labels, registry=self.registry
        )
        self.http_seconds = Histogram(
            "fedlora_http_request_seconds",
            "Seconds from a request's arrival to the end of its answer",
            labels,
            registry=self.registry,
            buckets=HTTP_BUCKETS,
        )
        self.uploads = Counter(
            "fedlora_uploads_total",
            "Uploads (edge: hospital updates; cloud: edge aggregates) accepted or refused with a 4xx; "
            "`reason` is the refusal's error code",
            ["service", "federation", "outcome", "reason"],
            registry=self.registry,
        )
        self.uploads_dropped = Counter(
            "fedlora_uploads_dropped_total",
            "Uploads acknowledged with a 2xx that reach no model (edge: hospital uploads it dropped; cloud: "
            "hospital uploads in accepted aggregates it left out), by `DropReason`",
            ["service", "federation", "reason"],
            registry=self.registry,
        )
        self.store_used_memory = Gauge(
            "fedlora_store_used_memory_bytes",
            "Memory the state store's data takes (Redis: INFO used_memory; memory store: an estimate of its "
            "keys and values), sampled at each scrape",
            ["service"],
            registry=self.registry,
        )
        self.store_max_memory = Gauge(
            "fedlora_store_max_memory_bytes",
            "The state store's memory limit (Redis maxmemory); 0 when it has none",
            ["service"],
            registry=self.registry,
        )

    async def sample_store(self, store: StateStore) -> None:
        """Set the store's memory gauges from `store` now (a scrape calls it before `exposition`); a store
        that does not answer leaves them as they were (its own health check reports it)."""
        try:
            use = await store.memory_use()
        except StoreError:
            log.warning("could not read the state store's memory use", exc_info=True)
            return
        self.store_used_memory.labels(self.service).set(use.used_bytes)
        self.store_max_memory.labels(self.service).set(use.max_bytes or 0)

    def request(self, *, method: str, route: str, status: int, seconds: float) -> None:
        labels = (self.service, method, route, str(status))
        self.http_requests.labels(*labels).inc()
        self.http_seconds.labels(*labels).observe(seconds)

    def upload(self, federation: str, *, refused: str | None = None) -> None:
        """Count an accepted upload, or one refused with error code `refused`."""
        outcome = "accepted" if refused is None else "refused"
        self.uploads.labels(self.service, federation, outcome, refused or "").inc()

    def dropped(self, federation: str, reason: DropReason, count: int) -> None:
        """Count `count` acknowledged uploads that reach no model, for `reason`."""
        self.uploads_dropped.labels(self.service, federation, reason.value).inc(count)


#: Where an upload's time goes at the edge: the request path (its answer waits for these), then the folder.
UploadPhase = Literal[
    "receive",
    "parse",
    "signature",
    "validate",
    "checks",
    "store",
    "sum_read",
    "fold_read",
    "fold_parse",
    "fold_add",
    "checkpoint",
]


class EdgeMetrics(ServiceMetrics):
    def __init__(self) -> None:
        super().__init__("edge")
        self.upload_phase = Histogram(
            "fedlora_edge_upload_phase_seconds",
            "Seconds spent on accepted uploads, by phase: receive (the body read), parse (the body into a "
            "ClientUpdate: JSON and base64, or the binary frame), signature (the upload's and its manifest "
            "line's, the ciphertext's digest included), validate (the ciphertext deserialised and checked "
            "against the key and layout), checks (the rest: roster, plan, round, nonce, manifest), store (the "
            "write before the answer); then the folder's sum_read (once a batch: the round's manifest, "
            "checkpoint and running sum read back, and the sum deserialised), fold_read (an upload read "
            "from the store), "
            "fold_parse (deserialised again), fold_add (the homomorphic addition), checkpoint (a batch's sum "
            "serialised and written)",
            ["phase"],
            registry=self.registry,
            buckets=HE_BUCKETS,
        )

    def phase_observed(self, phase: UploadPhase, seconds: float) -> None:
        self.upload_phase.labels(phase).observe(seconds)


class CloudMetrics(ServiceMetrics):
    def __init__(self) -> None:
        super().__init__("cloud")
        self.round_duration = Histogram(
            "fedlora_round_duration_seconds",
            "Seconds from a round's opening to its closing (closed rounds only)",
            ["federation"],
            registry=self.registry,
            buckets=ROUND_BUCKETS,
        )
        self.rounds = Counter(
            "fedlora_rounds_total",
            "Rounds that ended, by outcome (closed: a new adapter; failed: nothing released)",
            ["federation", "outcome"],
            registry=self.registry,
        )
        self.clients_per_edge = Gauge(
            "fedlora_clients_per_edge",
            "Clients enrolled at each edge (read from the state store at every scrape)",
            ["federation", "edge"],
            registry=self.registry,
        )
        self.edge_clock_offset = Gauge(
            "fedlora_edge_clock_offset_seconds",
            "The cloud's time less each edge's clock, as the edge last measured it on a plan poll",
            ["federation", "edge"],
            registry=self.registry,
        )
        self.edge_clock_alert = Gauge(
            "fedlora_edge_clock_skew_alert",
            "1 while an edge's clock offset exceeds half the deadline margin (round less upload deadline)",
            ["federation", "edge"],
            registry=self.registry,
        )
        self.records_quarantined = Gauge(
            "fedlora_records_quarantined",
            "Stored records that did not read back and were copied to a quarantine key, held now (read from "
            "the state store at every scrape)",
            ["federation"],
            registry=self.registry,
        )
        self.epsilon_spent = _epsilon_gauge(self.registry)


class ClientMetrics(Metrics):
    def __init__(self) -> None:
        super().__init__("client")
        self.epsilon_spent = _epsilon_gauge(self.registry)
        self.local_training = Histogram(
            "fedlora_local_training_seconds",
            "Seconds of local training (DP-SGD included) per round",
            ["federation"],
            registry=self.registry,
            buckets=TRAINING_BUCKETS,
        )


def serve(metrics: Metrics, *, host: str, port: int) -> WSGIServer:
    """Serve `metrics` at `http://host:port/metrics` from a daemon thread (for the client agent); the
    server runs until the process ends or its `shutdown()`."""
    server, _ = start_http_server(port, addr=host, registry=metrics.registry)
    return server


# -- the ASGI middleware ---------------------------------------------------------------------------------
def route_of(scope: Scope, routes: Sequence[BaseRoute]) -> tuple[str, dict[str, Any]]:
    """The template of the route a request is for and its path parameters; `UNMATCHED` if none.

    Read from the router's match when routing happened; otherwise (the body-size limit answered before
    the router ran) by matching `routes` the way the router would.
    """
    route = scope.get("route")
    if isinstance(getattr(route, "path", None), str):
        return route.path, dict(scope.get("path_params") or {})  # type: ignore[union-attr]
    partial: tuple[str, dict[str, Any]] | None = None
    for candidate in routes:
        match, child = candidate.matches(scope)
        path = getattr(candidate, "path", None)
        if not isinstance(path, str):
            continue
        if match is Match.FULL:
            return path, dict(child.get("path_params") or {})
        if match is Match.PARTIAL and partial is None:  # the path is right, the method is not (405)
            partial = path, dict(child.get("path_params") or {})
    return partial or (UNMATCHED, {})


def error_code(body: bytes) -> str:
    """The `code` of an `ErrorBody`, or "unknown" (never free text: it becomes a label value)."""
    try:
        code = json.loads(body).get("code")
        return ErrorCode(code).value
    except (ValueError, TypeError, AttributeError):
        return "unknown"


@dataclass
class _Exchange:
    status: int | None = None
    received: int = 0
    sent: int = 0
    error: bytes = b""


class HttpMetrics:
    """ASGI middleware: `fedlora_http_requests_total` and `fedlora_http_request_seconds` for every request;
    for `uploads` (`(method, route template)` pairs, see `routes_named`) the outcome and the request
    body's bytes; for `downloads` the bytes of successful answers. `routes` are the app's API routes
    (FastAPI does not list an included router's routes in `app.routes`).

    `federation_param` names the path parameter that holds the federation id. A refused upload's path may
    name any federation, so `known_federation` decides whether it becomes a label value (otherwise the
    label is ""): a stranger must not be able to add series.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: ServiceMetrics,
        routes: Sequence[BaseRoute],
        uploads: Collection[tuple[str, str]] = (),
        downloads: Collection[tuple[str, str]] = (),
        federation_param: str = "fid",
        known_federation: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = tuple(routes)
        self.uploads = frozenset(uploads)
        self.downloads = frozenset(downloads)
        self.federation_param = federation_param
        self.known_federation = known_federation

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        exchange = _Exchange()

        async def counted_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                exchange.received += len(message.get("body", b""))
            return message

        async def counted_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = int(message["status"])
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                exchange.sent += len(body)
                if (exchange.status or 0) >= 400 and len(exchange.error) < _MAX_ERROR_BODY:
                    exchange.error += body
            await send(message)

        try:
            await self.app(scope, counted_receive, counted_send)
        except Exception:
            # Starlette's outermost middleware turns it into a 500, after this one.
            exchange.status = exchange.status or 500
            await self._record(scope, exchange, time.perf_counter() - started)
            raise
        await self._record(scope, exchange, time.perf_counter() - started)

    async def _record(self, scope: Scope, exchange: _Exchange, seconds: float) -> None:
        # Metrics never fail a request.
        try:
            status = exchange.status or 500
            method = str(scope.get("method", ""))
            method = method if method in _METHODS else "other"  # anyone may send any token there
            route, params = route_of(scope, self.routes)
            self.metrics.request(method=method, route=route, status=status, seconds=seconds)
            key = (method, route)
            ok = 200 <= status < 300
            if key in self.uploads:
                federation = await self._federation(params, trusted=ok)
                self.metrics.received(federation, exchange.received)
                if ok or 400 <= status < 500:  # a 5xx is the service's failure, not a refusal
                    self.metrics.upload(federation, refused=None if ok else error_code(exchange.error))
            elif key in self.downloads and ok:
                self.metrics.sent(await self._federation(params, trusted=True), exchange.sent)
        except Exception:
            log.exception("could not record a request's metrics")

    async def _federation(self, params: dict[str, Any], *, trusted: bool) -> str:
        fid = str(params.get(self.federation_param, ""))
        if trusted or not fid:
            return fid
        try:
            known = self.known_federation is not None and await self.known_federation(fid)
        except Exception:
            known = False
        return fid if known else ""


def routes_named(routes: Sequence[BaseRoute], *names: str) -> list[tuple[str, str]]:
    """`(method, route template)` of the routes with these endpoint names, for `HttpMetrics`' `uploads`
    and `downloads` (a renamed endpoint fails when the app is built, not silently in production)."""
    found = {
        (str(getattr(route, "name", "")), method, str(getattr(route, "path", "")))
        for route in routes
        for method in (getattr(route, "methods", None) or ())
    }
    missing = set(names) - {name for name, _, _ in found}
    if missing:
        raise ValueError(f"no route named {sorted(missing)}")
    return sorted((method, path) for name, method, path in found if name in names)
