"""`python -m client_agent`: run a hospital's agent with settings from the environment (FEDLORA_*)."""

from __future__ import annotations

import asyncio
import os
import sys
import warnings

from pydantic import ValidationError

from client_agent.agent import AgentError, ClientAgent
from client_agent.data import DataError
from client_agent.device import DeviceError
from services.logs import configure
from services.metrics import serve
from services.settings import ClientSettings


def run() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", message=".*[Ss]ecure RNG.*")
    warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
    try:
        settings = ClientSettings()  # type: ignore[call-arg]
    except ValidationError as e:
        sys.exit(f"client agent settings: {e}")
    log = configure(f"client:{settings.client_id}", level=settings.log_level, json_lines=settings.log_json)
    import torch

    torch.set_num_threads(settings.threads)
    try:
        agent = ClientAgent(settings)
    except DeviceError as e:
        sys.exit(f"client agent settings: {e}")
    if settings.metrics_port is not None:
        serve(agent.metrics, host=settings.host, port=settings.metrics_port)
        log.info(
            "serving metrics",
            extra={"data": {"url": f"http://{settings.host}:{settings.metrics_port}/metrics"}},
        )
    try:
        uploads = asyncio.run(agent.run())
    except AgentError as e:
        log.error(str(e))
        sys.exit(2)
    except DataError as e:
        # One structured line in the agent's log, no traceback: the message names the file, line and field,
        # never a value from it. Fix the file and start the agent again.
        log.error("data error", extra={"code": "data_error", "data": e.facts()})
        sys.exit(2)
    log.info("agent finished", extra={"data": {"uploads": uploads}})


if __name__ == "__main__":
    run()
