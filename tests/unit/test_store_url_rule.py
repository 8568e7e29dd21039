"""`memory://` loses every record, the HE secret included, when the process exits: the service processes
refuse it unless `FEDLORA_EPHEMERAL_STORE` says the run is a throwaway; the in-process apps (tests, `fedlora
demo`, `fedlora simulate`) take any store they are given."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from services.settings import CloudSettings

ADMIN = "adm-q7Zr2LxW9pN4vK8sT1yB3mH6"


@pytest.mark.parametrize(
    ("module", "env"),
    [
        ("cloud_server", {"FEDLORA_ADMIN_TOKEN": ADMIN}),
        (
            "edge_aggregator",
            {
                "FEDLORA_EDGE_ID": "edge-north",
                "FEDLORA_FEDERATION_ID": "fed-1",
                "FEDLORA_CLOUD_URL": "http://127.0.0.1:9",
                "FEDLORA_PUBLIC_URL": "http://127.0.0.1:9",
            },
        ),
    ],
)
def test_a_service_process_refuses_to_start_on_memory(module: str, env: dict[str, str]) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FEDLORA_")}
    started = subprocess.run(
        [sys.executable, "-m", module],
        env=clean | env | {"FEDLORA_STORE_URL": "memory://", "FEDLORA_PORT": "9"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert started.returncode != 0
    assert "FEDLORA_STORE_URL" in started.stderr and "FEDLORA_EPHEMERAL_STORE" in started.stderr


def test_the_rule_names_the_variable_and_the_throwaway_setting_lifts_it() -> None:
    with pytest.raises(ValueError, match="FEDLORA_STORE_URL is memory://"):
        CloudSettings(admin_token=ADMIN, store_url="memory://").require_durable_store()
    CloudSettings(admin_token=ADMIN, store_url="memory://", ephemeral_store=True).require_durable_store()
    CloudSettings(admin_token=ADMIN, store_url="redis://127.0.0.1:6379/0").require_durable_store()
