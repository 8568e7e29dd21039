"""The admin's one-shot deployment step: create the federation from a spec file, and issue each edge and
hospital it names its single-use enrolment token.

The cloud answers an enrolment token once, bound to one (role, id). This writes each party's into its own
folder, `FEDLORA_OUT_DIR/edge/<edge id>/` or `.../client/<client id>/` (files mode 0600), twice over: the
bare token (`enrolment-token`, for `kubectl create secret --from-file` or a hand-over to a regional operator
or a hospital) and a settings file (`enrolment.yaml`: `enrolment_token: ...`) that the party's edge or agent
reads through `FEDLORA_CONFIG`; a hospital's file also carries the federation's HE key fingerprint
(`he_fingerprint`), so that its agent refuses a key swapped in the cloud's store before its first contact. A
deployment mounts each folder into its one party only. Run again, it
changes nothing when the federation exists with the same spec and every party's token is on disk, issues
tokens for the parties whose files are missing (a token once used enrols nobody else: an enrolled party
re-enrols with its key alone), and fails when the federation exists with another spec.

`python -m fedlora.bootstrap` (the image's `bootstrap` entrypoint), settings from `FEDLORA_*`:
`FEDLORA_CLOUD_URL`, `FEDLORA_ADMIN_TOKEN`, `FEDLORA_SPEC_FILE`, `FEDLORA_OUT_DIR`, `FEDLORA_EDGES` and
`FEDLORA_CLIENTS` (JSON lists of ids), `FEDLORA_TLS_CA_FILE` (the federation's CA, for an https cloud).
The parties' certificates are issued before the cloud starts, by `fedlora.pki_setup` into the same folders.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import httpx
import yaml
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from fedlora.admin_api import ApiError
from fedlora.enrolment_tokens import issue_enrolment_token
from fedlora.specs import SpecError, load_spec
from protocol.messages import FederationCreated, FederationInfo, Identifier, Role
from services.secret_files import write_secret
from services.settings import Secret
from services.tls import TLSSettingsError, verify_for

log = logging.getLogger("fedlora.bootstrap")

EDGE_DIR = "edge"
CLIENT_DIR = "client"
TOKEN_FILE = "enrolment-token"  # noqa: S105 - a file name, not a secret
CONFIG_FILE = "enrolment.yaml"
#: The settings field each `CONFIG_FILE` provides to the service that reads it through `FEDLORA_CONFIG`.
CONFIG_FIELDS = ("enrolment_token",)
_POLL_S = 1.0


class BootstrapSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FEDLORA_", extra="ignore", frozen=True, allow_inf_nan=False)

    cloud_url: str
    admin_token: Secret
    spec_file: Path = Field(description="the federation spec, YAML or JSON (`fedlora spec init`)")
    out_dir: Path = Field(
        description="where the enrolment tokens go: `edge/<id>/` and `client/<id>/` below it"
    )
    edges: tuple[Identifier, ...] = Field(default=(), description="the edges to issue enrolment tokens for")
    clients: tuple[Identifier, ...] = Field(
        default=(), description="the hospitals to issue enrolment tokens for"
    )
    token_ttl_s: int = Field(
        default=7 * 24 * 3600, ge=60, description="how long an issued token may enrol its party"
    )
    wait_s: float = Field(
        default=300.0, gt=0, le=3600, description="how long to wait for the cloud's /readyz"
    )
    tls_ca_file: Path | None = Field(
        default=None,
        description="the federation's ca.crt (`fedlora.pki_setup`): an https cloud is verified against it "
        "only, so that a man in the middle cannot answer in its place",
    )


class BootstrapError(RuntimeError):
    """The federation could not be created, or its tokens are not where they should be."""


class Outcome(StrEnum):
    CREATED = "created"
    EXISTS = "exists"


@dataclass(frozen=True)
class Bootstrapped:
    federation_id: str
    outcome: Outcome
    folders: dict[tuple[Role, str], Path]  # each party's token folder
    issued: tuple[str, ...]  # the parties issued a token in this run


def _has_tokens(folder: Path) -> bool:
    return (folder / TOKEN_FILE).is_file() and (folder / CONFIG_FILE).is_file()


def party_folders(settings: BootstrapSettings) -> dict[tuple[Role, str], Path]:
    """Where each party's token goes: `out_dir/edge/<id>` and `out_dir/client/<id>`."""
    folders = {(Role.EDGE, eid): settings.out_dir / EDGE_DIR / eid for eid in settings.edges}
    return folders | {(Role.CLIENT, cid): settings.out_dir / CLIENT_DIR / cid for cid in settings.clients}


