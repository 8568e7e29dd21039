"""TLS over real processes (`tests/cloud/test_edge_certificates.py` checks each refusal against the cloud
app in-process): a man in the middle holding another CA's certificate for the cloud's very name is refused
by every client before it sends a token, and an edge process restarted on a certificate reissued by the
same CA enrols and works again over mutual TLS."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from fedlora.pki import new_authority
from services.http import Peer, PeerUnavailableError
from tests.e2e.conftest import CloudProcess, EdgeProcess, FederationCA, poll
from tests.e2e.helpers import FID, create_federation, edge_health, make_spec


@pytest.mark.slow
def test_a_man_in_the_middle_with_another_cas_certificate_is_refused(
    cluster, tmp_path, tiny_model_dir, federation_ca
):
    impostor = FederationCA(tmp_path / "mitm", FID, new_authority(f"fedlora {FID} CA")).party(
        "cloud", "cloud"
    )
    cloud = CloudProcess(cluster, tmp_path, tiny_model_dir, tls=impostor)
    hospital = federation_ca.party("client", "h-a")

    async def call() -> None:
        peer = Peer(cloud.url, attempts=1, verify=hospital.context())
        try:
            await peer.request("GET", f"/federations/{FID}/public-context")
        finally:
            await peer.close()

    with pytest.raises(PeerUnavailableError, match="CERTIFICATE_VERIFY_FAILED"):
        asyncio.run(call())
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{cloud.url}/healthz", verify=hospital.context())


@pytest.mark.slow
def test_an_edge_restarted_on_a_reissued_certificate_works_again(
    cluster, tmp_path, tiny_model_dir, federation_ca
):
    cloud = CloudProcess(cluster, tmp_path, tiny_model_dir, tls=federation_ca.party("cloud", "cloud"))
    create_federation(cloud, make_spec())
    files = federation_ca.party("edge", "edge-1")
    edge = EdgeProcess(cluster, tmp_path, cloud, "edge-1", FID, tls=files)
    poll(lambda: edge_health(edge).get("enrolled"), timeout_s=60, what="edge-1 to enrol", cluster=cluster)

    reissued = federation_ca.party("edge", "edge-1")  # the same CA and name, a new key
    files.key_file.write_bytes(reissued.key_file.read_bytes())  # the key first, as `save_issued` writes
    files.cert_file.write_bytes(reissued.cert_file.read_bytes())
    edge.kill()
    edge.restart()  # its store was in memory: it enrols again with its key, over the new certificate

    poll(
        lambda: edge_health(edge).get("enrolled"), timeout_s=60, what="edge-1 to enrol again", cluster=cluster
    )
    listed = cloud.admin.get(f"/federations/{FID}/edges").json()
    assert [e["edge_id"] for e in listed] == ["edge-1"]
