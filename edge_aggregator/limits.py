"""Request body limit, enforced before anything parses the body (the first of the upload checks).

A declared `Content-Length` above the limit is answered 413 at once; a body without one (chunked) is
counted as it streams and refused as soon as it passes the limit, so no oversized body is ever buffered.
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge_aggregator.errors import PayloadTooLargeError
from edge_aggregator.http_errors import error_response

log = logging.getLogger("edge_aggregator")


class BodySizeLimit:
    """ASGI middleware: refuse request bodies larger than `max_bytes` with 413 `payload_too_large`."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            error = PayloadTooLargeError(self._message(declared))
            log.warning(
                "request refused",
                extra={"code": error.code.value, "status": error.status, "data": {"path": scope.get("path")}},
            )
            await error_response(error)(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise PayloadTooLargeError(self._message(received))
            return message

        await self.app(scope, limited, send)

    def _message(self, size: int) -> str:
        return f"request body has at least {size} bytes, the limit is {self.max_bytes}"


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None