async def _issue_missing(
    http: httpx.AsyncClient,
    fid: str,
    folders: dict[tuple[Role, str], Path],
    ttl_s: int,
    *,
    he_fingerprint: str,
) -> tuple[str, ...]:
    """Issue and write a token for every party whose folder lacks one (a hospital's with the HE key's
    fingerprint its agent pins)."""
    issued = []
    for (role, subject), folder in folders.items():
        if _has_tokens(folder):
            continue
        try:
            token = (await issue_enrolment_token(http, fid, role, subject, ttl_s=ttl_s)).enrolment_token
        except ApiError as e:
            raise BootstrapError(str(e)) from e
        write_secret(folder / TOKEN_FILE, token)  # no newline: it becomes a header value
        pins = {"he_fingerprint": he_fingerprint} if role is Role.CLIENT else {}
        write_secret(folder / CONFIG_FILE, yaml.safe_dump({"enrolment_token": token, **pins}))
        issued.append(f"{role.value}:{subject}")
    return tuple(issued)


async def _wait_ready(http: httpx.AsyncClient, wait_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    last = "no answer"
    while True:
        try:
            response = await http.get("/readyz")
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.TransportError as e:
            last = repr(e)
        if loop.time() > deadline:
            raise BootstrapError(f"the cloud at {http.base_url} was not ready within {wait_s:g} s: {last}")
        await asyncio.sleep(_POLL_S)


async def bootstrap(
    settings: BootstrapSettings, *, transport: httpx.AsyncBaseTransport | None = None
) -> Bootstrapped:
    try:
        spec = load_spec(settings.spec_file)
    except SpecError as e:
        raise BootstrapError(str(e)) from e
    fid = spec.federation_id
    folders = party_folders(settings)
    for folder in folders.values():  # before the cloud hands out tokens that could not be kept
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise BootstrapError(f"cannot write to {folder}")
    headers = {"Authorization": f"Bearer {settings.admin_token.get_secret_value()}"}
    try:
        verify = verify_for(settings.cloud_url, ca_file=settings.tls_ca_file)
    except TLSSettingsError as e:
        raise BootstrapError(str(e)) from e
    async with httpx.AsyncClient(
        base_url=settings.cloud_url.rstrip("/"),
        headers=headers,
        transport=transport,
        timeout=120.0,
        verify=verify,
    ) as http:
        await _wait_ready(http, settings.wait_s)
        response = await http.post("/federations", json=spec.model_dump(mode="json"))
        if response.status_code == 201:
            fingerprint = FederationCreated.model_validate_json(response.content).he_fingerprint
            outcome = Outcome.CREATED
            log.info("federation created", extra={"federation_id": fid})
        elif response.status_code == 409:
            outcome = Outcome.EXISTS
            existing = await http.get(f"/federations/{fid}")
            if existing.status_code != 200:
                raise BootstrapError(f"reading {fid!r} failed: {existing.status_code} {existing.text[:500]}")
            info = FederationInfo.model_validate_json(existing.content)
            fingerprint = info.he_fingerprint
            if info.spec != spec:
                raise BootstrapError(
                    f"federation {fid!r} exists with another spec than {settings.spec_file}: a federation's "
                    "spec cannot change; give the new one another federation_id"
                )
        else:
            raise BootstrapError(f"creating {fid!r} failed: {response.status_code} {response.text[:500]}")
        issued = await _issue_missing(http, fid, folders, settings.token_ttl_s, he_fingerprint=fingerprint)
    log.info("enrolment tokens on disk", extra={"federation_id": fid, "data": {"issued": list(issued)}})
    return Bootstrapped(fid, outcome, folders, issued)


def run() -> None:
    from services.logs import configure

    configure("bootstrap")
    try:
        settings = BootstrapSettings()  # type: ignore[call-arg]  # pydantic-settings reads the environment
        done = asyncio.run(bootstrap(settings))
    except (ValidationError, BootstrapError) as e:
        sys.exit(f"bootstrap: {e}")
    except httpx.HTTPError as e:  # the cloud went away mid-request: run again, it picks up where it can
        sys.exit(f"bootstrap: the request to the cloud failed: {e!r}")
    issued = ", ".join(done.issued) or "none (all on disk)"
    print(f"federation {done.federation_id}: {done.outcome.value}; enrolment tokens issued: {issued}")


if __name__ == "__main__":
    run()
