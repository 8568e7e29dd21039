"""TLS for each tier's Redis (`rediss://`): a server certificate per Redis instance and a client certificate
for each of its two users (its tier's service, its operator), all from the federation's CA (`fedlora.pki`).

Each instance's Redis serves TLS only and asks every client for a certificate of the same CA
(`tls-auth-clients yes`): the ACL password says which user a connection is, and the certificate says it
comes from a party the CA issued, so a password file that leaks is not enough on its own to reach the
store (which holds ciphertexts, sealed keys and the edge's API token). The files sit beside the instance's
ACL users (`fedlora.store_users`), in the folder each container already mounts:

    <instance>/redis/tls/     redis.crt, redis.key (0640: the Redis container reads it through the
                              issuer's group), ca.crt         -> tls-cert-file, tls-key-file, tls-ca-cert-file
    <instance>/service/tls/   store-client.crt, store-client.key (0600), ca.crt
                              -> FEDLORA_STORE_CERT_FILE, FEDLORA_STORE_KEY_FILE, FEDLORA_STORE_CA_FILE
    <instance>/admin/tls/     the same for the instance's operator (redis-cli --tls, backups, ACL LOAD)

Run again, a certificate is kept while it chains to the CA, names the hosts asked for and has more than
`RENEW_BEFORE_DAYS` left; otherwise (or with `renew`) it is issued again. Redis reads its certificate at
start-up: restart it after a renewal (its AOF is replayed, nothing is lost); a client's certificate is read
when the service opens its store (docs/security.md, "Redis over TLS").
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from fedlora.pki import CA_CERT_FILE, Authority, days_left, issue, save_issued
from services.store_tls import StoreTLS

TLS_DIR = "tls"
SERVER_NAME = "redis"
CLIENT_NAME = "store-client"
REDIS_ROLE = "redis"
CLIENT_ROLE = "store-client"
#: The names an instance's Redis is reached under, `{store}` being `cloud` or the edge's id: compose's
#: service (`redis-cloud`, `redis-edge-north`), Kubernetes' (`fedlora-redis-cloud` in namespace fedlora),
#: and loopback for the container's own health check.
DEFAULT_HOSTS = "redis-{store},fedlora-redis-{store},fedlora-redis-{store}.fedlora.svc,localhost,127.0.0.1"
RENEW_BEFORE_DAYS = 30


class StoreCertificateError(RuntimeError):
    """A certificate could not be issued or written: names the file and the reason."""


@dataclass(frozen=True)
class ServerTLS:
    """A Redis that serves TLS only: its certificate and key, and the CA every client's certificate must
    chain to."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def client(self) -> StoreTLS:
        """The same files as a client's: the operator on the Redis host, who holds the server's key anyway."""
        return StoreTLS(self.ca_file, self.cert_file, self.key_file)


@dataclass(frozen=True)
class InstanceTLS:
    """One instance's files: its Redis's, its service's and its operator's."""

    server: ServerTLS
    service: StoreTLS
    admin: StoreTLS


def instance_tls(folder: Path) -> InstanceTLS:
    """Where the files of the instance in `folder` (`fedlora.store_users`' layout) are, issued or not."""
    server_dir = folder / "redis" / TLS_DIR
    server = ServerTLS(
        server_dir / CA_CERT_FILE, server_dir / f"{SERVER_NAME}.crt", server_dir / f"{SERVER_NAME}.key"
    )
    return InstanceTLS(server, _client_files(folder / "service"), _client_files(folder / "admin"))


def _client_files(user_dir: Path) -> StoreTLS:
    cert = _client_cert(user_dir)
    return StoreTLS(cert.parent / CA_CERT_FILE, cert, cert.with_suffix(".key"))


def _client_cert(user_dir: Path) -> Path:
    return user_dir / TLS_DIR / f"{CLIENT_NAME}.crt"


def store_hosts(template: str, store: str) -> tuple[str, ...]:
    """The host names of the instance `store` (`cloud` or an edge id) from a comma-separated `template`."""
    return tuple(dict.fromkeys(h.strip().format(store=store) for h in template.split(",") if h.strip()))


def issue_store_certificates(
    instances: Mapping[str, tuple[Path, str]],
    authority: Authority,
    *,
    federation_id: str,
    hosts: str = DEFAULT_HOSTS,
    renew: bool = False,
) -> dict[str, InstanceTLS]:
    """For each instance `store -> (folder, service user)`: its Redis's certificate (named `redis-<store>`,
    valid for `hosts`), its service's and its operator's, written (or kept) under `folder`."""
    issued = {}
    for store, (folder, service_user) in instances.items():
        files = instance_tls(folder)
        redis_party = f"{REDIS_ROLE}-{store}"
        _ensure(
            files.server.cert_file,
            authority,
            federation_id,
            REDIS_ROLE,
            redis_party,
            store_hosts(hosts, store),
            renew=renew,
            key_mode=0o640,
        )
        for user_dir, party in ((folder / "service", service_user), (folder / "admin", f"admin-{store}")):
            _ensure(_client_cert(user_dir), authority, federation_id, CLIENT_ROLE, party, (), renew=renew)
        issued[store] = files
    return issued


def _ensure(
    cert_path: Path,
    authority: Authority,
    federation_id: str,
    role: str,
    party_id: str,
    hosts: tuple[str, ...],
    *,
    renew: bool,
    key_mode: int = 0o600,
) -> None:
    """Keep the certificate at `cert_path` if it is still good, else issue and write a new one (and its key)."""
    if not renew and _still_good(cert_path, authority, hosts):
        return
    fresh = issue(authority, federation_id=federation_id, role=role, party_id=party_id, hosts=hosts)
    try:
        _, key_path = save_issued(
            fresh, cert_path.parent, cert_path.stem, ca_certificate_pem=authority.certificate_pem
        )
        # The Redis container runs as its own user in the issuer's group (compose's group_add): it reads its
        # key through the group. The key was never readable by anyone else before this.
        if key_mode != 0o600:
            os.chmod(key_path, key_mode)
    except OSError as e:
        raise StoreCertificateError(f"cannot write the certificate {cert_path}: {e}") from e


def _still_good(cert_path: Path, authority: Authority, hosts: tuple[str, ...]) -> bool:
    try:
        pem = cert_path.read_bytes()
        certificate = x509.load_pem_x509_certificate(pem)
        certificate.verify_directly_issued_by(authority.certificate)
    except (OSError, ValueError, TypeError, InvalidSignature):
        return False
    if not (cert_path.with_suffix(".key")).exists() or days_left(pem) <= RENEW_BEFORE_DAYS:
        return False
    return _names(certificate) == set(hosts)


def _names(certificate: x509.Certificate) -> set[str]:
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    dns = names.get_values_for_type(x509.DNSName)
    ips = [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]
    return {*dns, *ips}
