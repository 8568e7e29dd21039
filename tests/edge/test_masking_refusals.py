"""Every refusal of the masking routes (docs/api.md, "Masking stages"), each with its code: forged or
misaddressed messages, strangers to the round or the cohort, stages asked for too early or posted to too
late, a second message for a stage."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from protocol.secagg import CohortId, Consent, MaskingClient, Stage, SurvivorSet, UnmaskShares
from services.identity import SigningKey
from tests.edge.harness import EID, FID, World, running_edge
from tests.edge.masking_cohort import HOSPITALS, HttpCohort, K, enrolled_verifier, masking_path

pytestmark = pytest.mark.anyio


def code(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["code"]


def stranger(
    world: World, client_id: str, *, cohort: CohortId | None = None, key: SigningKey | None = None
) -> MaskingClient:
    """A `MaskingClient` outside the test's cohort: another cohort id, or signing with another key."""
    cohort = cohort or CohortId(federation_id=FID, round=0, edge_id=EID)
    signer = key or world.hospitals[client_id].key
    return MaskingClient(
        cohort, client_id, sign=signer.sign, verify=enrolled_verifier(world), min_survivors=K
    )


async def test_messages_not_signed_by_the_enrolled_key_are_refused(
    make_masking_world: Callable[..., World],
) -> None:
    world = make_masking_world()
    impostor = stranger(world, "hosp-00", key=SigningKey.generate())

    async with running_edge(world) as edge:
        cohort = HttpCohort(world, edge)
        forged_advert = await cohort.post("adverts", impostor.advertise())
        forged_request = await cohort.post(Stage.ROSTER.value, impostor.request(Stage.ROSTER))
        await cohort.advertise(HOSPITALS)
        roster = await cohort.read_ok("hosp-00", Stage.ROSTER)
        bundle = cohort.clients["hosp-01"].share(roster)
        tampered = bundle.model_copy(
            update={"sealed": {**bundle.sealed, "hosp-00": bundle.sealed["hosp-02"]}}
        )
        forged_shares = await cohort.post("shares", tampered)
        await cohort.share(HOSPITALS)
        await cohort.upload(HOSPITALS)
        await edge.core.tick()
        survivors = await cohort.read_ok("hosp-00", Stage.SURVIVORS)
        other_list = survivors.model_copy(update={"survivors": HOSPITALS[:5]})
        consent = cohort.clients["hosp-00"].consent(survivors)
        wrong_list = consent.model_copy(
            update={"signature": world.hospitals["hosp-00"].key.sign(other_list.signing_payload())}
        )
        forged_consent = await cohort.post("consents", wrong_list)

    assert code(forged_advert) == (401, "bad_signature")
    assert code(forged_request) == (401, "bad_signature")
    assert code(forged_shares) == (401, "bad_signature")
    assert code(forged_consent) == (401, "bad_signature")


async def test_messages_for_another_cohort_or_round_are_refused(
    make_masking_world: Callable[..., World],
) -> None:
    world = make_masking_world()
    other_edge = stranger(world, "hosp-00", cohort=CohortId(federation_id=FID, round=0, edge_id="edge-south"))
    next_round = stranger(world, "hosp-00", cohort=CohortId(federation_id=FID, round=1, edge_id=EID))

    async with running_edge(world) as edge:
        cohort = HttpCohort(world, edge)
        wrong_edge = await cohort.post("adverts", other_edge.advertise())
        path_disagrees = await cohort.post("adverts", next_round.advertise())  # path says round 0
        ahead = await cohort.post("adverts", next_round.advertise(), round_=1)  # the cloud opened no round 1
        other_federation = await edge.http.post(
            masking_path("adverts", federation_id="fed-other"),
            content=cohort.clients["hosp-00"].advertise().model_dump_json(),
            headers={"Content-Type": "application/json"},
        )

    assert code(wrong_edge) == (409, "wrong_cohort")
    assert code(path_disagrees) == (409, "wrong_cohort")
    assert code(ahead) == (409, "round_not_open_yet")
    assert code(other_federation) == (404, "unknown_federation")


