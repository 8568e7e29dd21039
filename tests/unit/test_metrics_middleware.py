"""`services.metrics.HttpMetrics`: route templates (never raw paths) as labels, and uploads by outcome."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from protocol.messages import ErrorBody, ErrorCode
from services.limits import Admission, RequestLimits
from services.metrics import UNMATCHED, EdgeMetrics, HttpMetrics, error_code, routes_named
from services.settings import ServiceSettings
from tests.error_handlers import with_edge_error_handlers

MAX_BODY = 1024


def build() -> tuple[FastAPI, EdgeMetrics]:
    router = APIRouter(prefix="/things/{tid}")

    @router.get("/parts/{n}")
    async def part(tid: str, n: int) -> dict[str, str]:
        return {"tid": tid}

    @router.get("/broken")
    async def broken(tid: str) -> None:
        raise RuntimeError("a bug")

    @router.post("/uploads")
    async def upload(tid: str, request: Request) -> JSONResponse:
        body = await request.body()
        if body == b"late":
            refusal = ErrorBody(code=ErrorCode.ROUND_CLOSED, message="too late")
            return JSONResponse(refusal.model_dump(mode="json"), status_code=409)
        return JSONResponse({"accepted": True}, status_code=202)

    metrics = EdgeMetrics()
    app = FastAPI()
    app.include_router(router)
    with_edge_error_handlers(app)

    async def admit(scope: object, route: object, params: object) -> Admission:
        return Admission("ip:test", MAX_BODY)

    app.add_middleware(RequestLimits, settings=ServiceSettings(), admit=admit, routes=router.routes)

    async def known(tid: str) -> bool:
        return tid == "t1"

    app.add_middleware(
        HttpMetrics,
        metrics=metrics,
        routes=router.routes,
        uploads=routes_named(router.routes, "upload"),
        federation_param="tid",
        known_federation=known,
    )
    return app, metrics


def samples(metrics: EdgeMetrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = metrics.exposition().decode()
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def requests(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"service": "edge", **labels}.items()))


def test_requests_are_labelled_with_route_templates_not_paths() -> None:
    app, metrics = build()
    with TestClient(app, raise_server_exceptions=False) as client:
        statuses = [
            client.get("/things/a1/parts/7").status_code,
            client.get("/things/b2/parts/8").status_code,
            client.post("/things/a1/parts/7").status_code,  # the path is right, the method is not
            client.get("/nowhere/x").status_code,
            client.get("/nowhere/y").status_code,
            client.get("/things/a1/broken").status_code,
            client.request("BREW", "/things/a1/parts/7").status_code,
        ]

    assert statuses == [200, 200, 405, 404, 404, 500, 405]
    assert samples(metrics, "fedlora_http_requests_total") == {
        requests(method="GET", route="/things/{tid}/parts/{n}", status="200"): 2,
        requests(method="POST", route="/things/{tid}/parts/{n}", status="405"): 1,
        requests(method="GET", route=UNMATCHED, status="404"): 2,
        requests(method="GET", route="/things/{tid}/broken", status="500"): 1,
        requests(method="other", route="/things/{tid}/parts/{n}", status="405"): 1,
    }
    assert sum(samples(metrics, "fedlora_http_request_seconds_count").values()) == 7


def test_uploads_count_by_outcome_and_reason_even_when_the_body_limit_answers_first() -> None:
    app, metrics = build()
    with TestClient(app) as client:
        answers = [
            client.post("/things/t1/uploads", content=b"an update"),
            client.post("/things/t1/uploads", content=b"late"),
            client.post("/things/t1/uploads", content=b"x" * (MAX_BODY + 1)),  # never reaches the route
            client.post("/things/t9/uploads", content=b"late"),  # a federation nobody knows
        ]

    assert [a.status_code for a in answers] == [202, 409, 413, 409]

    def upload(tid: str, outcome: str, reason: str) -> tuple[tuple[str, str], ...]:
        return requests(federation=tid, outcome=outcome, reason=reason)

    assert samples(metrics, "fedlora_uploads_total") == {
        upload("t1", "accepted", ""): 1,
        upload("t1", "refused", "round_closed"): 1,
        upload("t1", "refused", "payload_too_large"): 1,
        upload("", "refused", "round_closed"): 1,
    }
    assert samples(metrics, "fedlora_bytes_received_total") == {
        requests(federation="t1"): len(b"an update") + len(b"late"),
        requests(federation=""): len(b"late"),
    }
    assert (
        samples(metrics, "fedlora_http_requests_total")[
            requests(method="POST", route="/things/{tid}/uploads", status="413")
        ]
        == 1
    )


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"code": "round_closed", "message": "m"}', "round_closed"),
        (b'{"code": "made up", "message": "m"}', "unknown"),
        (b"<html>not json</html>", "unknown"),
        (b"[1, 2]", "unknown"),
        (b"", "unknown"),
    ],
)
def test_a_refusal_reason_is_a_known_error_code_or_unknown(body: bytes, code: str) -> None:
    assert error_code(body) == code


def test_routes_named_refuses_a_name_no_route_has() -> None:
    router = APIRouter()

    @router.post("/a/{x}")
    async def upload(x: str) -> None: ...

    assert routes_named(router.routes, "upload") == [("POST", "/a/{x}")]
    with pytest.raises(ValueError, match="downloads"):
        routes_named(router.routes, "upload", "downloads")
