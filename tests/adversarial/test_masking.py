"""Masking below the encryption against a malicious edge and a curious cloud (issue 18, item 1), through the
cloud's real acceptance and closing (in-process harness) with real packed Paillier.

Each edge runs its cohort with real `MaskingClient`s (tests/secagg_cohort.py) and forwards the survivors'
masked ciphertexts summed, with the mask correction the survivors' answers give. Each test states the
property it checks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from protocol.crypto import PackingError, PaillierParams, generate_scheme, scheme_from_public
from protocol.messages import CentralDPConfig, EdgeAggregate, RoundState
from protocol.secagg import (
    Cohort,
    Roster,
    SurvivorSet,
    UnmaskRequest,
    primitives,
    residue_bytes,
    route,
)
from protocol.secagg.cohort import pair_sign, reduce
from tests.adversarial.test_cloud_acceptance import deltas_for, resigned
from tests.cloud.harness import LAYOUT_SIZE, Cloud, Federation, running_cloud, small_spec
from tests.secagg_cohort import CohortRun, Hospitals, SecAggError, cohort_id, run_cohort

pytestmark = pytest.mark.anyio

# Four per edge: each hospital has three neighbours, any two of which rebuild its seeds (one may drop).
TOPOLOGY = {
    "edge-1": ("client-a", "client-b", "client-c", "client-d"),
    "edge-2": ("client-e", "client-f", "client-g", "client-h"),
}
MASKED = PaillierParams(masking=True, clip=0.1)


def masked_spec():  # type: ignore[no-untyped-def]
    # A clip norm the fixed-point range covers (a spec with he.clip below it is refused).
    return small_spec(he=MASKED, min_clients_per_edge=2, central_dp=CentralDPConfig(clip_norm=0.1))


def cohort(fed: Federation, edge_id: str, deltas: Mapping[str, np.ndarray], **drop: set[str]) -> CohortRun:
    """Edge `edge_id`'s cohort over these hospitals' deltas, with `drop` (stage -> hospitals)."""
    bits = fed.scheme.ring_bits
    assert bits is not None
    residues = {c: fed.scheme.residues(fed.scheme.clip_vector(d)) for c, d in deltas.items()}
    hospitals = Hospitals(sorted(deltas))
    return run_cohort(hospitals, residues, bits=bits, k=2, drop=drop, cohort=cohort_id(edge_id))


def ciphertext_of(fed: Federation, masked: Sequence[np.ndarray]) -> bytes:
    scheme = fed.scheme
    return scheme.serialize(scheme.sum(scheme.encrypt_residues(m) for m in masked))


async def forwarded(
    cloud: Cloud, fed: Federation, edge_id: str, deltas: Mapping[str, np.ndarray], run: CohortRun
) -> EdgeAggregate:
    """What an honest edge forwards: the survivors' masked ciphertexts summed, their lines, the correction."""
    bits = fed.scheme.ring_bits
    assert bits is not None
    body = await fed.aggregate(
        cloud,
        edge_id,
        0,
        {c: deltas[c] for c in run.survivors},
        ciphertext=ciphertext_of(fed, [run.masked[c] for c in run.survivors]),
    )
    return resigned(fed, body, mask_correction=residue_bytes(run.correction, bits))


def step() -> float:
    return MASKED.step


async def test_masked_cohorts_publish_the_mean_of_their_survivors() -> None:
    """Property: with masks below the encryption, what the cloud publishes is the survivors' mean, to the
    quantisation error (each value is rounded to the nearest step, so the mean is off by at most step / 2);
    a hospital that dropped after sharing its keys is left out without stopping the round."""
    rng = np.random.default_rng(11)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, masked_spec(), TOPOLOGY)
        await fed.start(cloud.http)
        deltas = deltas_for(rng, tuple(c for ids in TOPOLOGY.values() for c in ids))
        runs = {
            "edge-1": cohort(fed, "edge-1", {c: deltas[c] for c in TOPOLOGY["edge-1"]}, upload={"client-b"}),
            "edge-2": cohort(fed, "edge-2", {c: deltas[c] for c in TOPOLOGY["edge-2"]}),
        }
        for edge_id, run in runs.items():
            response = await fed.post(cloud.http, await forwarded(cloud, fed, edge_id, deltas, run))
            assert response.status_code == 202, response.text
        published = await cloud.vector(fed.fid, 1)
        status = await cloud.status(fed.fid, 0)

    assert status.state is RoundState.CLOSED
    survivors = [c for run in runs.values() for c in run.survivors]
    assert "client-b" not in survivors and len(survivors) == 7
    expected = np.mean([np.clip(deltas[c], -0.1, 0.1) for c in survivors], axis=0)
    assert np.max(np.abs(published - expected)) <= step() / 2 + 1e-6


