"""The services' request limits, applied before a route reads a byte of the body:

1. who is calling: the service's `admit` resolves the bearer token of a route that needs one (401 before the
   body is read or parsed) and names the caller: `admin`, `edge:<federation>/<id>`,
   `client:<federation>/<id>`, or `ip:<host>` on a route that takes no token; a request whose token is refused
   is charged to its client IP's anonymous window (so guessing tokens is answered 429 once it is over);
2. rate: requests per caller in a window (`limits`' fixed window, in the store's Redis where the service
   shares one between replicas, in memory otherwise), 429 `too_many_requests` with `Retry-After`;
3. concurrency: requests of one caller in progress in this process, and long-polls open in this process and
   per caller, 429 with `Retry-After`;
4. size: the route's body limit (`Admission.body_limit`: an upload's from the federation's layout and HE
   scheme, `upload_body_bytes`; a JSON route's small), 413 `payload_too_large` from `Content-Length` before
   the body is read, and as soon as a streamed (chunked) body grows past it.

A refusal raised here (a `ServiceError`, a store that fails while a token is resolved, a corrupt record) is
answered by the app's own exception handlers (`services.asgi.install_error_handlers`), with the bodies and
headers a route's would get.

The concurrency counts are this process's: an open connection holds this process's memory and sockets, so
this process is what the cap protects (`limits` counts events in windows and has no gauge of work in
progress).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, NoReturn

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter
from limits.errors import StorageError
from redis.asyncio import ConnectionPool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from protocol.crypto.base import HEScheme
from protocol.messages import ErrorCode
from services.errors import ServiceError
from services.settings import ServiceSettings
from services.store import RedisStore, StateStore

log = logging.getLogger("services.limits")

#: Bytes of an upload's JSON beside its ciphertexts (ids, numbers, signature, a manifest line per client).
UPLOAD_HEADROOM_BYTES = 64 * 1024
#: Bytes of one client's line in an edge's manifest (`Contribution`, base64 signature included).
CONTRIBUTION_BYTES = 1024
_RETRY_CONCURRENT_S = 1


@dataclass(frozen=True)
class Admission:
    """What the service's `admit` decided about a request before its body is read."""

    #: `admin`, `edge:<federation>/<id>`, `client:<federation>/<id>`, or `ip:<host>` on a route without a token
    caller: str
    body_limit: int
    long_poll: bool = False
    #: Put into the request's `scope["state"]` (the resolved principal, which the route then reuses).
    state: dict[str, Any] | None = None

    @property
    def anonymous(self) -> bool:
        return self.caller.startswith("ip:")


Admit = Callable[[Scope, BaseRoute | None, dict[str, Any]], Awaitable[Admission]]


class BodyTooLargeError(StarletteHTTPException):
    """413 while a body streams in: an HTTP exception, since FastAPI turns any other exception raised
    while it reads a body into a 400. The error handlers answer it with `payload_too_large` and the limit."""

    def __init__(self, *, size: int, limit: int) -> None:
        super().__init__(413, body_too_large_message(size=size, limit=limit))
        self.limit = limit


class TooManyRequestsError(ServiceError):
    """429: the caller is over a rate window or holds too many requests or long-polls open; `Retry-After`
    says when to try again."""

    status = 429
    default_code = ErrorCode.TOO_MANY_REQUESTS

    def __init__(self, message: str, *, retry_after_s: int, detail: dict[str, Any]) -> None:
        super().__init__(message, detail=detail | {"retry_after_s": retry_after_s})
        self.retry_after_s = retry_after_s

    # Per refusal, not per class as `ServiceError.headers` is: the seconds left of the window that refused it.
    @property
    def headers(self) -> Mapping[str, str]:  # type: ignore[override]
        return {"Retry-After": str(self.retry_after_s)}


def body_too_large_message(*, size: int, limit: int) -> str:
    return f"request body is too large: it has at least {size} bytes, the limit of this route is {limit}"


