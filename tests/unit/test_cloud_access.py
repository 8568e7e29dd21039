"""The admin CLI's connection (`fedlora.cloud_access`) over real TLS on loopback: with `--ca-file` naming the
federation's CA it verifies the cloud's certificate and sends the admin token read from `--token-file`;
without it the certificate is refused (`unreachable: ...`, exit 1), and the token is never printed."""

import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedlora.cli import app
from fedlora.pki import issue, new_authority, save_issued

TOKEN = "admin-token-from-a-file"


class _Federations(BaseHTTPRequestHandler):
    """`GET /federations` as the cloud answers an admin (no federation yet), 401 for any other token."""

    def do_GET(self) -> None:
        admin = self.headers.get("Authorization") == f"Bearer {TOKEN}"
        body = b"[]" if admin else json.dumps({"code": "unauthenticated", "message": "bad token"}).encode()
        self.send_response(200 if admin else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def https_cloud(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An https server on loopback with a certificate from the federation's own CA; its URL and the CA file."""
    ca = new_authority("fedlora test CA")
    cert, key = save_issued(
        issue(ca, federation_id="f1", role="cloud", party_id="cloud", hosts=("127.0.0.1",)),
        tmp_path,
        "cloud",
        ca_certificate_pem=ca.certificate_pem,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Federations)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", tmp_path / "ca.crt"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _admin(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["admin", *args])
    return result.exit_code, result.stdout, result.stderr


def test_the_ca_file_verifies_the_cloud_and_the_token_file_is_sent(https_cloud, tmp_path):
    url, ca_file = https_cloud
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN + "\n")

    verified = _admin(
        "--cloud", url, "--token-file", str(token_file), "--ca-file", str(ca_file), "federations", "--json"
    )
    unverified = _admin("--cloud", url, "--token-file", str(token_file), "federations", "--json")
    wrong = _admin("--cloud", url, "--token", "another", "--ca-file", str(ca_file), "federations")

    assert verified[0] == 0, verified
    assert json.loads(verified[1]) == []
    # Without the federation's CA an https cloud is not called at all (never the system's trust store).
    assert unverified[0] == 2
    refusal = json.loads(unverified[2])["error"]  # --json: the refusal is a JSON object on stderr too
    assert refusal["code"] == "ca_file" and refusal["message"].startswith("--ca-file is not set"), unverified
    assert wrong[0] == 1 and wrong[2].startswith("unauthenticated: "), wrong
    for _, out, err in (verified, unverified, wrong):
        assert TOKEN not in out + err


def test_the_token_comes_from_one_place(tmp_path):
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN)

    both = _admin("--token", TOKEN, "--token-file", str(token_file), "federations")
    missing = _admin("--token-file", str(tmp_path / "absent"), "federations")
    bad_ca = _admin("--token", TOKEN, "--ca-file", str(tmp_path / "absent.crt"), "federations")

    assert both[0] == 2 and both[2].startswith("admin_token: give --token or --token-file, not both"), both
    assert missing[0] == 2 and missing[2].startswith("admin_token: --token-file"), missing
    assert bad_ca[0] == 1 and bad_ca[2].startswith("ca_file: "), bad_ca
    for _, out, err in (both, missing, bad_ca):
        assert TOKEN not in out + err
