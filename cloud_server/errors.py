"""The cloud's typed errors. Services raise them; `handlers.py` turns them into an `ErrorBody` response.

Each class fixes an HTTP status and a default `ErrorCode`; a raise site may name a more precise code
(`UnauthenticatedError(..., code=ErrorCode.BAD_SIGNATURE)`) and the request field at fault.
"""

from __future__ import annotations

from typing import Any, ClassVar

from protocol.messages import ErrorCode


class CloudError(Exception):
    """Base of every error the cloud answers with a 4xx/5xx."""

    status: ClassVar[int] = 500
    default_code: ClassVar[ErrorCode] = ErrorCode.INTERNAL

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


class BadRequestError(CloudError):
    status = 400
    default_code = ErrorCode.INVALID_REQUEST


class UnauthenticatedError(CloudError):
    status = 401
    default_code = ErrorCode.UNAUTHENTICATED


class ForbiddenError(CloudError):
    status = 403
    default_code = ErrorCode.FORBIDDEN


class NotFoundError(CloudError):
    status = 404
    default_code = ErrorCode.NOT_FOUND


class ConflictError(CloudError):
    status = 409
    default_code = ErrorCode.CONFLICT


class NotActiveError(CloudError):
    """The federation has ended (completed, stopped, budget exhausted): nothing more will happen in it."""

    status = 410
    default_code = ErrorCode.FEDERATION_NOT_ACTIVE


class UnprocessableError(CloudError):
    """Well-formed but refused on its content (a manifest with too few clients, a spec with no targets)."""

    status = 422
    default_code = ErrorCode.INVALID_REQUEST