async def test_a_masking_federation_refuses_a_sum_without_its_mask_correction() -> None:
    """Property: the cloud takes from a masking federation's edge only a sum it can unmask, and from any
    other federation's edge no correction at all (both refusals are 400 bad_ciphertext on the field)."""
    rng = np.random.default_rng(12)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, masked_spec(), TOPOLOGY)
        await fed.start(cloud.http)
        deltas = deltas_for(rng, TOPOLOGY["edge-1"])
        run = cohort(fed, "edge-1", deltas)
        body = await forwarded(cloud, fed, "edge-1", deltas, run)
        for bad in (
            resigned(fed, body, mask_correction=None),
            resigned(fed, body, mask_correction=b"\x00" * 7),
        ):
            response = await fed.post(cloud.http, bad)
            assert response.status_code == 400, response.text
            assert response.json()["code"] == "bad_ciphertext"
            assert response.json()["field"] == "mask_correction"


@pytest.mark.parametrize("forgery", ["one-upload-as-a-sum", "three-fold", "crafted-chunk"])
async def test_a_sum_other_than_a_whole_cohorts_never_reaches_the_adapter(forgery: str) -> None:
    """Property: no combination of uploads but the whole surviving cohort, each counted once, decrypts to
    anything but noise, so a malicious edge cannot get one hospital's update (or a multiple of it) published.

    - one-upload-as-a-sum: edge-1 forwards client-a's masked upload alone under a manifest of a and b, with
      the correction of the real cohort: what the cloud decrypts is a's masks plus noise;
    - three-fold: a's upload added three times, b's once, under the manifest a, b, c, d (honest counts);
    - crafted-chunk: the edge adds to its honest sum an encryption it crafted (the key-recovery attack on
      CKKS adds one); under Paillier a decryption reveals nothing of the key, and the sum no longer unmasks.
    The cloud's range check fails, it names edge-1, and the round publishes nothing of edge-1's sum."""
    rng = np.random.default_rng(13)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, masked_spec(), TOPOLOGY)
        await fed.start(cloud.http)
        deltas = deltas_for(rng, tuple(c for ids in TOPOLOGY.values() for c in ids))
        run = cohort(fed, "edge-1", {c: deltas[c] for c in TOPOLOGY["edge-1"]})
        honest = await forwarded(cloud, fed, "edge-1", deltas, run)
        scheme = fed.scheme
        if forgery == "one-upload-as-a-sum":
            ciphertext = ciphertext_of(fed, [run.masked["client-a"]])
            parsed = scheme.deserialize(ciphertext)
            parsed.count = 4  # the envelope claims the manifest's four: nothing the cloud can see differs
            tampered = resigned(fed, honest, ciphertext=scheme.serialize(parsed))
        elif forgery == "three-fold":
            masked = [run.masked["client-a"]] * 3 + [run.masked["client-b"]]
            ciphertext = scheme.sum(scheme.encrypt_residues(m) for m in masked)
            tampered = resigned(fed, honest, ciphertext=scheme.serialize(ciphertext))
        else:
            crafted = scheme.encrypt_residues(
                np.full(LAYOUT_SIZE, (1 << (MASKED.ring_bits - 1)) + 12345, dtype=np.uint64)
            )
            total = scheme.add(scheme.deserialize(honest.ciphertext), crafted)
            total.count -= 1
            tampered = resigned(fed, honest, ciphertext=scheme.serialize(total))
        response = await fed.post(cloud.http, tampered)
        other = cohort(fed, "edge-2", {c: deltas[c] for c in TOPOLOGY["edge-2"]})
        await fed.post(cloud.http, await forwarded(cloud, fed, "edge-2", deltas, other))
        status = await cloud.status(fed.fid, 0)
        published = await cloud.vector(fed.fid, 1) if status.state is RoundState.CLOSED else None

    if response.status_code != 202:
        return  # refused at the door: the promise holds
    # The round closes without edge-1's sum, which is named, and publishes edge-2's cohort alone.
    assert status.state is RoundState.CLOSED, status.failure
    assert status.flagged == ("edge-1",)
    expected = np.mean([np.clip(deltas[c], -0.1, 0.1) for c in TOPOLOGY["edge-2"]], axis=0)
    assert published is not None and np.max(np.abs(published - expected)) <= step() / 2 + 1e-6


