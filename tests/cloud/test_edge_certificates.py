"""Mutual TLS between edges and the cloud, in the fast suite: the cloud app under a real uvicorn with the
federation's certificates (a thread of this process; `tests/e2e/test_tls.py` runs the cloud process).

An edge's enrolment and every call with its API token are taken only over a connection whose CA-verified
client certificate names that very edge: none is 401 `client_certificate_required`, another party's is 403
`client_certificate_mismatch`; another CA's or an expired certificate fails the handshake; a certificate
reissued by the same CA works at once, the cloud's after a restart; plain http to the TLS port gets no
answer."""

from __future__ import annotations

import datetime as dt
import ssl

import httpx
import pytest

from cloud_server.app import create_app
from fedlora.launcher import free_port
from fedlora.pki import new_authority
from protocol.crypto import KekRing
from protocol.messages import EdgeEnrolment, Enrolled, EnrolmentChallenge
from services.identity import SigningKey
from services.store import MemoryStore
from services.tls import server_options
from tests.cloud.harness import ADMIN, KEK, cloud_settings, small_spec
from tests.e2e.conftest import FederationCA, PartyFiles
from tests.served import served

FID = "fed-1"


def _enrol_edge(url: str, admin: httpx.Client, edge_id: str, verify: object) -> httpx.Response:
    token = admin.post(f"/federations/{FID}/enrolment-tokens", json={"role": "edge", "subject": edge_id})
    assert token.status_code == 201, token.text
    key = SigningKey.generate()
    with httpx.Client(base_url=url, verify=verify, timeout=30) as client:  # type: ignore[arg-type]
        nonce = EnrolmentChallenge.model_validate_json(
            client.post(f"/federations/{FID}/enrolment-challenges").content
        ).nonce
        body = EdgeEnrolment(
            edge_id=edge_id, url=f"https://{edge_id}.example:8710", public_key=key.public_bytes
        )
        return client.post(
            f"/federations/{FID}/edges",
            content=body.signed(key, federation_id=FID, nonce=nonce).model_dump_json(),
            headers={
                "Authorization": f"Bearer {token.json()['enrolment_token']}",
                "Content-Type": "application/json",
            },
        )


def _edges(url: str, token: str, files: PartyFiles | None, ca: PartyFiles) -> httpx.Response:
    verify = files.context(present=True) if files else ca.context()
    return httpx.get(
        f"{url}/federations/{FID}/edges",
        headers={"Authorization": f"Bearer {token}"},
        verify=verify,
        timeout=30,
    )


def test_an_edge_is_taken_only_over_a_connection_presenting_its_own_certificate(tmp_path) -> None:
    ca = FederationCA(tmp_path / "pki", FID)
    cloud = ca.party("cloud", "cloud")
    settings = cloud_settings(
        tls_cert_file=cloud.cert_file, tls_key_file=cloud.key_file, tls_ca_file=cloud.ca_file
    )
    tls = server_options(
        cert_file=cloud.cert_file, key_file=cloud.key_file, ca_file=cloud.ca_file, allow_plain_http=False
    )
    store = MemoryStore()
    port = free_port()
    with (
        served(create_app(settings, store=store, keks=KekRing(KEK)), port, **tls) as url,
        httpx.Client(base_url=url, headers=ADMIN, verify=cloud.context(), timeout=60) as admin,
    ):
        assert admin.post("/federations", json=small_spec(FID).model_dump(mode="json")).status_code == 201
        north, south = ca.party("edge", "edge-north"), ca.party("edge", "edge-south")

        refused = _enrol_edge(url, admin, "edge-north", cloud.context())
        assert (refused.status_code, refused.json()["code"]) == (401, "client_certificate_required")
        refused = _enrol_edge(url, admin, "edge-north", south.context(present=True))
        assert (refused.status_code, refused.json()["code"]) == (403, "client_certificate_mismatch")
        enrolled = _enrol_edge(url, admin, "edge-north", north.context(present=True))
        assert enrolled.status_code == 201, enrolled.text
        token = Enrolled.model_validate_json(enrolled.content).api_token

        # The token stolen without the edge's key, or used under another party's certificate: refused.
        refused = _edges(url, token, None, cloud)
        assert (refused.status_code, refused.json()["code"]) == (401, "client_certificate_required")
        for stranger in (south, ca.party("client", "edge-north"), ca.party("cloud", "edge-north")):
            refused = _edges(url, token, stranger, cloud)
            assert (refused.status_code, refused.json()["code"]) == (403, "client_certificate_mismatch")
            assert refused.json()["detail"] == {"expected": f"fedlora://{FID}/edge/edge-north"}
        assert _edges(url, token, north, cloud).status_code == 200
        # Reissued by the same CA (rotation): taken at once. Hospitals and the admin need no certificate.
        assert _edges(url, token, ca.party("edge", "edge-north"), cloud).status_code == 200
        assert admin.get(f"/federations/{FID}/edges").status_code == 200

        # Certificates the handshake itself refuses: another CA's naming the very edge, an expired one.
        rogue = FederationCA(tmp_path / "rogue", FID, new_authority(f"fedlora {FID} CA")).party(
            "edge", "edge-north"
        )
        rogue_context = rogue.context(present=True)
        rogue_context.load_verify_locations(str(cloud.ca_file))  # it trusts the cloud; the cloud not it
        expired = ca.party("edge", "edge-north", now=dt.datetime.now(dt.UTC) - dt.timedelta(days=3))
        for context in (rogue_context, expired.context(present=True)):
            with pytest.raises(httpx.TransportError):
                httpx.get(
                    f"{url}/federations/{FID}/edges",
                    headers={"Authorization": f"Bearer {token}"},
                    verify=context,
                    timeout=30,
                )
        # Plain http to the TLS port: no answer that could read the token.
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", headers={"Authorization": f"Bearer {token}"})

    # The cloud restarted on a reissued certificate (same files, same CA, same store): it serves the new
    # one, verified as before, and the edge's token still works under the edge's certificate.
    renewed = ca.party("cloud", "cloud")
    cloud.cert_file.write_bytes(renewed.cert_file.read_bytes())
    cloud.key_file.write_bytes(renewed.key_file.read_bytes())
    with served(create_app(settings, store=store, keks=KekRing(KEK)), port, **tls) as url:
        served_pem = ssl.get_server_certificate(("127.0.0.1", port))
        assert served_pem.strip() == renewed.cert_file.read_text().strip()
        assert _edges(url, token, north, cloud).status_code == 200
