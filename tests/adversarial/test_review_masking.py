"""Review of masking below the encryption (issue 18): attacks by an edge operator (alone, or pooling with
the cloud) and by one enrolled hospital against `protocol.secagg`, the edge's stage machine and the
hospital's `CohortSession`. Each test states the property it checks and what failed before its fix.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable

import httpx
import numpy as np
import pytest

from protocol.crypto import PaillierParams, packing
from protocol.messages import CentralDPConfig
from protocol.secagg import (
    Cohort,
    CohortId,
    MaskingClient,
    Roster,
    SecAggError,
    ShareBundle,
    Stage,
    SurvivorSet,
    UnmaskRequest,
    correction,
    route,
)
from services.http import Peer
from tests.cloud.harness import Federation, running_cloud, small_spec
from tests.edge.conftest import make_masking_world, masking_secret  # noqa: F401 (fixtures)
from tests.edge.harness import World, running_edge
from tests.edge.masking_cohort import HOSPITALS, HttpCohort, cohort_sessions, join_upload_close
from tests.secagg_cohort import Hospitals, cohort_id

BITS = 23


def joined(hospitals: Hospitals, cohort: CohortId) -> dict[str, MaskingClient]:
    """Every hospital advertised, shared and masked a zero update in `cohort` (an honest edge routed)."""
    clients = hospitals.clients(cohort, k=3)
    roster = Roster(cohort=cohort, adverts=[clients[c].advertise() for c in sorted(clients)])
    inboxes = route(Cohort(roster, 3), [client.share(roster) for client in clients.values()])
    for cid, client in clients.items():
        client.mask(inboxes[cid], np.zeros(4, dtype=np.uint64), bits=BITS)
    return clients


def test_consents_from_another_cohort_do_not_make_a_majority() -> None:
    """Property: a hospital answers an unmask request only with a majority of the roster's signatures over
    *this* cohort's survivor list (docs/security.md: "a majority-signed list cannot exist twice").
    Attack: the edge keeps round 0's consents and, in round 1, serves one hospital the same set of
    survivors under round 0's cohort id with round 0's signatures, although nobody else signed in round 1.
    Failed before the fix: `MaskingClient.unmask` compared the list's members only, not its cohort, and answered."""
    hospitals = Hospitals([f"h{i:02d}" for i in range(6)])
    everyone = sorted(hospitals.ids)
    round0 = joined(hospitals, cohort_id(round_=0))
    list0 = SurvivorSet(cohort=cohort_id(round_=0), survivors=everyone)
    old_consents = {c: round0[c].consent(list0).signature for c in everyone}

    round1 = joined(hospitals, cohort_id(round_=1))
    target = round1["h00"]
    target.consent(SurvivorSet(cohort=cohort_id(round_=1), survivors=everyone))  # only h00 signs round 1's
    replayed = UnmaskRequest(survivor_set=list0, consents=old_consents)
    with pytest.raises(SecAggError, match="another cohort"):
        target.unmask(replayed)


def test_a_low_order_key_in_the_roster_makes_every_honest_hospital_refuse_it() -> None:
    """Why the edge must refuse such an advert (next test): an enrolled hospital that advertises an
    all-zero X25519 key makes every honest hospital refuse the roster (X25519 with it yields the all-zero
    secret), so one hospital would stop its whole cohort at the adverts stage."""
    hospitals = Hospitals([f"h{i:02d}" for i in range(4)])
    cohort = cohort_id()
    clients = hospitals.clients(cohort, k=3)
    adverts = [clients[c].advertise() for c in sorted(clients)]
    bad = adverts[-1].model_copy(update={"share_key": bytes(32), "signature": b""})
    bad = bad.model_copy(update={"signature": hospitals.keys[bad.client_id].sign(bad.signing_payload())})
    roster = Roster(cohort=cohort, adverts=[*adverts[:-1], bad])
    for cid in ("h00", "h01", "h02"):
        with pytest.raises(SecAggError, match="public key"):
            clients[cid].share(roster)


