"""Adversarial review of issue 21 (TLS, the KEK rotation, the admin CLI, the edge and cloud under concurrent
forwards): each test reproduces one defect found against the promises of docs/operations.md and
docs/privacy.md, as a strict xfail until it is fixed."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fedlora.cli import app
from tests.keks import NEXT_KEK


@pytest.mark.xfail(
    strict=True,
    reason="fedlora kek rotate/check open the cloud's Redis without the store's TLS settings "
    "(FEDLORA_STORE_CA_FILE, _CERT_FILE, _KEY_FILE): against the deployed rediss:// Redis they cannot connect",
)
def test_kek_check_reaches_the_clouds_tls_redis_with_the_clouds_own_settings(tls_redis) -> None:
    """`fedlora kek rotate` and `fedlora kek check` read the cloud's own store settings and run where the
    cloud runs (docs/operations.md, "Rotating the KEK"): with the settings the cloud itself reaches its
    TLS-only Redis with (rediss://, the federation's CA, the service's client certificate), `check` reaches
    the same Redis and, with nothing sealed there, exits 0 with its JSON report."""
    server, files = tls_redis
    server.flush()
    env = {
        "FEDLORA_STORE_URL": server.url,
        "FEDLORA_STORE_CA_FILE": str(files.service.ca_file),
        "FEDLORA_STORE_CERT_FILE": str(files.service.cert_file),
        "FEDLORA_STORE_KEY_FILE": str(files.service.key_file),
        "FEDLORA_KEK": NEXT_KEK.hex(),
        "COLUMNS": "200",
    }
    result = CliRunner().invoke(app, ["kek", "check", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["records"] == []
