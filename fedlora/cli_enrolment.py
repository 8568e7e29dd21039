"""`fedlora enrolment-token`: the admin issues, lists and revokes single-use enrolment tokens, one per edge
or hospital id (`fedlora.enrolment_tokens` over the cloud's API). Like `fedlora.cli`, the commands import
what they need in their bodies, so `fedlora --help` stays fast."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    import httpx

T = TypeVar("T")
enrolment_app = typer.Typer(
    help="Single-use enrolment tokens, one per edge or hospital id (admin).", no_args_is_help=True
)
console = Console()

CloudOption = Annotated[str, typer.Option(envvar="FEDLORA_CLOUD_URL", help="the cloud's URL")]
TokenOption = Annotated[str, typer.Option(envvar="FEDLORA_ADMIN_TOKEN", help="admin token")]
FederationOption = Annotated[str, typer.Option("--federation", help="the federation id")]
ID_SHOWN = 16  # hex digits of a token's digest `list` shows
ID_MIN = 8  # the shortest prefix `revoke` takes


def _call(cloud: str, token: str, action: Callable[[httpx.AsyncClient], Awaitable[T]]) -> T:
    import httpx

    from fedlora.enrolment_tokens import EnrolmentTokenError

    async def main() -> T:
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=cloud.rstrip("/"), headers=headers, timeout=30) as http:
            return await action(http)

    try:
        return asyncio.run(main())
    except (EnrolmentTokenError, httpx.HTTPError) as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(1) from e


@enrolment_app.command("issue")
def issue(
    federation: FederationOption,
    role: Annotated[str, typer.Option(help="edge or client")],
    party: Annotated[str, typer.Option("--id", help="the one edge or hospital id the token enrols")],
    ttl_s: Annotated[int, typer.Option(min=60, help="seconds the token may enrol its party")] = 7 * 24 * 3600,
    cloud: CloudOption = "http://127.0.0.1:8700",
    token: TokenOption = "",
) -> None:
    """Print a new token once (nothing else on stdout): hand it to the party out of band."""
    from fedlora.enrolment_tokens import issue_enrolment_token
    from protocol.messages import Role

    if role not in ("edge", "client"):
        console.print(f"[red]--role must be edge or client, got {role!r}[/red]")
        raise typer.Exit(2)
    issued = _call(
        cloud, token, lambda http: issue_enrolment_token(http, federation, Role(role), party, ttl_s=ttl_s)
    )
    print(issued.enrolment_token)


@enrolment_app.command("list")
def list_(
    federation: FederationOption, cloud: CloudOption = "http://127.0.0.1:8700", token: TokenOption = ""
) -> None:
    """The tokens issued, by digest: their party, expiry and whether they were used (never the token)."""
    from fedlora.enrolment_tokens import list_enrolment_tokens

    tokens = _call(cloud, token, lambda http: list_enrolment_tokens(http, federation))
    # A prefix of the digest (as git shows commits): `revoke` takes any unique prefix of 8 or more.
    table = Table()
    table.add_column("token id", no_wrap=True, min_width=ID_SHOWN)
    for heading in ("role", "id", "state", "expires", "used"):
        table.add_column(heading)
    for info in tokens:
        used = f"{info.used_at:%Y-%m-%d %H:%M}" if info.used_at else ""
        table.add_row(
            info.token_id[:ID_SHOWN],
            info.role.value,
            info.subject,
            info.state.value,
            f"{info.expires_at:%Y-%m-%d %H:%M}",
            used,
        )
    console.print(table)


@enrolment_app.command("revoke")
def revoke(
    federation: FederationOption,
    token_id: Annotated[
        str, typer.Argument(help="the token's digest (its SHA-256), or a unique prefix of it as `list` shows")
    ],
    cloud: CloudOption = "http://127.0.0.1:8700",
    token: TokenOption = "",
) -> None:
    """The token enrols nobody from now on; a party it enrolled stays enrolled."""
    from fedlora.enrolment_tokens import list_enrolment_tokens, revoke_enrolment_token

    if len(token_id) < ID_MIN:
        console.print(f"[red]a token id needs at least {ID_MIN} hex digits, got {token_id!r}[/red]")
        raise typer.Exit(2)

    async def matching(http: httpx.AsyncClient) -> list[str]:
        return [
            t.token_id
            for t in await list_enrolment_tokens(http, federation)
            if t.token_id.startswith(token_id)
        ]

    matches = _call(cloud, token, matching)
    if len(matches) != 1:
        console.print(
            f"[red]{len(matches)} tokens of {federation!r} start with {token_id!r}: give more of the id[/red]"
        )
        raise typer.Exit(1)
    _call(cloud, token, lambda http: revoke_enrolment_token(http, federation, matches[0]))
    console.print(f"revoked {matches[0]}")