@pytest.mark.anyio
async def test_the_edge_refuses_an_advert_whose_key_agrees_on_nothing(
    make_masking_world: Callable[..., World],  # noqa: F811
) -> None:
    """Property: as above, at the edge: an advert whose share or mask key is a low-order X25519 point (the
    all-zero key) is refused with 422 `invalid_request`, so it never reaches the roster.
    Failed before the fix: 202, and the roster the honest hospitals then refuse holds it."""
    world = make_masking_world()
    async with running_edge(world) as edge:
        cohort = HttpCohort(world, edge)
        honest = cohort.clients["hosp-00"].advertise()
        for field in ("share_key", "mask_key"):
            forged = honest.model_copy(update={field: bytes(32), "signature": b""})
            forged = forged.model_copy(
                update={"signature": world.hospitals["hosp-00"].key.sign(forged.signing_payload())}
            )
            response = await cohort.post("adverts", forged)
            assert response.status_code == 422, response.text
            assert response.json()["code"] == "invalid_request"
            assert response.json()["field"] == field
        assert (await cohort.post("adverts", honest)).status_code == 202


@pytest.mark.anyio
async def test_an_inbox_that_does_not_open_is_refused_when_joining_not_after_training(
    make_masking_world: Callable[..., World],  # noqa: F811
) -> None:
    """Property: no malformed input stops a hospital. A hospital checks its inbox when it joins the cohort,
    before training, where the agent sits the round out on `SecAggError`; a check only when it masks the
    trained update raised out of `HospitalAgent._round` (which catches it around joining and finishing only)
    and ended the agent's run, after it had spent the round's privacy budget on training.
    Attack: one enrolled hospital (or the edge) sends sealed shares that do not open.
    Failed before the fix: `CohortSession.join` returned, and `seal` raised only after training."""
    world = make_masking_world()
    plan = world.cloud.published[0]
    honest, mallory = HOSPITALS[:9], HOSPITALS[9]

    async with running_edge(world) as edge:
        peer = Peer("http://edge-north.test", attempts=1, transport=httpx.ASGITransport(app=edge.app))
        attacker = HttpCohort(world, edge)
        sessions = cohort_sessions(world, plan, peer, honest)

        async def junk_shares() -> None:
            await attacker.advertise([mallory])
            while (response := await attacker.read(mallory, Stage.ROSTER)).status_code != 200:
                await asyncio.sleep(0.01)
            roster = Roster.model_validate_json(response.content)
            bundle = ShareBundle(
                cohort=roster.cohort,
                client_id=mallory,
                sealed={
                    a.client_id: secrets.token_bytes(60) for a in roster.adverts if a.client_id != mallory
                },
            )
            bundle = bundle.model_copy(
                update={"signature": world.hospitals[mallory].key.sign(bundle.signing_payload())}
            )
            assert (await attacker.post("shares", bundle)).status_code == 202

        outcomes = await asyncio.gather(
            junk_shares(), *(s.join() for s in sessions.values()), return_exceptions=True
        )
        await peer.close()

    assert outcomes[0] is None
    refused = [o for o in outcomes[1:] if isinstance(o, SecAggError)]
    assert len(refused) == len(honest), outcomes
    assert all("does not open" in str(o) for o in refused)


