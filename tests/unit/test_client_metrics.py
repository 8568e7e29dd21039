"""The client agent's metrics: HE encryption time, served over HTTP when `FEDLORA_METRICS_PORT` is set."""

from __future__ import annotations

import socket
from datetime import UTC, datetime

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from client_agent.agent import ClientAgent
from protocol.crypto import PlainParams, generate_scheme
from protocol.messages import RoundPlan
from services.metrics import ClientMetrics, serve
from services.settings import ClientSettings

SETTINGS = {
    "client_id": "hosp-a",
    "federation_id": "onco",
    "edge_id": "edge-1",
    "cloud_url": "http://127.0.0.1:1",
    "enrolment_token": "enrol-token-0123456789abcdef",
}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_metrics_port_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDLORA_METRICS_PORT", "9108")
    assert ClientSettings(**SETTINGS).metrics_port == 9108
    monkeypatch.delenv("FEDLORA_METRICS_PORT")
    assert ClientSettings(**SETTINGS).metrics_port is None


def test_each_encryption_is_timed_and_served(tmp_path) -> None:
    metrics = ClientMetrics()
    agent = ClientAgent(ClientSettings(**SETTINGS, state_dir=tmp_path), model_path=tmp_path, metrics=metrics)
    plan = RoundPlan(
        federation_id="onco",
        round=0,
        adapter_version=0,
        basis_version=0,
        deadline=datetime(2026, 1, 1, tzinfo=UTC),
        client_ranks={"hosp-a": 2},
        clip_norm=1.0,
    )
    scheme = generate_scheme(PlainParams())
    for _ in range(2):
        agent.make_update(plan, scheme, np.zeros(10), num_examples=5, spend=None)
    with socket.socket() as probe:  # a free port on loopback
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    server = serve(metrics, host="127.0.0.1", port=port)
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10.0)
    finally:
        server.shutdown()
        server.server_close()

    assert response.status_code == 200
    labels = (("operation", "encrypt"), ("scheme", "none"), ("service", "client"))
    assert samples(response.text)[("fedlora_he_seconds_count", labels)] == 2
