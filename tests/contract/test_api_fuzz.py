"""Schemathesis against the cloud and the edge, each served by uvicorn on loopback (a thread of this process):
every operation of each OpenAPI document, stateless (examples, coverage and fuzzing phases) and stateful
(schemathesis' state machine over the links it infers), with valid tokens and a federation that has run a
round, must show no server error and no conformance failure: undocumented statuses, responses that break
their schema or headers, schema-valid requests refused, schema-invalid ones accepted.

The checks are schemathesis' defaults: not_a_server_error, status_code_conformance,
content_type_conformance, response_schema_conformance, response_headers_conformance,
positive_data_acceptance, negative_data_rejection, missing_required_header, unsupported_method (with the
`Allow` of a 405), use_after_free and ensure_resource_availability.

The data the fuzzing runs against is made first by the `world` fixture, a scripted round over the same two
HTTP APIs: create a federation, enrol the edge and two hospitals (`enrol_parties`), start, upload two
signed CKKS updates to the edge, and read the round closed at the cloud. Uvicorn in a thread rather than
in its own process (as tests/e2e starts the services) lets the fixture build the apps around memory stores.

Deterministic: a fixed seed, schemathesis' deterministic generation and no example database.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events
from schemathesis.engine.recorder import CheckFailureInfo, ScenarioRecorder
from schemathesis.schemas import BaseSchema

from cloud_server.app import create_app as create_cloud
from edge_aggregator.app import create_app as create_edge
from fedlora.launcher import free_port
from protocol.crypto import KekRing, scheme_from_public
from protocol.messages import EdgeEnrolment, Enrolled, FederationCreated, RoundPlan
from services.identity import SigningKey
from services.settings import EdgeSettings
from services.store import MemoryStore
from tests.cloud.harness import ADMIN, ADMIN_TOKEN, KEK, bearer, cloud_settings
from tests.e2e.conftest import issue_enrolment_token
from tests.e2e.helpers import FID, enrol, make_spec, signed_update
from tests.served import served

EDGE_ID = "edge-north"
HOSPITALS = ("hospital-a", "hospital-b")
SEED = 20
# Per operation in the fuzzing phase, and steps per stateful scenario: the module's two runs take about a
# minute of CPU on a laptop-class core.
MAX_EXAMPLES = 6
STATEFUL_STEPS = 6
PHASES = {"examples", "coverage", "fuzzing", "stateful"}
POLL_S = 60.0


def wait_for(predicate: Callable[[], Any], *, what: str, timeout_s: float = POLL_S) -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)
    return result


@dataclass(frozen=True)
class World:
    cloud_url: str
    edge_url: str
    created: FederationCreated
    parties: Parties
    enrolment_tokens: Mapping[str, str]  # role -> a token for the fuzzing's enrolments


@dataclass(frozen=True)
class Parties:
    hospitals: Mapping[str, tuple[SigningKey, str]]  # client id -> its key and API token
    probe_edge_token: str  # an edge-role token for the fuzzing (its own edge, with no hospitals)


def enrol_parties(cloud_url: str, admin: httpx.Client) -> Parties:
    """The hospitals enrolled at `EDGE_ID`, and a second edge the fuzzing uses as its edge credential: the
    one place that knows how parties enrol (change it when enrolment changes): each with a token the admin
    issued for its id and a signed challenge."""
    cloud = SimpleNamespace(url=cloud_url, admin=admin, verify=True)  # plain http on loopback
    hospitals = {}
    for client_id in HOSPITALS:
        key, answer = enrol(cloud, client_id, EDGE_ID)
        hospitals[client_id] = (key, answer.api_token)
    key = SigningKey.generate()
    nonce = admin.post(f"/federations/{FID}/enrolment-challenges").json()["nonce"]
    probe = EdgeEnrolment(edge_id="edge-probe", url="http://127.0.0.1:9/", public_key=key.public_bytes)
    token = issue_enrolment_token(cloud, FID, "edge", "edge-probe")
    response = httpx.post(
        f"{cloud_url}/federations/{FID}/edges",
        content=probe.signed(key, federation_id=FID, nonce=nonce).model_dump_json(),
        headers={**bearer(token), "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return Parties(hospitals, Enrolled.model_validate_json(response.content).api_token)


def run_one_round(world_cloud: httpx.Client, edge_url: str, hospitals: Mapping[str, SigningKey]) -> None:
    """Start the federation and close round 0: each hospital uploads a signed CKKS update to the edge, the
    edge forwards the sum, the cloud closes the round."""
    started = world_cloud.post(f"/federations/{FID}/start")
    assert started.status_code == 200, started.text
    plan = RoundPlan.model_validate_json(started.content).view(EDGE_ID)  # what the edge and hospitals hold
    wait_for(
        lambda: httpx.get(f"{edge_url}/healthz", timeout=10).json().get("round") == 0,
        what="the edge to follow round 0",
    )
    info = world_cloud.get(f"/federations/{FID}").json()
    scheme = scheme_from_public(make_spec().he, world_cloud.get(f"/federations/{FID}/public-context").content)
    rng = np.random.default_rng(SEED)
    for client_id, key in hospitals.items():
        update = signed_update(key, client_id, plan, scheme, rng.normal(0, 0.01, info["layout_size"]))
        answer = httpx.post(
            f"{edge_url}/federations/{FID}/rounds/0/uploads",
            content=update.model_dump_json(),
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        assert answer.status_code == 202, answer.text
    wait_for(
        lambda: world_cloud.get(f"/federations/{FID}/rounds/0").json()["state"] == "closed",
        what="round 0 to close at the cloud",
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The cloud and one edge served on loopback, a federation created over the API, the edge and two
    hospitals enrolled, and round 0 run to its close."""
    tmp = tmp_path_factory.mktemp("fuzz")
    cloud_app = create_cloud(cloud_settings(deadline_check_s=1.0), store=MemoryStore(), keks=KekRing(KEK))
    with (
        served(cloud_app, free_port()) as cloud_url,
        httpx.Client(base_url=cloud_url, headers=ADMIN, timeout=30) as admin,
    ):
        spec = make_spec(rounds=3, round_deadline_s=600, upload_deadline_s=590)
        response = admin.post("/federations", json=spec.model_dump(mode="json"))
        assert response.status_code == 201, response.text
        created = FederationCreated.model_validate_json(response.content)
        tokens = SimpleNamespace(admin=admin)
        edge_port = free_port()
        edge_settings = EdgeSettings(
            edge_id=EDGE_ID,
            federation_id=FID,
            cloud_url=cloud_url,
            public_url=f"http://127.0.0.1:{edge_port}",
            enrolment_token=issue_enrolment_token(tokens, FID, "edge", EDGE_ID),
            key_file=tmp / "edge.key",
            deadline_check_s=1.0,
        )
        with served(create_edge(edge_settings, store=MemoryStore()), edge_port) as edge_url:
            wait_for(
                lambda: httpx.get(f"{edge_url}/healthz", timeout=10).json().get("ready"),
                what="the edge to enrol",
            )
            parties = enrol_parties(cloud_url, admin)
            # Enrolment tokens for the fuzzing's enrolments (bound to ids it may or may not send).
            fuzz_tokens = {
                role: issue_enrolment_token(tokens, FID, role, f"fuzz-{role}") for role in ("edge", "client")
            }
            run_one_round(admin, edge_url, {cid: key for cid, (key, _) in parties.hospitals.items()})
            yield World(cloud_url, edge_url, created, parties, fuzz_tokens)