def test_one_survivor_revealing_garbage_shares_does_not_stop_its_cohort() -> None:
    """Property: no malformed input from one hospital stops a round's cohort while each seed still has `t`
    good shares (`protocol.secagg.unmask` tries other subsets of shares when a rebuilt seed fails its
    check). Attack: the survivor whose id sorts first (holder 1 of every other hospital's seeds) answers the
    unmask request with random shares. Failed before the fix: the bounded search (257 subsets, in lexicographic
    order) never left holder 1 out in a cohort of 16, where C(14, 9) = 2002 subsets contain it, and
    `correction` raised `SecAggError` ("does not rebuild")."""
    hospitals = Hospitals([f"h{i:02d}" for i in range(16)])
    cohort = cohort_id()
    clients = hospitals.clients(cohort, k=3)
    roster = Roster(cohort=cohort, adverts=[clients[c].advertise() for c in sorted(clients)])
    public = Cohort(roster, 3)
    inboxes = route(public, [client.share(roster) for client in clients.values()])
    rng = np.random.default_rng(7)
    x = {c: rng.integers(0, 1 << (BITS - 5), size=33, dtype=np.uint64) for c in clients}
    masked = {c: clients[c].mask(inboxes[c], x[c], bits=BITS) for c in clients}
    survivors = SurvivorSet(cohort=cohort, survivors=sorted(clients))
    request = UnmaskRequest(
        survivor_set=survivors, consents={c: clients[c].consent(survivors).signature for c in clients}
    )
    answers = [clients[c].unmask(request) for c in sorted(clients)]
    liar = answers[0]
    answers[0] = liar.model_copy(
        update={"seed_shares": {owner: secrets.token_bytes(16) for owner in liar.seed_shares}}
    )

    fix = correction(
        public, senders=sorted(clients), survivors=survivors.survivors, answers=answers, length=33, bits=BITS
    )
    total = (sum(masked.values()) + fix) & np.uint64((1 << BITS) - 1)
    assert total.tolist() == ((sum(x.values())) & np.uint64((1 << BITS) - 1)).tolist()


def test_one_hospital_can_weigh_up_to_count_times_its_clip_without_failing_the_range_check() -> None:
    """What the range check does not bound (docs/security.md, "Out of scope", corrected by this review):
    clipping is the hospital's own step, and under masks nobody sees one upload, so a hospital that
    encodes a value beyond the clip passes as long as the cohort's sum stays within `count * 2 * offset`.
    Here one of four hospitals contributes 3x the clip (the others 0) and the sum decodes to 3x the clip;
    the docs used to say that clipping bounds such a hospital's influence."""
    params = PaillierParams(masking=True, clip=0.1)
    offset = packing.offset(params)
    honest = [offset] * 3  # q = 0
    liar = offset + 3 * offset  # q = 3 * offset, i.e. 3x the clip: no honest encoding reaches it
    assert liar < 1 << params.ring_bits
    total = np.array([sum(honest) + liar], dtype=np.uint64)
    decoded = packing.dequantise(packing.shifted_sums(total, count=4, params=params), params)
    assert decoded[0] == pytest.approx(3 * params.clip)


@pytest.mark.anyio
async def test_no_uploaded_column_is_reached_by_fewer_than_k_hospitals_of_a_cohort() -> None:
    """Property: an edge with the cloud learns only sums of at least `k` hospitals, per coordinate
    (issue 18, items 1 and 4). In a masking federation the edge holds its cohort's sum and the correction,
    and the cloud the key: pooled, they read that sum (and the cloud decrypts it alone whenever another
    edge's sum fails the range check and it attributes). So a column the plan lets hospitals upload must
    be reached by `k` hospitals of every cohort, not only of the round.
    Attack: k = 2; edge-1's hospitals have ranks 1 and 2, edge-2's 2 and 2. The plan publishes rank 2 (the
    round's 2nd largest rank), so client-b uploads column 1 of `B`, the only hospital of edge-1 to reach
    it: edge-1's unmasked sum holds client-b's column alone.
    Failed before the fix: `plan.published_rank` was 2; per cohort it is 1."""
    async with running_cloud() as cloud:
        spec = small_spec(
            he=PaillierParams(masking=True, clip=0.1),
            min_clients_per_edge=2,
            central_dp=CentralDPConfig(clip_norm=0.1),  # he.clip must cover the clip norm
        )
        fed = await Federation.create(cloud.http, spec, max_ranks={"client-a": 1})
        plan = await fed.start(cloud.http)
        assert plan.client_ranks == {"client-a": 1, "client-b": 2, "client-c": 2, "client-d": 2}
        assert plan.published_rank == 1


