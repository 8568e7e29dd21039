"""A masking cohort at the edge, end to end over HTTP: ten real `MaskingClient`s, 30% dropping at one stage,
and the edge's forwarded aggregate unmasks (with its `mask_correction`) to the survivors' exact sum.

The expected sum is the plain sum of the survivors' vectors, computed here; packed Paillier rounds each
value to the nearest quantisation step, so the decoded sum of `count` hospitals is within
`count * step / 2` of it (plus float64 rounding, `PaillierParams.encoding_error`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from protocol.crypto import PaillierParams
from protocol.secagg import Stage
from services import keyspace
from services.identity import verify
from services.store import MemoryStore
from tests.edge.harness import EID, FID, World, running_edge, until
from tests.edge.masking_cohort import HOSPITALS, STAGE_S, HttpCohort, unmasked_sum

pytestmark = pytest.mark.anyio

DROPPED = {"hosp-01", "hosp-04", "hosp-07"}  # 30% of the cohort
STAGES = ("advertise", "share", "upload", "consent", "unmask")


def alive(stage: str, drop_at: str) -> list[str]:
    """Who takes part in `stage` when `DROPPED` stop at `drop_at` (and do nothing from then on)."""
    if STAGES.index(stage) >= STAGES.index(drop_at):
        return [c for c in HOSPITALS if c not in DROPPED]
    return list(HOSPITALS)


def tolerance(world: World, count: int) -> float:
    params = world.spec.he
    assert isinstance(params, PaillierParams)
    return count * params.encoding_error


@pytest.mark.parametrize("drop_at", STAGES)
async def test_thirty_percent_dropping_at_one_stage_forwards_the_survivors_exact_sum(
    make_masking_world: Callable[..., World], drop_at: str
) -> None:
    # Prepare: ten hospitals, k = 3, quorum 1.0; three of them stop at `drop_at`.
    world = make_masking_world()
    survivors = alive("upload", drop_at)
    expected = np.sum([world.hospitals[c].vector for c in survivors], axis=0)

    async with running_edge(world) as edge:
        cohort = HttpCohort(world, edge)
        # Execute: each stage closes when everyone it waits for has posted, or at its timeout.
        await cohort.advertise(alive("advertise", drop_at))
        if drop_at == "advertise":
            pending = await cohort.read("hosp-00", Stage.ROSTER)
            assert (pending.status_code, pending.json()["code"]) == (409, "stage_pending")
            assert pending.headers["Retry-After"]
            await cohort.timeout()
        await cohort.share(alive("share", drop_at))
        if drop_at == "share":
            await cohort.timeout()
        await cohort.upload(survivors)
        if drop_at == "upload":  # the round waits for every hospital that shared, then its deadline
            world.clock.advance(60)
        await edge.core.tick()
        await cohort.consent(alive("consent", drop_at))
        if drop_at == "consent":
            await cohort.timeout()
        await cohort.unmask(alive("unmask", drop_at))
        if drop_at == "unmask":
            await cohort.timeout()
        await edge.core.tick()
        await until(lambda: len(world.cloud.delivered) == 1, what="the forward")

    # Assert: one signed aggregate of the survivors, whose masks cancel with the correction.
    aggregate = world.cloud.delivered[f"{FID}:0:{EID}"]
    assert [c.client_id for c in aggregate.contributions] == survivors
    verify(world.cloud.edge_public_key(EID), aggregate.signing_payload(), aggregate.signature)
    total = unmasked_sum(world.secret, aggregate)
    assert np.max(np.abs(total - expected)) <= tolerance(world, len(survivors))
    assert len(world.cloud.attempts) == 1


async def test_an_edge_restarted_between_every_stage_loses_nothing(
    make_masking_world: Callable[..., World],
) -> None:
    # Prepare: hosp-09 never advertises (so the roster closes at its timeout, counted from before the
    # restart), hosp-08 shares but never uploads, hosp-07 uploads but never answers.
    world = make_masking_world()
    advertisers = HOSPITALS[:9]
    uploaders = HOSPITALS[:8]
    answerers = HOSPITALS[:7]
    expected = np.sum([world.hospitals[c].vector for c in uploaders], axis=0)

    async with running_edge(world) as edge:
        cohort = HttpCohort(world, edge)
        await cohort.advertise(advertisers)
    world.clock.advance(STAGE_S)
    async with running_edge(world) as edge:
        cohort.edge = edge
        await edge.core.tick()
        await cohort.share(advertisers)
    async with running_edge(world) as edge:
        cohort.edge = edge
        await cohort.upload(uploaders)
    world.clock.advance(60)
    async with running_edge(world) as edge:
        cohort.edge = edge
        await edge.core.tick()
        await cohort.consent(uploaders)
    async with running_edge(world) as edge:
        cohort.edge = edge
        await cohort.unmask(answerers)
    world.clock.advance(STAGE_S)
    async with running_edge(world) as edge:
        cohort.edge = edge
        await edge.core.tick()
        await until(lambda: len(world.cloud.delivered) == 1, what="the forward after the restarts")

    aggregate = world.cloud.delivered[f"{FID}:0:{EID}"]
    assert [c.client_id for c in aggregate.contributions] == uploaders
    total = unmasked_sum(world.secret, aggregate)
    assert np.max(np.abs(total - expected)) <= tolerance(world, len(uploaders))


async def test_too_few_adverts_fail_the_cohort_and_nothing_is_forwarded(
    make_masking_world: Callable[..., World],
) -> None:
    world = make_masking_world()

    async with running_edge(world) as edge:
        cohort = HttpCohort(world, edge)
        await cohort.advertise(HOSPITALS[:2])  # k = 3
        await cohort.timeout()
        roster = await cohort.read("hosp-00", Stage.ROSTER)
        late_advert = await cohort.post("adverts", cohort.clients["hosp-05"].advertise())
        world.clock.advance(60)
        await edge.core.tick()
        progress = await edge.progress(0)

    assert (roster.status_code, roster.json()["code"]) == (409, "cohort_failed")
    assert "at least 3" in roster.json()["message"]
    assert (late_advert.status_code, late_advert.json()["code"]) == (409, "cohort_failed")
    assert world.cloud.attempts == [] and progress["forwarded"] is False


async def test_unmasking_with_too_few_answers_fails_the_cohort(
    make_masking_world: Callable[..., World],
) -> None:
    """Six of nine neighbours' shares rebuild a seed: with five answers the masks cannot come off, and the
    edge forwards nothing rather than a sum that would decrypt to noise."""
    world = make_masking_world()

    async with running_edge(world) as edge:
        cohort = HttpCohort(world, edge)
        await cohort.advertise(HOSPITALS)
        await cohort.share(HOSPITALS)
        await cohort.upload(HOSPITALS)
        await edge.core.tick()
        await cohort.consent(HOSPITALS)
        await cohort.unmask(HOSPITALS[:5])
        await cohort.timeout()
        await edge.core.tick()
        outcome = await edge.core.ledger.outcome(0)

    assert world.cloud.attempts == []
    assert outcome is not None and outcome.status.value == "skipped"
    assert "needs 6 shares" in outcome.detail


async def test_every_masking_key_expires_like_the_rounds_other_keys(
    make_masking_world: Callable[..., World],
) -> None:
    world = make_masking_world()
    world.store = MemoryStore(clock=world.clock.seconds)  # TTLs counted by the test's clock

    async with running_edge(world) as edge:
        cohort = HttpCohort(world, edge)
        await cohort.advertise(HOSPITALS)
        await cohort.share(HOSPITALS)
        await cohort.upload(HOSPITALS)
        await edge.core.tick()
        await cohort.consent(HOSPITALS)
        await cohort.unmask(HOSPITALS)
        await edge.core.tick()
        await until(lambda: len(world.cloud.delivered) == 1, what="the forward")
        held = await world.store.scan(keyspace.edge_masking_prefix(EID, FID, 0))

    world.clock.advance(keyspace.EDGE_ROUND_TTL_S + 1)
    assert held, "the cohort's state lives in the store"
    assert await world.store.scan(keyspace.edge_masking_prefix(EID, FID, 0)) == []