#: Operations that refuse a schema-valid body on a property no JSON Schema states, with 422 naming the field:
#: an Ed25519 public key must be a canonical point of prime order (most random 32 bytes are not), so a
#: schema-valid enrolment may be answered 422 `invalid_request` with `field` `public_key`.
KEY_REFUSALS = {("POST", "/federations/{fid}/edges"), ("POST", "/federations/{fid}/clients")}
KEY_CHECKS = {
    "positive_data_acceptance": {
        "expected-statuses": ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
    }
}


def fuzz_config(
    tokens: Mapping[tuple[str, str], str], *, parameters: Mapping[str, Any]
) -> SchemathesisConfig:
    """Schemathesis' settings: the admin's token unless `tokens` names another for an operation (method,
    path), the federation's ids for the path parameters, a fixed seed and deterministic generation."""
    operations = [
        {"include-method": method, "include-path": path, "headers": bearer(token)}
        | ({"checks": KEY_CHECKS} if (method, path) in KEY_REFUSALS else {})
        for (method, path), token in tokens.items()
    ]
    return SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "headers": bearer(ADMIN_TOKEN),
            "parameters": dict(parameters),
            "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
            "phases": {"stateful": {"max-steps": STATEFUL_STEPS}},
            "operations": operations,
        }
    )


