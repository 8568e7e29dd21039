"""`python -m cloud_server`: settings from the environment, JSON logs, one uvicorn worker, over TLS
(`services.tls.serving_options`) unless `allow_plain_http`."""

from __future__ import annotations

import os

import uvicorn

from cloud_server.app import create_app
from services.logs import configure
from services.settings import CloudSettings, describe
from services.tls import serving_options


def run() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    settings = CloudSettings()  # type: ignore[call-arg]  # admin_token comes from FEDLORA_ADMIN_TOKEN
    try:
        settings.require_durable_store()
    except ValueError as e:
        raise SystemExit(f"cloud not started: {e}") from e
    log = configure("cloud", level=settings.log_level, json_lines=settings.log_json)
    log.info("starting", extra={"data": describe(settings)})
    tls = serving_options(settings, service="cloud", log=log)
    # One worker: the long-poll wake-ups and the layout cache live in this process (the store is shared).
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        workers=1,
        log_config=None,
        access_log=False,
        **tls,
    )
