"""The base of every error a service answers a request with: an HTTP status and a machine-readable code.

A tier subclasses `ServiceError` where a refusal means something of its own (the edge's `WrongRoundError`,
the cloud's `NotFoundError`); each class fixes its `status` and `default_code`, and a raise site may name
a more precise code (`UnauthenticatedError(..., code=ErrorCode.BAD_SIGNATURE)`) and the request field at
fault. `services.asgi.install_error_handlers` turns any of them into an `ErrorBody`, in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from protocol.messages import ErrorCode


class ServiceError(Exception):
    """A request a service refuses: `status` and `code` say why, `field` names the culprit when one does."""

    status: ClassVar[int] = 500
    default_code: ClassVar[ErrorCode] = ErrorCode.INTERNAL
    #: Headers the answer carries (`Retry-After` on a refusal that passes, `WWW-Authenticate` on a 401).
    headers: ClassVar[Mapping[str, str]] = {}

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode | None = None,
        field: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.field = field
        self.detail = detail


class InvalidRequestError(ServiceError):
    """Well-formed but refused on its content (a field out of range, a manifest with too few clients)."""

    status = 422
    default_code = ErrorCode.INVALID_REQUEST


class ForbiddenError(ServiceError):
    status = 403
    default_code = ErrorCode.FORBIDDEN


class FederationEndedError(ServiceError):
    """The federation is over (stopped, completed, budget spent): nothing more will happen in it."""

    status = 410
    default_code = ErrorCode.FEDERATION_NOT_ACTIVE
