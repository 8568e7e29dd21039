"""How an admin command reaches the cloud: its URL, the admin token (from an option, the environment or a
file; never printed), the CA bundle that verifies the cloud's certificate once it speaks https, and the bound
on a command's whole time. One copy for `fedlora admin` and `fedlora status`.

A refusal is one line, `code: message`, on stderr with a non-zero exit status; with `--json` it is the JSON
object `{"error": {"code": ..., "message": ...}}` on stderr instead, so a script reads JSON either way
(stdout holds answers only)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, TypeVar

import typer
from rich.console import Console, RenderableType

if TYPE_CHECKING:
    import httpx

T = TypeVar("T")
DEFAULT_CLOUD = "http://127.0.0.1:8700"
DEFAULT_TIMEOUT_S = 120.0
READ_TIMEOUT_S = 30.0  # each connect, read and write; `CloudAccess.timeout_s` bounds them all together

CloudOption = Annotated[str, typer.Option("--cloud", envvar="FEDLORA_CLOUD_URL", help="the cloud's URL")]
TokenOption = Annotated[
    str | None,
    typer.Option("--token", envvar="FEDLORA_ADMIN_TOKEN", show_default=False, help="the admin token"),
]
TokenFileOption = Annotated[
    Path | None,
    typer.Option(
        "--token-file",
        envvar="FEDLORA_ADMIN_TOKEN_FILE",
        dir_okay=False,
        help="a file holding the admin token (instead of --token)",
    ),
]
CaFileOption = Annotated[
    Path | None,
    typer.Option(
        "--ca-file",
        envvar="FEDLORA_TLS_CA_FILE",
        dir_okay=False,
        help="the federation's CA (ca.crt of `fedlora pki init`): an https cloud is verified against it only",
    ),
]


TimeoutOption = Annotated[
    float,
    typer.Option(
        "--timeout",
        envvar="FEDLORA_ADMIN_TIMEOUT_S",
        min=1.0,
        help="seconds a command may take in all, every request and read of it together",
    ),
]


class AccessError(ValueError):
    """The admin token could not be read, or an https cloud has no CA to verify it against; `setting` names
    the setting at fault (the message, the option and the file)."""

    def __init__(self, message: str, *, setting: str = "admin_token") -> None:
        super().__init__(message)
        self.setting = setting


@dataclass(frozen=True)
class CloudAccess:
    url: str
    token: str
    ca_file: Path | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S  # a command's whole time (`run`), not each read's
    json_errors: bool = False  # a refusal as a JSON error object (`fail`)

    @classmethod
    def of(
        cls,
        url: str,
        *,
        token: str | None,
        token_file: Path | None,
        ca_file: Path | None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> CloudAccess:
        """`--token` or `--token-file` (one, not both); an empty token is refused, as the cloud would."""
        if token and token_file is not None:
            raise AccessError("give --token or --token-file, not both")
        if token_file is not None:
            try:
                token = token_file.read_text().strip()
            except OSError as e:
                raise AccessError(f"--token-file {str(token_file)!r}: {e.strerror}") from e
        if not token:
            raise AccessError("no admin token: give --token, --token-file or FEDLORA_ADMIN_TOKEN(_FILE)")
        if url.startswith("https:") and ca_file is None:
            # Never the system's trust store: a certificate a public CA issued for the cloud's name would
            # let a man in the middle read the admin token.
            raise AccessError(
                f"--ca-file is not set: the https cloud {url} is verified against the federation's CA only "
                "(ca.crt of `fedlora pki init`, or FEDLORA_TLS_CA_FILE)",
                setting="ca_file",
            )
        return cls(url=url.rstrip("/"), token=token, ca_file=ca_file, timeout_s=timeout_s)

    def client(self) -> httpx.AsyncClient:
        """An async client on the cloud's URL with the admin token, verifying https against `ca_file`."""
        import ssl

        import httpx

        # The federation's own CA only (`of` refuses https without it); plain http needs none.
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=self.ca_file) if self.ca_file is not None else True
        )
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=min(READ_TIMEOUT_S, self.timeout_s), verify=verify
        )

    def run(self, action: Callable[[httpx.AsyncClient], Awaitable[T]]) -> T:
        """Run `action` with a client, all of it within `timeout_s`; a refusal (`fail`) exits 1: the cloud's,
        `bad_answer`, `answer_too_large`, `unreachable`, or `timeout` when the time is up."""
        from fedlora.admin_api import ApiError

        async def main() -> T:
            async with asyncio.timeout(self.timeout_s), self.client() as http:
                return await action(http)

        try:
            return asyncio.run(main())
        except ApiError as e:
            fail(e.code, e.message, as_json=self.json_errors)
        except TimeoutError:
            message = f"no whole answer from the cloud at {self.url} within {self.timeout_s:g} s (--timeout)"
            fail("timeout", message, as_json=self.json_errors)
        except OSError as e:  # a CA bundle that cannot be read (ssl.SSLError is one too)
            fail("ca_file", f"{self.ca_file}: {e.strerror or e}", as_json=self.json_errors)


def fail(code: str, message: str, *, exit_code: int = 1, as_json: bool = False) -> NoReturn:
    """A refusal on stderr and exit with `exit_code`: `code: message` on one line (markup off: an API
    message may hold brackets), or with `as_json` the object `{"error": {"code": ..., "message": ...}}`."""
    if as_json:
        print(json.dumps({"error": {"code": code, "message": message}}), file=sys.stderr)
    else:
        Console(stderr=True, soft_wrap=True).print(
            f"{code}: {message}", style="red", markup=False, highlight=False
        )
    raise typer.Exit(exit_code)


FederationOption = Annotated[
    str, typer.Option("--federation", "-f", envvar="FEDLORA_FEDERATION_ID", help="the federation id")
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="print the API's answer as JSON (stable field names) for scripts")
]


def keep_access(
    ctx: typer.Context,
    *,
    cloud: str,
    token: str | None,
    token_file: Path | None,
    ca_file: Path | None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> None:
    """Keep a command group's connection options for its commands; read (and checked) only when a command
    runs, so `--help` needs no token."""
    ctx.obj = lambda: CloudAccess.of(
        cloud, token=token, token_file=token_file, ca_file=ca_file, timeout_s=timeout_s
    )


def admin_access(ctx: typer.Context) -> CloudAccess:
    """The `CloudAccess` of the group's options, its refusals in JSON when the command was given `--json`; a
    missing or unreadable token exits 2, naming the option."""
    as_json = bool(ctx.params.get("as_json", False))
    try:
        access: CloudAccess = ctx.obj()  # a sub-group (`tokens`) inherits its parent's
    except AccessError as e:
        fail(e.setting, str(e), exit_code=2, as_json=as_json)
    return replace(access, json_errors=as_json)


def emit_json(value: object) -> None:
    """`value` (API models, lists and dicts of them) as indented JSON on stdout, as the API spells it."""
    import pydantic_core

    print(pydantic_core.to_json(value, indent=2).decode())


def answer(value: object, render: Callable[[], Iterable[RenderableType]], *, as_json: bool) -> None:
    """A command's answer on stdout: `value` as JSON for scripts, or the tables and lines `render` draws."""
    if as_json:
        emit_json(value)
        return
    console = Console()
    for part in render():
        if isinstance(part, str):  # as written, on one line: a token, a digest, a path
            console.print(part, soft_wrap=True, markup=False, highlight=False)
        else:
            console.print(part)
