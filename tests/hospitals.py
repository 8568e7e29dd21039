"""A hospital agent built for a test, without a cloud behind it unless the test gives one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from client_agent.agent import ClientAgent
from services.settings import ClientSettings

ENROLMENT_TOKEN = "enrol-token-0123456789abcdef"


def hospital_settings(tmp_path: Path, *, state: str = "state", **settings: Any) -> ClientSettings:
    """`hosp-a` of federation `onco` at `edge-1`, its state in `tmp_path / state`; `settings` override any
    `ClientSettings` field."""
    values: dict[str, Any] = {
        "client_id": "hosp-a",
        "federation_id": "onco",
        "edge_id": "edge-1",
        "cloud_url": "http://127.0.0.1:1",
        "enrolment_token": ENROLMENT_TOKEN,
        "state_dir": tmp_path / state,
    }
    return ClientSettings(**(values | settings))


def hospital_agent(
    tmp_path: Path, *, state: str = "state", model_path: Path | None = None, **settings: Any
) -> ClientAgent:
    """The agent of :func:`hospital_settings`, its base model in `model_path` (default `tmp_path`)."""
    return ClientAgent(
        hospital_settings(tmp_path, state=state, **settings), model_path=model_path or tmp_path
    )
