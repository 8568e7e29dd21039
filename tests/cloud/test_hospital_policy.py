"""A hospital trusts nobody with its own privacy: its agent, against a real cloud app (real crypto, memory
and Redis stores), refuses what its own policy forbids, peers other than the ones it pinned, plans the
federation did not sign, and adapters or bases that are not the ones its plan names.

Tried as a curious cloud would, with the federation's own plan key: a plan with batch size 1 and one step
(one training note's gradient, i.e. its embedding, in the update) and a crafted global adapter are refused.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from client_agent.agent import ClientAgent
from client_agent.errors import InsecurePeerError, PinMismatchError, PlanRefusedError, SpecRefusedError
from cloud_server.federations import vector_bytes
from cloud_server.plans import signed
from protocol.crypto import CKKSParams, PaillierParams, generate_scheme
from protocol.crypto.params import PlainParams
from protocol.messages import (
    EdgeEnrolment,
    FederationSpec,
    LocalDPConfig,
    Role,
    RoundPlan,
    Strategy,
    TrainingConfig,
)
from services import keyspace
from services.http import Peer
from services.identity import SigningKey
from services.settings import ClientSettings
from tests.cloud.harness import (
    Cloud,
    Federation,
    issue_enrolment_token,
    post_enrolment,
    running_cloud,
    small_spec,
)

pytestmark = pytest.mark.anyio
EDGE_URL = "https://edge-1.example:8710"
EXAMPLES = 100


@dataclass
class Site:
    """One hospital's agent and its HTTP link to the cloud app, with the federation it joined."""

    cloud: Cloud
    fed: Federation
    agent: ClientAgent
    peer: Peer
    edge_key: SigningKey

    async def enrol_edge(self, url: str) -> None:
        """Enrol edge-1 at `url`."""
        body = EdgeEnrolment(edge_id="edge-1", url=url, public_key=self.edge_key.public_bytes)
        token = await issue_enrolment_token(self.cloud.http, self.fed.fid, Role.EDGE, "edge-1")
        response = await post_enrolment(self.cloud.http, self.fed.fid, body, self.edge_key, token=token)
        assert response.status_code == 201, response.text

    async def move_edge(self, url: str) -> None:
        """The admin changes edge-1's URL (an edge's re-enrolment never does)."""
        response = await self.cloud.http.put(
            f"/federations/{self.fed.fid}/edges/edge-1/url", json={"url": url}
        )
        assert response.status_code == 200, response.text

    async def layout(self) -> tuple[Any, dict[str, int]]:
        return await self.cloud.context.federations.layout(self.fed.fid)

    async def curious(self, plan: RoundPlan, **changes: Any) -> RoundPlan:
        """`plan` changed as a curious cloud would, signed with the federation's own plan key."""
        key = await self.cloud.context.federations.plan_signer(self.fed.fid)
        return signed(RoundPlan.model_validate(plan.model_dump() | changes), key)


_sites = itertools.count()


@asynccontextmanager
async def hospital(
    tmp_path: Path, spec: FederationSpec, *, edge_url: str = EDGE_URL, **settings: Any
) -> AsyncIterator[Site]:
    """A cloud with `spec` created, edge-1 enrolled at `edge_url`, and hospital hosp-a's agent (not yet
    enrolled) whose HTTP calls reach the cloud app in-process. Every call gets a federation of its own
    (the test's clouds share one store)."""
    spec = spec.model_copy(update={"federation_id": f"{spec.federation_id}-{next(_sites)}"})
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, spec, topology={})
        values: dict[str, Any] = {
            "client_id": "hosp-a",
            "federation_id": spec.federation_id,
            "edge_id": "edge-1",
            "cloud_url": "https://cloud.example",
            "enrolment_token": await issue_enrolment_token(cloud.http, fed.fid, Role.CLIENT, "hosp-a"),
            "state_dir": tmp_path / "hosp-a",
            # small_spec federations are CKKS, without masking; the refusal has its own test.
            "allow_unmasked": True,
        }
        agent = ClientAgent(ClientSettings(**(values | settings)), model_path=tmp_path)
        peer = Peer("https://cloud.example", transport=httpx.ASGITransport(app=cloud.app), give_up_after_s=5)
        site = Site(cloud, fed, agent, peer, SigningKey.generate())
        await site.enrol_edge(edge_url)
        try:
            yield site
        finally:
            await peer.close()


