"""Issue 20, item 1 (first half): non-finite and unbounded values. Each test reproduced a way one correctly
signed message, or one enrolment too many, wedged a round; each holds now. Run on the memory store and a
real Redis (tests/adversarial/conftest.py)."""

from __future__ import annotations

import importlib
import inspect
import json
import math
import pkgutil
import struct
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
import pytest
from pydantic import BaseModel, ValidationError

from cloud_server.plans import open_round
from protocol.messages import (
    MAX_CLIENTS_PER_ROUND,
    ClientEnrolment,
    ClientInfo,
    ClientUpdate,
    Contribution,
    EdgeAggregate,
    ErrorCode,
    LocalSpend,
    Role,
    RoundState,
)
from services import keyspace
from services.identity import SigningKey
from tests.cloud.harness import (
    Federation,
    issue_enrolment_token,
    one_sum_in,
    past_deadline_with_edge_1_quarantined,
    post_enrolment,
    replace_stored_sum,
    running_cloud,
    small_spec,
)
from tests.edge.conftest import client_scheme, make_world, secret_scheme  # noqa: F401
from tests.edge.harness import FID, World, running_edge, until

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PACKAGES = ("protocol", "services", "client_agent", "edge_aggregator", "cloud_server", "fedlora")


def _models() -> list[type[BaseModel]]:
    """Every pydantic model defined in the project's packages."""
    found: dict[str, type[BaseModel]] = {}
    for package in PACKAGES:
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
            if info.name.endswith("__main__"):
                continue
            module = importlib.import_module(info.name)
            for _, value in inspect.getmembers(module, inspect.isclass):
                if issubclass(value, BaseModel) and value.__module__ == info.name:
                    found[f"{value.__module__}.{value.__qualname__}"] = value
    return [found[name] for name in sorted(found)]


def _json(model: BaseModel) -> str:
    """The JSON an attacker sends: non-finite floats as the literals `Infinity` / `NaN`, which Python's and
    pydantic's JSON parsers both accept."""
    return json.dumps(model.model_dump(mode="json"), allow_nan=True)


def test_every_wire_and_stored_model_refuses_non_finite_floats() -> None:
    """Property: no model of protocol/, services/ or a tier keeps an `inf` or a `nan` it is given."""
    models = _models()
    assert len(models) > 40, [m.__name__ for m in models]
    keeping = [
        f"{m.__module__}.{m.__qualname__}" for m in models if m.model_config.get("allow_inf_nan", True)
    ]
    assert keeping == []


def test_weights_epsilons_and_sigmas_are_bounded() -> None:
    """Property: an upload's weight lies in [1e-6, 1e6]; a hospital's epsilon and the sigmas of its history
    are bounded, and `inf` is refused everywhere with the field named."""
    spend = {"epsilon": 1.0, "delta": 1e-5, "history": ((1.0, 0.01, 10),)}
    for field, value in (("epsilon", math.inf), ("epsilon", 1e300), ("budget", math.inf)):
        with pytest.raises(ValidationError) as refused:
            LocalSpend(**(spend | {field: value}))
        assert refused.value.errors()[0]["loc"] == (field,)
    for sigma in (math.inf, 1e300):
        with pytest.raises(ValidationError, match="history"):
            LocalSpend(**(spend | {"history": ((sigma, 0.01, 10),)}))
    line = {"client_id": "a", "num_examples": 1, "rank": 1, "nonce": "ab" * 16, "ciphertext_sha256": "0" * 64}
    for weight in (math.inf, math.nan, 1e-300, 1e300):
        with pytest.raises(ValidationError) as refused:
            Contribution(**line, weight=weight)
        assert refused.value.errors()[0]["loc"] == ("weight",)
    Contribution(**line, weight=1e-6)


