"""ASGI pieces the services share: a request-body limit that answers with the one `ErrorBody`."""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from protocol.messages import ErrorBody, ErrorCode

log = logging.getLogger("services.asgi")


class BodySizeLimit:
    """413 `payload_too_large` before a byte is read when `Content-Length` is over `max_bytes`, and as soon
    as a streamed (chunked) body grows past it, so no oversized body is ever buffered.

    The streamed case happens inside the route's body read, so it raises `refuse(message)`: an exception
    the service's own handlers already turn into its `ErrorBody`. (FastAPI's own limit answers with plain
    text, which would break the one-error-body contract.)
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, refuse: Callable[[str], Exception]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.refuse = refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "").strip()
        if declared.isdigit() and int(declared) > self.max_bytes:
            message = self._message(int(declared))
            log.warning(
                "request refused", extra={"code": "payload_too_large", "data": {"path": scope.get("path")}}
            )
            body = ErrorBody(code=ErrorCode.PAYLOAD_TOO_LARGE, message=message)
            await JSONResponse(body.model_dump(mode="json", exclude_none=True), status_code=413)(
                scope, receive, send
            )
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self.refuse(self._message(received))
            return message

        await self.app(scope, limited, send)

    def _message(self, size: int) -> str:
        return f"request body has at least {size} bytes, the limit is {self.max_bytes}"
