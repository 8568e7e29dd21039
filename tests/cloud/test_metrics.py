"""`GET /metrics` after a real round: every count worked out from what the test sent and what the API says."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from protocol.messages import CentralDPConfig, LocalSpend, PrivacyReport
from tests.cloud.harness import Federation, post_model, running_cloud, small_spec

pytestmark = pytest.mark.anyio
DELTA = 1e-5
AGGREGATES = "/federations/{fid}/rounds/{n}/aggregates"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample with exactly these labels; 0 if there is none (a counter never incremented)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


async def test_a_closed_and_a_failed_round_show_in_the_cloud_metrics() -> None:
    # Prepare: central DP (so there is a client-level epsilon) and DP-SGD histories from the hospitals.
    rng = np.random.default_rng(8)
    spec = small_spec(central_dp=CentralDPConfig(noise_multiplier=1.2, delta=DELTA), rounds=3)
    histories = {
        cid: LocalSpend(epsilon=1.0, delta=DELTA, history=((1.1, rate, 16),), budget=8.0)
        for cid, rate in {"client-a": 0.05, "client-b": 0.1, "client-c": 0.02, "client-d": 0.08}.items()
    }
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, spec)
        await fed.start(cloud.http)
        deltas = fed.deltas(rng)
        cloud.clock.advance(42.0)

        # Execute: two refusals, the two aggregates that close round 0, a refusal after the close.
        lonely = await fed.aggregate(cloud, "edge-1", 0, {"client-a": deltas["edge-1"]["client-a"]})
        too_few = await fed.post(cloud.http, lonely)
        stranger = await post_model(
            cloud.http, "/federations/nope/rounds/0/aggregates", lonely, token=fed.edges["edge-1"].token
        )
        accepted = [
            await fed.post(cloud.http, await fed.aggregate(cloud, e, 0, deltas[e], local_privacy=histories))
            for e in ("edge-1", "edge-2")
        ]
        other_body = await fed.aggregate(cloud, "edge-1", 0, {k: 2 * v for k, v in deltas["edge-1"].items()})
        duplicate = await fed.post(cloud.http, other_body)
        # Round 1 passes its deadline with nothing forwarded: it fails.
        cloud.clock.advance(spec.round_deadline_s + 1)
        await cloud.tick()
        vector = await cloud.http.get(f"/federations/{fed.fid}/adapters/1/vector")
        peft_zip = await cloud.http.get(f"/federations/{fed.fid}/adapters/1")
        privacy = PrivacyReport.model_validate_json(
            (await cloud.http.get(f"/federations/{fed.fid}/privacy")).content
        )
        response = await cloud.http.get("/metrics", headers={"Authorization": ""})

    # Assert
    assert [too_few.status_code, stranger.status_code, duplicate.status_code] == [422, 401, 409]
    assert [r.status_code for r in accepted] == [202, 202]
    assert vector.status_code == 200 and peft_zip.status_code == 200
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = parse(response.text)
    fid = fed.fid

    assert value(samples, "fedlora_rounds_total", federation=fid, outcome="closed") == 1
    assert value(samples, "fedlora_rounds_total", federation=fid, outcome="failed") == 1
    assert value(samples, "fedlora_round_duration_seconds_count", federation=fid) == 1
    assert value(samples, "fedlora_round_duration_seconds_sum", federation=fid) == pytest.approx(42.0)

    assert series(samples, "fedlora_uploads_total") == {
        frozenset({"service": "cloud", "federation": fid, "outcome": o, "reason": r}.items()): n
        for o, r, n in [
            ("accepted", "", 2),
            ("refused", "too_few_clients", 1),
            ("refused", "duplicate_upload", 1),
        ]
    } | {
        frozenset(
            {"service": "cloud", "federation": "", "outcome": "refused", "reason": "unauthenticated"}.items()
        ): 1
    }
    sent_to_fed = [too_few, *accepted, duplicate]
    assert value(samples, "fedlora_bytes_received_total", service="cloud", federation=fid) == sum(
        len(r.request.content) for r in sent_to_fed
    )
    # The stranger's token names no edge of "nope": refused before its body was read, none of it received.
    assert stranger.status_code == 401
    assert value(samples, "fedlora_bytes_received_total", service="cloud", federation="") == 0
    assert value(samples, "fedlora_bytes_sent_total", service="cloud", federation=fid) == len(
        vector.content
    ) + len(peft_zip.content)

    he = dict(service="cloud", operation="decrypt", scheme="ckks")
    assert value(samples, "fedlora_he_seconds_count", **he) == 1
    assert value(samples, "fedlora_he_seconds_sum", **he) > 0

    assert series(samples, "fedlora_clients_per_edge") == {
        frozenset({"federation": fid, "edge": "edge-1"}.items()): 2,
        frozenset({"federation": fid, "edge": "edge-2"}.items()): 2,
    }
    assert privacy.central_epsilon is not None and privacy.clients
    assert value(samples, "fedlora_epsilon_spent", federation=fid, level="client") == pytest.approx(
        privacy.central_epsilon
    )
    assert value(samples, "fedlora_epsilon_spent", federation=fid, level="example") == pytest.approx(
        max(c.local_epsilon for c in privacy.clients if c.local_epsilon is not None)
    )

    post = dict(service="cloud", method="POST", route=AGGREGATES)
    for status, count in {"202": 2, "422": 1, "401": 1, "409": 1}.items():
        assert value(samples, "fedlora_http_requests_total", **post, status=status) == count
        assert value(samples, "fedlora_http_request_seconds_count", **post, status=status) == count
    routes = {dict(labels)["route"] for labels in series(samples, "fedlora_http_requests_total")}
    assert "/federations/{fid}/adapters/{version}/vector" in routes
    assert not any("nope" in r or fid in r for r in routes)  # templates only, never raw paths


async def test_metrics_are_in_the_openapi_without_authentication() -> None:
    async with running_cloud() as cloud:
        schema = (await cloud.http.get("/openapi.json")).json()
        anonymous = await cloud.http.get("/metrics", headers={"Authorization": ""})

    operation = schema["paths"]["/metrics"]["get"]
    assert operation["tags"] == ["monitoring"] and "security" not in operation
    assert "authentication" in operation["summary"]
    assert anonymous.status_code == 200 and "# TYPE fedlora_rounds_total counter" in anonymous.text