@pytest.fixture(scope="module")
def cloud_schema(world: World) -> BaseSchema:
    tokens = {
        ("POST", "/federations/{fid}/edges"): world.enrolment_tokens["edge"],
        ("POST", "/federations/{fid}/clients"): world.enrolment_tokens["client"],
        ("POST", "/federations/{fid}/rounds/{n}/aggregates"): world.parties.probe_edge_token,
    }
    config = fuzz_config(tokens, parameters={"fid": FID})
    return schemathesis.openapi.from_url(f"{world.cloud_url}/openapi.json", config=config)


@pytest.fixture(scope="module")
def edge_schema(world: World) -> BaseSchema:
    # An upload names its federation and round in the path and in the body (they must agree: 422
    # otherwise, which the document cannot state): both the edge's own, in the round it is in.
    parameters = {"federation_id": FID, "round_number": 1, "body.federation_id": FID, "body.round": 1}
    config = fuzz_config({}, parameters=parameters)
    return schemathesis.openapi.from_url(f"{world.edge_url}/openapi.json", config=config)


@dataclass
class Run:
    cases: int = 0
    failures: list[str] = field(default_factory=list)
    phases: dict[str, str] = field(default_factory=dict)  # each phase's outcome


def fuzz(schema: BaseSchema) -> Run:
    """Every phase the configuration enables (examples, coverage, fuzzing, stateful), as `st run` runs
    them; each failed check kept once, with the request that reproduces it."""
    run = Run()
    seen = set()
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.FatalError):
            raise AssertionError(f"schemathesis could not run: {event.exception!r}")
        if isinstance(event, events.PhaseFinished):
            run.phases[str(event.phase.name.value)] = str(event.status.value)
        if isinstance(event, events.NonFatalError):
            run.failures.append(f"{event.label}: error {event.value!r}")
        if isinstance(event, events.ScenarioFinished):
            run.cases += len(event.recorder.cases)
            for case_id, checks in event.recorder.checks.items():
                for check in checks:
                    info = check.failure_info
                    if info is None or (event.recorder.label, info.failure.code) in seen:
                        continue
                    seen.add((event.recorder.label, info.failure.code))
                    run.failures.append(_described(event.recorder, case_id, info))
    return run


def _described(recorder: ScenarioRecorder, case_id: str, info: CheckFailureInfo) -> str:
    """The failure, the answer the check failed on and the request that reproduces it."""
    interaction = recorder.interactions.get(case_id)
    response = interaction.response if interaction is not None else None
    answer = f"{response.status_code} {response.content[:300]!r}" if response is not None else "no answer"
    return (
        f"{recorder.label} {info.failure.code} {info.failure.title}: {info.failure.message}\n"
        f"    answered {answer}\n    {info.code_sample}"
    )


def assert_conforms(schema: BaseSchema) -> None:
    run = fuzz(schema)
    assert run.phases.keys() >= PHASES, run.phases
    assert run.failures == [], "\n".join(
        [f"{len(run.failures)} failures in {run.cases} cases", *run.failures]
    )


def test_the_cloud_answers_every_operation_as_its_document_says(cloud_schema: BaseSchema) -> None:
    assert_conforms(cloud_schema)


def test_the_edge_answers_every_operation_as_its_document_says(edge_schema: BaseSchema) -> None:
    assert_conforms(edge_schema)
