"""TLS and mutual TLS over a real cloud process (uvicorn serving the federation's certificates): who is
refused and why. A man in the middle with another CA's certificate is refused by the client; an edge's
token or enrolment is taken only over a connection whose CA-verified client certificate names that very edge
(no certificate: 401 `client_certificate_required`; another party's: 403 `client_certificate_mismatch`); a
certificate from another CA or an expired one fails the handshake; plain http to the TLS port gets nothing;
a party's certificate reissued by the same CA works at once, and the cloud restarted on a reissued
certificate is verified as before."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl

import httpx
import pytest

from fedlora.pki import new_authority
from protocol.messages import EdgeEnrolment
from services.enrolling import enrol
from services.http import Peer, PeerRefusedError, PeerUnavailableError
from services.identity import SigningKey
from tests.e2e.conftest import CloudProcess, FederationCA, PartyFiles, issue_enrolment_token
from tests.e2e.helpers import FID, create_federation, make_spec


def _enrol_edge(cloud: CloudProcess, edge_id: str, tls: PartyFiles | None) -> str:
    """Enrol `edge_id` over a connection presenting `tls` (none: no client certificate); its API token."""
    token = issue_enrolment_token(cloud, FID, "edge", edge_id)
    key = SigningKey.generate()
    body = EdgeEnrolment(edge_id=edge_id, url=f"https://{edge_id}.example:8710", public_key=key.public_bytes)

    async def go() -> str:
        verify = tls.context(present=True) if tls else cloud.verify
        peer = Peer(cloud.url, attempts=1, verify=verify if isinstance(verify, ssl.SSLContext) else None)
        try:
            return (await enrol(peer, FID, body, key, enrolment_token=token)).api_token
        finally:
            await peer.close()

    return asyncio.run(go())


def _get_edges(cloud: CloudProcess, token: str, verify: ssl.SSLContext) -> httpx.Response:
    return httpx.get(
        f"{cloud.url}/federations/{FID}/edges",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
        verify=verify,
    )


@pytest.mark.slow
def test_mutual_tls_binds_edges_to_their_certificates(cluster, tmp_path, tiny_model_dir, federation_ca):
    ca = federation_ca
    cloud = CloudProcess(cluster, tmp_path, tiny_model_dir, tls=ca.party("cloud", "cloud"))
    create_federation(cloud, make_spec())
    north, south = ca.party("edge", "edge-north"), ca.party("edge", "edge-south")

    # An edge enrols only over a connection presenting its own certificate.
    with pytest.raises(PeerRefusedError) as no_cert:
        _enrol_edge(cloud, "edge-north", None)
    assert (no_cert.value.status, no_cert.value.code) == (401, "client_certificate_required")
    with pytest.raises(PeerRefusedError) as other:
        _enrol_edge(cloud, "edge-north", south)
    assert (other.value.status, other.value.code) == (403, "client_certificate_mismatch")
    assert other.value.detail == {"expected": f"fedlora://{FID}/edge/edge-north"}
    token = _enrol_edge(cloud, "edge-north", north)

    # The edge's token: useless without the edge's certificate key, and under another party's certificate.
    refused = _get_edges(cloud, token, north.context(present=False))
    assert (refused.status_code, refused.json()["code"]) == (401, "client_certificate_required")
    for stranger in (south, ca.party("client", "edge-north"), ca.party("cloud", "cloud")):
        refused = _get_edges(cloud, token, stranger.context(present=True))
        assert (refused.status_code, refused.json()["code"]) == (403, "client_certificate_mismatch")
    assert _get_edges(cloud, token, north.context(present=True)).status_code == 200
    # A hospital or the admin (a browser) connects without a client certificate.
    assert cloud.admin.get(f"/federations/{FID}/edges").status_code == 200

    # Rotation: the edge's certificate reissued by the same CA is taken at once (the binding is the name).
    assert _get_edges(cloud, token, ca.party("edge", "edge-north").context(present=True)).status_code == 200

    # Certificates the handshake refuses: another CA's naming the very edge, and an expired one.
    rogue = FederationCA(tmp_path / "rogue", FID, new_authority("rogue CA")).party("edge", "edge-north")
    rogue_client = rogue.context(present=True)
    rogue_client.load_verify_locations(str(north.ca_file))  # it trusts the real cloud; the cloud not it
    expired = ca.party("edge", "edge-north", now=dt.datetime.now(dt.UTC) - dt.timedelta(days=3))
    for refused_cert in (rogue_client, expired.context(present=True)):
        with pytest.raises(httpx.TransportError):
            _get_edges(cloud, token, refused_cert).raise_for_status()

    # Plain http to the TLS port: no answer, let alone one that reads the token.
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{cloud.port}/healthz", headers={"Authorization": f"Bearer {token}"})

    # The cloud restarted on a reissued certificate (same files, same CA) is verified as before.
    renewed = ca.party("cloud", "cloud")
    assert cloud.tls is not None
    cloud.tls.cert_file.write_bytes(renewed.cert_file.read_bytes())
    cloud.tls.key_file.write_bytes(renewed.key_file.read_bytes())
    cloud.kill()
    cloud.restart()
    served = ssl.get_server_certificate(("127.0.0.1", cloud.port))
    assert served.strip() == renewed.cert_file.read_text().strip()
    assert cloud.admin.get("/healthz").status_code == 200


@pytest.mark.slow
def test_a_man_in_the_middle_with_another_cas_certificate_is_refused(
    cluster, tmp_path, tiny_model_dir, federation_ca
):
    """A server holding a certificate for the cloud's very name and address, from any CA but the
    federation's: every client verifying against the federation's CA refuses it before sending a token."""
    impostor = FederationCA(tmp_path / "mitm", FID, new_authority("fedlora fed-e2e CA")).party(
        "cloud", "cloud"
    )
    cloud = CloudProcess(cluster, tmp_path, tiny_model_dir, tls=impostor)
    federation = federation_ca.party("client", "h-a")

    async def call() -> None:
        peer = Peer(cloud.url, attempts=1, verify=federation.context())
        try:
            await peer.request("GET", f"/federations/{FID}/public-context")
        finally:
            await peer.close()

    with pytest.raises(PeerUnavailableError, match="CERTIFICATE_VERIFY_FAILED"):
        asyncio.run(call())
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{cloud.url}/healthz", verify=federation.context())
