"""The federation's own certificate authority: one CA key that the admin keeps offline, and a certificate per
party (cloud, each edge, each hospital, the admin's CLI, each Redis) signed by it.

Built on the `cryptography` package. Keys are ECDSA P-256 (every TLS stack we talk to accepts them).
A party's certificate names the party in its subject (common name = party id, organisational unit = role)
and in a URI subject-alternative name `fedlora://<federation>/<role>/<id>`, so that a server that asks for a
client certificate (mutual TLS) can tell which party is on the other end; its DNS names and IP addresses are
the names the party is reached under. Every certificate may serve both ends of a connection (server and
client authentication): an edge is the cloud's client and its hospitals' server.

Files: `ca.crt` (public, handed to every party; a bundle of two CAs while one replaces the other), `ca.key` (mode 0600, the admin's only), and per party
`<name>.crt` / `<name>.key` (0600) in the party's own folder.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.secret_files import write_secret
from services.tls import party_uri

CA_CERT_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"
#: How long a party's certificate is valid unless the caller says otherwise; rotate well before.
DEFAULT_PARTY_DAYS = 90
DEFAULT_CA_DAYS = 3650


class CertificateError(ValueError):
    """A certificate or key file that cannot be used, with the path and the reason."""


@dataclass(frozen=True)
class Authority:
    """The CA: its certificate and private key."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return _key_pem(self.key)


@dataclass(frozen=True)
class Issued:
    """A party's certificate and private key, PEM-encoded."""

    certificate_pem: bytes
    key_pem: bytes

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.certificate_pem)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _key_usage(*, authority: bool) -> x509.KeyUsage:
    """A CA signs certificates and CRLs; a party signs (TLS handshakes) and agrees keys (ECDHE)."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not authority,
        key_cert_sign=authority,
        crl_sign=authority,
        encipher_only=False,
        decipher_only=False,
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_authority(name: str, *, days: int = DEFAULT_CA_DAYS) -> Authority:
    """A fresh self-signed CA named `name` (for example "fedlora <federation> CA")."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(authority=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(certificate, key)


def issue(
    authority: Authority,
    *,
    federation_id: str,
    role: str,
    party_id: str,
    hosts: tuple[str, ...] = (),
    days: int = DEFAULT_PARTY_DAYS,
    now: dt.datetime | None = None,
) -> Issued:
    """A certificate for one party, signed by `authority`, valid from `now` (the current time unless
    given: a test issues an expired one) for `days`. `hosts` are the DNS names and IP addresses it is
    reached under (a server); a party that is only ever a client passes none."""
    if days < 1:
        raise CertificateError(f"days must be at least 1, got {days}")
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(party_uri(federation_id, role, party_id))]
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    now = now or _now()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"fedlora {federation_id}"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
            x509.NameAttribute(NameOID.COMMON_NAME, party_id),
        ]
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(authority.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(authority=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()), critical=False
        )
        .sign(authority.key, hashes.SHA256())
    )
    return Issued(certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def save_authority(authority: Authority, folder: Path) -> None:
    """`ca.crt` (public) and `ca.key` (0600) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CA_CERT_FILE).write_bytes(authority.certificate_pem)
    write_secret(folder / CA_KEY_FILE, authority.key_pem)


def load_authority(folder: Path) -> Authority:
    """The CA saved by `save_authority` in `folder`."""
    cert_path, key_path = folder / CA_CERT_FILE, folder / CA_KEY_FILE
    try:
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError) as e:
        raise CertificateError(f"the CA in {folder} cannot be loaded: {e}") from e
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError(f"{key_path} is not an EC private key")
    if certificate.public_key() != key.public_key():
        raise CertificateError(f"{key_path} is not the key of {cert_path}")
    return Authority(certificate, key)


def load_or_create_authority(folder: Path, name: str) -> Authority:
    """The CA in `folder`, created there first when it has none."""
    if (folder / CA_CERT_FILE).exists():
        return load_authority(folder)
    authority = new_authority(name)
    save_authority(authority, folder)
    return authority


def save_issued(issued: Issued, folder: Path, name: str, *, ca_certificate_pem: bytes) -> tuple[Path, Path]:
    """`<name>.crt`, `<name>.key` (0600) and a copy of the CA's `ca.crt` (`write_ca_certificate`) in
    `folder`; returns the two paths.
    The key is written before the certificate, so a party that reloads on a new certificate never pairs it
    with the old key."""
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    write_secret(key_path, issued.key_pem)
    cert_tmp = cert_path.with_name(f".{cert_path.name}.tmp")
    cert_tmp.write_bytes(issued.certificate_pem)
    cert_tmp.replace(cert_path)
    write_ca_certificate(folder, ca_certificate_pem)
    return cert_path, key_path


def write_ca_certificate(folder: Path, ca_certificate_pem: bytes) -> None:
    """`ca.crt` in `folder`, unless the one there holds this CA already: a bundle of the old and the new
    CA, written during a CA rotation, stays as it is."""
    path = folder / CA_CERT_FILE
    if path.exists() and ca_certificate_pem.strip() in path.read_bytes():
        return
    path.write_bytes(ca_certificate_pem)


def days_left(certificate_pem: bytes, *, now: dt.datetime | None = None) -> float:
    """Days until the certificate expires (negative once it has)."""
    certificate = x509.load_pem_x509_certificate(certificate_pem)
    remaining = certificate.not_valid_after_utc - (now or _now())
    return remaining.total_seconds() / 86400
