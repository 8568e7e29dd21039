"""`fedlora admin` against a real cloud process on loopback: an admin creates a federation from a spec file,
starts, pauses, resumes and stops it, reads its rounds, parties and privacy ledger, downloads an adapter and
rotates a hospital's enrolment token, each command checked against the cloud's API read independently; bad
input (a spec that does not validate, an unknown federation, a wrong token) is one `code: message` line on
stderr and a non-zero exit, never a traceback."""

import hashlib
import json
from collections.abc import Iterator

import httpx
import pytest
import yaml
from typer.testing import CliRunner, Result

from fedlora.cli import app
from fedlora.launcher import Cluster
from protocol.messages import ClientEnrolment, EdgeEnrolment, Role
from services.identity import SigningKey, token_digest
from tests.e2e.conftest import CloudProcess
from tests.e2e.helpers import FID, make_spec


def _admin(cloud: CloudProcess, *args: str, token: str | None = None) -> Result:
    connection = ["--cloud", cloud.url, "--token", token or cloud.admin_token]
    return CliRunner().invoke(app, ["admin", *connection, *args])


def _json(cloud: CloudProcess, *args: str) -> object:
    result = _admin(cloud, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _enrol(cloud: CloudProcess, role: Role, party: str, token: str) -> httpx.Response:
    key = SigningKey.generate()
    nonce = httpx.post(f"{cloud.url}/federations/{FID}/enrolment-challenges", timeout=30).json()["nonce"]
    if role is Role.EDGE:
        body = EdgeEnrolment(edge_id=party, url="http://127.0.0.1:1", public_key=key.public_bytes)
        path = "edges"
    else:
        body = ClientEnrolment(
            client_id=party, edge_id="edge-1", public_key=key.public_bytes, num_examples=10
        )
        path = "clients"
    return httpx.post(
        f"{cloud.url}/federations/{FID}/{path}",
        content=body.signed(key, federation_id=FID, nonce=nonce).model_dump_json(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=30,
    )


def _state(cloud: CloudProcess) -> str:
    return str(cloud.admin.get(f"/federations/{FID}").json()["state"])


@pytest.fixture(scope="module")
def cloud(tmp_path_factory, tiny_model_dir) -> Iterator[CloudProcess]:
    """One cloud for the module's tests (starting one is most of their time)."""
    folder = tmp_path_factory.mktemp("admin-cli")
    cluster = Cluster(folder / "logs")
    try:
        yield CloudProcess(cluster, folder, tiny_model_dir)
    finally:
        cluster.stop()


def test_an_admin_runs_a_federation_from_the_cli(cloud, tmp_path):
    spec_file = tmp_path / "federation.yaml"
    spec_file.write_text(yaml.safe_dump(make_spec().model_dump(mode="json")))
    created = _json(cloud, "create", str(spec_file))
    assert created["federation_id"] == FID
    assert cloud.admin.get(f"/federations/{FID}").json()["he_fingerprint"] == created["he_fingerprint"]
    tokens = {
        (role, party): _admin(
            cloud, "tokens", "issue", "-f", FID, "--role", role.value, "--id", party
        ).stdout.strip()
        for role, party in (
            (Role.EDGE, "edge-1"),
            (Role.CLIENT, "h-a"),
            (Role.CLIENT, "h-b"),
            (Role.CLIENT, "h-c"),
        )
    }
    for role, party in ((Role.EDGE, "edge-1"), (Role.CLIENT, "h-a"), (Role.CLIENT, "h-c")):
        assert _enrol(cloud, role, party, tokens[role, party]).status_code == 201

    started = _json(cloud, "start", "-f", FID)
    assert started["state"] == "active" == _state(cloud)
    assert _json(cloud, "pause", "-f", FID)["state"] == "paused" == _state(cloud)
    assert _json(cloud, "resume", "-f", FID)["state"] == "active" == _state(cloud)

    vector_file = tmp_path / "adapter-v0.f32"
    vector = _json(cloud, "download", "-f", FID, "--vector", "--out", str(vector_file))
    assert vector_file.read_bytes() == cloud.admin.get(f"/federations/{FID}/adapters/0/vector").content
    assert vector["verified_against"] == "round 0's plan"  # the open round starts from version 0

    listed = _json(cloud, "rounds", "-f", FID)
    one = _json(cloud, "round", "-f", FID, "0")
    ledger = _json(cloud, "ledger", "-f", FID)
    clients = _json(cloud, "clients", "-f", FID)
    edges = _json(cloud, "edges", "-f", FID)
    assert listed == {"total": 1, "rounds": cloud.admin.get(f"/federations/{FID}/rounds").json()}
    assert one == cloud.admin.get(f"/federations/{FID}/rounds/0").json()
    assert ledger == cloud.admin.get(f"/federations/{FID}/privacy").json()
    assert [c["client_id"] for c in clients] == ["h-a", "h-c"]
    assert [e["edge_id"] for e in edges] == ["edge-1"]
    for table in ("rounds", "clients", "edges", "ledger", "federations"):  # the readable form runs too
        args = (table,) if table == "federations" else (table, "-f", FID)
        assert _admin(cloud, *args).exit_code == 0, table

    # h-b lost its unused token: rotation revokes it and hands out a new one; h-a is enrolled already.
    rotated = _json(cloud, "tokens", "rotate", "-f", FID, "--role", "client", "--id", "h-b")
    enrolled = _admin(cloud, "tokens", "rotate", "-f", FID, "--role", "client", "--id", "h-a")
    assert rotated["revoked"] == [token_digest(tokens[Role.CLIENT, "h-b"])]
    assert _enrol(cloud, Role.CLIENT, "h-b", tokens[Role.CLIENT, "h-b"]).status_code == 401
    assert _enrol(cloud, Role.CLIENT, "h-b", rotated["issued"]["enrolment_token"]).status_code == 201
    assert enrolled.exit_code == 1
    assert enrolled.stderr.startswith("already_enrolled: "), enrolled.stderr

    out = tmp_path / "adapter.zip"
    downloaded = _json(cloud, "download", "-f", FID, "--out", str(out))
    served = cloud.admin.get(f"/federations/{FID}/adapters/0").content
    assert out.read_bytes() == served
    assert downloaded["sha256"] == hashlib.sha256(served).hexdigest()
    assert downloaded["version"] == 0

    stopped = _json(cloud, "stop", "-f", FID)
    assert stopped["state"] == "stopped" == _state(cloud)
    assert cloud.admin.get(f"/federations/{FID}/rounds/0").json()["state"] == "failed"


def test_bad_input_is_one_line_with_its_code_and_a_non_zero_exit(cloud, tmp_path):
    bad_spec = tmp_path / "bad.yaml"
    bad_spec.write_text(
        yaml.safe_dump({**make_spec().model_dump(mode="json"), "strategy": "no-such-strategy"})
    )
    spec_file = tmp_path / "federation.yaml"
    spec_file.write_text(yaml.safe_dump(make_spec(federation_id="other").model_dump(mode="json")))
    before = cloud.admin.get("/federations").json()

    invalid = _admin(cloud, "create", str(bad_spec))
    unknown = _admin(cloud, "start", "-f", "no-such-federation")
    unknown_json = _admin(cloud, "show", "-f", "no-such-federation", "--json")
    wrong_token = _admin(cloud, "create", str(spec_file), token="not-the-admin-token")
    no_token = CliRunner().invoke(
        app, ["admin", "--cloud", cloud.url, "federations"], env={"FEDLORA_ADMIN_TOKEN": ""}
    )
    unreachable = CliRunner().invoke(
        app, ["admin", "--cloud", "http://127.0.0.1:1", "--token", "t", "federations"]
    )

    assert invalid.exit_code == 2
    assert invalid.stderr.startswith("invalid_spec: ") and "strategy" in invalid.stderr, invalid.stderr
    assert unknown.exit_code == 1
    assert unknown.stderr.startswith(("not_found: ", "unknown_federation: ")), unknown.stderr
    # With --json the refusal is a JSON object on stderr (docs/operations.md), stdout left for answers.
    assert unknown_json.exit_code == 1 and unknown_json.stdout == "", unknown_json.output
    assert json.loads(unknown_json.stderr) == {
        "error": {
            "code": "unknown_federation",
            "message": "reading 'no-such-federation': no federation 'no-such-federation' (fid)",
        }
    }
    assert wrong_token.exit_code == 1
    assert wrong_token.stderr.startswith("unauthenticated: "), wrong_token.stderr
    assert cloud.admin.get("/federations").json() == before  # nothing was created with the wrong token
    assert no_token.exit_code == 2 and no_token.stderr.startswith("admin_token: ")
    assert unreachable.exit_code == 1 and unreachable.stderr.startswith("unreachable: ")
    for result in (invalid, unknown, unknown_json, wrong_token, no_token, unreachable):
        assert "Traceback" not in result.output
        assert "not-the-admin-token" not in result.output  # a token is never echoed
