"""What `fedlora admin` makes of a cloud (or a proxy in front of it) that answers badly: a body that is not the
API's model, an answer that never ends, one that trickles in a byte at a time. Each is a one-line
`code: message` refusal on stderr with exit status 1 (with `--json`, `{"error": {...}}` there), never a
traceback, never memory or time without bound (docs/operations.md, "Daily administration")."""

import json
import time
from http.server import BaseHTTPRequestHandler

from typer.testing import CliRunner

from fedlora import admin_api
from fedlora.cli import app
from tests.hostile_http import answering_server  # noqa: F401

TOKEN = "admin-token-never-printed"


def _endless(handler: BaseHTTPRequestHandler, chunk: bytes, *, pause_s: float = 0.0) -> None:
    """A 200 with a chunked JSON-ish body that never ends (until the admin hangs up)."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    while True:
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        handler.wfile.flush()
        time.sleep(pause_s)  # the hostile cloud's pace, not a wait in the test


def _admin(url: str, *args: str) -> tuple[int, str, str, BaseException | None]:
    result = CliRunner().invoke(app, ["admin", "--cloud", url, "--token", TOKEN, *args])
    return result.exit_code, result.stdout, result.stderr, result.exception


def test_a_200_that_is_not_the_apis_model_is_bad_answer_in_both_forms(answering_server):  # noqa: F811
    def html(handler: BaseHTTPRequestHandler) -> None:
        body = b"<html>\n<h1>maintenance</h1>\n</html>"
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    url = answering_server(html)
    code, out, err, raised = _admin(url, "federations")
    assert (code, out) == (1, "") and isinstance(raised, SystemExit), (code, out, err)
    assert err.startswith("bad_answer: listing the federations: ") and err.count("\n") == 1, err

    code, out, err, _ = _admin(url, "show", "-f", "fed-1", "--json")
    assert (code, out) == (1, ""), (code, out, err)
    refusal = json.loads(err)["error"]
    assert refusal["code"] == "bad_answer" and "'fed-1'" in refusal["message"], refusal
    assert TOKEN not in out + err


def test_an_answer_past_the_size_bound_is_dropped_there(answering_server, monkeypatch):  # noqa: F811
    """An endless body ends the command at the bound (`answer_too_large`), read as a stream: were it read
    whole first, the command would never end."""
    monkeypatch.setattr(admin_api, "ANSWER_MAX_BYTES", 64 * 1024)
    url = answering_server(lambda handler: _endless(handler, b"[" * 16384))
    code, out, err, _ = _admin(url, "federations", "--json")
    assert (code, out) == (1, ""), (code, out, err)
    refusal = json.loads(err)["error"]
    assert refusal["code"] == "answer_too_large" and "65,536 bytes" in refusal["message"], refusal


def test_the_timeout_bounds_the_whole_command_not_each_read(answering_server):  # noqa: F811
    """A cloud that sends a byte every 0.1 s never lets a read wait 30 s, yet the command ends at --timeout."""
    url = answering_server(lambda handler: _endless(handler, b" ", pause_s=0.1))
    code, out, err, _ = _admin(url, "--timeout", "1", "federations")
    assert (code, out) == (1, ""), (code, out, err)
    assert err.startswith("timeout: no whole answer from the cloud") and "within 1 s" in err, err
