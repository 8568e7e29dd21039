"""The federation's certificate authority: what it issues verifies against its CA and nothing else, names
the party, and completes a real TLS handshake in both directions (mutual TLS)."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from fedlora.pki import (
    CertificateError,
    issue,
    load_authority,
    load_or_create_authority,
    new_authority,
    save_issued,
)
from services.tls import party_uri


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, host: str) -> dict[str, object] | None:
    """Connect a client to a one-shot server on loopback; return the certificate the server saw."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen: dict[str, object] = {}

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                seen["peer"] = tls.getpeercert()
                tls.sendall(b"ok")
        except ssl.SSLError as e:
            seen["error"] = e
        finally:
            listener.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            client_ctx.wrap_socket(raw, server_hostname=host) as tls,
        ):
            assert tls.recv(2) == b"ok"
    finally:
        thread.join(timeout=10)
    return seen.get("peer")  # type: ignore[return-value]


def _files(tmp_path: Path, name: str, pem: tuple[bytes, bytes], ca_pem: bytes) -> tuple[str, str, str]:
    from fedlora.pki import Issued

    cert, key = save_issued(Issued(*pem), tmp_path / name, name, ca_certificate_pem=ca_pem)
    return str(cert), str(key), str(tmp_path / name / "ca.crt")


def test_a_party_certificate_names_the_party_and_completes_mutual_tls(tmp_path: Path) -> None:
    ca = new_authority("fedlora test CA")
    server = issue(ca, federation_id="f1", role="cloud", party_id="cloud", hosts=("127.0.0.1", "cloud"))
    client = issue(ca, federation_id="f1", role="edge", party_id="edge-north")
    cert = client.certificate
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "edge-north"
    uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert uris.get_values_for_type(x509.UniformResourceIdentifier) == [party_uri("f1", "edge", "edge-north")]
    assert party_uri("f1", "edge", "edge-north") == "fedlora://f1/edge/edge-north"

    s_cert, s_key, ca_file = _files(
        tmp_path, "cloud", (server.certificate_pem, server.key_pem), ca.certificate_pem
    )
    c_cert, c_key, _ = _files(tmp_path, "edge", (client.certificate_pem, client.key_pem), ca.certificate_pem)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca_file)
    server_ctx.load_cert_chain(s_cert, s_key)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.create_default_context(cafile=ca_file)
    client_ctx.load_cert_chain(c_cert, c_key)
    peer = _handshake(server_ctx, client_ctx, "127.0.0.1")
    assert peer is not None
    assert ("URI", "fedlora://f1/edge/edge-north") in peer["subjectAltName"]  # type: ignore[operator]


def test_a_certificate_from_another_authority_is_refused(tmp_path: Path) -> None:
    ours, theirs = new_authority("ours"), new_authority("theirs")
    server = issue(theirs, federation_id="f1", role="cloud", party_id="cloud", hosts=("127.0.0.1",))
    s_cert, s_key, _ = _files(
        tmp_path, "cloud", (server.certificate_pem, server.key_pem), theirs.certificate_pem
    )
    (tmp_path / "ours.crt").write_bytes(ours.certificate_pem)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(s_cert, s_key)
    client_ctx = ssl.create_default_context(cafile=str(tmp_path / "ours.crt"))
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(server_ctx, client_ctx, "127.0.0.1")


def test_the_authority_is_saved_once_and_its_key_is_private(tmp_path: Path) -> None:
    first = load_or_create_authority(tmp_path / "ca", "fedlora f1 CA")
    again = load_or_create_authority(tmp_path / "ca", "fedlora f1 CA")
    assert first.certificate_pem == again.certificate_pem
    assert (tmp_path / "ca" / "ca.key").stat().st_mode & 0o777 == 0o600
    other = new_authority("other")
    (tmp_path / "ca" / "ca.key").write_bytes(other.key_pem)
    with pytest.raises(CertificateError, match="is not the key of"):
        load_authority(tmp_path / "ca")


def test_a_certificate_for_no_time_is_refused() -> None:
    with pytest.raises(CertificateError, match="days must be at least 1, got 0"):
        issue(new_authority("x"), federation_id="f1", role="edge", party_id="e1", days=0)


def test_during_a_ca_rotation_a_bundle_of_both_cas_verifies_parties_of_either(tmp_path: Path) -> None:
    """docs/operations.md, "Rotate certificates": every party trusts a bundle of the old and the new CA
    while certificates move from one to the other; a cloud on the old CA's certificate and an edge on the
    new one's complete mutual TLS in both directions."""
    old, new = new_authority("fedlora f1 CA"), new_authority("fedlora f1 CA 2")
    bundle = tmp_path / "bundle.crt"
    bundle.write_bytes(old.certificate_pem + new.certificate_pem)
    for server_ca, client_ca in ((old, new), (new, old)):
        server = issue(server_ca, federation_id="f1", role="cloud", party_id="cloud", hosts=("127.0.0.1",))
        client = issue(client_ca, federation_id="f1", role="edge", party_id="edge-north")
        s_cert, s_key, _ = _files(
            tmp_path, "cloud", (server.certificate_pem, server.key_pem), server_ca.certificate_pem
        )
        c_cert, c_key, _ = _files(
            tmp_path, "edge", (client.certificate_pem, client.key_pem), client_ca.certificate_pem
        )
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(bundle))
        server_ctx.load_cert_chain(s_cert, s_key)
        server_ctx.verify_mode = ssl.CERT_REQUIRED
        client_ctx = ssl.create_default_context(cafile=str(bundle))
        client_ctx.load_cert_chain(c_cert, c_key)
        peer = _handshake(server_ctx, client_ctx, "127.0.0.1")
        assert peer is not None and ("URI", "fedlora://f1/edge/edge-north") in peer["subjectAltName"]  # type: ignore[operator]