def upload_body_bytes(
    scheme: HEScheme[Any], *, length: int, ciphertexts: int = 1, extra_bytes: int = 0, clients: int = 0
) -> int:
    """The largest JSON body a well-formed upload of `ciphertexts` ciphertexts of `length` values under
    `scheme` takes: each ciphertext at its largest (`HEScheme.max_ciphertext_bytes`) plus `extra_bytes` of
    other binary fields, base64 (4 characters per 3 bytes), a manifest line per client, and headroom."""
    raw = ciphertexts * scheme.max_ciphertext_bytes(length) + extra_bytes
    return 4 * math.ceil(raw / 3) + clients * CONTRIBUTION_BYTES + UPLOAD_HEADROOM_BYTES


#: The longest a rate-window check waits for Redis before it lets the request through.
RATE_STORE_TIMEOUT_S = 0.5


class RateLimits:
    """Per-caller request windows (`ServiceSettings.rate_limit`, `anonymous_rate_limit`) over one storage."""

    def __init__(
        self, storage: Storage, *, per_caller: str, anonymous: str, pool: ConnectionPool | None = None
    ) -> None:
        self._limiter = FixedWindowRateLimiter(storage)
        self._per_caller = parse_many(per_caller)
        self._anonymous = parse_many(anonymous)
        self._pool = pool

    @classmethod
    def over_store(cls, store: StateStore, *, prefix: str, per_caller: str, anonymous: str) -> RateLimits:
        """Windows in the store's Redis (keys under `prefix`, inside the tier's ACL key pattern), so that every
        replica counts the same window, over connections that fail fast; in memory for an in-memory store.
        Close it (`close`) when the app stops."""
        if not isinstance(store, RedisStore):
            return cls(MemoryStorage(), per_caller=per_caller, anonymous=anonymous)
        pool = store.fail_fast_pool(timeout_s=RATE_STORE_TIMEOUT_S)
        storage = RedisStorage(
            "async+redis://",
            implementation="redispy",
            wrap_exceptions=True,
            # `limits` types its options as scalars; its redis-py bridge builds the client on this pool
            connection_pool=pool,  # type: ignore[arg-type]
            key_prefix=prefix,
        )
        return cls(storage, per_caller=per_caller, anonymous=anonymous, pool=pool)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()

    async def retry_after(self, caller: str, *, anonymous: bool) -> tuple[int, RateLimitItem] | None:
        """Count one request of `caller`; None while it is inside its limits, else (seconds until the window
        that refused it resets, that limit). A storage that fails lets the request through (logged): the
        routes answer 503 themselves when the store is down, and a limiter must not turn that into 429s."""
        for item in self._anonymous if anonymous else self._per_caller:
            try:
                if await self._limiter.hit(item, caller):
                    continue
                stats = await self._limiter.get_window_stats(item, caller)
            except (StorageError, OSError) as e:
                log.warning("rate limit not checked: its storage failed: %s", e)
                return None
            return max(1, math.ceil(stats.reset_time - time.time())), item
        return None


@dataclass
class InFlight:
    """Requests and long-polls in progress in this process, by caller."""

    requests: Counter[str]
    long_polls: Counter[str]

    @contextlib.contextmanager
    def holding(self, counter: Counter[str], caller: str) -> Any:
        counter[caller] += 1
        try:
            yield
        finally:
            counter[caller] -= 1
            if counter[caller] <= 0:
                del counter[caller]


