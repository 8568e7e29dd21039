"""Held-out evaluations per adapter version: recorded by the admin, listed with the versions."""

from __future__ import annotations

import numpy as np
import pytest

from protocol.messages import AdapterVersion
from tests.cloud.harness import Federation, bearer, running_cloud, small_spec

pytestmark = pytest.mark.anyio


def evaluation(accuracy: float, *, loss: float = 0.5, examples: int = 1000) -> dict[str, object]:
    return {"metrics": {"accuracy": accuracy, "loss": loss}, "examples": examples, "dataset": "rt:test"}


async def test_an_evaluation_is_stored_per_version_and_listed_with_it() -> None:
    rng = np.random.default_rng(5)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        await fed.start(cloud.http)
        deltas = fed.deltas(rng)
        for edge_id in ("edge-1", "edge-2"):
            assert (
                await fed.post(cloud.http, await fed.aggregate(cloud, edge_id, 0, deltas[edge_id]))
            ).status_code == 202
        url = f"/federations/{fed.fid}/adapters"

        before = await cloud.http.put(f"{url}/0/evaluation", json=evaluation(0.5))
        cloud.clock.advance(30)
        first = await cloud.http.put(f"{url}/1/evaluation", json=evaluation(0.7))
        cloud.clock.advance(30)
        again = await cloud.http.put(f"{url}/1/evaluation", json=evaluation(0.75, loss=0.4, examples=800))
        listed = [AdapterVersion.model_validate(v) for v in (await cloud.http.get(url)).json()]

        assert before.status_code == first.status_code == again.status_code == 200, again.text
        assert AdapterVersion.model_validate_json(first.content).evaluation.metrics["accuracy"] == 0.7
        assert [v.version for v in listed] == [0, 1]
        assert [v.round for v in listed] == [None, 0]  # version 1 is the adapter after round 0
        v0, v1 = (v.evaluation for v in listed)
        assert v0 is not None and v0.metrics == {"accuracy": 0.5, "loss": 0.5}
        # The second PUT replaced the first, and the cloud's clock stamped it.
        assert v1 is not None and v1.metrics == {"accuracy": 0.75, "loss": 0.4} and v1.examples == 800
        assert v1.dataset == "rt:test" and v1.evaluated_at == cloud.clock()


async def test_unknown_versions_and_federations_are_404() -> None:
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())

        missing = await cloud.http.put(f"/federations/{fed.fid}/adapters/1/evaluation", json=evaluation(0.7))
        unknown = await cloud.http.put("/federations/nope/adapters/0/evaluation", json=evaluation(0.7))

        assert (missing.status_code, missing.json()["code"], missing.json()["field"]) == (
            404,
            "not_found",
            "version",
        )
        assert (unknown.status_code, unknown.json()["code"]) == (404, "unknown_federation")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (evaluation(1.5), "metrics"),  # a fraction above 1: a percentage sent by mistake
        ({"metrics": {}, "examples": 10, "dataset": "rt"}, "metrics"),
        ({"metrics": {"Accuracy!": 0.5}, "examples": 10, "dataset": "rt"}, "metrics.Accuracy!.[key]"),
        ({"metrics": {f"m{i}": 0.1 for i in range(33)}, "examples": 10, "dataset": "rt"}, "metrics"),
        (evaluation(0.5, examples=0), "examples"),
        ({"metrics": {"accuracy": 0.5}, "examples": 10, "dataset": "<script>"}, "dataset"),
        ({"metrics": {"accuracy": 0.5}, "examples": 10, "dataset": "x" * 129}, "dataset"),
    ],
)
async def test_bad_values_are_422_naming_the_field(body: dict[str, object], field: str) -> None:
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())

        response = await cloud.http.put(f"/federations/{fed.fid}/adapters/0/evaluation", json=body)

        assert response.status_code == 422, response.text
        assert response.json()["code"] == "invalid_request" and response.json()["field"] == field
        listed = (await cloud.http.get(f"/federations/{fed.fid}/adapters")).json()
        assert listed[0].get("evaluation") is None  # nothing was stored


async def test_a_non_finite_metric_is_422() -> None:
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        body = b'{"metrics": {"loss": NaN}, "examples": 10, "dataset": "rt"}'

        response = await cloud.http.put(
            f"/federations/{fed.fid}/adapters/0/evaluation",
            content=body,
            headers={"Content-Type": "application/json"},
        )

        assert response.status_code == 422, response.text


async def test_only_the_admin_records_evaluations() -> None:
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        url = f"/federations/{fed.fid}/adapters/0/evaluation"

        as_edge = await cloud.http.put(url, json=evaluation(0.9), headers=bearer(fed.edges["edge-1"].token))
        as_client = await cloud.http.put(
            url, json=evaluation(0.9), headers=bearer(fed.client_tokens["client-a"])
        )
        anonymous = await cloud.http.put(url, json=evaluation(0.9), headers={"Authorization": ""})

        assert (as_edge.status_code, as_client.status_code, anonymous.status_code) == (403, 403, 401)
        assert (await cloud.http.get(f"/federations/{fed.fid}/adapters")).json()[0].get("evaluation") is None
