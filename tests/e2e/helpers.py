"""What the end-to-end tests do as hospitals and as the admin: over HTTP only, with numpy vectors they
encrypt themselves under the federation's public CKKS context, so that the expected global update is
computed here independently of the services (the weighted mean of the contributed vectors, weight 1.0)."""

from __future__ import annotations

import secrets
import ssl
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from fedlora.launcher import Cluster
from protocol.crypto import CKKSParams, HEScheme, scheme_from_public
from protocol.messages import (
    CentralDPConfig,
    ClientEnrolment,
    ClientUpdate,
    Enrolled,
    FederationCreated,
    FederationInfo,
    FederationSpec,
    NoiseMechanism,
    RoundPlan,
    RoundStatus,
)
from services.identity import SigningKey
from tests.e2e.conftest import CloudProcess, EdgeProcess, issue_enrolment_token, poll

FID = "e2e"
#: Notes per hospital. The agent checks the spec against its public count, drawn once with noise of std
#: `COUNT_NOISE_STD` = 10; at 40 notes, 0.8% of draws fell below the default min_batch_size of 16 and the
#: hospital refused the federation (CI, 2026-12-07). At 120 the count falls below 16 with p < 1e-16.
NOTES = 120


def make_spec(**overrides: Any) -> FederationSpec:
    """A one-round federation on the tiny model, without central noise (the global update is exact)."""
    fields: dict[str, Any] = {
        "federation_id": FID,
        "target_modules": ("value",),
        "layers_to_transform": (1,),
        "r_max": 2,
        "rounds": 1,
        "min_clients_per_edge": 2,
        "central_dp": CentralDPConfig(mechanism=NoiseMechanism.NONE, noise_multiplier=0.0),
        "round_deadline_s": 20,
        "upload_deadline_s": 15,
        # The 5 s between the deadlines must cover the edges' forward retries and the clocks' skew.
        "forward_budget_s": 4.0,
        "max_clock_skew_s": 1.0,
        "he": CKKSParams(),  # unmasked unless a test names a scheme (tests/e2e/test_masking_e2e.py)
    }
    return FederationSpec(**{**fields, **overrides})


