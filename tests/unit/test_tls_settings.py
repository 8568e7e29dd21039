"""TLS settings: a service serves plain http only when the operator says so (`allow_plain_http`), a party
configured with https URLs and no CA stops at start with a message naming `tls_ca_file`, and the CLIs need
`--ca-file` for an https cloud. Real files from the federation's CA; nothing is mocked."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from client_agent.errors import InsecurePeerError
from edge_aggregator.app import run as run_edge
from fedlora.pki import issue, new_authority, save_issued
from services.settings import EdgeSettings
from services.tls import (
    PeerCertH11Protocol,
    TLSSettingsError,
    check_peer_url,
    client_context,
    server_options,
    verify_for,
)
from tests.hospitals import hospital_agent


@pytest.fixture(scope="module")
def party(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    ca = new_authority("fedlora test CA")
    folder = tmp_path_factory.mktemp("edge")
    issued = issue(ca, federation_id="f1", role="edge", party_id="edge-1", hosts=("127.0.0.1",))
    cert, key = save_issued(issued, folder, "tls", ca_certificate_pem=ca.certificate_pem)
    return cert, key, folder / "ca.crt"


def test_a_service_without_a_certificate_refuses_to_serve_unless_plain_http_is_allowed(party) -> None:
    cert, key, ca = party
    with pytest.raises(TLSSettingsError, match="tls_cert_file is not set"):
        server_options(cert_file=None, key_file=None, ca_file=None, allow_plain_http=False)
    assert server_options(cert_file=None, key_file=None, ca_file=None, allow_plain_http=True) == {}
    with pytest.raises(TLSSettingsError, match="tls_ca_file is not set"):
        server_options(cert_file=cert, key_file=key, ca_file=None, allow_plain_http=False)
    with pytest.raises(TLSSettingsError, match="tls_key_file='/nowhere' is not a file"):
        server_options(cert_file=cert, key_file=Path("/nowhere"), ca_file=ca, allow_plain_http=False)
    options = server_options(cert_file=cert, key_file=key, ca_file=ca, allow_plain_http=False)
    # Hospitals and browsers connect without a client certificate; one presented is verified against the CA.
    assert options["ssl_cert_reqs"] == ssl.CERT_OPTIONAL
    assert options["ssl_ca_certs"] == str(ca) and options["http"] is PeerCertH11Protocol


def test_an_https_peer_needs_the_federation_ca_and_plain_http_needs_loopback_or_the_opt_in(party) -> None:
    _, _, ca = party
    with pytest.raises(TLSSettingsError, match="tls_ca_file is not set"):
        check_peer_url("https://cloud:8700", field="cloud_url", ca_file=None, allow_plain_http=False)
    assert check_peer_url("https://cloud:8700", field="cloud_url", ca_file=ca, allow_plain_http=False)
    with pytest.raises(TLSSettingsError, match="cloud_url='http://cloud:8700' is not https"):
        check_peer_url("http://cloud:8700", field="cloud_url", ca_file=ca, allow_plain_http=False)
    assert check_peer_url("http://127.0.0.1:8700", field="cloud_url", ca_file=None, allow_plain_http=False)
    assert check_peer_url("http://cloud:8700", field="cloud_url", ca_file=None, allow_plain_http=True)
    with pytest.raises(TLSSettingsError, match="--ca-file is not set"):
        verify_for("https://cloud:8700", ca_file=None, setting="--ca-file")
    context = verify_for("https://cloud:8700", ca_file=ca)
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED


def test_the_client_context_trusts_the_federation_ca_only(party) -> None:
    cert, key, ca = party
    context = client_context(ca_file=ca, cert_file=cert, key_file=key)
    assert context is not None
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "fedlora test CA"),),)]
    with pytest.raises(TLSSettingsError, match="cannot be loaded"):
        client_context(ca_file=ca, cert_file=key, key_file=key)


def test_an_edge_with_an_https_cloud_and_no_ca_stops_at_start(party) -> None:
    cert, key, _ = party
    settings = EdgeSettings(
        edge_id="edge-1",
        federation_id="f1",
        cloud_url="https://cloud.example:8700",
        public_url="https://edge-1.example:8710",
        tls_cert_file=cert,
        tls_key_file=key,
        ephemeral_store=True,  # past the durable-store check, which comes first
    )
    with pytest.raises(SystemExit, match="tls_ca_file is not set"):
        run_edge(settings)


def test_a_hospital_with_an_https_cloud_and_no_ca_stops_before_calling_it(tmp_path: Path) -> None:
    agent = hospital_agent(tmp_path, cloud_url="https://cloud.example:8700")
    with pytest.raises(InsecurePeerError) as refused:
        asyncio.run(agent.run())
    assert refused.value.field == "tls_ca_file" and "FEDLORA_TLS_CA_FILE" in str(refused.value)
