"""`fedlora admin`: the admin's daily work over the cloud's REST API (`fedlora.admin_api`): create a
federation from a spec file, start, pause, resume and stop it, read its rounds, edges, clients and privacy
ledger, download an adapter, and handle enrolment tokens (`fedlora.cli_tokens`). Every command prints
rich tables, or with `--json` the API's own models as JSON for scripts; a refusal is `code: message` on
stderr with exit status 1 (with `--json`, `{"error": {"code": ..., "message": ...}}` there instead). Like
`fedlora.cli`, commands import what they need in their bodies."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from fedlora.cli_tokens import tokens_app
from fedlora.cloud_access import (
    DEFAULT_CLOUD,
    DEFAULT_TIMEOUT_S,
    CaFileOption,
    CloudOption,
    FederationOption,
    JsonOption,
    TimeoutOption,
    TokenFileOption,
    TokenOption,
    admin_access,
    answer,
    fail,
    keep_access,
)

if TYPE_CHECKING:
    import httpx

    from fedlora.admin_api import Lifecycle
    from protocol.messages import EdgeInfo, FederationInfo

admin_app = typer.Typer(
    help="Administer federations over the cloud's API (an admin token; --json for scripts).",
    no_args_is_help=True,
)
admin_app.add_typer(tokens_app, name="tokens")


@admin_app.callback()
def connect(
    ctx: typer.Context,
    cloud: CloudOption = DEFAULT_CLOUD,
    token: TokenOption = None,
    token_file: TokenFileOption = None,
    ca_file: CaFileOption = None,
    timeout_s: TimeoutOption = DEFAULT_TIMEOUT_S,
) -> None:
    """The cloud and the admin token every command uses (options, or FEDLORA_CLOUD_URL,
    FEDLORA_ADMIN_TOKEN or FEDLORA_ADMIN_TOKEN_FILE, FEDLORA_TLS_CA_FILE), and the bound on each
    command's whole time (FEDLORA_ADMIN_TIMEOUT_S)."""
    keep_access(ctx, cloud=cloud, token=token, token_file=token_file, ca_file=ca_file, timeout_s=timeout_s)


@admin_app.command("create")
def create(
    ctx: typer.Context,
    spec_file: Annotated[Path, typer.Argument(dir_okay=False, help="the federation spec (YAML or JSON)")],
    as_json: JsonOption = False,
) -> None:
    """Create the federation a spec file describes (validated here first; `fedlora spec init` writes one)."""
    from fedlora.admin_api import create_federation
    from fedlora.specs import SpecError, load_spec

    try:
        spec = load_spec(spec_file)
    except SpecError as e:
        fail("invalid_spec", str(e), exit_code=2, as_json=as_json)
    created = admin_access(ctx).run(lambda http: create_federation(http, spec))
    line = f"created {created.federation_id}, HE key fingerprint {created.he_fingerprint}"
    answer(created, lambda: [line], as_json=as_json)


@admin_app.command("federations")
def federations(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Every federation with its state, round and adapter version."""
    from fedlora.admin_api import list_federations
    from fedlora.status_view import federations_table

    infos = admin_access(ctx).run(list_federations)
    answer(infos, lambda: [federations_table(infos)], as_json=as_json)


@admin_app.command("show")
def show(ctx: typer.Context, federation: FederationOption, as_json: JsonOption = False) -> None:
    """One federation: state, round, adapter version, strategy, encryption (with --json its whole spec)."""
    from fedlora.admin_api import federation_info
    from fedlora.status_view import federations_table

    info = admin_access(ctx).run(lambda http: federation_info(http, federation))
    answer(info, lambda: [federations_table([info])], as_json=as_json)


def _state_line(info: FederationInfo) -> str:
    round_ = f", round {info.current_round}" if info.current_round is not None else ""
    reason = f" ({info.reason})" if info.reason else ""
    return f"{info.spec.federation_id}: {info.state.value}{round_}{reason}"


def _lifecycle_command(action: Lifecycle, summary: str) -> None:
    """Register `fedlora admin <action>`: the one call and the federation's state after it."""

    def command(ctx: typer.Context, federation: FederationOption, as_json: JsonOption = False) -> None:
        from fedlora.admin_api import change_lifecycle

        info = admin_access(ctx).run(lambda http: change_lifecycle(http, federation, action))
        answer(info, lambda: [_state_line(info)], as_json=as_json)

    admin_app.command(action, help=summary)(command)


_lifecycle_command("start", "Open round 0 (every enrolled hospital is asked to join).")
_lifecycle_command("pause", "No new plans until `resume`; the open round does not close meanwhile.")
_lifecycle_command("resume", "Hand out plans again.")
_lifecycle_command("stop", 'Stop for good: the open round fails ("federation stopped").')


@admin_app.command("rounds")
def rounds(
    ctx: typer.Context,
    federation: FederationOption,
    limit: Annotated[int, typer.Option(min=1, max=500, help="rounds shown, newest first")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="newest rounds to skip")] = 0,
    as_json: JsonOption = False,
) -> None:
    """Rounds, newest first, with clients, update norm, accuracy and duration."""
    from fedlora import admin_api
    from fedlora.status_view import FederationStatus, rounds_table

    async def read(http: httpx.AsyncClient) -> tuple[FederationStatus, int]:
        page, total = await admin_api.rounds(http, federation, offset=offset, limit=limit)
        info = await admin_api.federation_info(http, federation)
        versions = await admin_api.adapter_versions(http, federation)  # their evaluations: accuracy
        return FederationStatus(info, tuple(page), (), tuple(versions), None), total

    fed, total = admin_access(ctx).run(read)
    shown = f"{len(fed.rounds)} of {total} rounds"
    answer({"total": total, "rounds": fed.rounds}, lambda: [rounds_table(fed), shown], as_json=as_json)