async def test_an_upload_with_an_infinite_epsilon_is_refused_and_the_round_closes(
    make_world: Callable[..., World],  # noqa: F811
) -> None:
    """Property: a correctly signed upload with `local_privacy.epsilon: Infinity` gets 422 naming the field,
    and the round then closes normally with the other hospitals.

    (It used to be accepted: the edge's stored manifest then failed to read back, every later upload of the
    round got a 500 and the round never closed.)"""
    world = make_world(clients=3, k=2, quorum=0.5)
    hospital = world.hospitals["hosp-c"]
    honest = world.update(hospital)
    spend = LocalSpend.model_construct(
        epsilon=math.inf,
        delta=1e-5,
        accountant="rdp",
        history=((1.0, 0.01, 10),),
        budget=None,
        held_out_history=(),
    )
    unsigned = honest.model_copy(
        update={"local_privacy": spend, "local_epsilon": 1.0, "signature": b"", "contribution_signature": b""}
    )
    line = Contribution.model_construct(
        **{**honest.manifest_line().__dict__, "local_privacy": spend, "local_epsilon": 1.0, "signature": b""}
    )
    line_signature = hospital.key.sign(line.signing_payload(federation_id=unsigned.federation_id, round_=0))
    with_line = unsigned.model_copy(update={"contribution_signature": line_signature})
    hostile = with_line.model_copy(update={"signature": hospital.key.sign(with_line.signing_payload())})
    assert "Infinity" in _json(hostile)

    async with running_edge(world) as edge:
        refused = await edge.http.post(
            f"/federations/{FID}/rounds/0/uploads",
            content=_json(hostile),
            headers={"Content-Type": "application/json"},
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["field"] == "local_privacy.epsilon", refused.text
        for cid in ("hosp-a", "hosp-b"):
            answer = await edge.upload(world.update(world.hospitals[cid]))
            assert answer.status_code == 202, answer.text
        await until(lambda: len(world.cloud.attempts) == 1, what="round 0's forward")
    assert {c.client_id for c in world.cloud.attempts[0].contributions} == {"hosp-a", "hosp-b"}


def _reweighted(fed: Federation, aggregate: EdgeAggregate, weight: float) -> EdgeAggregate:
    """`aggregate` with its first line's weight set to `weight` (unvalidated), signed again by that client
    and by the edge: a correctly signed message, as a hostile edge and client would send it."""
    first, *rest = aggregate.contributions
    line = first.model_copy(update={"weight": weight, "signature": b""})
    payload = line.signing_payload(federation_id=fed.fid, round_=aggregate.round)
    line = line.model_copy(update={"signature": fed.client_keys[first.client_id].sign(payload)})
    unsigned = aggregate.model_copy(update={"contributions": (line, *rest), "signature": b""})
    key = fed.edges[aggregate.edge_id].key
    return unsigned.model_copy(update={"signature": key.sign(unsigned.signing_payload())})


@pytest.mark.parametrize("weight", [math.inf, 1e-300])
async def test_an_aggregate_with_an_infinite_or_vanishing_weight_is_refused(weight: float) -> None:
    """Property: the cloud refuses (422, naming the weight) a signed aggregate whose line weighs `inf` or
    1e-300, and the round closes with the honest edge's sum.

    (An infinite weight made the round's `advance` raise on every tick; a weight of 1e-300 published an
    all-inf adapter.)"""
    async with running_cloud() as cloud:
        spec = small_spec(quorum=0.5)
        fed = await Federation.create(cloud.http, spec)
        await fed.start(cloud.http)
        deltas = fed.deltas(np.random.default_rng(5))
        hostile = _reweighted(fed, await fed.aggregate(cloud, "edge-1", 0, deltas["edge-1"]), weight)
        refused = await cloud.http.post(
            f"/federations/{fed.fid}/rounds/0/aggregates",
            content=_json(hostile),
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {fed.edges['edge-1'].token}",
            },
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["field"] == "contributions.0.weight", refused.text
        honest = await fed.aggregate(cloud, "edge-2", 0, deltas["edge-2"])
        assert (await fed.post(cloud.http, honest)).status_code == 202
        cloud.clock.advance(spec.round_deadline_s + 1)
        await cloud.tick()
        status = await cloud.status(fed.fid, 0)
        adapter = await cloud.vector(fed.fid, 1)
    assert status.state.value == "closed", status
    assert np.isfinite(adapter).all()


async def test_enrolling_past_the_cap_is_refused_and_start_works_at_the_cap() -> None:
    """Property: a federation enrols at most `max_clients` hospitals: the next new one gets 409
    `federation_full` (a re-enrolment still passes) and `start` plans the federation at its cap.

    (Enrolments had no cap: past 10,000 hospitals building the round plan raised, `start` answered 500 and
    close/fail aborted, so the federation was stuck.)"""
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(max_clients=4))

        async def enrol(cid: str, key: SigningKey) -> httpx.Response:
            body = ClientEnrolment(
                client_id=cid, edge_id="edge-1", public_key=key.public_bytes, num_examples=100
            )
            token = await issue_enrolment_token(cloud.http, fed.fid, Role.CLIENT, cid)
            return await post_enrolment(cloud.http, fed.fid, body, key, token=token)

        full = await enrol("client-e", SigningKey.generate())
        assert full.status_code == 409, full.text
        assert full.json()["code"] == ErrorCode.FEDERATION_FULL.value
        assert full.json()["detail"] == {"max_clients": 4}
        assert (await enrol("client-a", fed.client_keys["client-a"])).status_code == 200
        plan = await fed.start(cloud.http)
    assert sorted(plan.client_ranks) == ["client-a", "client-b", "client-c", "client-d"]


