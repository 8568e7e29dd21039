"""Test harness: a cloud app run in-process (lifespan included), and a federation whose edges (and their
hospitals) the test plays by hand with the real protocol: each hospital's update made as the agent makes it
(`client_agent.update.contribution`), public-key CKKS encryption, homomorphic sums, Ed25519 signatures (the
edges' on their aggregates, the hospitals' on their manifest lines)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel

from client_agent.update import contribution
from cloud_server.app import create_app
from cloud_server.closing import stored_digests
from cloud_server.context import CloudContext
from cloud_server.errors import NotFoundError
from cloud_server.records import pack_aggregate
from edge_aggregator.aggregator import EdgeAggregator
from edge_aggregator.cloud_link import HttpCloudLink
from edge_aggregator.config import EdgeConfig
from fedlora.enrolment_tokens import issue_enrolment_token as issue
from protocol.crypto import CKKSParams, HEScheme, KekRing, scheme_from_public
from protocol.messages import (
    ClientEnrolment,
    Contribution,
    EdgeAggregate,
    EdgeEnrolment,
    Enrolled,
    EnrolmentChallenge,
    FederationCreated,
    FederationInfo,
    FederationSpec,
    LateSum,
    LocalSpend,
    Role,
    RoundPlan,
    RoundStatus,
)
from protocol.reach import planned_hold
from services import keyspace
from services.clock import Clock, OffsetClock
from services.identity import SigningKey
from services.settings import CloudSettings
from services.store import MemoryStore, StateStore
from tests.clock import FakeClock
from tests.keks import KEK

ADMIN_TOKEN = "adm-q7Zr2LxW9pN4vK8sT1yB3mH6"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# One LoRA module (value of layer 5, 384 outputs) padded to r_max = 2, plus the 2 x 384 head and its bias.
LAYOUT_SIZE = 384 * 2 + 2 * 384 + 2


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def post_model(
    http: httpx.AsyncClient, url: str, body: BaseModel, *, token: str | None = None
) -> httpx.Response:
    """POST a wire model as JSON (bytes as base64), with this token or the client's default (admin)."""
    headers = {"Content-Type": "application/json", **(bearer(token) if token else {})}
    return await http.post(url, content=body.model_dump_json(), headers=headers)


async def issue_enrolment_token(http: httpx.AsyncClient, fid: str, role: Role, subject: str) -> str:
    """A single-use enrolment token for `subject` as `role`, issued over the API (`http` carries the admin
    token)."""
    return (await issue(http, fid, role, subject)).enrolment_token


async def enrolment_nonce(http: httpx.AsyncClient, fid: str) -> str:
    response = await http.post(f"/federations/{fid}/enrolment-challenges")
    assert response.status_code == 201, response.text
    return EnrolmentChallenge.model_validate_json(response.content).nonce


async def post_enrolment(
    http: httpx.AsyncClient,
    fid: str,
    body: EdgeEnrolment | ClientEnrolment,
    key: SigningKey,
    *,
    token: str | None,
    nonce: str | None = None,
) -> httpx.Response:
    """`body` signed by `key` over a fresh challenge (or `nonce`), posted with enrolment `token` (none for a
    re-enrolment), as `services.enrolling.enrol` does; the raw answer."""
    signed = body.signed(key, federation_id=fid, nonce=nonce or await enrolment_nonce(http, fid))
    where = "edges" if isinstance(body, EdgeEnrolment) else "clients"
    # Blank, not absent, without a token: the harness's client carries the admin token by default.
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}" if token else ""}
    return await http.post(f"/federations/{fid}/{where}", content=signed.model_dump_json(), headers=headers)


def cloud_settings(**overrides: Any) -> CloudSettings:
    values: dict[str, Any] = {"admin_token": ADMIN_TOKEN, "deadline_check_s": 60.0, "long_poll_s": 5.0}
    return CloudSettings(**(values | overrides))


def small_spec(fid: str = "fed-1", **overrides: Any) -> FederationSpec:
    values: dict[str, Any] = {
        "federation_id": fid,
        "target_modules": ("value",),
        "layers_to_transform": (5,),
        "r_max": 2,
        "min_clients_per_edge": 2,
        "rounds": 2,
        "round_deadline_s": 600.0,
        "upload_deadline_s": 540.0,
        # Unmasked CKKS unless a test names a scheme: the masking tests build cohorts themselves
        # (tests/adversarial/test_masking.py); the others forward plain homomorphic sums.
        "he": CKKSParams(),
    }
    return FederationSpec(**(values | overrides))