@pytest.mark.anyio
async def test_no_hospital_consents_to_survivors_that_leave_a_column_to_fewer_than_k(
    make_masking_world: Callable[..., World],  # noqa: F811
) -> None:
    """Property: an edge with the cloud learns only sums of at least `k` hospitals, per coordinate. The
    edge names the survivors, so it chooses who "dropped": leaving out the other high-rank hospitals of a
    cohort isolates the columns one hospital reaches, in a sum of `k` or more that the cohort then unmasks.
    A hospital signs (and answers) only a survivor list in which every column a survivor uploads under the
    plan is reached by `k` survivors.
    Attack: k = 3, hosp-00..02 have rank 4 (the cohort's published rank), the rest rank 1; hosp-01 and
    hosp-02 "drop" before uploading (here they really do; a malicious edge would only say so). The eight
    survivors are a majority and hold `k`, but columns 1 to 3 of `B` are hosp-00's alone.
    Failed before the fix: every survivor consented and answered, and the cohort's sum unmasked with
    hosp-00's columns alone in it."""
    world = make_masking_world()
    ranks = {cid: 4 if cid in HOSPITALS[:3] else 1 for cid in HOSPITALS}
    plan = world.plan(0).model_copy(update={"client_ranks": ranks, "published_rank": 4, "signature": b""})
    plan = plan.model_copy(update={"signature": world.plan_key.sign(plan.signing_payload())})
    world.cloud.set_plan(plan)
    survivors = [HOSPITALS[0], *HOSPITALS[3:]]

    async with running_edge(world) as edge:
        peer = Peer("http://edge-north.test", attempts=1, transport=httpx.ASGITransport(app=edge.app))
        sessions = cohort_sessions(world, plan, peer, HOSPITALS)
        await join_upload_close(world, edge, sessions, survivors)
        outcomes = await asyncio.gather(
            *(asyncio.wait_for(sessions[cid].finish(), 5.0) for cid in survivors), return_exceptions=True
        )
        await peer.close()

    assert all(isinstance(o, SecAggError) and "reach" in str(o) for o in outcomes), outcomes


def test_no_hospital_consents_to_survivors_whose_shares_it_never_received() -> None:
    """Property: the survivor list a hospital signs counts only hospitals that must be in the sum for it to
    unmask, so that `k` (per column, as the previous test checks) counts real summands. An honest edge
    routes every sender's shares to every sender neighbour, and only senders upload, so every survivor
    neighbour's shares reached each survivor. A malicious edge that withholds hospital D's shares from
    everyone can list D as a survivor (D's rank then "reaches" a column) while leaving D's upload out of
    the sum: no pairwise mask with D is in anyone's upload, so the sum of the others still unmasks.
    Failed before the fix: `MaskingClient.consent` signed a list naming h09, whose shares h00 never received."""
    hospitals = Hospitals([f"h{i:02d}" for i in range(10)])
    cohort = cohort_id()
    clients = hospitals.clients(cohort, k=3)
    roster = Roster(cohort=cohort, adverts=[clients[c].advertise() for c in sorted(clients)])
    inboxes = route(Cohort(roster, 3), [client.share(roster) for client in clients.values()])
    withheld = inboxes["h00"].model_copy(
        update={"sealed": {s: box for s, box in inboxes["h00"].sealed.items() if s != "h09"}}
    )
    clients["h00"].mask(withheld, np.zeros(4, dtype=np.uint64), bits=BITS)
    with pytest.raises(SecAggError, match="h09"):
        clients["h00"].consent(SurvivorSet(cohort=cohort, survivors=sorted(clients)))
