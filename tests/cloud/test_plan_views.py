"""Each party reads the round plan it may see (issue 20, item 3): the admin the whole plan, which places every
hospital at its edge; an edge, and each of its hospitals, that edge's view, naming its own hospitals only and
signed on its own with the edge id in what is signed, so that a view verifies for its edge alone. Uploads and
sums name the view's digest; the round's accounting (hospitals expected per edge) is the whole plan's."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from client_agent.errors import PlanRefusedError
from client_agent.policy import verify_plan
from protocol.messages import FederationInfo, PlanViewError, RoundPlan
from services import keyspace
from services.identity import verify
from tests.cloud.harness import Federation, bearer, running_cloud, small_spec

pytestmark = pytest.mark.anyio

#: What differs between an edge's view and the whole round's plan; every other field is the round's.
VIEW_FIELDS = {"edge_id", "client_ranks", "client_edges", "signature"}


async def _read_plan(http: httpx.AsyncClient, fid: str, token: str | None) -> RoundPlan:
    """GET the current plan as the party holding `token` (None: the admin, the harness client's default)."""
    response = await http.get(
        f"/federations/{fid}/plan", headers=bearer(token) if token is not None else None
    )
    assert response.status_code == 200, response.text
    return RoundPlan.model_validate_json(response.content)


async def test_each_party_reads_its_own_edges_view_and_the_admin_the_whole_plan() -> None:
    # Prepare: two edges of two hospitals each, round 0 open.
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        await fed.start(cloud.http)
        info = FederationInfo.model_validate_json((await cloud.http.get(f"/federations/{fed.fid}")).content)

        # Execute: every party polls the plan with its own token.
        whole = await _read_plan(cloud.http, fed.fid, None)
        edge_1 = await _read_plan(cloud.http, fed.fid, fed.edges["edge-1"].token)
        edge_2 = await _read_plan(cloud.http, fed.fid, fed.edges["edge-2"].token)
        client_a = await _read_plan(cloud.http, fed.fid, fed.client_tokens["client-a"])
        client_d = await _read_plan(cloud.http, fed.fid, fed.client_tokens["client-d"])
        status = await cloud.status(fed.fid, 0)

    # Assert: the admin's plan places every hospital; each view names its edge's hospitals only, is the same
    # for the edge and its hospitals, keeps every round-wide field, and verifies with the plan key.
    assert whole.edge_id is None
    assert whole.client_edges == {
        "client-a": "edge-1",
        "client-b": "edge-1",
        "client-c": "edge-2",
        "client-d": "edge-2",
    }
    assert (edge_1.edge_id, set(edge_1.client_ranks)) == ("edge-1", {"client-a", "client-b"})
    assert (edge_2.edge_id, set(edge_2.client_ranks)) == ("edge-2", {"client-c", "client-d"})
    assert edge_1.client_edges is None and edge_2.client_edges is None
    assert client_a == edge_1 and client_d == edge_2
    assert edge_1.sha256 != edge_2.sha256 != whole.sha256
    round_wide = set(RoundPlan.model_fields) - VIEW_FIELDS
    assert edge_1.model_dump(include=round_wide) == whole.model_dump(include=round_wide)
    assert info.plan_public_key is not None
    for view in (whole, edge_1, edge_2):
        verify(info.plan_public_key, view.signing_payload(), view.signature)
    # The round's accounting is the whole plan's: two hospitals expected at each edge.
    assert {(e.edge_id, e.expected_clients) for e in status.edges} == {("edge-1", 2), ("edge-2", 2)}


async def test_a_view_verifies_for_its_own_edge_only() -> None:
    # Prepare: edge-1's view as the cloud served it.
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        await fed.start(cloud.http)
        info = FederationInfo.model_validate_json((await cloud.http.get(f"/federations/{fed.fid}")).content)
        view = await _read_plan(cloud.http, fed.fid, fed.edges["edge-1"].token)
    assert info.plan_public_key is not None
    key = info.plan_public_key

    # Execute / Assert: a hospital of edge-1 accepts it; one of edge-2 refuses it, and refuses it too with
    # its edge id written over edge-1's, since the edge id is signed.
    verify_plan(view, key, edge_id="edge-1")
    with pytest.raises(PlanRefusedError) as replayed:
        verify_plan(view, key, edge_id="edge-2")
    renamed = view.model_copy(update={"edge_id": "edge-2"})
    with pytest.raises(PlanRefusedError) as forged:
        verify_plan(renamed, key, edge_id="edge-2")
    with pytest.raises(PlanViewError):
        view.check_view_for("edge-2")
    assert replayed.value.field == "edge_id" and forged.value.field == "signature"


async def test_a_sum_names_its_edges_view_of_the_plan() -> None:
    # Prepare: round 0 open, edge-1's sum made under the whole plan's digest and under its view's.
    rng = np.random.default_rng(5)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        whole = await fed.start(cloud.http)
        deltas = fed.deltas(rng)
        under_whole = await fed.aggregate(cloud, "edge-1", 0, deltas["edge-1"], plan_sha256=whole.sha256)
        view = await _read_plan(cloud.http, fed.fid, fed.edges["edge-1"].token)
        under_view = await fed.aggregate(cloud, "edge-1", 0, deltas["edge-1"], plan_sha256=view.sha256)

        # Execute
        refused = await fed.post(cloud.http, under_whole)
        taken = await fed.post(cloud.http, under_view)

    # Assert: the sum is bound to the plan the edge and its hospitals were served, its own view.
    assert refused.status_code == 409 and refused.json()["code"] == "plan_mismatch", refused.text
    assert taken.status_code == 202, taken.text


async def test_a_plan_stored_before_plans_placed_their_hospitals_is_viewed_by_their_records() -> None:
    # Prepare: round 0's plan as a cloud that did not place hospitals in the plan stored it.
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        whole = await fed.start(cloud.http)
        older = whole.model_copy(update={"client_edges": None})
        await cloud.store.set(keyspace.fed_round_plan(fed.fid, 0), older.model_dump_json().encode())

        # Execute
        view = await _read_plan(cloud.http, fed.fid, fed.edges["edge-2"].token)

    # Assert: the view names the hospitals enrolled at edge-2 in round 0.
    assert (view.edge_id, set(view.client_ranks)) == ("edge-2", {"client-c", "client-d"})