@admin_app.command("round")
def round_(
    ctx: typer.Context,
    federation: FederationOption,
    number: Annotated[int, typer.Argument(min=0, help="the round id")],
    as_json: JsonOption = False,
) -> None:
    """One round's state and per-edge progress."""
    from fedlora import admin_api
    from fedlora.status_view import FederationStatus, edge_table, rounds_table

    async def read(http: httpx.AsyncClient) -> FederationStatus:
        status = await admin_api.round_status(http, federation, number)
        info = await admin_api.federation_info(http, federation)
        return FederationStatus(info, (status,), (), (), None)

    fed = admin_access(ctx).run(read)
    answer(fed.rounds[0], lambda: [rounds_table(fed), edge_table(fed)], as_json=as_json)


@admin_app.command("clients")
def clients(
    ctx: typer.Context,
    federation: FederationOption,
    edge: Annotated[str | None, typer.Option(help="only this edge's hospitals")] = None,
    as_json: JsonOption = False,
) -> None:
    """Enrolled hospitals: edge, rank, examples, rounds contributed, example-level epsilon."""
    from fedlora import admin_api
    from fedlora.status_view import FederationStatus, clients_table

    async def read(http: httpx.AsyncClient) -> FederationStatus:
        found = await admin_api.clients(http, federation, edge_id=edge)
        info = await admin_api.federation_info(http, federation)
        return FederationStatus(info, (), tuple(found), (), None)

    fed = admin_access(ctx).run(read)
    answer(fed.clients, lambda: [clients_table(fed)], as_json=as_json)


@admin_app.command("edges")
def edges(ctx: typer.Context, federation: FederationOption, as_json: JsonOption = False) -> None:
    """Enrolled edges: URL, enrolment time and the clock offset each last reported."""
    from fedlora.admin_api import edges as read_edges

    found = admin_access(ctx).run(lambda http: read_edges(http, federation))
    answer(found, lambda: [_edges_table(federation, found)], as_json=as_json)


def _edges_table(federation: str, found: list[EdgeInfo]) -> Table:
    table = Table(title=f"{federation}: edges")
    for column in ("edge", "url", "enrolled", "clock offset s"):
        table.add_column(column)
    for e in found:
        offset = f"{e.clock.offset_s:+.3f}{' ALERT' if e.clock.alert else ''}" if e.clock else ""
        table.add_row(e.edge_id, str(e.url), f"{e.enrolled_at:%Y-%m-%d %H:%M}", offset)
    return table


@admin_app.command("ledger")
def ledger(ctx: typer.Context, federation: FederationOption, as_json: JsonOption = False) -> None:
    """The privacy ledger: client-level epsilon per round, example-level epsilon per hospital."""
    from fedlora.admin_api import privacy
    from fedlora.status_view import privacy_tables

    report = admin_access(ctx).run(lambda http: privacy(http, federation))
    answer(report, lambda: privacy_tables(report), as_json=as_json)


@admin_app.command("download")
def download(
    ctx: typer.Context,
    federation: FederationOption,
    out: Annotated[Path, typer.Option(dir_okay=False, help="the file to write")],
    version: Annotated[int | None, typer.Option(min=0, help="adapter version; default: the latest")] = None,
    vector: Annotated[
        bool,
        typer.Option(
            "--vector",
            help="the raw float32 vector instead of the PEFT zip, its SHA-256 checked against the open "
            "round's signed plan when that plan starts from this version",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Write a global adapter: a PEFT adapter zip (`peft.PeftModel.from_pretrained` after unzipping), or
    with --vector the vector the plans name by digest (the zip is built on each request, its bytes differ)."""
    from fedlora import admin_api

    async def read(http: httpx.AsyncClient) -> tuple[int, bytes, str | None]:
        wanted = version
        if wanted is None:
            wanted = (await admin_api.federation_info(http, federation)).adapter_version
        if not vector:
            return wanted, await admin_api.adapter_zip(http, federation, wanted), None
        data = await admin_api.adapter_vector(http, federation, wanted)
        plan = await admin_api.current_plan(http, federation)
        if plan is None or plan.adapter_version != wanted or plan.vector_sha256 is None:
            return wanted, data, None
        if hashlib.sha256(data).hexdigest() != plan.vector_sha256:
            raise admin_api.ApiError(
                "digest_mismatch",
                f"adapter version {wanted} of {federation!r}: the vector served does not have the SHA-256 "
                f"round {plan.round}'s plan names ({plan.vector_sha256}); nothing was written",
            )
        return wanted, data, f"round {plan.round}'s plan"

    got, data, verified = admin_access(ctx).run(read)
    partial = out.with_name(out.name + ".part")  # never a half-written file under the name asked for
    try:
        partial.write_bytes(data)
        partial.replace(out)
    except OSError as e:
        fail("out", f"{out}: {e.strerror}", as_json=as_json)
    digest = hashlib.sha256(data).hexdigest()
    summary = {
        "federation_id": federation,
        "version": got,
        "format": "vector" if vector else "zip",
        "path": str(out),
        "bytes": len(data),
        "sha256": digest,
        "verified_against": verified,
    }
    checked = f", matches {verified}" if verified else ""
    line = f"wrote {out}: adapter version {got}, {len(data):,} bytes, sha256 {digest}{checked}"
    answer(summary, lambda: [line], as_json=as_json)
