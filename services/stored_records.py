"""Reading a record back from the `StateStore`: one that no longer parses (altered in the store, or written
before a bound existed) is copied to its quarantine key (`keyspace.quarantine_of`), logged as one JSON line
with the key and the reason (never the value), and reported as `StoredRecordError`: a 409
`stored_record_corrupt` at the route layer, never a raw `ValidationError` or `JSONDecodeError` turned 500 on
every request that reads it (issue 20, item 1).

`parse_record` is for a value a transaction read (it cannot write from inside); `read_record` and
`read_hash_records` read, parse and quarantine in one call. A list reader skips the bad entry
(`read_hash_records(..., skip=True)`) so that one corrupt record does not hide the others.

A record that is only bookkeeping (a counter, a history, a cache of what the store holds elsewhere: the
caller can start it afresh) is read with `read_record(..., bookkeeping=True)`, or inside a transaction
through `Discards`: one that does not parse is quarantined, removed (`discard`) and read as absent, so that
no later read stops at it again.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any, TypeVar, overload

from pydantic import BaseModel, TypeAdapter, ValidationError

from protocol.messages import ErrorCode
from services import keyspace
from services.errors import ServiceError
from services.store import StateStore

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
Reader = type[M] | TypeAdapter[T]
#: How long a quarantined copy is kept for the operator: as long as an edge keeps a finished round.
QUARANTINE_TTL_S = keyspace.EDGE_ROUND_TTL_S


class StoredRecordError(ServiceError):
    """A stored record that does not read back. `key` (and `field`, for a hash) name it; `reason` says why
    without quoting the value; `raw` is the value, for the quarantine copy."""

    status = 409
    default_code = ErrorCode.STORED_RECORD_CORRUPT

    def __init__(self, key: str, reason: str, *, raw: bytes, field: str | None = None) -> None:
        where = key if field is None else f"{key} field {field}"
        super().__init__(
            f"the stored record {where} does not read back ({reason}); it was quarantined",
            detail={"key": key} | ({"hash_field": field} if field is not None else {}),
        )
        self.key = key
        self.hash_field = field
        self.reason = reason
        self.raw = raw


def describe(error: ValueError) -> str:
    """Why a value does not parse, naming each field at fault and never its value (a record may hold
    anything: a token digest, a hospital's numbers)."""
    if isinstance(error, ValidationError):
        parts = [
            f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}"
            for e in error.errors(include_input=False, include_url=False, include_context=False)
        ]
        return "; ".join(parts[:5])
    return type(error).__name__


@overload
def parse_record(raw: bytes, *, key: str, reader: type[M], field: str | None = None) -> M: ...
@overload
def parse_record(raw: bytes, *, key: str, reader: TypeAdapter[T], field: str | None = None) -> T: ...
def parse_record(raw: bytes, *, key: str, reader: Any, field: str | None = None) -> Any:
    """`raw` parsed by `reader` (a model class or a `TypeAdapter`); `StoredRecordError` if it does not."""
    try:
        if isinstance(reader, TypeAdapter):
            return reader.validate_json(raw)
        return reader.model_validate_json(raw)
    except ValueError as e:  # pydantic's ValidationError is a ValueError
        raise StoredRecordError(key, describe(e), raw=raw, field=field) from e


async def quarantine(store: StateStore, error: StoredRecordError) -> str:
    """Copy the record `error` names to its quarantine key (for `QUARANTINE_TTL_S`) and log it; the key."""
    target = keyspace.quarantine_of(error.key, error.hash_field)
    await store.set(target, error.raw, ttl_s=QUARANTINE_TTL_S)
    log.error(
        "a stored record does not read back: quarantined",
        extra={
            "data": {
                "key": error.key,
                "hash_field": error.hash_field,
                "quarantine": target,
                "error": error.reason,
            }
        },
    )
    return target


async def discard(store: StateStore, error: StoredRecordError) -> str:
    """Quarantine the bookkeeping record `error` names (a plain key's), then remove it unless it was
    rewritten meanwhile, and log that it starts afresh; the quarantine key."""
    target = await quarantine(store, error)
    removed = await store.delete_if_equals(error.key, error.raw)
    log.warning(
        "a bookkeeping record that does not read back was read as absent: it starts afresh",
        extra={"data": {"key": error.key, "quarantine": target, "removed": removed}},
    )
    return target


