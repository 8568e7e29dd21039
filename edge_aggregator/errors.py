"""Why the edge refuses something: one `ServiceError` class per `ErrorCode` it answers with, and how it
words a request that fails validation and a fault it did not foresee.

`services.asgi.install_error_handlers` turns them into an `ErrorBody`. The core (`aggregator`, `ledger`)
raises them and never deals in HTTP otherwise. The refusals both services answer with
(`InvalidRequestError`, `ForbiddenError`, `FederationEndedError`) are in `services.errors`. One error is
not a refusal: `UnreadableSumError`, which the ledger turns into a quarantine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from pydantic import ValidationError

from protocol.messages import ErrorCode
from services.errors import InvalidRequestError, ServiceError


class UnknownFederationError(ServiceError):
    status = 404
    default_code = ErrorCode.UNKNOWN_FEDERATION


class UnauthenticatedError(ServiceError):
    status = 401
    default_code = ErrorCode.UNAUTHENTICATED


class BadSignatureError(ServiceError):
    status = 401
    default_code = ErrorCode.BAD_SIGNATURE


class WrongRoundError(ServiceError):
    status = 409
    default_code = ErrorCode.WRONG_ROUND


class RoundNotOpenYetError(ServiceError):
    """An upload for a round after this edge's plan: the cloud has opened it (the hospital holds its plan)
    but the edge could not fetch that plan yet. The edge asked the cloud for it before answering; retry."""

    status = 409
    default_code = ErrorCode.ROUND_NOT_OPEN_YET
    headers: ClassVar[Mapping[str, str]] = {"Retry-After": "2"}


class RoundClosedError(ServiceError):
    status = 409
    default_code = ErrorCode.ROUND_CLOSED


class WrongBasisError(ServiceError):
    status = 409
    default_code = ErrorCode.WRONG_BASIS


class PlanMismatchError(ServiceError):
    """The upload was made under another plan than the one this edge holds for its round: the cloud served
    its hospitals different plans (or the hospital is not following the federation's)."""

    status = 409
    default_code = ErrorCode.PLAN_MISMATCH


class ReplayError(ServiceError):
    status = 409
    default_code = ErrorCode.REPLAY


class DuplicateUploadError(ServiceError):
    status = 409
    default_code = ErrorCode.DUPLICATE_UPLOAD


class BadCiphertextError(ServiceError):
    status = 400
    default_code = ErrorCode.BAD_CIPHERTEXT


class SumFullError(ServiceError):
    """The round's sum already holds as many encryptions as the scheme can add without overflow."""

    status = 409
    default_code = ErrorCode.CONFLICT


class UnreadableSumError(ValueError):
    """A round's stored running sum does not deserialise under the federation's key (altered in the store,
    or a truncated write): not the uploading hospital's fault. `RoundLedger` moves it to quarantine with its
    manifest and the round goes on from an empty sum; it never reaches a route."""


class UnsettledError(ValueError):
    """A round's stored sum no longer holds every upload its manifest names when the forward reads it (a sum
    or checkpoint altered in the store after the round settled, quarantined by that read): the forward waits
    for the folder to sum the uploads again; it never reaches a route."""


class MaskingOffError(ServiceError):
    """The federation does not mask below the encryption: it has no masking stages."""

    status = 404
    default_code = ErrorCode.NOT_FOUND


class WrongCohortError(ServiceError):
    """A masking message names another cohort than this edge's for the path's round."""

    status = 409
    default_code = ErrorCode.WRONG_COHORT


class NotInCohortError(ServiceError):
    """The hospital is not among those the masking stage is for (it missed an earlier stage)."""

    status = 403
    default_code = ErrorCode.NOT_IN_COHORT


class StagePendingError(ServiceError):
    """The masking stage asked for (or the one a message answers) has not closed yet: ask again."""

    status = 409
    default_code = ErrorCode.STAGE_PENDING
    headers: ClassVar[Mapping[str, str]] = {"Retry-After": "2"}


class StageClosedError(ServiceError):
    status = 409
    default_code = ErrorCode.STAGE_CLOSED


class KeyInUseError(ServiceError):
    """An advert names an X25519 key another hospital of the cohort advertised."""

    status = 409
    default_code = ErrorCode.CONFLICT


class CohortFailedError(ServiceError):
    """The round's masking cohort cannot unmask (too few hospitals, or shares that do not rebuild)."""

    status = 409
    default_code = ErrorCode.COHORT_FAILED


class NotReadyError(ServiceError):
    """The edge has not enrolled with the cloud or fetched the federation's key yet (retry later)."""

    status = 503
    default_code = ErrorCode.INTERNAL
    headers: ClassVar[Mapping[str, str]] = {"Retry-After": "2"}


def invalid_request(errors: Sequence[Any]) -> InvalidRequestError:
    """An `InvalidRequestError` naming the first failing field (never echoing the input: it may be huge)."""
    if not errors:
        return InvalidRequestError("request is not valid")
    first = errors[0]
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    field = ".".join(loc) or None
    more = f" ({len(errors) - 1} more problems)" if len(errors) > 1 else ""
    where = f"{field}: " if field else ""
    return InvalidRequestError(f"{where}{first.get('msg', 'invalid')}{more}", field=field)


def from_validation_error(error: ValidationError) -> InvalidRequestError:
    return invalid_request(error.errors(include_input=False, include_url=False))


def internal_error(exc: Exception) -> ServiceError:
    return ServiceError("internal error; see the edge's log")
