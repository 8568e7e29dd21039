"""The bootstrap's CA step (`fedlora.pki_setup`): the CA once, each party's certificate in its own folder
naming it and its hosts, keys 0600, the CA's key nowhere near a party; run again it keeps what is on disk,
`renew` reissues from the same CA, and a bundle written during a CA rotation survives a renewal."""

from __future__ import annotations

import stat
from pathlib import Path

from cryptography import x509

from fedlora.pki import load_authority
from fedlora.pki_setup import PkiSettings, issue_certificates, party_certificate
from protocol.messages import Role


def _settings(tmp_path: Path) -> PkiSettings:
    return PkiSettings(
        ca_dir=tmp_path / "ca",
        out_dir=tmp_path / "out",
        federation_id="staging",
        cloud_hosts=("cloud", "127.0.0.1"),
        edges={"edge-north": ("edge-north",)},
        clients=("hospital-a",),
    )


def test_each_party_gets_its_certificate_in_its_own_folder_once(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    issued = issue_certificates(settings)
    assert [(p.role, p.party_id) for p in issued] == [
        (None, "cloud"),
        (Role.EDGE, "edge-north"),
        (Role.CLIENT, "hospital-a"),
    ]
    ca = load_authority(tmp_path / "ca")
    edge = party_certificate(tmp_path / "out", Role.EDGE, "edge-north")
    cert = x509.load_pem_x509_certificate(edge.cert_file.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.UniformResourceIdentifier) == ["fedlora://staging/edge/edge-north"]
    assert names.get_values_for_type(x509.DNSName) == ["edge-north"]
    assert cert.issuer == ca.certificate.subject
    assert edge.ca_file.read_bytes() == ca.certificate_pem
    assert (tmp_path / "out" / "ca" / "ca.crt").read_bytes() == ca.certificate_pem
    for party in issued:
        assert stat.S_IMODE(party.key_file.stat().st_mode) == 0o600, party
    assert stat.S_IMODE((tmp_path / "ca" / "ca.key").stat().st_mode) == 0o600
    assert not list((tmp_path / "out").rglob("ca.key"))
    assert issue_certificates(settings) == []  # run again: everything is on disk


def test_renew_reissues_from_the_same_ca_and_keeps_a_rotation_bundle(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    issue_certificates(settings)
    edge = party_certificate(tmp_path / "out", Role.EDGE, "edge-north")
    before = edge.cert_file.read_bytes()
    bundle = edge.ca_file.read_bytes() + b"-----BEGIN CERTIFICATE-----\nnext CA\n-----END CERTIFICATE-----\n"
    edge.ca_file.write_bytes(bundle)

    assert len(issue_certificates(settings, renew=True)) == 3

    assert edge.cert_file.read_bytes() != before
    after = x509.load_pem_x509_certificate(edge.cert_file.read_bytes())
    assert after.issuer == load_authority(tmp_path / "ca").certificate.subject
    assert edge.ca_file.read_bytes() == bundle