async def joined(site: Site) -> tuple[FederationSpec, RoundPlan]:
    """Enrol, pass first contact, start the federation: its spec and round 0's plan."""
    await site.agent.enrol(site.peer, EXAMPLES)
    spec, _ = await site.agent.federation(site.peer, EXAMPLES)
    await site.fed.start(site.cloud.http)
    plan = await site.agent.next_plan(site.peer)
    assert plan is not None
    return spec, plan


# -- the spec ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"local_dp": LocalDPConfig(enabled=False)}, "local_dp.enabled"),
        ({"local_dp": LocalDPConfig(epsilon=50.0)}, "local_dp.epsilon"),  # budget 10
        ({"local_dp": LocalDPConfig(delta=0.05)}, "local_dp.delta"),  # 1/n = 0.01
        ({"strategy": Strategy.CLAIR, "he": PlainParams()}, "he.kind"),
        ({"training": TrainingConfig(batch_size=8)}, "training.batch_size"),  # floor 16
    ],
    ids=[
        "dp-off",
        "epsilon-over-budget",
        "delta-over-1/n",
        "no-encryption",
        "batch-below-floor",
    ],
)
async def test_a_spec_the_policy_refuses_stops_the_agent_naming_the_field(
    tmp_path: Path, changes: dict[str, Any], field: str
) -> None:
    async with hospital(tmp_path, small_spec(**changes)) as site:
        await site.agent.enrol(site.peer, EXAMPLES)
        with pytest.raises(SpecRefusedError) as refused:
            await site.agent.federation(site.peer, EXAMPLES)

    assert refused.value.field == field
    assert field in str(refused.value)


async def test_a_spec_whose_k_is_below_the_hospital_s_floor_stops_the_agent(tmp_path: Path) -> None:
    """The hospital's own floor on `k` (FEDLORA_MIN_CLIENTS_PER_EDGE), above the spec validator's 2: a
    federation of k = 2 is refused by a hospital whose floor is 3, naming the field."""
    async with hospital(tmp_path, small_spec(min_clients_per_edge=2), min_clients_per_edge=3) as site:
        await site.agent.enrol(site.peer, EXAMPLES)
        with pytest.raises(SpecRefusedError) as refused:
            await site.agent.federation(site.peer, EXAMPLES)

    assert (refused.value.field, refused.value.value, refused.value.limit) == ("min_clients_per_edge", 2, 3)


async def test_a_plaintext_federation_is_joined_only_by_a_hospital_that_opted_in(tmp_path: Path) -> None:
    clair = small_spec(strategy=Strategy.CLAIR, he=PlainParams())
    async with hospital(tmp_path, clair, allow_plaintext=True) as site:
        await site.agent.enrol(site.peer, EXAMPLES)
        spec, _ = await site.agent.federation(site.peer, EXAMPLES)

    assert spec.he.kind == "none"
    assert any("FEDLORA_ALLOW_PLAINTEXT" in line for line in site.agent.policy.warnings())


async def test_a_federation_without_masking_is_joined_only_by_a_hospital_that_opted_in(
    tmp_path: Path,
) -> None:
    """A hospital's floor: an encrypted federation whose uploads are not masked (CKKS here) lets an edge
    colluding with the cloud decrypt its update, so the agent refuses it unless told otherwise, naming the
    field; the default federation (masked Paillier) it joins."""
    async with hospital(tmp_path / "ckks", small_spec(), allow_unmasked=False) as site:
        await site.agent.enrol(site.peer, EXAMPLES)
        with pytest.raises(SpecRefusedError) as refused:
            await site.agent.federation(site.peer, EXAMPLES)
    masked = small_spec(he=PaillierParams(masking=True))
    async with hospital(tmp_path / "masked", masked, allow_unmasked=False) as site:
        await site.agent.enrol(site.peer, EXAMPLES)
        spec, _ = await site.agent.federation(site.peer, EXAMPLES)

    assert refused.value.field == "he.masking" and "FEDLORA_ALLOW_UNMASKED" in str(refused.value)
    assert spec.he.kind == "paillier"