async def test_an_edge_and_the_cloud_pooling_what_they_hold_see_one_upload_as_noise() -> None:
    """Property: the edge (every masked ciphertext, the shares the survivors revealed) and the cloud (the
    secret key) together learn nothing of one hospital's update but through the cohort's sum: decrypting
    client-a's upload with the secret key gives residues spread over the whole ring, which do not decode."""
    rng = np.random.default_rng(14)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, masked_spec(), TOPOLOGY)
        deltas = deltas_for(rng, TOPOLOGY["edge-1"])
        run = cohort(fed, "edge-1", deltas)
        secret = await cloud.context.federations.secret_scheme(fed.fid)
    upload = fed.scheme.encrypt_residues(run.masked["client-a"])
    opened = secret.decrypt_residues(secret.deserialize(fed.scheme.serialize(upload)))
    bits = MASKED.ring_bits
    honest = fed.scheme.residues(np.clip(deltas["client-a"], -0.1, 0.1))
    assert np.mean(opened == honest) < 0.01
    assert 0.4 < float(np.mean(opened.astype(np.float64) / (1 << bits))) < 0.6
    with pytest.raises(PackingError, match="masks that did not cancel"):
        secret.decode_residues(opened, count=1)


def test_an_edge_that_claims_a_hospital_dropped_after_its_upload_still_holds_noise() -> None:
    """Property: an edge that received client-d's masked upload and then names d as dropped gets d's mask-key
    seed (so it can strip d's pairwise masks) but never d's self-mask seed: every honest hospital signed the
    list without d and answers no other. Pooled with the cloud's secret key, d's upload stays uniform noise.
    """

    secret = generate_scheme(MASKED)
    scheme = scheme_from_public(MASKED, secret.public_bytes())
    bits = MASKED.ring_bits
    rng = np.random.default_rng(15)
    ids = ["client-a", "client-b", "client-c", "client-d"]
    deltas = {c: rng.normal(0.0, 0.01, 64) for c in ids}
    hospitals = Hospitals(ids)
    clients = hospitals.clients(cohort_id(), k=2)
    roster = Roster(
        cohort=cohort_id(),
        adverts=sorted((c.advertise() for c in clients.values()), key=lambda a: a.client_id),
    )
    public = Cohort(roster, 2)
    inboxes = route(public, [clients[c].share(roster) for c in ids])
    uploads = {
        c: scheme.encrypt_residues(clients[c].mask(inboxes[c], scheme.residues(deltas[c]), bits=bits))
        for c in ids
    }
    # The edge holds all four uploads, and names d as dropped.
    without_d = SurvivorSet(cohort=cohort_id(), survivors=ids[:3])
    consents = {c: clients[c].consent(without_d).signature for c in ids[:3]}
    answers = [clients[c].unmask(UnmaskRequest(survivor_set=without_d, consents=consents)) for c in ids[:3]]
    # It rebuilds d's mask-key seed from the key shares, and strips every pairwise mask from d's upload.
    shares = {public.holder_index("client-d", a.client_id): a.key_shares["client-d"] for a in answers}
    seed = primitives.combine(shares, threshold=public.threshold("client-d"))
    key = primitives.mask_key(seed, public.context)
    assert primitives.public_bytes(key) == public.adverts["client-d"].mask_key  # it really has d's key
    opened = secret.decrypt_residues(secret.deserialize(scheme.serialize(uploads["client-d"])))
    for peer in ids[:3]:
        mask = public.pair_mask(
            primitives.agree(key, public.adverts[peer].mask_key), "client-d", peer, 64, bits
        )
        opened = reduce(opened - mask if pair_sign("client-d", peer) > 0 else opened + mask, bits)
    # What is left is d's residues plus its self mask: uniform over the ring, nothing like d's values.
    honest = scheme.residues(deltas["client-d"])
    assert np.mean(opened == honest) < 0.05
    with pytest.raises(PackingError, match="masks that did not cancel"):
        secret.decode_residues(opened, count=1)
    # And a second list that names d (to get its self-mask seed) is refused by every hospital that signed.
    with_d = SurvivorSet(cohort=cohort_id(), survivors=ids)
    for c in ids[:3]:
        with pytest.raises(SecAggError, match="already signed another survivor list"):
            clients[c].consent(with_d)
        with pytest.raises(SecAggError, match="answers only the survivor list it signed"):
            clients[c].unmask(UnmaskRequest(survivor_set=with_d, consents=consents))
