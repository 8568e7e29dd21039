"""The cloud and two edges as real uvicorn processes on loopback, every hop over TLS against the
federation's CA and each edge presenting its own certificate to the cloud (mutual TLS); the test plays four
hospitals honestly.

Expected values are computed here with numpy from the vectors the test itself encrypted.
"""

import httpx
import numpy as np
import pytest

from protocol.crypto import scheme_from_public
from protocol.messages import FederationCreated, FederationInfo, RoundPlan, RoundStatus
from services.identity import SigningKey
from tests.e2e.conftest import CloudProcess, EdgeProcess, poll
from tests.e2e.helpers import FID, enrol, make_spec, post_upload, signed_update


@pytest.mark.slow
def test_round_over_real_processes(cluster, tmp_path, tiny_model_dir, federation_ca):
    cloud = CloudProcess(cluster, tmp_path, tiny_model_dir, tls=federation_ca.party("cloud", "cloud"))
    created = cloud.admin.post("/federations", json=make_spec().model_dump(mode="json"))
    assert created.status_code == 201, created.text
    FederationCreated.model_validate_json(created.content)
    edges = [
        EdgeProcess(cluster, tmp_path, cloud, f"edge-{i}", FID, tls=federation_ca.party("edge", f"edge-{i}"))
        for i in (1, 2)
    ]
    poll(lambda: len(cloud.admin.get(f"/federations/{FID}/edges").json()) == 2, timeout_s=30, what="edges")
    # edge-1 gets three hospitals, edge-2 only one: below k = 2, so edge-2 must never forward.
    placement = {"h-a": "edge-1", "h-b": "edge-1", "h-c": "edge-1", "h-d": "edge-2"}
    keys = {cid: enrol(cloud, cid, eid)[0] for cid, eid in placement.items()}
    info = FederationInfo.model_validate_json(cloud.admin.get(f"/federations/{FID}").content)
    public = cloud.admin.get(f"/federations/{FID}/public-context").content
    scheme = scheme_from_public(info.spec.he, public)
    assert cloud.admin.post(f"/federations/{FID}/start").status_code in (200, 201)
    plan = RoundPlan.model_validate_json(cloud.admin.get(f"/federations/{FID}/plan").content)
    poll(
        lambda: all(httpx.get(f"{e.url}/healthz", verify=e.verify).json().get("round") == 0 for e in edges),
        timeout_s=30,
        what="edges to follow round 0",
    )

    rng = np.random.default_rng(7)
    vectors = {cid: rng.normal(scale=0.05, size=info.layout_size) for cid in placement}
    edge_url = {e.edge_id: e.url for e in edges}
    verify = edges[0].verify  # the federation's CA: every edge's certificate verifies against it

    # Refusals first: none of them may touch the sum.
    first = signed_update(keys["h-a"], "h-a", plan.view("edge-1"), scheme, vectors["h-a"])
    unsigned = first.model_copy(update={"signature": b""})
    assert post_upload(edge_url["edge-1"], unsigned, verify=verify).json()["code"] in (
        "bad_signature",
        "unauthenticated",
    )
    stranger = signed_update(SigningKey.generate(), "h-z", plan.view("edge-1"), scheme, vectors["h-a"])
    refused = post_upload(edge_url["edge-1"], stranger, verify=verify)
    assert (refused.status_code, refused.json()["code"]) == (401, "unauthenticated")
    garbage = first.model_copy(update={"ciphertext": b"\x00garbage" * 100})
    garbage = garbage.signed(keys["h-a"].sign)
    refused = post_upload(edge_url["edge-1"], garbage, verify=verify)
    assert (refused.status_code, refused.json()["code"]) == (400, "bad_ciphertext")
    assert post_upload(edge_url["edge-1"], b"{not json", verify=verify).status_code == 422

    # The honest uploads, then a replay of one of them.
    for cid in ("h-a", "h-b", "h-c", "h-d"):
        update = (
            first
            if cid == "h-a"
            else signed_update(keys[cid], cid, plan.view(placement[cid]), scheme, vectors[cid])
        )
        response = post_upload(edge_url[placement[cid]], update, verify=verify)
        assert response.status_code == 202, response.text
    replay = post_upload(edge_url["edge-1"], first, verify=verify)
    assert replay.status_code == 409 and replay.json()["code"] in (
        "replay",
        "duplicate_upload",
        "round_closed",
    )

    def closed():
        status = RoundStatus.model_validate_json(cloud.admin.get(f"/federations/{FID}/rounds/0").content)
        return status if status.state.value == "closed" else None

    status = poll(closed, timeout_s=60, what="round 0 to close at its deadline", cluster=cluster)
    assert status.clients_contributed == 3  # edge-2 held one hospital, below k, and forwarded nothing
    new = np.frombuffer(cloud.admin.get(f"/federations/{FID}/adapters/1/vector").content, dtype="<f4")
    expected = np.mean([vectors[c] for c in ("h-a", "h-b", "h-c")], axis=0)
    np.testing.assert_allclose(new, expected, atol=1e-5)
    progress = httpx.get(f"{edge_url['edge-2']}/federations/{FID}/rounds/0", verify=verify).json()
    assert progress["forwarded"] is False and progress["uploads_accepted"] == 1
