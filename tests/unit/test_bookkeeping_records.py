"""A bookkeeping record that does not read back (`services.stored_records`: `read_record(...,
bookkeeping=True)` and `Discards`) is quarantined, removed unless rewritten meanwhile, and read as absent,
on both stores: no later read stops at it again (issue 20, item 1)."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter

from services import keyspace
from services.store import StateStore, Updates
from services.stored_records import Discards, StoredRecordError, read_record

pytestmark = pytest.mark.anyio

COUNTS = TypeAdapter(dict[str, int])
KEY = "cloud:fed-1:ranks"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_bookkeeping_record_that_does_not_parse_is_quarantined_removed_and_read_as_absent(
    state_store: StateStore,
) -> None:
    # Prepare
    await state_store.set(KEY, b"{")

    # Execute
    first = await read_record(state_store, KEY, COUNTS, bookkeeping=True)
    again = await read_record(state_store, KEY, COUNTS, bookkeeping=True)

    # Assert
    assert first is None and again is None
    assert await state_store.get(KEY) is None
    assert await state_store.get(keyspace.quarantine_of(KEY)) == b"{"


async def test_any_other_record_that_does_not_parse_still_raises_and_stays(state_store: StateStore) -> None:
    await state_store.set(KEY, b"{")

    with pytest.raises(StoredRecordError):
        await read_record(state_store, KEY, COUNTS)

    assert await state_store.get(KEY) == b"{"
    assert await state_store.get(keyspace.quarantine_of(KEY)) == b"{"


async def test_a_transaction_reads_a_bad_bookkeeping_record_as_empty_and_a_rewrite_meanwhile_is_kept(
    state_store: StateStore,
) -> None:
    """What a transaction read as absent is discarded once it is done, unless the key holds another value by
    then: a writer that repaired it meanwhile keeps its value."""
    # Prepare
    await state_store.set(KEY, b"[1]")
    discards = Discards()
    seen: list[dict[str, int]] = []

    def read(current: dict[str, bytes | None]) -> Updates:
        discards.clear()
        seen.append(discards.parse(current[KEY], key=KEY, reader=COUNTS, empty={}))
        return {}

    # Execute
    await state_store.transaction([KEY], read)
    await state_store.set(KEY, b'{"client-a": 4}')
    await discards.settle(state_store)

    # Assert
    assert seen == [{}]
    assert await state_store.get(KEY) == b'{"client-a": 4}'
    assert await state_store.get(keyspace.quarantine_of(KEY)) == b"[1]"
    assert await read_record(state_store, KEY, COUNTS, bookkeeping=True) == {"client-a": 4}