class RequestLimits:
    """The ASGI middleware of the module docstring. `admit` runs first; the rate limits live on
    `app.state.rate_limits` (built in the lifespan, over the store); before the lifespan has built them no
    rate is counted."""

    def __init__(
        self, app: ASGIApp, *, settings: ServiceSettings, admit: Admit, routes: Sequence[BaseRoute]
    ) -> None:
        self.app = app
        self.settings = settings
        self.admit = admit
        self.routes = routes
        self.in_flight = InFlight(Counter(), Counter())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            admission = await self._admission(scope)
        except Exception as e:
            await answer_error(scope, receive, send, e)
            return
        async with self._holding(admission):
            await self.app(scope, _limited(receive, admission.body_limit), send)

    async def _admission(self, scope: Scope) -> Admission:
        """The request's admission, its body limit capped by `max_body_bytes`; a refusal is raised."""
        route, params = _route_of(scope, self.routes)
        try:
            admission = await self.admit(scope, route, params)
        except ServiceError as e:
            if e.status == 401:
                # A refused token is charged to its client IP: otherwise tokens could be tried without limit.
                await self._check_rate(scope, Admission(client_host(scope), 0))
            raise
        if admission.state:
            scope.setdefault("state", {}).update(admission.state)
        await self._check_rate(scope, admission)
        self._check_concurrency(scope, admission)
        limit = min(admission.body_limit, self.settings.max_body_bytes)
        declared = Headers(scope=scope).get("content-length", "").strip()
        if declared.isdigit() and int(declared) > limit:
            log.warning(
                "request refused", extra={"code": "payload_too_large", "data": {"path": scope.get("path")}}
            )
            raise BodyTooLargeError(size=int(declared), limit=limit)
        return replace(admission, body_limit=limit)

    async def _check_rate(self, scope: Scope, admission: Admission) -> None:
        rates = getattr(scope["app"].state, "rate_limits", None) if "app" in scope else None
        if not isinstance(rates, RateLimits):
            return
        over = await rates.retry_after(admission.caller, anonymous=admission.anonymous)
        if over is None:
            return
        retry_s, item = over
        _refuse(
            scope,
            f"{admission.caller} is over its rate limit of {item}; retry after {retry_s} s",
            retry_s,
            {"limit": str(item)},
        )

    def _check_concurrency(self, scope: Scope, admission: Admission) -> None:
        settings, caller = self.settings, admission.caller
        if self.in_flight.requests[caller] >= settings.max_concurrent_per_caller:
            _refuse(
                scope,
                f"{caller} has {settings.max_concurrent_per_caller} requests in progress, the most it may",
                _RETRY_CONCURRENT_S,
                {"max_concurrent_per_caller": settings.max_concurrent_per_caller},
            )
        if not admission.long_poll:
            return
        if self.in_flight.long_polls[caller] >= settings.max_long_polls_per_caller:
            _refuse(
                scope,
                f"{caller} holds {settings.max_long_polls_per_caller} long-polls open, the most it may",
                _RETRY_CONCURRENT_S,
                {"max_long_polls_per_caller": settings.max_long_polls_per_caller},
            )
        if self.in_flight.long_polls.total() >= settings.max_long_polls:
            _refuse(
                scope,
                f"this service holds {settings.max_long_polls} long-polls open, the most it takes",
                _RETRY_CONCURRENT_S,
                {"max_long_polls": settings.max_long_polls},
            )

    @contextlib.asynccontextmanager
    async def _holding(self, admission: Admission) -> AsyncIterator[None]:
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.in_flight.holding(self.in_flight.requests, admission.caller))
            if admission.long_poll:
                stack.enter_context(self.in_flight.holding(self.in_flight.long_polls, admission.caller))
            yield


def _limited(receive: Receive, limit: int) -> Receive:
    received = 0

    async def limited() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLargeError(size=received, limit=limit)
        return message

    return limited


def _route_of(scope: Scope, routes: Sequence[BaseRoute]) -> tuple[BaseRoute | None, dict[str, Any]]:
    """The route of `routes` (the app's API routes, their paths whole) that serves the request and its path
    parameters (None for an unknown path)."""
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            return route, dict(child.get("path_params", {}))
    return None, {}


def client_host(scope: Scope) -> str:
    client = scope.get("client")
    return f"ip:{client[0]}" if client else "ip:unknown"


def _refuse(scope: Scope, message: str, retry_s: int, detail: dict[str, Any]) -> NoReturn:
    log.warning(
        "request refused",
        extra={"code": "too_many_requests", "data": {"path": scope.get("path"), **detail}},
    )
    raise TooManyRequestsError(message, retry_after_s=retry_s, detail=detail)


async def answer_error(scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
    """Answer `exc`, raised before the app runs, as the app answers it when a route raises it: with the
    app's exception handler for the nearest class of `exc` (the lookup Starlette's own makes), so that one
    mapping of errors to answers serves both. An app without one lets `exc` through."""
    handlers = getattr(scope.get("app"), "exception_handlers", {})
    handler = next((handlers[c] for c in type(exc).__mro__ if c in handlers), None)
    if handler is None:
        raise exc
    response = handler(Request(scope, receive), exc)
    if inspect.isawaitable(response):
        response = await response
    await response(scope, receive, send)
