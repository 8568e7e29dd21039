"""The cloud's refusals: its own `ServiceError` classes, and how it words a request that fails validation
and a fault it did not foresee (`services.asgi.install_error_handlers` answers with them).

The refusals both services answer with (`InvalidRequestError`, `ForbiddenError`, `FederationEndedError`)
are in `services.errors`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from protocol.messages import ErrorCode
from services.errors import InvalidRequestError, ServiceError

# Where a request part sits in a validation error's location; the field is what follows it.
_LOCATIONS = frozenset({"body", "query", "path", "header", "cookie"})


class BadRequestError(ServiceError):
    status = 400
    default_code = ErrorCode.INVALID_REQUEST


class UnauthenticatedError(ServiceError):
    status = 401
    default_code = ErrorCode.UNAUTHENTICATED
    headers: ClassVar[Mapping[str, str]] = {"WWW-Authenticate": "Bearer"}


class NotFoundError(ServiceError):
    status = 404
    default_code = ErrorCode.NOT_FOUND


class ConflictError(ServiceError):
    status = 409
    default_code = ErrorCode.CONFLICT


class VersionPrunedError(ServiceError):
    """An adapter version whose vector retention deleted (`cloud_server.retention`); its meta stays."""

    status = 410
    default_code = ErrorCode.VERSION_PRUNED


def invalid_request(errors: Sequence[Any]) -> InvalidRequestError:
    """The first failing field and its message; `detail.errors` lists up to 20 failures by location and
    message only (the input may be a large or secret value)."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    field = _field_of(first.get("loc", ()))
    message = f"{field}: {first.get('msg')}" if field else str(first.get("msg"))
    summary = [
        {"field": _field_of(e.get("loc", ())), "message": str(e.get("msg")), "type": str(e.get("type"))}
        for e in errors[:20]
    ]
    return InvalidRequestError(message, field=field, detail={"errors": summary})


def internal_error(exc: Exception) -> ServiceError:
    return ServiceError(f"internal error ({type(exc).__name__}); see the cloud's log")


def _field_of(loc: Sequence[Any]) -> str | None:
    parts = [str(p) for p in loc]
    if parts and parts[0] in _LOCATIONS:
        parts = parts[1:]
    return ".".join(parts) or None
