"""`fedlora admin tokens`: the admin issues, lists, revokes and rotates single-use enrolment tokens, one per
edge or hospital id (`fedlora.enrolment_tokens` over the cloud's API), with the connection of
`fedlora admin`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from fedlora.cloud_access import FederationOption, JsonOption, admin_access, answer, emit_json, fail

if TYPE_CHECKING:
    import httpx

    from protocol.messages import EnrolmentTokenInfo, Role

tokens_app = typer.Typer(
    help="Single-use enrolment tokens, one per edge or hospital id.", no_args_is_help=True
)

RoleOption = Annotated[str, typer.Option(help="edge or client")]
PartyOption = Annotated[str, typer.Option("--id", help="the one edge or hospital id the token enrols")]
TtlOption = Annotated[int, typer.Option(min=60, help="seconds the token may enrol its party")]
WEEK_S = 7 * 24 * 3600
ID_SHOWN = 16  # hex digits of a token's digest `list` shows
ID_MIN = 8  # the shortest prefix `revoke` takes


def _role(role: str, *, as_json: bool) -> Role:
    from protocol.messages import Role

    if role not in ("edge", "client"):
        fail("invalid_request", f"--role must be edge or client, got {role!r}", exit_code=2, as_json=as_json)
    return Role(role)


@tokens_app.command("issue")
def issue(
    ctx: typer.Context,
    federation: FederationOption,
    role: RoleOption,
    party: PartyOption,
    ttl_s: TtlOption = WEEK_S,
    as_json: JsonOption = False,
) -> None:
    """Print a new token once (nothing else on stdout): hand it to the party out of band."""
    from fedlora.enrolment_tokens import issue_enrolment_token

    as_role = _role(role, as_json=as_json)
    issued = admin_access(ctx).run(
        lambda http: issue_enrolment_token(http, federation, as_role, party, ttl_s=ttl_s)
    )
    answer(issued, lambda: [issued.enrolment_token], as_json=as_json)


@tokens_app.command("rotate")
def rotate(
    ctx: typer.Context,
    federation: FederationOption,
    role: RoleOption,
    party: PartyOption,
    ttl_s: TtlOption = WEEK_S,
    as_json: JsonOption = False,
) -> None:
    """A new token for a party not enrolled yet, printed once; its unused tokens are revoked (a leaked or
    lost one). An enrolled party needs none: it re-enrols with its own key (exit 1, `already_enrolled`)."""
    from fedlora.enrolment_tokens import rotate_enrolment_token

    as_role = _role(role, as_json=as_json)
    rotated = admin_access(ctx).run(
        lambda http: rotate_enrolment_token(http, federation, as_role, party, ttl_s=ttl_s)
    )
    if as_json:
        emit_json({"issued": rotated.issued, "revoked": rotated.revoked})
        return
    print(rotated.issued.enrolment_token)
    revoked = ", ".join(t[:ID_SHOWN] for t in rotated.revoked) or "none"
    Console(stderr=True).print(f"revoked the unused tokens of {role} {party}: {revoked}", highlight=False)


@tokens_app.command("list")
def list_(ctx: typer.Context, federation: FederationOption, as_json: JsonOption = False) -> None:
    """The tokens issued, by digest: their party, expiry and whether they were used (never the token)."""
    from fedlora.enrolment_tokens import list_enrolment_tokens

    tokens = admin_access(ctx).run(lambda http: list_enrolment_tokens(http, federation))
    answer(tokens, lambda: [_tokens_table(tokens)], as_json=as_json)


def _tokens_table(tokens: list[EnrolmentTokenInfo]) -> Table:
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
    return table


@tokens_app.command("revoke")
def revoke(
    ctx: typer.Context,
    federation: FederationOption,
    token_id: Annotated[
        str, typer.Argument(help="the token's digest (its SHA-256), or a unique prefix of it as `list` shows")
    ],
    as_json: JsonOption = False,
) -> None:
    """The token enrols nobody from now on; a party it enrolled stays enrolled."""
    from fedlora.admin_api import ApiError
    from fedlora.enrolment_tokens import list_enrolment_tokens, revoke_enrolment_token

    if len(token_id) < ID_MIN:
        message = f"a token id needs at least {ID_MIN} hex digits, got {token_id!r}"
        fail("invalid_request", message, exit_code=2, as_json=as_json)

    async def revoke_one(http: httpx.AsyncClient) -> str:
        tokens = await list_enrolment_tokens(http, federation)
        matches = [t.token_id for t in tokens if t.token_id.startswith(token_id)]
        if len(matches) != 1:
            raise ApiError(
                "not_found" if not matches else "ambiguous_token_id",
                f"{len(matches)} tokens of {federation!r} start with {token_id!r}: give more of the id",
            )
        await revoke_enrolment_token(http, federation, matches[0])
        return matches[0]

    revoked = admin_access(ctx).run(revoke_one)
    answer({"revoked": revoked}, lambda: [f"revoked {revoked}"], as_json=as_json)
