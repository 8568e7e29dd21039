"""ASGI pieces the services share: the one place where errors become `ErrorBody` answers."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse
from starlette.routing import Match

from protocol.messages import ErrorBody, ErrorCode
from services.errors import ServiceError
from services.limits import BodyTooLargeError
from services.store import StateStore, StoreError
from services.stored_records import StoredRecordError, quarantine

log = logging.getLogger("services.asgi")

# The codes of the HTTP exceptions Starlette raises itself (an unknown path, a wrong method, ...).
_HTTP_CODES = {
    401: ErrorCode.UNAUTHENTICATED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
}
_RETRY_AFTER_S = "2"


def install_error_handlers(
    app: FastAPI,
    *,
    log: logging.Logger,
    invalid_request: Callable[[Sequence[Any]], ServiceError],
    internal_error: Callable[[Exception], ServiceError],
    omit_nulls: bool,
) -> None:
    """Answer every 4xx/5xx of `app` with an `ErrorBody`: a `ServiceError` with its own status, code and
    headers; a request that fails validation with `invalid_request(errors)` (the service's wording); a state
    store that fails with 503 `store_unavailable`; anything else with `internal_error(exc)`, logged.

    `omit_nulls` leaves an unset `field` or `detail` out of the body (the cloud's bodies) instead of sending
    it as `null` (the edge's); clients read both the same.
    """
    answers = _ErrorAnswers(log, invalid_request, internal_error, omit_nulls)
    app.add_exception_handler(StoredRecordError, answers.stored_record_error)
    app.add_exception_handler(ServiceError, answers.service_error)
    app.add_exception_handler(RequestValidationError, answers.validation_error)
    app.add_exception_handler(StarletteHTTPException, answers.http_error)
    app.add_exception_handler(StoreError, answers.store_error)
    app.add_exception_handler(Exception, answers.unexpected)


@dataclass(frozen=True)
class _ErrorAnswers:
    log: logging.Logger
    invalid_request: Callable[[Sequence[Any]], ServiceError]
    internal_error: Callable[[Exception], ServiceError]
    omit_nulls: bool

    async def service_error(self, request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServiceError)
        # A 500 is a fault to look into; a 503 (`Retry-After`) passes on its own.
        if exc.status == 500:
            self.log.error(
                "%s %s: %s", request.method, request.url.path, exc.message, extra={"code": exc.code}
            )
        return self._refusal(exc)

    async def stored_record_error(self, request: Request, exc: Exception) -> JSONResponse:
        """409 `stored_record_corrupt`, the record copied to its quarantine key first (a read inside a
        transaction cannot write; the app's lifespan puts its store on `app.state.store`)."""
        assert isinstance(exc, StoredRecordError)
        store = getattr(request.app.state, "store", None)
        if isinstance(store, StateStore):
            await quarantine(store, exc)
        return self._refusal(exc)

    async def validation_error(self, request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return self._refusal(self.invalid_request(exc.errors()))

    async def http_error(self, request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, ErrorCode.INVALID_REQUEST)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        detail = {"limit": exc.limit} if isinstance(exc, BodyTooLargeError) else None
        return self._answer(exc.status_code, code, str(exc.detail), headers=headers, detail=detail)

    async def store_error(self, request: Request, exc: Exception) -> JSONResponse:
        # A write that moves several keys does so in one transaction: either none of it was written and
        # the same request may be sent again, or all of it was and the retry is answered as a duplicate.
        self.log.error("%s %s: state store failed: %s", request.method, request.url.path, exc)
        return self._answer(
            503,
            ErrorCode.STORE_UNAVAILABLE,
            f"state store unavailable: {exc}",
            headers={"Retry-After": _RETRY_AFTER_S},
        )

    async def unexpected(self, request: Request, exc: Exception) -> JSONResponse:
        self.log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return self._refusal(self.internal_error(exc))

    def _refusal(self, error: ServiceError) -> JSONResponse:
        return self._answer(
            error.status,
            error.code,
            error.message,
            field=error.field,
            detail=error.detail,
            headers=error.headers,
        )

    def _answer(
        self,
        status: int,
        code: ErrorCode,
        message: str,
        *,
        field: str | None = None,
        detail: dict[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> JSONResponse:
        body = ErrorBody(code=code, message=message[:4000], field=field, detail=detail)
        return JSONResponse(
            status_code=status,
            content=body.model_dump(mode="json", exclude_none=self.omit_nulls),
            headers=dict(headers) if headers else None,
        )


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at the request's path (for a 405's `Allow`). Starlette's own 405 names
    the methods of the first route whose path matches only: `/federations`, two routes (GET and POST),
    answered `Allow: POST`."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        # A method no route serves: a route whose path matches answers PARTIAL.
        match, _ = route.matches({**request.scope, "method": "\x00"})
        if match is Match.PARTIAL:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)