@dataclass
class Cloud:
    app: FastAPI
    http: httpx.AsyncClient
    clock: FakeClock
    store: StateStore

    @property
    def context(self) -> CloudContext:
        context: CloudContext = self.app.state.cloud
        return context

    async def tick(self) -> None:
        await self.context.rounds.tick(self.clock())

    async def status(self, fid: str, round_: int) -> RoundStatus:
        response = await self.http.get(f"/federations/{fid}/rounds/{round_}")
        assert response.status_code == 200, response.text
        return RoundStatus.model_validate_json(response.content)

    async def vector(self, fid: str, version: int) -> np.ndarray:
        response = await self.http.get(f"/federations/{fid}/adapters/{version}/vector")
        assert response.status_code == 200, response.text
        return np.frombuffer(response.content, dtype="<f4").astype(np.float64)


#: The store a `running_cloud()` without `store=` uses: tests/cloud/conftest.py sets it for every test
#: from the `state_store` fixture (memory, then Redis).
default_store: StateStore | None = None


@contextlib.asynccontextmanager
async def running_cloud(
    *,
    store: StateStore | None = None,
    clock: FakeClock | None = None,
    own_clock: Clock | None = None,
    kek: bytes = KEK,
    kek_previous: bytes | None = None,
    **settings: Any,
) -> AsyncIterator[Cloud]:
    """A cloud app with its lifespan running, and an admin HTTP client bound to it in-process. Its deadlines
    run on `clock` (standing in for the store's clock); with `own_clock` instead, on the store's own clock,
    as in production, with `own_clock` as the replica's process clock (`clock` is then only `Cloud.clock`)."""
    the_store = store if store is not None else (default_store or MemoryStore())
    the_clock = clock or FakeClock()
    time = None if own_clock is not None else the_clock.time
    keks = KekRing(current=kek, previous=kek_previous)
    app = create_app(cloud_settings(**settings), store=the_store, keks=keks, clock=own_clock, time=time)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cloud", headers=ADMIN) as http:
            yield Cloud(app=app, http=http, clock=the_clock, store=the_store)


class SlowAnswers(httpx.ASGITransport):
    """The cloud in-process, with the way back from it taking `delay_s` of the caller's clock (`local`)
    when set: a congested link, or a paused process, as a poll's round trip sees it."""

    def __init__(self, app: FastAPI, local: FakeClock) -> None:
        super().__init__(app=app)
        self.local = local
        self.delay_s = 0.0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        self.local.advance(self.delay_s)
        return response


def edge_link(
    fed: Federation, transport: httpx.AsyncBaseTransport, local: Clock, enrolment_token: str
) -> tuple[HttpCloudLink, OffsetClock]:
    """An edge's link to `fed`'s in-process cloud over `transport` (enrolling with `enrolment_token`), and the
    edge's clock: `local` corrected by the offset to the cloud's time the link measures on every plan poll."""
    edge_time = OffsetClock(local)
    link = HttpCloudLink(
        "http://cloud",
        federation_id=fed.fid,
        enrolment_token=enrolment_token,
        transport=transport,
        clock=edge_time,
    )
    return link, edge_time


@contextlib.asynccontextmanager
async def edge_core(
    cloud: Cloud,
    created: FederationCreated,
    edge_id: str,
    *,
    key: SigningKey | None = None,
    clock: Clock | None = None,
) -> AsyncIterator[EdgeAggregator]:
    """A real edge core over a memory store, enrolled with the in-process cloud (with `key`, a fresh one if
    None) and talking to it over HTTP (in-process) as `edge_aggregator.app` sets one up: on `clock` (the
    cloud's fake clock if None) corrected by the offset to the cloud's time that its link measures on every
    plan poll."""
    fid = created.federation_id
    cloud_time = OffsetClock(clock or cloud.clock)
    link = HttpCloudLink(
        "http://cloud",
        federation_id=fid,
        enrolment_token=await issue_enrolment_token(cloud.http, fid, Role.EDGE, edge_id),
        transport=httpx.ASGITransport(app=cloud.app),
        clock=cloud_time,
    )
    key = key or SigningKey.generate()
    await link.enrol(
        EdgeEnrolment(edge_id=edge_id, url=f"http://{edge_id}.test:8710", public_key=key.public_bytes), key
    )
    info = await link.federation()
    scheme = scheme_from_public(info.spec.he, await link.public_context())
    edge = EdgeAggregator(
        EdgeConfig(edge_id=edge_id, federation=info),
        store=MemoryStore(),
        link=link,
        scheme=scheme,
        signing_key=key,
        clock=cloud_time,
    )
    try:
        yield edge
    finally:
        await edge.close()
        await link.close()