# -- the peers it pinned ---------------------------------------------------------------------------------
async def test_plain_http_to_another_machine_is_refused_and_loopback_is_not(tmp_path: Path) -> None:
    async with hospital(tmp_path / "lan", small_spec(), edge_url="http://edge-1.example:8710") as site:
        with pytest.raises(InsecurePeerError) as edge_refused:
            await site.agent.enrol(site.peer, EXAMPLES)
    async with hospital(tmp_path / "loop", small_spec(), edge_url="http://127.0.0.1:8710") as site:
        await site.agent.enrol(site.peer, EXAMPLES)
        loopback = site.agent.state.edge_url
    remote = ClientAgent(
        ClientSettings(
            client_id="hosp-a",
            federation_id="fed-1",
            edge_id="edge-1",
            cloud_url="http://cloud.example:8700",
            enrolment_token="enrol-token-0123456789abcdef",
            state_dir=tmp_path / "remote",
        ),
        model_path=tmp_path,
    )
    with pytest.raises(InsecurePeerError) as cloud_refused:
        await remote.run()  # refused before it reads any data or calls anyone

    assert (edge_refused.value.field, edge_refused.value.value) == ("edge_url", "http://edge-1.example:8710")
    assert loopback == "http://127.0.0.1:8710"
    assert (cloud_refused.value.field, cloud_refused.value.value) == (
        "cloud_url",
        "http://cloud.example:8700",
    )


async def test_a_re_enrolment_that_names_another_edge_is_refused(tmp_path: Path) -> None:
    async with hospital(tmp_path, small_spec()) as site:
        await site.agent.enrol(site.peer, EXAMPLES)
        await site.agent.federation(site.peer, EXAMPLES)
        # The cloud now sends edge-1's hospitals elsewhere, and the saved API token stops working.
        await site.move_edge("https://edge-elsewhere.example:8710")
        site.agent.state.api_token = "revoked-" + "x" * 32
        site.peer.set_token(site.agent.state.api_token)
        with pytest.raises(PinMismatchError) as refused:
            await site.agent.federation(site.peer, EXAMPLES)

    assert (refused.value.field, refused.value.value, refused.value.limit) == (
        "edge_url",
        "https://edge-elsewhere.example:8710",
        EDGE_URL,
    )


async def test_a_hospital_moved_mid_round_sits_that_round_out(
    tmp_path: Path,
) -> None:
    """Property: a hospital whose agent re-enrols at another edge while a round it was asked to join is open
    takes no plan for that round (the cloud counts it at its previous edge until the round ends: what it
    uploaded there is counted there, and an upload at the new edge would be refused), and takes the next.

    Before, the move took effect at once and the agent trained for the open round and uploaded it to its new
    edge, which the round's other checks refuse."""
    new_url = "https://edge-2.example:8710"
    async with hospital(tmp_path, small_spec(rounds=3)) as site:
        _, plan = await joined(site)
        key = SigningKey.generate()
        body = EdgeEnrolment(edge_id="edge-2", url=new_url, public_key=key.public_bytes)
        token = await issue_enrolment_token(site.cloud.http, site.fed.fid, Role.EDGE, "edge-2")
        response = await post_enrolment(site.cloud.http, site.fed.fid, body, key, token=token)
        assert response.status_code == 201, response.text
        # The operator points the agent at edge-2 (settings and state.json), keeping the state folder.
        settings = site.agent.settings.model_copy(
            update={"edge_id": "edge-2", "edge_url": new_url, "poll_s": 0.05}
        )
        site.agent.state.api_token = site.agent.state.edge_url = None
        site.agent.state.save(site.agent.state_path)
        moved = ClientAgent(settings, model_path=tmp_path)

        await moved.enrol(site.peer, EXAMPLES)
        during = await moved.next_plan(site.peer)

    assert plan.round == 0 and moved.state.last_round == 0
    assert during is None
    assert moved.state.edge_url == new_url