async def test_strangers_to_the_round_or_the_cohort_are_refused(
    make_masking_world: Callable[..., World],
) -> None:
    world = make_masking_world()
    south = world.enrol("hosp-south", edge_id="edge-south")
    world.enrol("hosp-late")  # enrolled here after the round's plan: not in it

    async with running_edge(world) as edge:
        cohort = HttpCohort(world, edge)
        elsewhere = await cohort.post("adverts", stranger(world, "hosp-south", key=south.key).advertise())
        not_planned = await cohort.post("adverts", stranger(world, "hosp-late").advertise())
        await cohort.advertise(HOSPITALS[:9])
        await cohort.timeout()  # hosp-09 missed the roster
        roster = await cohort.read_ok("hosp-00", Stage.ROSTER)
        unlisted_shares = await cohort.post(
            "shares",
            cohort.clients["hosp-09"].share(
                roster.model_copy(
                    update={"adverts": [*roster.adverts, cohort.clients["hosp-09"].advertise()]}
                )
            ),
        )
        await cohort.share(HOSPITALS[:8])
        await cohort.timeout()  # hosp-08 sent no shares
        no_inbox = await cohort.read("hosp-08", Stage.INBOX)
        inbox = await cohort.read_ok("hosp-00", Stage.INBOX)
        foreign_upload = await edge.upload(
            world.update(world.hospitals["hosp-08"], ciphertext=cohort.masked_ciphertext("hosp-00", inbox))
        )
        await cohort.upload(HOSPITALS[:7])
        world.clock.advance(60)  # hosp-07 does not upload: the deadline closes the round
        await edge.core.tick()
        survivors = await cohort.read_ok("hosp-07", Stage.SURVIVORS)
        not_survivor = await cohort.post(
            "consents",
            cohort.clients["hosp-00"]
            .consent(survivors)
            .model_copy(
                update={
                    "client_id": "hosp-07",
                    "signature": world.hospitals["hosp-07"].key.sign(survivors.signing_payload()),
                }
            ),
        )

    assert code(elsewhere) == (401, "unauthenticated")
    assert code(not_planned) == (403, "forbidden")
    assert code(unlisted_shares) == (403, "not_in_cohort")
    assert code(no_inbox) == (403, "not_in_cohort")
    assert code(foreign_upload) == (403, "not_in_cohort")
    assert code(not_survivor) == (403, "not_in_cohort")
    assert survivors.survivors == HOSPITALS[:7]


async def test_stages_answer_pending_until_they_close(make_masking_world: Callable[..., World]) -> None:
    world = make_masking_world()

    async with running_edge(world) as edge:
        cohort = HttpCohort(world, edge)
        await cohort.advertise(HOSPITALS[:9])
        roster_early = await cohort.read("hosp-00", Stage.ROSTER)
        await cohort.advertise(HOSPITALS[9:])  # the last advert closes the roster at once
        roster = await cohort.read_ok("hosp-00", Stage.ROSTER)
        await cohort.share(HOSPITALS[:9])
        inbox_early = await cohort.read("hosp-00", Stage.INBOX)
        upload_early = await edge.upload(world.update(world.hospitals["hosp-00"]))
        await cohort.share(HOSPITALS[9:])
        survivors_early = await cohort.read("hosp-00", Stage.SURVIVORS)
        everyone = SurvivorSet(cohort=roster.cohort, survivors=HOSPITALS)
        consent_early = await cohort.post(
            "consents",
            Consent(
                cohort=roster.cohort,
                client_id="hosp-00",
                signature=world.hospitals["hosp-00"].key.sign(everyone.signing_payload()),
            ),
        )
        await cohort.upload(HOSPITALS)
        await edge.core.tick()
        await cohort.consent(HOSPITALS[:9])
        request_early = await cohort.read("hosp-00", Stage.UNMASK_REQUEST)

    assert len(roster.adverts) == 10
    for early in (roster_early, inbox_early, upload_early, survivors_early, consent_early, request_early):
        assert code(early) == (409, "stage_pending"), early.text
        assert int(early.headers["Retry-After"]) >= 1


