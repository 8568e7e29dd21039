"""`fedlora admin tokens issue|list|revoke` against a real cloud process on loopback: the admin's commands
issue a token that enrols its one hospital once, list it by digest without the secret, and revoke one that
then enrols nobody."""

import httpx
from typer.testing import CliRunner

from fedlora.cli import app
from protocol.messages import ClientEnrolment, EdgeEnrolment, Enrolled
from services.identity import SigningKey, token_digest
from tests.e2e.conftest import CloudProcess
from tests.e2e.helpers import FID, make_spec


def _cli(cloud: CloudProcess, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        app, ["admin", "--cloud", cloud.url, "--token", cloud.admin_token, "tokens", *args]
    )
    return result.exit_code, result.output


def _enrol(cloud: CloudProcess, client_id: str, token: str) -> httpx.Response:
    key = SigningKey.generate()
    nonce = httpx.post(f"{cloud.url}/federations/{FID}/enrolment-challenges", timeout=30).json()["nonce"]
    body = ClientEnrolment(
        client_id=client_id, edge_id="edge-1", public_key=key.public_bytes, num_examples=10
    ).signed(key, federation_id=FID, nonce=nonce)
    return httpx.post(
        f"{cloud.url}/federations/{FID}/clients",
        content=body.model_dump_json(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=30,
    )


def test_the_admin_issues_lists_and_revokes_enrolment_tokens_from_the_cli(cluster, tmp_path, tiny_model_dir):
    cloud = CloudProcess(cluster, tmp_path, tiny_model_dir)
    assert cloud.admin.post("/federations", json=make_spec().model_dump(mode="json")).status_code == 201
    edge_key = SigningKey.generate()
    code, edge_token = _cli(cloud, "issue", "--federation", FID, "--role", "edge", "--id", "edge-1")
    assert code == 0, edge_token
    nonce = httpx.post(f"{cloud.url}/federations/{FID}/enrolment-challenges", timeout=30).json()["nonce"]
    edge = EdgeEnrolment(edge_id="edge-1", url="http://127.0.0.1:1", public_key=edge_key.public_bytes).signed(
        edge_key, federation_id=FID, nonce=nonce
    )
    enrolled_edge = httpx.post(
        f"{cloud.url}/federations/{FID}/edges",
        content=edge.model_dump_json(),
        headers={"Authorization": f"Bearer {edge_token.strip()}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert enrolled_edge.status_code == 201, enrolled_edge.text

    code, kept = _cli(cloud, "issue", "--federation", FID, "--role", "client", "--id", "h-a")
    assert code == 0, kept
    code, revoked = _cli(cloud, "issue", "--federation", FID, "--role", "client", "--id", "h-b")
    assert code == 0, revoked
    kept, revoked = kept.strip(), revoked.strip()
    code, listing = _cli(cloud, "list", "--federation", FID)
    assert code == 0, listing
    code, revoking = _cli(cloud, "revoke", "--federation", FID, token_digest(revoked)[:16])
    assert code == 0, revoking
    code, bad_role = _cli(cloud, "issue", "--federation", FID, "--role", "admin", "--id", "h-c")
    short, _ = _cli(cloud, "revoke", "--federation", FID, "abc")

    first, second = _enrol(cloud, "h-a", kept), _enrol(cloud, "h-a", kept)
    after_revoke = _enrol(cloud, "h-b", revoked)

    assert first.status_code == 201, first.text
    Enrolled.model_validate_json(first.content)
    assert second.status_code == 409, second.text
    assert after_revoke.status_code == 401, after_revoke.text
    for token in (kept, revoked):  # listed by the prefix of its digest, never the token
        assert token_digest(token)[:16] in listing
        assert token not in listing
    assert code == 2, bad_role
    assert short == 2
