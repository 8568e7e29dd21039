"""Structured logging: one JSON object a line, with the federation, round, client and edge when known."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

CONTEXT_FIELDS = ("service", "federation_id", "round", "client_id", "edge_id", "code", "status")


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "msg": record.getMessage(),
        }
        for name in CONTEXT_FIELDS[1:]:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        extra = getattr(record, "data", None)
        if isinstance(extra, dict):
            entry.update(extra)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(service: str, *, level: str = "INFO", json_lines: bool = True) -> logging.Logger:
    """Route the root logger, and Python warnings, to stderr; JSON lines for services, plain text for people."""
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Python warnings (a library's `warnings.warn`: Opacus and torch on an empty Poisson batch, say) go
    # through the same handler, as JSON lines, instead of to stderr as bare text outside the logs.
    logging.captureWarnings(True)
    return logging.getLogger(service)