async def test_late_messages_for_a_closed_stage_are_refused(make_masking_world: Callable[..., World]) -> None:
    world = make_masking_world()

    async with running_edge(world) as edge:
        cohort = HttpCohort(world, edge)
        await cohort.advertise(HOSPITALS[:9])
        await cohort.timeout()
        late_advert = await cohort.post("adverts", cohort.clients["hosp-09"].advertise())
        roster = await cohort.read_ok("hosp-00", Stage.ROSTER)
        await cohort.share(HOSPITALS[:8])
        await cohort.timeout()
        late_shares = await cohort.post("shares", cohort.clients["hosp-08"].share(roster))
        await cohort.upload(HOSPITALS[:8])
        await edge.core.tick()
        survivors = await cohort.read_ok("hosp-00", Stage.SURVIVORS)
        await cohort.consent(HOSPITALS[:7])
        await cohort.timeout()
        late_consent = await cohort.post("consents", cohort.clients["hosp-07"].consent(survivors))
        request = await cohort.read_ok("hosp-00", Stage.UNMASK_REQUEST)
        await cohort.unmask(HOSPITALS[:7])  # every consenter answered: the stage closes
        # hosp-07 signed the list too (its consent came late), so it would answer: too late as well.
        late_answer = await cohort.post("unmask-shares", cohort.clients["hosp-07"].unmask(request))

    for late in (late_advert, late_shares, late_consent, late_answer):
        assert code(late) == (409, "stage_closed"), late.text
    assert sorted(request.consents) == HOSPITALS[:7]


async def test_one_message_per_hospital_and_stage_and_the_same_one_again_is_accepted(
    make_masking_world: Callable[..., World],
) -> None:
    world = make_masking_world()
    second_self = stranger(world, "hosp-00")  # the same hospital with fresh keys

    async with running_edge(world) as edge:
        cohort = HttpCohort(world, edge)
        advert = cohort.clients["hosp-00"].advertise()
        first = await cohort.post("adverts", advert)
        again = await cohort.post("adverts", advert)
        other = await cohort.post("adverts", second_self.advertise())
        copied_keys = (
            cohort.clients["hosp-01"]
            .advertise()
            .model_copy(update={"share_key": advert.share_key, "mask_key": advert.mask_key, "signature": b""})
        )
        signed_copy = copied_keys.model_copy(
            update={"signature": world.hospitals["hosp-01"].key.sign(copied_keys.signing_payload())}
        )
        copied = await cohort.post("adverts", signed_copy)

    assert (first.status_code, first.json()) == (202, {"accepted": True, "count": 1})
    assert (again.status_code, again.json()) == (202, {"accepted": True, "count": 1})
    assert code(other) == (409, "duplicate_upload")
    assert code(copied) == (409, "conflict")


async def test_an_answer_revealing_shares_nobody_asked_for_is_refused(
    make_masking_world: Callable[..., World],
) -> None:
    world = make_masking_world()

    async with running_edge(world) as edge:
        cohort = HttpCohort(world, edge)
        await cohort.advertise(HOSPITALS)
        await cohort.share(HOSPITALS)
        await cohort.upload(HOSPITALS[:9])
        world.clock.advance(60)
        await edge.core.tick()
        await cohort.consent(HOSPITALS[:9])
        request = await cohort.read_ok("hosp-00", Stage.UNMASK_REQUEST)
        honest = cohort.clients["hosp-00"].unmask(request)
        # The self-mask share of hosp-09, which dropped after sharing: with its mask-key share as well, the
        # edge could unmask hosp-09 (were its upload in any sum).
        greedy = UnmaskShares(
            cohort=honest.cohort,
            client_id="hosp-00",
            seed_shares={**honest.seed_shares, "hosp-09": honest.key_shares["hosp-09"]},
            key_shares=honest.key_shares,
        )
        signed = greedy.model_copy(
            update={"signature": world.hospitals["hosp-00"].key.sign(greedy.signing_payload())}
        )
        refused = await cohort.post("unmask-shares", signed)
        accepted = await cohort.post("unmask-shares", honest)

    assert code(refused) == (422, "invalid_request")
    assert "hosp-09" in refused.json()["message"]
    assert accepted.status_code == 202


async def test_a_federation_without_masking_has_no_masking_stages(make_world: Callable[..., World]) -> None:
    world = make_world(clients=3)  # CKKS
    client = stranger(world, "hosp-a")

    async with running_edge(world) as edge:
        response = await edge.http.post(
            masking_path("adverts"),
            content=client.advertise().model_dump_json(),
            headers={"Content-Type": "application/json"},
        )

    assert code(response) == (404, "not_found")