@dataclass
class Edge:
    edge_id: str
    key: SigningKey
    token: str
    clients: list[str]


@dataclass
class Federation:
    """A federation created over the API with its edges and clients enrolled."""

    spec: FederationSpec
    created: FederationCreated
    scheme: HEScheme[Any]
    edges: dict[str, Edge]
    client_tokens: dict[str, str] = field(default_factory=dict)
    client_keys: dict[str, SigningKey] = field(default_factory=dict)

    @property
    def fid(self) -> str:
        return self.spec.federation_id

    @classmethod
    async def create(
        cls,
        http: httpx.AsyncClient,
        spec: FederationSpec,
        topology: Mapping[str, Sequence[str]] = {
            "edge-1": ("client-a", "client-b"),
            "edge-2": ("client-c", "client-d"),
        },
        *,
        max_ranks: Mapping[str, int] | None = None,
        num_examples: Mapping[str, int] | None = None,
    ) -> Federation:
        response = await http.post("/federations", json=spec.model_dump(mode="json"))
        assert response.status_code == 201, response.text
        created = FederationCreated.model_validate_json(response.content)
        fid = spec.federation_id
        # The spec as the cloud stored it: with `compression` it planned the quantisation bits.
        response = await http.get(f"/federations/{fid}")
        assert response.status_code == 200, response.text
        spec = FederationInfo.model_validate_json(response.content).spec
        edges: dict[str, Edge] = {}
        client_tokens: dict[str, str] = {}
        client_keys: dict[str, SigningKey] = {}
        for edge_id, client_ids in topology.items():
            key = SigningKey.generate()
            body = EdgeEnrolment(
                edge_id=edge_id, url=f"http://{edge_id}.test:8710", public_key=key.public_bytes
            )
            token = await issue_enrolment_token(http, fid, Role.EDGE, edge_id)
            response = await post_enrolment(http, fid, body, key, token=token)
            assert response.status_code == 201, response.text
            edges[edge_id] = Edge(
                edge_id, key, Enrolled.model_validate_json(response.content).api_token, list(client_ids)
            )
            for client_id in client_ids:
                client_keys[client_id] = SigningKey.generate()
                enrolment = ClientEnrolment(
                    client_id=client_id,
                    edge_id=edge_id,
                    public_key=client_keys[client_id].public_bytes,
                    num_examples=(num_examples or {}).get(client_id, 100),
                    max_rank=(max_ranks or {}).get(client_id),
                )
                token = await issue_enrolment_token(http, fid, Role.CLIENT, client_id)
                response = await post_enrolment(http, fid, enrolment, client_keys[client_id], token=token)
                assert response.status_code == 201, response.text
                client_tokens[client_id] = Enrolled.model_validate_json(response.content).api_token
        as_edge = bearer(next(iter(edges.values())).token) if edges else None
        response = await http.get(f"/federations/{fid}/public-context", headers=as_edge)
        assert response.status_code == 200, response.text
        scheme = scheme_from_public(spec.he, response.content)
        return cls(
            spec=spec,
            created=created,
            scheme=scheme,
            edges=edges,
            client_tokens=client_tokens,
            client_keys=client_keys,
        )

    async def start(self, http: httpx.AsyncClient) -> RoundPlan:
        response = await http.post(f"/federations/{self.fid}/start")
        assert response.status_code == 200, response.text
        return RoundPlan.model_validate_json(response.content)

    def encrypt_sum(self, vectors: Sequence[np.ndarray]) -> bytes:
        """What an edge forwards: the homomorphic sum of its clients' encrypted (pre-weighted) deltas."""
        return self.scheme.serialize(self.scheme.sum(self.scheme.encrypt(v) for v in vectors))

    async def uploads(
        self, cloud: Cloud, round_: int, deltas: Mapping[str, np.ndarray], weights: Mapping[str, float]
    ) -> dict[str, Any]:
        """Each hospital's encrypted upload for `round_` as its agent makes it: its delta weighted, with the
        columns the round's plan holds back zeroed (`protocol.reach.planned_hold`), then encrypted."""
        plan = await stored_plan(cloud, self.fid, round_)
        layout, _ = await cloud.context.federations.layout(self.fid)
        held = planned_hold(layout, plan.published_rank) if plan is not None else None
        return {
            cid: self.scheme.encrypt(
                contribution(self.scheme, delta, weight=weights.get(cid, 1.0), clip_norm=None, held=held)
            )
            for cid, delta in deltas.items()
        }

    async def aggregate(
        self,
        cloud: Cloud,
        edge_id: str,
        round_: int,
        deltas: Mapping[str, np.ndarray],
        *,
        weights: Mapping[str, float] | None = None,
        ciphertext: bytes | None = None,
        idempotency_key: str | None = None,
        basis_version: int | None = None,
        signer: SigningKey | None = None,
        local_epsilon: float | None = 1.5,
        local_privacy: Mapping[str, LocalSpend] | None = None,
        noise_share_std: float | None = None,
        ranks: Mapping[str, int] | None = None,
        validation: Mapping[str, tuple[float, int]] | None = None,
        late: Mapping[int, Mapping[str, np.ndarray]] | None = None,
        plan_sha256: str | None = None,
        forged: Collection[str] = (),
    ) -> EdgeAggregate:
        """A signed `EdgeAggregate` of these clients' uploads (`uploads`: each delta weighted before
        encryption); `late` adds buckets of late uploads (origin round -> the clients' deltas, weighted the
        same way). Each client signs its manifest line, naming the digest of its upload, except the `forged`
        ones: clients that never uploaded, whose lines the edge can only sign with a key of its own. Each sum
        names the digest of the edge's view of its round's plan as `cloud` serves it (as the edge does), unless
        `plan_sha256` names another for the round's own sum."""
        w = dict(weights or {})

        def lines(origin: int, uploads: Mapping[str, Any]) -> tuple[Contribution, ...]:
            out = []
            for cid, upload in uploads.items():
                line = Contribution(
                    client_id=cid,
                    weight=w.get(cid, 1.0),
                    num_examples=100,
                    rank=(ranks or {}).get(cid, self.spec.r_max),
                    nonce=secrets.token_hex(16),
                    ciphertext_sha256=hashlib.sha256(self.scheme.serialize(upload)).hexdigest(),
                    local_epsilon=local_epsilon,
                    local_privacy=(local_privacy or {}).get(cid),
                    noise_share_std=noise_share_std,
                    validation_loss=(validation or {}).get(cid, (None, None))[0],
                    validation_examples=(validation or {}).get(cid, (None, None))[1],
                )
                # A client not enrolled has no key of its own either: the edge signs for it too.
                key = self.client_keys.get(cid) if cid not in forged else None
                key = key or SigningKey.generate()
                payload = line.signing_payload(federation_id=self.fid, round_=origin)
                out.append(line.model_copy(update={"signature": key.sign(payload)}))
            return tuple(out)

        def total(uploads: Mapping[str, Any]) -> bytes:
            return self.scheme.serialize(self.scheme.sum(uploads.values()))

        own = await self.uploads(cloud, round_, deltas, w)
        buckets = []
        for origin, late_deltas in sorted((late or {}).items()):
            bucket = await self.uploads(cloud, origin, late_deltas, w)
            buckets.append(
                LateSum(
                    origin_round=origin,
                    ciphertext=total(bucket),
                    contributions=lines(origin, bucket),
                    plan_sha256=await stored_plan_sha256(cloud, self.fid, origin, edge_id),
                )
            )
        unsigned = EdgeAggregate(
            federation_id=self.fid,
            round=round_,
            basis_version=self.spec.basis_version if basis_version is None else basis_version,
            edge_id=edge_id,
            ciphertext=ciphertext if ciphertext is not None else total(own),
            contributions=lines(round_, own),
            idempotency_key=idempotency_key or f"{self.fid}:{round_}:{edge_id}",
            late=tuple(buckets),
            plan_sha256=plan_sha256 or await stored_plan_sha256(cloud, self.fid, round_, edge_id),
        )
        key = signer or self.edges[edge_id].key
        return unsigned.model_copy(update={"signature": key.sign(unsigned.signing_payload())})

    async def post(
        self, http: httpx.AsyncClient, aggregate: EdgeAggregate, *, token: str | None = None
    ) -> httpx.Response:
        url = f"/federations/{self.fid}/rounds/{aggregate.round}/aggregates"
        return await post_model(http, url, aggregate, token=token or self.edges[aggregate.edge_id].token)

    async def store_sums(
        self, cloud: Cloud, round_: int, deltas: Mapping[str, Mapping[str, np.ndarray]]
    ) -> None:
        """Each edge's sum of `deltas` (edge id -> its clients' deltas) stored as `receive` stores it (HSETNX,
        with its digest among the round's) and no close attempted: as if the process that stored them died
        before closing the round."""
        values = {}
        for edge_id, edge_deltas in deltas.items():
            aggregate = await self.aggregate(cloud, edge_id, round_, edge_deltas)
            values[edge_id] = pack_aggregate(aggregate, received_at=cloud.clock())
            assert await cloud.store.hset_if_absent(
                keyspace.fed_round_aggregates(self.fid, round_), edge_id, values[edge_id]
            )
        digests = json.dumps(stored_digests(values)).encode()
        await cloud.store.set(keyspace.fed_round_aggregate_digests(self.fid, round_), digests)

    def deltas(self, rng: np.random.Generator, *, scale: float = 0.01) -> dict[str, dict[str, np.ndarray]]:
        """Per edge, one random delta per client."""
        return {
            edge.edge_id: {cid: rng.normal(0.0, scale, LAYOUT_SIZE) for cid in edge.clients}
            for edge in self.edges.values()
        }


