"""A server on loopback that answers every GET as the test writes it, byte for byte: a compromised cloud, or a
proxy in front of one (an HTML page, a body that never ends, one that trickles in)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

Answer = Callable[[BaseHTTPRequestHandler], None]


@pytest.fixture
def answering_server() -> Iterator[Callable[[Answer], str]]:
    """`serve(answer)`: a server answering every GET as `answer` writes it to the handler; its URL. A client
    that hangs up mid-answer ends that answer quietly."""
    servers: list[ThreadingHTTPServer] = []

    def serve(answer: Answer) -> str:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                with contextlib.suppress(OSError):  # the client hung up, as it should
                    answer(self)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()
