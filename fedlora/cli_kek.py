"""`fedlora kek`: the cloud's key-encryption key. `generate` a new one, `rotate` the cloud's store onto it
(re-sealing every record sealed under the previous one), `check` that nothing needs the previous one any
more (docs/operations.md, "Rotating the KEK"). `rotate` and `check` work on the cloud's Redis directly, with
the cloud's own settings (`FEDLORA_STORE_URL`, `FEDLORA_STORE_USERNAME`, `FEDLORA_STORE_PASSWORD_FILE`) and
KEKs (`FEDLORA_KEK`, `FEDLORA_KEK_PREVIOUS`, or their `_FILE` forms). Like `fedlora.cli`, the commands
import what they need in their bodies, so `fedlora --help` stays fast."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from fedlora.kek_rotation import RotationReport
    from protocol.crypto import KekRing

kek_app = typer.Typer(
    help="The cloud's key-encryption key: generate one, re-seal the store under it, check.",
    no_args_is_help=True,
)
console = Console()
errors = Console(stderr=True)
JsonOption = Annotated[bool, typer.Option("--json", help="print the report as JSON (for scripts)")]


@kek_app.command("generate")
def generate(
    out: Annotated[
        Path | None, typer.Option(help="write it to this new file (mode 0600) instead of printing it")
    ] = None,
) -> None:
    """A fresh KEK from the operating system's entropy, as 64 hex digits (what FEDLORA_KEK and the file
    FEDLORA_KEK_FILE names hold); its id, which sealed records name, on stderr."""
    from protocol.crypto import kek_id
    from services.keys import new_kek
    from services.secret_files import write_secret

    kek = new_kek()
    if out is None:
        print(kek)
    elif out.exists():
        errors.print(
            f"[red]{out} exists; a KEK file is never overwritten (the key in it may still be needed)[/red]"
        )
        raise typer.Exit(2)
    else:
        write_secret(out, kek + "\n")
        errors.print(f"wrote {out} (mode 0600)")
    errors.print(f"KEK id {kek_id(bytes.fromhex(kek)).hex()}")


@kek_app.command("rotate")
def rotate(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="only say which records need re-sealing")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Re-seal every record of every federation under FEDLORA_KEK, opening those sealed under
    FEDLORA_KEK_PREVIOUS; safe beside a running cloud, and to run again after an interruption. Exit status 1
    when a record opens under neither KEK (listed by key, never by value)."""
    from fedlora.kek_rotation import RecordState
    from services.keys import load_keks

    report = _run(load_keks, write=not dry_run, as_json=as_json)
    _show(report, as_json=as_json)
    if report.count(RecordState.UNREADABLE):
        raise typer.Exit(1)


@kek_app.command("check")
def check(as_json: JsonOption = False) -> None:
    """Whether every sealed record opens with FEDLORA_KEK alone, in an envelope that names it: exit status 0
    when it does (FEDLORA_KEK_PREVIOUS can then be unset), 1 with the records that do not."""
    from protocol.crypto import KekRing
    from services.keys import load_kek

    report = _run(lambda: KekRing(current=load_kek()), write=False, as_json=as_json)
    _show(report, as_json=as_json)
    if not as_json:
        if report.complete:
            console.print(
                f"every sealed record opens with the current KEK {report.current_kek_id} alone: "
                "FEDLORA_KEK_PREVIOUS can be unset"
            )
        else:
            console.print("[red]some records still need the previous KEK or do not open: see above[/red]")
    if not report.complete:
        raise typer.Exit(1)


def _run(keks: Callable[[], KekRing], *, write: bool, as_json: bool) -> RotationReport:
    from pydantic import ValidationError
    from rich.progress import Progress

    from fedlora.kek_rotation import rotate as rotate_store
    from fedlora.kek_rotation import sealed_records
    from protocol.crypto import KeyStoreError
    from services.keys import KekError
    from services.settings import ServiceSettings
    from services.store import StoreError

    try:
        settings = ServiceSettings()
        ring = keks()
        if settings.store_url == "memory://":
            raise StoreError(
                "FEDLORA_STORE_URL is memory://: set it to the cloud's Redis (redis:// or rediss://)"
            )
        store = settings.open_store()
    except (KekError, KeyStoreError, StoreError, ValidationError, ValueError) as e:
        errors.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from e

    async def main() -> RotationReport:
        try:
            records = await sealed_records(store)
            with Progress(console=errors, transient=True, disable=as_json) as progress:
                task = progress.add_task("re-sealing" if write else "checking", total=len(records))
                return await rotate_store(
                    store, ring, write=write, records=records, on_record=lambda _: progress.advance(task)
                )
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except StoreError as e:
        errors.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from e


def _show(report: RotationReport, *, as_json: bool) -> None:
    from fedlora.kek_rotation import RecordState

    if as_json:
        print(report.model_dump_json(indent=2))
        return
    previous = report.previous_kek_id or "none"
    console.print(f"current KEK {report.current_kek_id}, previous {previous}")
    if report.dry_run and report.previous_kek_id is not None:
        console.print("dry run: nothing written; the stale records are those `rotate` re-seals")
    summary = Table()
    summary.add_column("sealed records")
    summary.add_column("count", justify="right")
    for state in RecordState:
        summary.add_row(state.value, str(report.count(state)))
    console.print(summary)
    attention = [r for r in report.records if r.state in (RecordState.UNREADABLE, RecordState.STALE)]
    if attention:
        table = Table(title="records to act on")
        for heading in ("key", "kind", "state", "why"):
            table.add_column(heading, overflow="fold")
        for record in attention:
            table.add_row(record.key, record.kind.value, record.state.value, record.reason or "")
        console.print(table)
