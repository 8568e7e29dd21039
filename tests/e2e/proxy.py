"""A real TCP proxy on loopback that loses the answer to an edge's first aggregate.

`LosingProxy` relays HTTP/1.1 between a client (an edge) and an upstream (the cloud), one request and one
response at a time per connection (keep-alive included; bodies framed by Content-Length or chunked, a
response without either runs to the upstream's close). For the first request whose request line is
`POST .../aggregates` it relays the request, reads the upstream's whole response, and then closes the
connection to the client without sending it: the cloud took the aggregate and the edge never heard so.
Each accepted connection is served by its own thread; `close` ends them all.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from dataclasses import dataclass

MAX_HEAD_BYTES = 64 * 1024
_AGGREGATE = re.compile(r"^POST /\S*/aggregates(\?\S*)? HTTP/1\.[01]$")


class ProxyProtocolError(RuntimeError):
    """A message the proxy does not understand; the connection is dropped and the error recorded."""


@dataclass(frozen=True)
class Message:
    start_line: str
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    raw: bytes  # head and body exactly as read, to be sent on unchanged
    to_eof: bool = False  # the body ran until the sender closed the connection


class _Reader:
    """Buffered reads from a socket: a head up to the blank line, n bytes, lines, or all until EOF."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""

    def _fill(self) -> bool:
        data = self._sock.recv(65536)
        self._buffer += data
        return bool(data)

    def head(self) -> bytes | None:
        """Up to and including the blank line; None on a clean EOF before any byte of it."""
        while b"\r\n\r\n" not in self._buffer:
            if len(self._buffer) > MAX_HEAD_BYTES:
                raise ProxyProtocolError("message head too long")
            if not self._fill():
                if self._buffer:
                    raise ProxyProtocolError("connection closed inside a message head")
                return None
        end = self._buffer.index(b"\r\n\r\n") + 4
        head, self._buffer = self._buffer[:end], self._buffer[end:]
        return head

    def exactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            if not self._fill():
                raise ProxyProtocolError(f"connection closed {n - len(self._buffer)} bytes short of a body")
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def line(self) -> bytes:
        while b"\r\n" not in self._buffer:
            if len(self._buffer) > MAX_HEAD_BYTES or not self._fill():
                raise ProxyProtocolError("bad chunked framing")
        end = self._buffer.index(b"\r\n") + 2
        data, self._buffer = self._buffer[:end], self._buffer[end:]
        return data

    def chunked(self) -> bytes:
        """A chunked body, framing and trailers included."""
        raw = b""
        while True:
            size_line = self.line()
            raw += size_line
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while True:  # trailers, up to the blank line
                    trailer = self.line()
                    raw += trailer
                    if trailer == b"\r\n":
                        return raw
            raw += self.exactly(size + 2)

    def until_eof(self) -> bytes:
        while self._fill():
            pass
        data, self._buffer = self._buffer, b""
        return data


def _parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers


def _framed(headers: dict[str, str]) -> bool:
    return "content-length" in headers or "chunked" in headers.get("transfer-encoding", "").lower()


def _body(reader: _Reader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return reader.chunked()
    return reader.exactly(int(headers.get("content-length", "0")))


def read_request(reader: _Reader) -> Message | None:
    head = reader.head()
    if head is None:
        return None
    start, headers = _parse_head(head)
    return Message(start, headers, head + _body(reader, headers))


def read_response(reader: _Reader, method: str) -> Message:
    head = reader.head()
    if head is None:
        raise ProxyProtocolError("upstream closed the connection without a response")
    start, headers = _parse_head(head)
    status = int(start.split(" ", 2)[1])
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return Message(start, headers, head)
    if not _framed(headers):
        return Message(start, headers, head + reader.until_eof(), to_eof=True)
    return Message(start, headers, head + _body(reader, headers))


class LosingProxy:
    """Listens on a free loopback port and relays to `127.0.0.1:upstream_port`; drops the first
    aggregate's answer. `aggregate_posts` lists the request line of every aggregate POST it relayed."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream = ("127.0.0.1", upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.aggregate_posts: list[str] = []
        self.dropped: list[str] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._closed = False

    def __enter__(self) -> LosingProxy:
        thread = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sockets = [*self._sockets, self._listener]
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in list(self._threads):
            thread.join(timeout=10)

    def _track(self, sock: socket.socket) -> bool:
        with self._lock:
            if self._closed:
                sock.close()
                return False
            self._sockets.add(sock)
            return True

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            if not self._track(client):
                return
            thread = threading.Thread(target=self._serve, args=(client,), name="proxy-conn", daemon=True)
            with self._lock:
                self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            upstream = socket.create_connection(self._upstream, timeout=10)
            upstream.settimeout(None)  # a plan long-poll may take its time
            if not self._track(upstream):
                return
            from_client, from_upstream = _Reader(client), _Reader(upstream)
            while True:
                request = read_request(from_client)
                if request is None:
                    return
                upstream.sendall(request.raw)
                method = request.start_line.split(" ", 1)[0]
                response = read_response(from_upstream, method)
                while response.start_line.split(" ", 2)[1].startswith("1"):  # interim: relay, read on
                    client.sendall(response.raw)
                    response = read_response(from_upstream, method)
                if _AGGREGATE.match(request.start_line):
                    with self._lock:
                        self.aggregate_posts.append(request.start_line)
                        lose = not self.dropped
                        if lose:
                            self.dropped.append(request.start_line)
                    if lose:
                        return  # the answer is lost: close the client's connection without it
                client.sendall(response.raw)
                closing = request.headers.get("connection", "") + response.headers.get("connection", "")
                if response.to_eof or "close" in closing.lower():
                    return
        except ProxyProtocolError as e:
            with self._lock:
                self.errors.append(str(e))
        except OSError:
            pass  # a peer went away, or the proxy is closing
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    with self._lock:
                        self._sockets.discard(sock)
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