@dataclasses.dataclass
class Discards:
    """The bookkeeping records a transaction read as absent because they do not parse (`parse`); `settle`
    discards them once it is done (a transaction writes nothing beside its updates). `clear` at the start of
    each run of the transaction's function, which the store may run again."""

    errors: dict[str, StoredRecordError] = dataclasses.field(default_factory=dict)

    def clear(self) -> None:
        self.errors.clear()

    def parse(self, raw: bytes | None, *, key: str, reader: Any, empty: Any) -> Any:
        """`raw` parsed by `reader`; `empty` if there is none or it does not parse (then kept to discard)."""
        if raw is None:
            return empty
        try:
            return parse_record(raw, key=key, reader=reader)
        except StoredRecordError as e:
            self.errors[key] = e
            return empty

    async def settle(self, store: StateStore) -> None:
        for error in self.errors.values():
            await discard(store, error)
        self.errors.clear()


@overload
async def read_record(
    store: StateStore, key: str, reader: type[M], *, bookkeeping: bool = False
) -> M | None: ...
@overload
async def read_record(
    store: StateStore, key: str, reader: TypeAdapter[T], *, bookkeeping: bool = False
) -> T | None: ...
async def read_record(store: StateStore, key: str, reader: Any, *, bookkeeping: bool = False) -> Any:
    """The record at `key` parsed by `reader`, None if there is none; quarantined, then `StoredRecordError`,
    if it does not parse. `bookkeeping`: a record the caller can start afresh; one that does not parse is
    discarded (`discard`) and read as None instead."""
    raw = await store.get(key)
    if raw is None:
        return None
    if not bookkeeping:
        return await _parsed(store, raw, key=key, reader=reader)
    discards = Discards()
    record = discards.parse(raw, key=key, reader=reader, empty=None)
    await discards.settle(store)
    return record


@overload
async def read_hash_record(store: StateStore, key: str, field: str, reader: type[M]) -> M | None: ...
@overload
async def read_hash_record(store: StateStore, key: str, field: str, reader: TypeAdapter[T]) -> T | None: ...
async def read_hash_record(store: StateStore, key: str, field: str, reader: Any) -> Any:
    """`read_record` for one field of the hash `key`."""
    raw = await store.hget(key, field)
    return None if raw is None else await _parsed(store, raw, key=key, reader=reader, field=field)


async def read_hash_records(
    store: StateStore,
    key: str,
    reader: type[M],
    *,
    skip: bool,
    skipped: Callable[[int], None] | None = None,
) -> dict[str, M]:
    """Every field of the hash `key` parsed by `reader`, by field name. A field that does not parse is
    quarantined; then `skip` leaves it out (a list: the others still show, `skipped(count)` is told how many
    were left out), else `StoredRecordError` is raised."""
    records: dict[str, M] = {}
    left_out = 0
    for field, raw in sorted((await store.hgetall(key)).items()):
        try:
            records[field] = await _parsed(store, raw, key=key, reader=reader, field=field)
        except StoredRecordError:
            if not skip:
                raise
            left_out += 1
    if left_out and skipped is not None:
        skipped(left_out)
    return records


async def _parsed(store: StateStore, raw: bytes, *, key: str, reader: Any, field: str | None = None) -> Any:
    try:
        return parse_record(raw, key=key, reader=reader, field=field)
    except StoredRecordError as e:
        await quarantine(store, e)
        raise


async def report(store: StateStore, error: Exception, *, what: str, extra: dict[str, Any]) -> bool:
    """For a background loop's `except`: quarantine and log a `StoredRecordError` (one JSON line, no
    traceback) and say True; False for any other error (the caller logs it its own way)."""
    if not isinstance(error, StoredRecordError):
        return False
    target = await quarantine(store, error)
    log.error(
        "%s stopped at a stored record that does not read back: %s",
        what,
        error.key,
        extra={**extra, "code": error.code.value, "data": {"key": error.key, "quarantine": target}},
    )
    return True
