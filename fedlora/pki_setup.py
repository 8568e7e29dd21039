"""The bootstrap's certificate step: the federation's CA created once, and each party's certificate written
into that party's own folder, before any service starts (a service refuses to serve plain http).

Layout under `out_dir` (the bootstrap's, so that a party's certificate sits next to its enrolment token):
`cloud/tls.crt`, `edge/<edge id>/tls.crt`, `client/<client id>/tls.crt`, each with its `tls.key` (0600)
and a copy of the CA's `ca.crt`, and `ca/ca.crt` alone (for the admin's CLI and the bootstrap, which verify
the cloud and hold no certificate). The CA's own key stays in `ca_dir` (0600), which no service mounts.

Run again, it keeps every certificate on disk and issues only the missing ones; `renew` reissues them all
from the same CA (certificate rotation, docs/operations.md).

`python -m fedlora.pki_setup` (the image's `pki` entrypoint), settings from `FEDLORA_*`: `FEDLORA_CA_DIR`,
`FEDLORA_OUT_DIR`, `FEDLORA_FEDERATION_ID`, `FEDLORA_CLOUD_HOSTS`, `FEDLORA_EDGES` (JSON: edge id to its host
names), `FEDLORA_CLIENTS` (JSON list of ids).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from fedlora.pki import (
    CA_CERT_FILE,
    DEFAULT_PARTY_DAYS,
    CertificateError,
    issue,
    load_or_create_authority,
    save_issued,
    write_ca_certificate,
)
from protocol.messages import Identifier, Role

CLOUD_DIR = "cloud"
EDGE_DIR = "edge"  # the bootstrap's folders (fedlora.bootstrap), so a party mounts one folder
CLIENT_DIR = "client"
PUBLIC_DIR = "ca"  # the CA's certificate alone, for the admin's CLI and the bootstrap
TLS_NAME = "tls"  # tls.crt, tls.key


class PkiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FEDLORA_", extra="ignore", frozen=True, allow_inf_nan=False)

    ca_dir: Path = Field(description="where the CA's ca.crt and ca.key (0600) live; no service mounts it")
    out_dir: Path = Field(description="the parties' folders: cloud/, edge/<id>/, client/<id>/")
    federation_id: Identifier
    cloud_hosts: tuple[str, ...] = Field(
        default=("cloud", "localhost", "127.0.0.1"),
        description="the names and addresses the cloud is reached at",
    )
    edges: dict[Identifier, tuple[str, ...]] = Field(
        default_factory=dict, description="each edge id and the names and addresses hospitals reach it at"
    )
    clients: tuple[Identifier, ...] = Field(default=(), description="the hospitals (client certificates)")
    days: int = Field(default=DEFAULT_PARTY_DAYS, ge=1, le=825)


@dataclass(frozen=True)
class PartyCertificate:
    role: Role | None  # None: the cloud
    party_id: str
    folder: Path

    @property
    def cert_file(self) -> Path:
        return self.folder / f"{TLS_NAME}.crt"

    @property
    def key_file(self) -> Path:
        return self.folder / f"{TLS_NAME}.key"

    @property
    def ca_file(self) -> Path:
        return self.folder / CA_CERT_FILE

    def env(self) -> dict[str, str]:
        """The party's `FEDLORA_TLS_*` settings."""
        return {
            "FEDLORA_TLS_CERT_FILE": str(self.cert_file.resolve()),
            "FEDLORA_TLS_KEY_FILE": str(self.key_file.resolve()),
            "FEDLORA_TLS_CA_FILE": str(self.ca_file.resolve()),
        }


def party_certificate(out_dir: Path, role: Role | None, party_id: str) -> PartyCertificate:
    """Where the certificate of `party_id` (`role` None: the cloud) lives below `out_dir`."""
    if role is None:
        return PartyCertificate(None, party_id, out_dir / CLOUD_DIR)
    return PartyCertificate(
        role, party_id, out_dir / (EDGE_DIR if role is Role.EDGE else CLIENT_DIR) / party_id
    )


def parties(settings: PkiSettings) -> dict[PartyCertificate, tuple[str, ...]]:
    """Every party's certificate folder and the host names its certificate names."""
    out = settings.out_dir
    folders = {party_certificate(out, None, "cloud"): settings.cloud_hosts}
    for edge_id, hosts in settings.edges.items():
        folders[party_certificate(out, Role.EDGE, edge_id)] = hosts or (edge_id,)
    for client_id in settings.clients:
        folders[party_certificate(out, Role.CLIENT, client_id)] = ()
    return folders


def issue_certificates(settings: PkiSettings, *, renew: bool = False) -> list[PartyCertificate]:
    """Create the CA in `ca_dir` when it has none, and issue every party without a certificate (every
    party with `renew`). Returns the parties issued."""
    authority = load_or_create_authority(settings.ca_dir, f"fedlora {settings.federation_id} CA")
    public = settings.out_dir / PUBLIC_DIR
    public.mkdir(parents=True, exist_ok=True)
    write_ca_certificate(public, authority.certificate_pem)
    issued = []
    for party, hosts in parties(settings).items():
        if party.cert_file.exists() and party.key_file.exists() and not renew:
            continue
        role = "cloud" if party.role is None else party.role.value
        certificate = issue(
            authority,
            federation_id=settings.federation_id,
            role=role,
            party_id=party.party_id,
            hosts=hosts,
            days=settings.days,
        )
        save_issued(certificate, party.folder, TLS_NAME, ca_certificate_pem=authority.certificate_pem)
        issued.append(party)
    return issued


def run() -> None:
    try:
        settings = PkiSettings()  # type: ignore[call-arg]  # pydantic-settings reads the environment
        issued = issue_certificates(settings)
    except (ValidationError, CertificateError) as e:
        sys.exit(f"pki: {e}")
    names = ", ".join(f"{p.role.value if p.role else 'cloud'}:{p.party_id}" for p in issued)
    print(f"federation {settings.federation_id}: certificates issued: {names or 'none (all on disk)'}")


if __name__ == "__main__":
    run()
