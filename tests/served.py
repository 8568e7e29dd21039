"""An ASGI app served by a real uvicorn on loopback in a thread of the test process (lifespan included):
cheaper than a process, and the same server, TLS included, that the services run under."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

START_TIMEOUT_S = 60.0


@contextmanager
def served(app: Any, port: int, **options: Any) -> Iterator[str]:
    """`app` on 127.0.0.1:`port` until the block ends; `options` are uvicorn's (its `ssl_*` settings: the
    URL is then https). Yields the base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False, **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started and thread.is_alive():
            if time.monotonic() > deadline:
                raise AssertionError(f"uvicorn on port {port} did not start within {START_TIMEOUT_S:g} s")
            time.sleep(0.05)  # the poll interval, bounded by the deadline above
        assert server.started, f"uvicorn on port {port} did not start"
        yield f"{'https' if config.is_ssl else 'http'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=START_TIMEOUT_S)
