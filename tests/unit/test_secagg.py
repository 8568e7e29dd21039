"""Masking below the encryption (protocol.secagg), stage by stage, without encryption: the masks must
cancel exactly in the survivors' sum after the correction, whoever drops where, and nothing short of the
whole survivors' sum may come out of what the edge holds."""

from __future__ import annotations

import numpy as np
import pytest

from protocol.secagg import (
    Cohort,
    Roster,
    SecAggError,
    SurvivorSet,
    UnmaskRequest,
    degree_for,
    route,
    threshold_for,
)
from tests.secagg_cohort import STAGES, Hospitals, cohort_id, ring_total, run_cohort

BITS = 23
LENGTH = 257


def inputs(ids: list[str], seed: int, bits: int = BITS) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {c: rng.integers(0, 1 << (bits - 5), size=LENGTH, dtype=np.uint64) for c in ids}


def ten() -> Hospitals:
    return Hospitals([f"h{i:02d}" for i in range(10)])


@pytest.mark.parametrize("stage", STAGES)
def test_thirty_percent_dropping_at_one_stage_leaves_the_exact_sum_of_the_survivors(stage: str) -> None:
    hospitals = ten()
    x = inputs(hospitals.ids, seed=1)
    run = run_cohort(hospitals, x, bits=BITS, k=3, drop={stage: {"h01", "h04", "h07"}})
    uploaded = [run.masked[c] for c in run.survivors]
    unmasked = ring_total([*uploaded, run.correction], BITS)
    assert unmasked.tolist() == ring_total([x[c] for c in run.survivors], BITS).tolist()
    expected_survivors = 7 if stage in ("advertise", "share", "upload") else 10
    assert len(run.survivors) == expected_survivors


def test_a_third_dropping_spread_over_every_stage_still_unmasks() -> None:
    hospitals = Hospitals([f"h{i:02d}" for i in range(12)])
    x = inputs(hospitals.ids, seed=2)
    drop = {"advertise": {"h00"}, "share": {"h03"}, "upload": {"h05"}, "unmask": {"h09"}}
    run = run_cohort(hospitals, x, bits=BITS, k=3, drop=drop)
    assert run.survivors == sorted(set(hospitals.ids) - {"h00", "h03", "h05"})
    unmasked = ring_total([*(run.masked[c] for c in run.survivors), run.correction], BITS)
    assert unmasked.tolist() == ring_total([x[c] for c in run.survivors], BITS).tolist()


def test_more_than_a_third_of_a_neighbourhood_silent_at_unmasking_stops_the_cohort() -> None:
    hospitals = ten()
    x = inputs(hospitals.ids, seed=3)
    with pytest.raises(SecAggError, match="needs 6 shares"):
        run_cohort(hospitals, x, bits=BITS, k=3, drop={"unmask": {"h01", "h02", "h03", "h04"}})


def test_each_masked_upload_is_uniform_noise_on_its_own() -> None:
    """A single upload, and any sum short of the whole cohort, is indistinguishable from uniform: here its
    residues spread over the whole ring although every input lies in its lowest 1/32."""
    hospitals = ten()
    x = inputs(hospitals.ids, seed=4)
    run = run_cohort(hospitals, x, bits=BITS, k=3)
    for partial in (["h00"], ["h00", "h01"], hospitals.ids[:-1]):
        total = ring_total([run.masked[c] for c in partial], BITS).astype(np.float64) / (1 << BITS)
        assert 0.4 < total.mean() < 0.6
        assert np.mean(total > 1 / 32) > 0.9  # the true partial sums are all below len(partial) / 32


def test_a_large_cohort_uses_a_sparse_symmetric_neighbour_graph() -> None:
    hospitals = Hospitals([f"h{i:03d}" for i in range(100)])
    x = {c: np.arange(8, dtype=np.uint64) + i for i, c in enumerate(hospitals.ids)}
    drop = {"upload": {f"h{i:03d}" for i in range(0, 100, 10)}}
    run = run_cohort(hospitals, x, bits=BITS, k=10, drop=drop)
    degree = degree_for(100)
    assert degree == 2 * 20 < 99
    graph = run.cohort.neighbours
    assert all(len(peers) == degree for peers in graph.values())
    assert all(a in graph[b] for a in graph for b in graph[a])
    unmasked = ring_total([*(run.masked[c] for c in run.survivors), run.correction], BITS)
    assert unmasked.tolist() == ring_total([x[c] for c in run.survivors], BITS).tolist()


def test_thresholds_tolerate_a_third_and_exceed_half() -> None:
    for d in range(1, 200):
        t = threshold_for(d)
        assert d - t == d // 3
        assert d == 1 or 2 * t > d


# -- what an honest hospital refuses ----------------------------------------------------------------
def roster_of(hospitals: Hospitals, k: int = 3):  # type: ignore[no-untyped-def]
    clients = hospitals.clients(cohort_id(), k=k)
    adverts = sorted((c.advertise() for c in clients.values()), key=lambda a: a.client_id)
    return clients, Roster(cohort=cohort_id(), adverts=adverts)


def test_a_roster_with_a_forged_advert_is_refused() -> None:
    hospitals = ten()
    clients, roster = roster_of(hospitals)
    forged = roster.adverts[3].model_copy(update={"mask_key": bytes(range(32))})
    bad = roster.model_copy(update={"adverts": [*roster.adverts[:3], forged, *roster.adverts[4:]]})
    with pytest.raises(SecAggError, match="not signed by its enrolled identity"):
        clients["h00"].share(bad)


