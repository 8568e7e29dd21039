"""The folder's crash points: stored uploads added into the round's sum off the request path, by one folder at
a time, with a checkpoint that names what the sum holds.

Properties: a folder stopped anywhere (before it ran, with uploads added in memory, right after a checkpoint)
loses no stored upload and counts none twice: its successor starts from the last checkpoint and ends with
the exact sum of every stored upload; a folder whose lease another took writes nothing; a stored upload that
no longer reads back is taken out and counted dropped. A stop is an injected fault at a named step
(`FoldStep`), not a sleep: the folder raises out of its work as a killed process would stop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
import pytest

from edge_aggregator.folder import FoldStep, Step
from edge_aggregator.ledger import RoundLedger
from protocol.messages import DropReason
from services import keyspace
from tests.edge.harness import EID, FID, World

pytestmark = pytest.mark.anyio
T = TypeVar("T")
ATOL = 1e-5


class KilledError(Exception):
    """The injected fault: the folder stops where a kill -9 would have stopped it."""


def kill_at(step: FoldStep, *, after: int) -> Step:
    """A step hook that raises `KilledError` the `after`-th time the folder reaches `step`."""
    seen = 0

    async def hook(reached: FoldStep) -> None:
        nonlocal seen
        if reached is step:
            seen += 1
            if seen == after:
                raise KilledError(f"{step.value} #{after}")

    return hook


async def stored_round(world: World) -> RoundLedger:
    """Every hospital's upload for round 0 accepted and stored, none folded: the edge killed between storing
    and folding."""
    ledger = world.ledger()
    for hospital in world.hospitals.values():
        await ledger.add(world.update(hospital), capacity=world.public.max_summands)
    return ledger


def expected(world: World, clients: Sequence[str] | None = None) -> np.ndarray:
    names = sorted(world.hospitals) if clients is None else clients
    return np.sum([world.hospitals[c].vector for c in names], axis=0)


async def test_uploads_stored_but_never_folded_are_folded_by_the_next_folder(
    make_world: Callable[..., World],
) -> None:
    # Prepare: six uploads stored; the process that stored them never folded them.
    world = make_world(clients=6)
    ledger = await stored_round(world)
    assert not await world.has_sum()
    assert await ledger.unfolded(0, 0) == sorted(world.hospitals)

    # Execute: a folder of a restarted process.
    settled = await world.folder().settle(0)

    # Assert: every stored upload is in the sum, once.
    assert settled and await ledger.unfolded(0, 0) == []
    np.testing.assert_allclose(await world.stored_sum(), expected(world), atol=ATOL)


@pytest.mark.parametrize(
    ("step", "after", "checkpointed"),
    [
        (FoldStep.ADDED, 2, 0),  # mid-batch, before any checkpoint
        (FoldStep.ADDED, 6, 4),  # mid-way through the second batch
        (FoldStep.CHECKPOINTED, 1, 4),  # right after the first checkpoint
    ],
)
async def test_a_folder_killed_anywhere_loses_nothing_and_counts_nothing_twice(
    make_world: Callable[..., World], step: FoldStep, after: int, checkpointed: int
) -> None:
    # Prepare: seven stored uploads, folded in batches of 4 by a folder that is killed at `step`.
    world = make_world(clients=7)
    ledger = await stored_round(world)
    with pytest.raises(KilledError):
        await world.folder(step=kill_at(step, after=after)).settle(0)
    names = sorted(world.hospitals)
    # What the store holds after the kill: the last checkpoint's sum, naming exactly what it holds.
    assert await ledger.unfolded(0, 0) == names[checkpointed:]
    if checkpointed:
        as_stored = world.decrypt(await world.store.get(keyspace.edge_sum(EID, FID, 0)) or b"")
        np.testing.assert_allclose(as_stored, expected(world, names[:checkpointed]), atol=ATOL)

    # Execute: its successor.
    assert await world.folder().settle(0)

    # Assert: the exact sum of the seven uploads.
    assert await ledger.unfolded(0, 0) == []
    np.testing.assert_allclose(await world.stored_sum(), expected(world), atol=ATOL)


async def test_one_folder_per_round_and_a_folder_that_lost_its_lease_writes_nothing(
    make_world: Callable[..., World],
) -> None:
    # Prepare: five stored uploads; another replica holds round 0's fold lease.
    world = make_world(clients=5)
    ledger = await stored_round(world)
    other = await ledger.take_fold_lease(0, 0, ttl_s=30.0, pause=lambda _: _never())
    assert other is not None

    # Execute / Assert: this replica's folder leaves the round to it.
    assert not await world.folder().settle(0)
    assert not await world.has_sum()

    # Prepare: the lease lapses while a slow folder has added uploads in memory; a second folder takes over.
    await world.store.delete(other.key)
    successor: list[bool] = []

    async def overtaken(reached: FoldStep) -> None:
        if reached is FoldStep.ADDED and not successor:
            await world.store.delete(keyspace.edge_fold_lease(EID, FID, 0, 0))
            successor.append(await world.folder().settle(0))

    # Execute: the slow folder goes on after its successor folded everything.
    slow = await world.folder(step=overtaken).settle(0)

    # Assert: the successor folded every upload once; the slow folder's checkpoint was refused.
    assert successor == [True] and not slow
    np.testing.assert_allclose(await world.stored_sum(), expected(world), atol=ATOL)
    assert await ledger.unfolded(0, 0) == []


async def test_a_stored_upload_that_no_longer_reads_back_is_taken_out_and_counted_dropped(
    make_world: Callable[..., World],
) -> None:
    # Prepare: four stored uploads, one altered in the store after it was acknowledged.
    world = make_world(clients=4)
    ledger = await stored_round(world)
    await world.store.set(keyspace.edge_upload(EID, FID, 0, "hosp-b"), b"not a ciphertext")

    # Execute
    assert await world.folder().settle(0)

    # Assert: the sum holds the three others; the fourth is out of the manifest and counted dropped.
    others = ["hosp-a", "hosp-c", "hosp-d"]
    np.testing.assert_allclose(await world.stored_sum(), expected(world, others), atol=ATOL)
    assert sorted(await ledger.manifest(0)) == others
    assert await ledger.dropped(0) == {DropReason.RECORD_QUARANTINED: 1}


async def _never() -> None:
    """A lease renewal pause that never ends: the test drives the lease by hand."""
    await asyncio.Event().wait()


async def test_a_stored_sum_that_no_longer_reads_back_is_quarantined_and_its_uploads_summed_again(
    make_world: Callable[..., World],
) -> None:
    # Prepare: three uploads folded; the sum is then altered in the store; a fourth upload is stored.
    world = make_world(clients=4)
    ledger = world.ledger()
    names = sorted(world.hospitals)
    for name in names[:3]:
        await ledger.add(world.update(world.hospitals[name]), capacity=world.public.max_summands)
    assert await world.folder().settle(0)
    await world.store.set(keyspace.edge_sum(EID, FID, 0), b"not a ciphertext")
    await ledger.add(world.update(world.hospitals[names[3]]), capacity=world.public.max_summands)

    # Execute
    assert await world.folder().settle(0)

    # Assert: the altered sum is kept in quarantine alone; the stored uploads are summed again, none dropped.
    assert sorted(await ledger.manifest(0)) == names
    np.testing.assert_allclose(await world.stored_sum(), expected(world), atol=ATOL)
    assert await ledger.dropped(0) == {}
    assert (
        await world.store.get(keyspace.quarantine_of(keyspace.edge_sum(EID, FID, 0))) == b"not a ciphertext"
    )