def enrol(cloud, client_id, edge_id, key: SigningKey | None = None) -> tuple[SigningKey, Enrolled]:
    """Enrol `client_id` at `edge_id` as its agent does: a token the admin issued for it, and a signed
    challenge."""
    key = key or SigningKey.generate()
    token = issue_enrolment_token(cloud, FID, "client", client_id)
    challenge = httpx.post(
        f"{cloud.url}/federations/{FID}/enrolment-challenges", timeout=30, verify=cloud.verify
    )
    assert challenge.status_code == 201, challenge.text
    body = ClientEnrolment(
        client_id=client_id, edge_id=edge_id, public_key=key.public_bytes, num_examples=10
    ).signed(key, federation_id=FID, nonce=challenge.json()["nonce"])
    response = httpx.post(
        f"{cloud.url}/federations/{FID}/clients",
        content=body.model_dump_json(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=30,
        verify=cloud.verify,
    )
    assert response.status_code == 201, response.text
    return key, Enrolled.model_validate_json(response.content)


def signed_update(key, client_id, plan, scheme, vector, nonce: str | None = None) -> ClientUpdate:
    """`client_id`'s signed upload under `plan`: its edge's view of the round plan (`RoundPlan.view`), the
    plan the edge holds and compares uploads with."""
    unsigned = ClientUpdate(
        federation_id=FID,
        round=plan.round,
        basis_version=plan.basis_version,
        client_id=client_id,
        rank=plan.client_ranks.get(client_id, 1),
        weight=1.0,
        num_examples=10,
        nonce=nonce or secrets.token_hex(16),
        ciphertext=scheme.serialize(scheme.encrypt(vector)),
        plan_sha256=plan.sha256,
    )
    return unsigned.signed(key.sign)


def post_upload(
    edge_url, update_or_body, *, round_=0, verify: ssl.SSLContext | bool = True
) -> httpx.Response:
    content = (
        update_or_body if isinstance(update_or_body, bytes) else update_or_body.model_dump_json().encode()
    )
    return httpx.post(
        f"{edge_url}/federations/{FID}/rounds/{round_}/uploads",
        content=content,
        headers={"Content-Type": "application/json"},
        timeout=30,
        verify=verify,
    )


def create_federation(cloud: CloudProcess, spec: FederationSpec) -> FederationCreated:
    created = cloud.admin.post("/federations", json=spec.model_dump(mode="json"))
    assert created.status_code == 201, created.text
    return FederationCreated.model_validate_json(created.content)


def round_status(cloud: CloudProcess, round_: int = 0) -> RoundStatus:
    response = cloud.admin.get(f"/federations/{FID}/rounds/{round_}")
    assert response.status_code == 200, response.text
    return RoundStatus.model_validate_json(response.content)


def adapter_vector(cloud: CloudProcess, version: int) -> np.ndarray:
    response = cloud.admin.get(f"/federations/{FID}/adapters/{version}/vector")
    assert response.status_code == 200, response.text
    return np.frombuffer(response.content, dtype="<f4")


def edge_progress(edge: EdgeProcess, round_: int = 0) -> dict[str, Any] | None:
    """The edge's view of the round, or None while it cannot say (starting, unreachable)."""
    try:
        response = httpx.get(f"{edge.url}/federations/{FID}/rounds/{round_}", timeout=10, verify=edge.verify)
    except httpx.TransportError:
        return None
    return response.json() if response.status_code == 200 else None


def edge_health(edge: EdgeProcess) -> dict[str, Any]:
    try:
        response = httpx.get(f"{edge.url}/healthz", timeout=10, verify=edge.verify)
    except httpx.TransportError:
        return {}
    return response.json() if response.status_code == 200 else {}


@dataclass
class Hospital:
    client_id: str
    edge_id: str
    key: SigningKey
    vector: np.ndarray
    nonce: str


@dataclass
class Federation:
    """A started federation in round 0 and the hospitals the test plays."""

    cloud: CloudProcess
    cluster: Cluster
    info: FederationInfo
    scheme: HEScheme[Any]
    plan: RoundPlan
    hospitals: dict[str, Hospital]
    _updates: dict[str, ClientUpdate] = field(default_factory=dict)

    def update(self, client_id: str) -> ClientUpdate:
        """The hospital's signed upload for round 0, built once: a retry sends the very same bytes."""
        if client_id not in self._updates:
            h = self.hospitals[client_id]
            self._updates[client_id] = signed_update(
                h.key, client_id, self.plan.view(h.edge_id), self.scheme, h.vector, h.nonce
            )
        return self._updates[client_id]

    def upload(self, client_id: str, edge: EdgeProcess) -> httpx.Response:
        return post_upload(edge.url, self.update(client_id), verify=edge.verify)

    def upload_accepted(self, client_id: str, edge: EdgeProcess) -> None:
        response = self.upload(client_id, edge)
        assert response.status_code == 202, response.text

    def upload_until_accepted(
        self, client_id: str, edge: EdgeProcess, *, timeout_s: float, transient=(503,)
    ) -> dict[str, Any]:
        """Send the same upload until the edge answers 202 (it may be restarting, or its store may be):
        only a connection error or one of `transient` statuses is retried, anything else fails."""

        def attempt() -> dict[str, Any] | None:
            try:
                response = self.upload(client_id, edge)
            except httpx.TransportError:
                return None
            if response.status_code in transient:
                return None
            assert response.status_code == 202, response.text
            return response.json()

        return poll(
            attempt,
            timeout_s=timeout_s,
            what=f"{client_id}'s upload to be accepted",
            cluster=self.cluster,
            interval_s=0.5,
        )

    def expected_mean(self, client_ids) -> np.ndarray:
        return np.mean([self.hospitals[c].vector for c in client_ids], axis=0)

    def wait_closed(self, *, timeout_s: float) -> RoundStatus:
        def closed() -> RoundStatus | None:
            status = round_status(self.cloud)
            assert status.state.value != "failed", status.failure
            return status if status.state.value == "closed" else None

        return poll(closed, timeout_s=timeout_s, what="round 0 to close", cluster=self.cluster)


def wait_edges_enrolled(cloud: CloudProcess, edge_ids, *, cluster: Cluster) -> None:
    wanted = set(edge_ids)

    def enrolled() -> bool:
        response = cloud.admin.get(f"/federations/{FID}/edges")
        return response.status_code == 200 and wanted <= {e["edge_id"] for e in response.json()}

    poll(enrolled, timeout_s=60, what=f"edges {sorted(wanted)} to enrol", cluster=cluster)


def start_round(
    cloud: CloudProcess,
    created: FederationCreated,
    edges: list[EdgeProcess],
    placement: dict[str, str],
    *,
    cluster: Cluster,
    seed: int,
) -> Federation:
    """Enrol the hospitals of `placement` (client id -> edge id), start the federation and wait until every
    edge process follows round 0. Keys, nonces and vectors come from `seed`."""
    wait_edges_enrolled(cloud, {e.edge_id for e in edges}, cluster=cluster)
    rng = np.random.default_rng(seed)
    keys = {}
    for cid, eid in placement.items():
        keys[cid] = enrol(cloud, cid, eid, SigningKey.from_bytes(rng.bytes(32)))[0]
    info = FederationInfo.model_validate_json(cloud.admin.get(f"/federations/{FID}").content)
    public = cloud.admin.get(f"/federations/{FID}/public-context").content
    scheme = scheme_from_public(info.spec.he, public)
    hospitals = {
        cid: Hospital(
            client_id=cid,
            edge_id=eid,
            key=keys[cid],
            vector=rng.normal(scale=0.05, size=info.layout_size),
            nonce=rng.bytes(16).hex(),
        )
        for cid, eid in placement.items()
    }
    started = cloud.admin.post(f"/federations/{FID}/start")
    assert started.status_code in (200, 201), started.text
    plan = RoundPlan.model_validate_json(cloud.admin.get(f"/federations/{FID}/plan").content)
    assert plan.round == 0 and set(plan.client_ranks) == set(placement)
    poll(
        lambda: all(edge_health(e).get("round") == 0 for e in edges),
        timeout_s=60,
        what="the edges to follow round 0",
        cluster=cluster,
    )
    return Federation(cloud, cluster, info, scheme, plan, hospitals)