async def one_sum_in(cloud: Cloud, rng: np.random.Generator) -> Federation:
    """A started `small_spec` federation whose round 0 holds edge-1's sum (answered 202), still unsealed."""
    fed = await Federation.create(cloud.http, small_spec())
    await fed.start(cloud.http)
    body = await fed.aggregate(cloud, "edge-1", 0, fed.deltas(rng)["edge-1"])
    assert (await fed.post(cloud.http, body)).status_code == 202
    return fed


async def replace_stored_sum(cloud: Cloud, fid: str, value: bytes, *, recorded: bool) -> None:
    """Write `value` over edge-1's stored sum for round 0, as an attacker with store access (or a bug)
    would; `recorded`: its digest replaces edge-1's in the round's aggregate digests too."""
    await cloud.store.hset(keyspace.fed_round_aggregates(fid, 0), "edge-1", value)
    if recorded:
        digests_key = keyspace.fed_round_aggregate_digests(fid, 0)
        digests = json.loads(await cloud.store.get(digests_key) or b"{}")
        digests["edge-1"] = hashlib.sha256(value).hexdigest()
        await cloud.store.set(digests_key, json.dumps(digests).encode())


async def past_deadline_with_edge_1_quarantined(
    cloud: Cloud, fed: Federation
) -> tuple[RoundStatus, bytes | None, RoundStatus]:
    """One deadline check past round 0's deadline: round 0's status, the quarantined copy of edge-1's sum
    (None if there is none) and round 1's status."""
    cloud.clock.advance(fed.spec.round_deadline_s + 1)
    await cloud.tick()
    status = await cloud.status(fed.fid, 0)
    quarantined = await cloud.store.get(keyspace.fed_quarantine(fed.fid, "round:0:aggregate:edge-1"))
    return status, quarantined, await cloud.status(fed.fid, 1)


async def stored_plan(cloud: Cloud, fid: str, round_: int) -> RoundPlan | None:
    """Round `round_`'s plan as the cloud stored it (None before the round opened)."""
    try:
        return await cloud.context.rounds.plan(fid, round_)
    except NotFoundError:
        return None


async def stored_plan_sha256(cloud: Cloud, fid: str, round_: int, edge_id: str) -> str | None:
    """The digest of edge `edge_id`'s view of round `round_`'s plan, as the cloud serves it (None before the
    round opened)."""
    plan = await stored_plan(cloud, fid, round_)
    return (await cloud.context.rounds.view(fid, plan, edge_id)).sha256 if plan is not None else None


def weighted_mean(deltas: Mapping[str, np.ndarray], weights: Mapping[str, float] | None = None) -> np.ndarray:
    """The plaintext weighted mean, computed without the cloud's code."""
    w = {cid: (weights or {}).get(cid, 1.0) for cid in deltas}
    total = sum(w[cid] * deltas[cid] for cid in deltas)
    return np.asarray(total) / sum(w.values())
