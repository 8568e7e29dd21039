"""A hospital agent's saved state against a real cloud: a revoked API token is replaced by enrolling again
with the same key; a state folder from another federation under the same id is refused."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from client_agent.agent import AgentError, AgentState, ClientAgent
from client_agent.releases import COUNT_ENTRY
from protocol.messages import FederationInfo, LocalDPConfig, TrainingConfig
from services.http import Peer
from services.settings import ClientSettings
from tests.e2e.conftest import CloudProcess, EdgeProcess, issue_enrolment_token, poll
from tests.e2e.helpers import FID, NOTES, create_federation, make_spec


def agent_for(cloud: CloudProcess, token: str, state_dir, model_dir, **extra) -> ClientAgent:
    settings = ClientSettings(
        client_id="h-a",
        federation_id=FID,
        edge_id="edge-1",
        cloud_url=cloud.url,
        enrolment_token=token,
        state_dir=state_dir,
        model_path=model_dir,
        allow_unmasked=True,  # make_spec federations are CKKS, without masking
        **extra,
    )
    return ClientAgent(settings)


@pytest.mark.slow
def test_a_revoked_token_is_replaced_and_a_foreign_state_folder_is_refused(cluster, tmp_path, tiny_model_dir):
    # Prepare: a real cloud and one edge; the hospital enrols once and saves its token.
    cloud = CloudProcess(cluster, tmp_path, tiny_model_dir)
    create_federation(cloud, make_spec())
    EdgeProcess(cluster, tmp_path, cloud, "edge-1", FID)
    poll(lambda: len(cloud.admin.get(f"/federations/{FID}/edges").json()) == 1, timeout_s=30, what="edge")
    state_dir = tmp_path / "hospital"
    token = issue_enrolment_token(cloud, FID, "client", "h-a")

    async def first_contact(agent: ClientAgent) -> str:
        peer = Peer(cloud.url, give_up_after_s=30.0)
        try:
            await agent.enrol(peer, 100)
            spec, _ = await agent.federation(peer, 100)
            return spec.federation_id
        finally:
            await peer.close()

    agent = agent_for(cloud, token, state_dir, tiny_model_dir)
    assert asyncio.run(first_contact(agent)) == FID
    enrolled = agent.state.api_token

    # Execute 1: the saved token no longer works (revoked elsewhere); the agent enrols again.
    agent = agent_for(cloud, token, state_dir, tiny_model_dir)
    agent.state.api_token = secrets.token_urlsafe(32)
    assert asyncio.run(first_contact(agent)) == FID
    reloaded = agent_for(cloud, token, state_dir, tiny_model_dir)

    # Execute 2: the state folder says it belongs to a federation with another HE key.
    reloaded.state.federation_fingerprint = "0" * 64
    with pytest.raises(AgentError, match="belongs to another federation named"):
        asyncio.run(first_contact(reloaded))

    # Assert: a fresh token, saved, and the federation's HE key and plan key pinned.
    assert reloaded.state.api_token not in (None, enrolled)
    info = FederationInfo.model_validate_json(cloud.admin.get(f"/federations/{FID}").content)
    assert agent.state.federation_fingerprint == info.he_fingerprint
    assert info.plan_public_key is not None and agent.state.plan_public_key == info.plan_public_key.hex()


@pytest.mark.slow
def test_a_hospital_whose_policy_refuses_the_federation_exits_non_zero_naming_the_field(
    cluster, tmp_path, tiny_model_dir
):
    # Prepare: a federation asking for local epsilon 50, above the hospital's default budget of 10.
    cloud = CloudProcess(cluster, tmp_path, tiny_model_dir)
    create_federation(cloud, make_spec(local_dp=LocalDPConfig(epsilon=50.0)))
    EdgeProcess(cluster, tmp_path, cloud, "edge-1", FID)
    poll(lambda: len(cloud.admin.get(f"/federations/{FID}/edges").json()) == 1, timeout_s=30, what="edge")
    data = tmp_path / "notes.csv"
    data.write_text("text,label\n" + "".join(f"note {i},{i % 2}\n" for i in range(40)))

    # Execute: the real agent process.
    hospital = cluster.start(
        "h-a",
        "client_agent",
        {
            "FEDLORA_CLIENT_ID": "h-a",
            "FEDLORA_FEDERATION_ID": FID,
            "FEDLORA_EDGE_ID": "edge-1",
            "FEDLORA_CLOUD_URL": cloud.url,
            "FEDLORA_ENROLMENT_TOKEN": issue_enrolment_token(cloud, FID, "client", "h-a"),
            "FEDLORA_STATE_DIR": str(tmp_path / "state"),
            "FEDLORA_DATA_FILE": str(data),
            "FEDLORA_MODEL_PATH": str(tiny_model_dir),
            "FEDLORA_ALLOW_UNMASKED": "true",  # a CKKS federation
        },
    )
    poll(lambda: not hospital.alive(), timeout_s=120, what="the hospital to stop")

    # Assert: exit status 2, its log names the field, the value and the limit; it never trained.
    assert hospital.popen.returncode == 2, hospital.tail()
    log = hospital.log.read_text()
    assert "local_dp.epsilon = 50 is above this hospital's local_epsilon_budget 10" in log
    assert "uploaded" not in log


@pytest.mark.slow
def test_the_privacy_history_is_saved_before_the_upload(cluster, tmp_path, tiny_model_dir):
    # Prepare: a real cloud and edge; one hospital enrolled, the federation started.
    cloud = CloudProcess(cluster, tmp_path, tiny_model_dir)
    spec = make_spec(training=TrainingConfig(local_steps=3, batch_size=16, max_seq_length=16))
    create_federation(cloud, spec)
    EdgeProcess(cluster, tmp_path, cloud, "edge-1", FID)
    poll(lambda: len(cloud.admin.get(f"/federations/{FID}/edges").json()) == 1, timeout_s=30, what="edge")
    notes = tmp_path / "notes.csv"
    notes.write_text(
        "text,label\n" + "".join(f"note {i} {'good' if i % 2 else 'bad'},{i % 2}\n" for i in range(NOTES))
    )
    state_dir = tmp_path / "hospital"
    agent = agent_for(
        cloud, issue_enrolment_token(cloud, FID, "client", "h-a"), state_dir, tiny_model_dir, data_file=notes
    )

    async def enrol() -> None:
        peer = Peer(cloud.url, give_up_after_s=30.0)
        try:
            await agent.enrol(peer, NOTES)
        finally:
            await peer.close()

    asyncio.run(enrol())
    assert cloud.admin.post(f"/federations/{FID}/start").status_code in (200, 201)

    # Execute: the hospital trains round 0, then dies before its upload leaves.
    async def crash(edge, update, *, deadline=None):
        raise RuntimeError("the hospital's process died here")

    agent.upload = crash  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="died here"):
        asyncio.run(agent.run(max_rounds=1))

    # Assert: the state folder already holds the round's DP-SGD steps beside the count's release.
    saved = AgentState.load(state_dir / "state.json")
    assert saved.privacy is not None and saved.privacy[0] == COUNT_ENTRY
    assert sum(steps for _, rate, steps in saved.privacy if rate < 1.0) == 3
    assert saved.last_round is None  # the round itself was not done