def test_a_roster_that_swaps_a_hospitals_own_keys_is_refused_by_that_hospital() -> None:
    hospitals = ten()
    clients, roster = roster_of(hospitals)
    # The edge replaces h02's advert by one it made for h02 with other keys... and cannot sign it; so it
    # replays h02's advert from another cohort instead, which h02 recognises as not its own.
    other_clients = hospitals.clients(cohort_id(round_=1), k=3)
    stale = other_clients["h02"].advertise()
    bad = roster.model_copy(
        update={"adverts": [a if a.client_id != "h02" else stale for a in roster.adverts]}
    )
    with pytest.raises(SecAggError, match="another cohort"):
        clients["h00"].share(bad)


def test_a_roster_smaller_than_k_is_refused() -> None:
    hospitals = Hospitals(["h00", "h01", "h02"])
    clients, roster = roster_of(hospitals, k=4)
    with pytest.raises(SecAggError, match="at least 4"):
        clients["h00"].share(roster)


def test_masking_with_fewer_neighbours_than_the_threshold_is_refused() -> None:
    hospitals = ten()
    clients, roster = roster_of(hospitals)
    cohort = Cohort(roster, 3)
    bundles = [clients[c].share(roster) for c in hospitals.ids]
    inbox = route(cohort, bundles)["h00"]
    thin = inbox.model_copy(update={"sealed": dict(list(inbox.sealed.items())[:5])})
    with pytest.raises(SecAggError, match="masking needs at least 6"):
        clients["h00"].mask(thin, np.zeros(4, dtype=np.uint64), bits=BITS)


def test_a_tampered_share_box_is_refused() -> None:
    hospitals = ten()
    clients, roster = roster_of(hospitals)
    cohort = Cohort(roster, 3)
    inbox = route(cohort, [clients[c].share(roster) for c in hospitals.ids])["h00"]
    box = bytearray(inbox.sealed["h01"])
    box[-1] ^= 1
    bad = inbox.model_copy(update={"sealed": {**inbox.sealed, "h01": bytes(box)}})
    with pytest.raises(SecAggError, match="does not open"):
        clients["h00"].mask(bad, np.zeros(4, dtype=np.uint64), bits=BITS)


def test_a_hospital_signs_one_survivor_list_and_answers_only_that_one() -> None:
    hospitals = ten()
    x = inputs(hospitals.ids, seed=5)
    run = run_cohort(hospitals, x, bits=BITS, k=3)
    client = run.clients["h00"]
    other = SurvivorSet(cohort=cohort_id(), survivors=hospitals.ids[:-1])
    with pytest.raises(SecAggError, match="already signed another survivor list"):
        client.consent(other)
    with pytest.raises(SecAggError, match="answers only the survivor list it signed"):
        client.unmask(UnmaskRequest(survivor_set=other, consents={}))


def test_an_unmask_request_without_a_majority_of_signatures_is_refused() -> None:
    hospitals = ten()
    clients, roster = roster_of(hospitals)
    cohort = Cohort(roster, 3)
    inboxes = route(cohort, [clients[c].share(roster) for c in hospitals.ids])
    for c in hospitals.ids:
        clients[c].mask(inboxes[c], np.zeros(4, dtype=np.uint64), bits=BITS)
    survivors = SurvivorSet(cohort=cohort_id(), survivors=hospitals.ids)
    consents = {c: clients[c].consent(survivors).signature for c in hospitals.ids[:5]}
    forged = {**consents, "h09": consents["h00"]}  # someone else's signature under h09's name
    with pytest.raises(SecAggError, match="5 valid signatures; it needs a majority of the roster, 6"):
        clients["h00"].unmask(UnmaskRequest(survivor_set=survivors, consents=forged))


def test_a_survivor_list_below_k_is_refused() -> None:
    hospitals = ten()
    x = inputs(hospitals.ids, seed=6)
    run = run_cohort(hospitals, x, bits=BITS, k=3)
    fresh = hospitals.clients(cohort_id(round_=2), k=3)
    with pytest.raises(SecAggError, match="has not seen this cohort's roster"):
        fresh["h00"].consent(SurvivorSet(cohort=cohort_id(round_=2), survivors=["h00"]))
    with pytest.raises(SecAggError, match="at least 3"):
        run.cohort.check_survivors(SurvivorSet(cohort=cohort_id(), survivors=["h00", "h01"]))


def test_residues_travel_in_as_few_bytes_as_the_ring_needs() -> None:
    from protocol.secagg import residue_bytes, residues_from_bytes

    rng = np.random.default_rng(7)
    for bits in (1, 8, 23, 33, 64):
        high = (1 << bits) - 1
        values = rng.integers(0, high, size=50, dtype=np.uint64, endpoint=True)
        data = residue_bytes(values, bits)
        assert len(data) == 50 * ((bits + 7) // 8)
        assert residues_from_bytes(data, bits=bits, length=50).tolist() == values.tolist()
    with pytest.raises(SecAggError, match="outside"):
        residues_from_bytes(b"\xff" * 3, bits=23, length=1)
    with pytest.raises(SecAggError, match="are 6 bytes, got 5"):
        residues_from_bytes(b"\x00" * 5, bits=23, length=2)
