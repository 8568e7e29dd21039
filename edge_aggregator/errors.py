"""Why the edge refuses something: one exception class per `ErrorCode` it answers with.

Each carries its HTTP status; `http_errors` turns any of them into an `ErrorBody` in one place. The core
(`aggregator`, `ledger`) raises them and never deals in HTTP otherwise.
"""

from __future__ import annotations

from typing import ClassVar

from protocol.messages import ErrorCode


class EdgeError(Exception):
    """A request the edge refuses; `code` and `status` say why, `field` names the culprit when one does."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL
    status: ClassVar[int] = 500

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class PayloadTooLargeError(EdgeError):
    code = ErrorCode.PAYLOAD_TOO_LARGE
    status = 413


class InvalidRequestError(EdgeError):
    code = ErrorCode.INVALID_REQUEST
    status = 422


class UnknownFederationError(EdgeError):
    code = ErrorCode.UNKNOWN_FEDERATION
    status = 404


class UnauthenticatedError(EdgeError):
    code = ErrorCode.UNAUTHENTICATED
    status = 401


class BadSignatureError(EdgeError):
    code = ErrorCode.BAD_SIGNATURE
    status = 401


class WrongRoundError(EdgeError):
    code = ErrorCode.WRONG_ROUND
    status = 409


class RoundClosedError(EdgeError):
    code = ErrorCode.ROUND_CLOSED
    status = 409


class WrongBasisError(EdgeError):
    code = ErrorCode.WRONG_BASIS
    status = 409


class PlanMismatchError(EdgeError):
    """The upload was made under another plan than the one this edge holds for its round: the cloud served
    its hospitals different plans (or the hospital is not following the federation's)."""

    code = ErrorCode.PLAN_MISMATCH
    status = 409


class ForbiddenError(EdgeError):
    code = ErrorCode.FORBIDDEN
    status = 403


class ReplayError(EdgeError):
    code = ErrorCode.REPLAY
    status = 409


class DuplicateUploadError(EdgeError):
    code = ErrorCode.DUPLICATE_UPLOAD
    status = 409


class BadCiphertextError(EdgeError):
    code = ErrorCode.BAD_CIPHERTEXT
    status = 400


class SumFullError(EdgeError):
    """The round's sum already holds as many encryptions as the scheme can add without overflow."""

    code = ErrorCode.CONFLICT
    status = 409


class FederationEndedError(EdgeError):
    """The cloud said the federation is over (stopped, completed, budget spent): no round will open."""

    code = ErrorCode.FEDERATION_NOT_ACTIVE
    status = 410


class NotReadyError(EdgeError):
    """The edge has not enrolled with the cloud or fetched the federation's key yet (retry later)."""

    code = ErrorCode.INTERNAL
    status = 503
