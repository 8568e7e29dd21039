"""`fedlora pki`: the federation's certificate authority from the command line (`fedlora.pki_setup` for
every party at once, `issue` for one party, as when a certificate is rotated)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

pki_app = typer.Typer(
    help="The federation's CA and the parties' TLS certificates (admin).", no_args_is_help=True
)
console = Console()


@pki_app.command("init")
def init(
    renew: Annotated[
        bool, typer.Option("--renew", help="reissue every party's certificate (same CA)")
    ] = False,
) -> None:
    """Create the CA once and issue every party's certificate into its folder (settings from FEDLORA_*:
    CA_DIR, OUT_DIR, FEDERATION_ID, CLOUD_HOSTS, EDGES, CLIENTS; see fedlora/pki_setup.py)."""
    from pydantic import ValidationError

    from fedlora.pki import CertificateError
    from fedlora.pki_setup import PkiSettings, issue_certificates

    try:
        issued = issue_certificates(PkiSettings(), renew=renew)  # type: ignore[call-arg]
    except (ValidationError, CertificateError) as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(1) from e
    for party in issued:
        print(party.cert_file)


@pki_app.command("issue")
def issue_one(
    ca_dir: Annotated[Path, typer.Option(envvar="FEDLORA_CA_DIR", help="the CA's folder (ca.crt, ca.key)")],
    federation: Annotated[str, typer.Option("--federation", help="the federation id")],
    role: Annotated[str, typer.Option(help="cloud, edge or client")],
    party: Annotated[str, typer.Option("--id", help="the party's id")],
    out: Annotated[Path, typer.Option(help="the party's folder: tls.crt, tls.key (0600), ca.crt")],
    host: Annotated[
        list[str] | None, typer.Option(help="a name or address it is reached at (repeat)")
    ] = None,
    days: Annotated[int, typer.Option(min=1, max=825, help="days the certificate is valid")] = 90,
) -> None:
    """Issue (or reissue: rotation) one party's certificate from the existing CA; prints its path."""
    from fedlora.pki import CertificateError, issue, load_authority, save_issued
    from fedlora.pki_setup import TLS_NAME

    if role not in ("cloud", "edge", "client"):
        console.print(f"[red]--role must be cloud, edge or client, got {role!r}[/red]")
        raise typer.Exit(2)
    try:
        authority = load_authority(ca_dir)
        issued = issue(
            authority, federation_id=federation, role=role, party_id=party, hosts=tuple(host or ()), days=days
        )
    except CertificateError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(1) from e
    cert, _ = save_issued(issued, out, TLS_NAME, ca_certificate_pem=authority.certificate_pem)
    print(cert)


@pki_app.command("show")
def show(certificate: Annotated[Path, typer.Argument(help="a tls.crt")]) -> None:
    """Whom a certificate names, who issued it, and the days it has left (rotate well before 0)."""
    from cryptography import x509

    from fedlora.pki import days_left

    try:
        pem = certificate.read_bytes()
        cert = x509.load_pem_x509_certificate(pem)
    except (OSError, ValueError) as e:
        console.print(f"[red]{certificate} cannot be read as a PEM certificate: {e}[/red]")
        raise typer.Exit(1) from e
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = names.get_values_for_type(x509.UniformResourceIdentifier)
        hosts = [str(n) for n in names.get_values_for_type(x509.DNSName)] + [
            str(a) for a in names.get_values_for_type(x509.IPAddress)
        ]
    except x509.ExtensionNotFound:
        uris, hosts = [], []
    print(f"party:   {', '.join(uris) or cert.subject.rfc4514_string()}")
    print(f"hosts:   {', '.join(hosts) or '-'}")
    print(f"issuer:  {cert.issuer.rfc4514_string()}")
    print(f"expires: {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC ({days_left(pem):.1f} days left)")
