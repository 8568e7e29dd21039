"""`GET /metrics` at an edge after a whole round: every count worked out from the requests the test sent."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.identity import SigningKey
from tests.edge.harness import EID, FID, World, running_edge, until

pytestmark = pytest.mark.anyio
UPLOADS = "/federations/{federation_id}/rounds/{round_number}/uploads"
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


def uploads(federation: str, outcome: str, reason: str) -> frozenset[tuple[str, str]]:
    return frozenset(
        {"service": "edge", "federation": federation, "outcome": outcome, "reason": reason}.items()
    )


async def test_a_round_shows_in_the_edge_metrics(make_world: Callable[..., World]) -> None:
    # Prepare: 3 hospitals, quorum 1.0, k = 2.
    world = make_world(clients=3, k=2, quorum=1.0)
    updates = [world.update(h) for h in world.hospitals.values()]
    forged = world.update(world.hospitals["hosp-a"], signer=SigningKey.generate())
    too_large = b"x" * (world.settings.max_body_bytes + 1)

    async with running_edge(world) as edge:
        # Execute: refusals before the round closes (one by the body-size limit, before any route runs),
        # the three uploads that close it, one upload too late.
        refused = [
            await edge.upload(forged),
            await edge.upload(updates[0], federation_id="fed-elsewhere"),
            await edge.http.post(
                f"/federations/{FID}/rounds/0/uploads",
                content=too_large,
                headers={"Content-Type": "application/json"},
            ),
        ]
        accepted = [await edge.upload(u) for u in updates]
        await until(lambda: len(world.cloud.delivered) == 1, what="the forward")
        late = await edge.upload(world.update(world.hospitals["hosp-b"]))
        response = await edge.http.get("/metrics")

    # Assert
    assert [r.status_code for r in refused] == [401, 404, 413]
    assert [r.status_code for r in accepted] == [202, 202, 202] and late.status_code == 409
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = parse(response.text)

    assert series(samples, "fedlora_uploads_total") == {
        uploads(FID, "accepted", ""): 3,
        uploads(FID, "refused", "bad_signature"): 1,
        uploads(FID, "refused", "payload_too_large"): 1,
        uploads(FID, "refused", "round_closed"): 1,
        # The path named another federation: not a label value anyone outside can choose.
        uploads("", "refused", "unknown_federation"): 1,
    }
    # Every body read; the body-size limit refused the oversized one before reading a byte of it.
    read = [refused[0], *accepted, late]
    assert value(samples, "fedlora_bytes_received_total", service="edge", federation=FID) == sum(
        len(r.request.content) for r in read
    )
    assert value(samples, "fedlora_bytes_received_total", service="edge", federation="") == len(
        refused[1].request.content
    )
    forwarded = world.cloud.delivered[f"{FID}:0:{EID}"]
    assert value(samples, "fedlora_bytes_sent_total", service="edge", federation=FID) == len(
        forwarded.model_dump_json().encode()
    )
    # The first upload is stored as it came; the next two are added into it.
    assert value(samples, "fedlora_he_seconds_count", service="edge", operation="add", scheme="ckks") == 2

    post = dict(service="edge", method="POST", route=UPLOADS)
    for status, count in {"202": 3, "401": 1, "404": 1, "413": 1, "409": 1}.items():
        assert value(samples, "fedlora_http_requests_total", **post, status=status) == count
    routes = {dict(labels)["route"] for labels in series(samples, "fedlora_http_requests_total")}
    assert not any(FID in r or "elsewhere" in r for r in routes)  # templates only, never raw paths