async def test_another_he_key_is_refused(tmp_path: Path) -> None:
    async with hospital(tmp_path, small_spec()) as site:
        await site.agent.enrol(site.peer, EXAMPLES)
        await site.agent.federation(site.peer, EXAMPLES)
        # Execute 1: the cloud serves a public context of another key than the federation's fingerprint.
        other = generate_scheme(CKKSParams())
        await site.cloud.store.set(keyspace.fed_public(site.fed.fid), other.public_bytes())
        with pytest.raises(PinMismatchError) as context_refused:
            await site.agent.federation(site.peer, EXAMPLES)
        # Execute 2: the federation's fingerprint is not the one pinned at first contact.
        site.agent.state.federation_fingerprint = "ab" * 32
        with pytest.raises(PinMismatchError) as fingerprint_refused:
            await site.agent.federation(site.peer, EXAMPLES)

    assert (context_refused.value.field, context_refused.value.value) == (
        "public_context",
        other.fingerprint.hex(),
    )
    assert (fingerprint_refused.value.field, fingerprint_refused.value.limit) == ("he_fingerprint", "ab" * 32)


async def test_the_plan_key_is_pinned_at_first_contact_unless_the_settings_name_it(tmp_path: Path) -> None:
    async with hospital(tmp_path / "pinned", small_spec()) as site:
        await site.agent.enrol(site.peer, EXAMPLES)
        await site.agent.federation(site.peer, EXAMPLES)
        info = await site.cloud.context.federations.info(site.fed.fid)
        pinned = site.agent.state.plan_public_key
    other = SigningKey.generate().public_bytes.hex()
    async with hospital(tmp_path / "named", small_spec(), plan_public_key=other) as site:
        await site.agent.enrol(site.peer, EXAMPLES)
        with pytest.raises(PinMismatchError) as refused:
            await site.agent.federation(site.peer, EXAMPLES)

    assert info.plan_public_key is not None and pinned == info.plan_public_key.hex()
    assert (refused.value.field, refused.value.limit) == ("plan_public_key", other)


# -- the plans -------------------------------------------------------------------------------------------
async def test_a_plan_without_the_federations_signature_is_refused(tmp_path: Path) -> None:
    async with hospital(tmp_path, small_spec()) as site:
        _, plan = await joined(site)
        site.agent.check_plan(plan, num_examples=EXAMPLES)  # the cloud's own plan passes
        edited = RoundPlan.model_validate(plan.model_dump() | {"clip_norm": 50.0})  # signature kept
        unsigned = plan.model_copy(update={"signature": b""})
        forged = signed(edited, SigningKey.generate())
        refusals = []
        for bad in (edited, unsigned, forged):
            with pytest.raises(PlanRefusedError) as refused:
                site.agent.check_plan(bad, num_examples=EXAMPLES)
            refusals.append(refused.value)

    assert [r.field for r in refusals] == ["signature"] * 3


async def test_the_single_example_inversion_plan_is_refused(tmp_path: Path) -> None:
    # A curious cloud's plan for one hospital: batch size 1, one step, so that the update is one note's
    # gradient (for the mean-pooled head, the note's embedding times its error). Signed with the
    # federation's own key: only the hospital's policy stands in its way.
    async with hospital(tmp_path, small_spec()) as site:
        _, plan = await joined(site)
        inversion = await site.curious(plan, training=TrainingConfig(batch_size=1, local_steps=1))
        with pytest.raises(PlanRefusedError) as refused:
            site.agent.check_plan(inversion, num_examples=EXAMPLES)
        # The same limit holds for a hospital too small for the floor, whatever batch the plan asks.
        with pytest.raises(PlanRefusedError) as too_small:
            site.agent.check_plan(plan, num_examples=10)

    assert (refused.value.field, refused.value.value, refused.value.limit) == ("training.batch_size", 1, 16)
    assert "min_batch_size 16" in str(refused.value)
    assert (too_small.value.field, too_small.value.value) == ("training.batch_size", 10)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"local_dp": LocalDPConfig(enabled=False)}, "local_dp.enabled"),
        ({"local_dp": LocalDPConfig(epsilon=11.0)}, "local_dp.epsilon"),
        ({"local_dp": LocalDPConfig(delta=0.02)}, "local_dp.delta"),
        ({"client_ranks": {"hosp-a": 17}}, "client_ranks.hosp-a"),  # max_rank 16
    ],
    ids=["dp-off", "epsilon-over-budget", "delta-over-1/n", "rank-over-cap"],
)
async def test_a_signed_plan_the_policy_refuses_is_refused(
    tmp_path: Path, changes: dict[str, Any], field: str
) -> None:
    async with hospital(tmp_path, small_spec()) as site:
        _, plan = await joined(site)
        curious = await site.curious(plan, **changes)
        with pytest.raises(PlanRefusedError) as refused:
            site.agent.check_plan(curious, num_examples=EXAMPLES)

    assert refused.value.field == field