def _clients(count: int) -> dict[str, ClientInfo]:
    key = SigningKey.generate().public_bytes
    return {
        f"c{i:05d}": ClientInfo(
            client_id=f"c{i:05d}", edge_id="edge-1", public_key=key, num_examples=100, rank=2, enrolled_at=T0
        )
        for i in range(count)
    }


@pytest.mark.parametrize("count", [MAX_CLIENTS_PER_ROUND, MAX_CLIENTS_PER_ROUND + 1])
def test_a_plan_is_built_for_a_federation_at_or_past_its_cap(count: int) -> None:
    """Property: building the round plan never raises for a federation at its cap, nor for one that
    enrolments racing at the cap took past it (the plan holds the first `max_clients` by id, and of those
    no more than the scheme can sum)."""
    spec = small_spec()
    plan, status = open_round(
        spec,
        round_=0,
        adapter_version=0,
        layout_digest="0" * 64,
        clients=_clients(count),
        now=T0,
        rounds_closed=0,
    )
    # CKKS sums at most 4,096 encryptions: the plan takes them in turns (test_review_issue20_crypto.py).
    planned = min(count, spec.max_clients, spec.he.max_summands or count)
    assert spec.max_clients == MAX_CLIENTS_PER_ROUND and planned == 4096
    assert len(plan.client_ranks) == planned
    assert sum(e.expected_clients for e in status.edges) == planned


def test_an_upload_cannot_carry_an_unbounded_weight() -> None:
    """Property: `ClientUpdate.weight` is in [MIN_WEIGHT, MAX_WEIGHT]; the agent's weights are in it."""
    fields: dict[str, Any] = {
        "federation_id": "fed-1",
        "round": 0,
        "basis_version": 0,
        "client_id": "a",
        "rank": 1,
        "num_examples": 1,
        "nonce": "ab" * 16,
        "ciphertext": b"x",
    }
    for weight in (math.inf, 1e-300, 1e7):
        with pytest.raises(ValidationError, match="weight"):
            ClientUpdate(**fields, weight=weight)


async def test_a_stored_aggregate_that_does_not_read_back_is_quarantined_and_the_round_fails_cleanly() -> (
    None
):
    """Property: a stored edge sum whose header does not validate (here the `null` weight that an `Infinity`
    became when it was stored) never raises a 5xx: the round's status still answers, the value is copied to
    a quarantine key and logged, the round fails with a reason naming the edge, and the next round opens.

    (Unpacking it raised in the round's status and in every tick's close, so the round never ended.)"""
    async with running_cloud() as cloud:
        fed = await one_sum_in(cloud, np.random.default_rng(7))
        value = await cloud.store.hget(keyspace.fed_round_aggregates(fed.fid, 0), "edge-1")
        assert value is not None
        (length,) = struct.unpack_from(">I", value)
        header = value[4 : 4 + length].replace(b'"weight":1.0', b'"weight":null', 1)
        corrupt = struct.pack(">I", len(header)) + header + value[4 + length :]
        await replace_stored_sum(cloud, fed.fid, corrupt, recorded=True)

        collecting = await cloud.http.get(f"/federations/{fed.fid}/rounds/0")
        assert collecting.status_code == 200, collecting.text
        status, quarantined, next_round = await past_deadline_with_edge_1_quarantined(cloud, fed)
    assert status.state is RoundState.FAILED, status
    assert status.failure is not None and "edge-1" in status.failure, status.failure
    assert quarantined == corrupt
    assert next_round.state is RoundState.OPEN