# -- what a plan starts from -----------------------------------------------------------------------------
async def test_a_vector_that_is_not_the_plans_is_refused(tmp_path: Path) -> None:
    async with hospital(tmp_path, small_spec()) as site:
        _, plan = await joined(site)
        size = (await site.cloud.context.federations.info(site.fed.fid)).layout_size
        start = await site.agent.global_vector(site.peer, plan, size)
        # The cloud serves this hospital other bytes for adapter version 0 than the plan names.
        crafted = np.zeros(size, dtype=np.float32)
        crafted[-3:] = 5.0
        await site.cloud.store.set(keyspace.fed_adapter(site.fed.fid, 0), vector_bytes(crafted))
        with pytest.raises(PlanRefusedError) as refused:
            await site.agent.global_vector(site.peer, plan, size)

    assert not start.any()
    assert refused.value.field == "vector_sha256"
    assert refused.value.value == plan.vector_sha256


@pytest.mark.parametrize(
    ("value", "what"), [(np.nan, "non-finite"), (np.inf, "non-finite"), (80.0, "L2 norm")], ids=str
)
async def test_a_non_finite_or_over_norm_vector_is_refused_even_when_the_plan_names_it(
    tmp_path: Path, value: float, what: str
) -> None:
    # A crafted head (large, to sharpen what the held-out loss tells) with a plan naming its digest.
    async with hospital(tmp_path, small_spec(), max_global_norm=100.0) as site:
        _, plan = await joined(site)
        size = (await site.cloud.context.federations.info(site.fed.fid)).layout_size
        crafted = np.zeros(size, dtype=np.float32)
        crafted[-770:-2] = value  # the head's weights
        raw = vector_bytes(crafted)
        await site.cloud.store.set(keyspace.fed_adapter(site.fed.fid, 0), raw)
        curious = await site.curious(plan, vector_sha256=hashlib.sha256(raw).hexdigest())
        site.agent.check_plan(curious, num_examples=EXAMPLES)  # signed, and its settings pass
        with pytest.raises(PlanRefusedError) as refused:
            await site.agent.global_vector(site.peer, curious, size)

    assert refused.value.field == "vector"
    assert what in str(refused.value)


async def test_a_basis_that_is_not_the_plans_is_refused(tmp_path: Path) -> None:
    async with hospital(tmp_path, small_spec()) as site:
        spec, plan = await joined(site)
        layout, in_features = await site.layout()
        bases, digest = await site.agent.basis(site.peer, plan, spec, layout=layout, in_features=in_features)
        # Execute 1: the plan names another digest for the seeded basis the hospital rebuilds itself.
        wrong_seeded = await site.curious(plan, basis_sha256="0" * 64)
        with pytest.raises(PlanRefusedError) as seeded_refused:
            await site.agent.basis(site.peer, wrong_seeded, spec, layout=layout, in_features=in_features)
        # Execute 2: a re-based basis 1 whose served bytes are not the ones the plan names.
        honest = (await site.cloud.http.get(f"/federations/{site.fed.fid}/basis/0")).content
        crafted = (np.frombuffer(honest, dtype="<f4") * 10).astype("<f4").tobytes()
        await site.cloud.store.set(keyspace.fed_basis(site.fed.fid, 1), crafted)
        rebased = await site.curious(plan, basis_version=1, basis_sha256=hashlib.sha256(honest).hexdigest())
        with pytest.raises(PlanRefusedError) as rebased_refused:
            await site.agent.basis(site.peer, rebased, spec, layout=layout, in_features=in_features)

    assert digest == plan.basis_sha256 == hashlib.sha256(honest).hexdigest()
    assert set(bases) == {entry.name for entry in layout.lora}
    assert seeded_refused.value.field == rebased_refused.value.field == "basis_sha256"
    assert rebased_refused.value.limit == hashlib.sha256(crafted).hexdigest()
