"""The admin's one-shot deployment step: create the federation from a spec file, keep its enrolment tokens.

`POST /federations` answers the edge and client enrolment tokens once. This writes each into its own
folder under `FEDLORA_OUT_DIR` (files mode 0600), twice over: the bare token (`enrolment-token`, for
`kubectl create secret --from-file` or a hand-over to a regional operator or a hospital) and a settings
file (`enrolment.yaml`: `enrolment_token: ...`) that an edge or a hospital's agent reads through
`FEDLORA_CONFIG`; the hospitals' file also carries the federation's HE key fingerprint (`he_fingerprint`), so
that an agent refuses a key swapped in the cloud's store before its first contact. Run again, it changes nothing when the federation exists with the same spec and both
tokens are on disk; it fails when the federation exists but the tokens are not (they cannot be fetched
again: create a federation under a new id), or exists with another spec.

`python -m fedlora.bootstrap` (the image's `bootstrap` entrypoint), settings from `FEDLORA_*`:
`FEDLORA_CLOUD_URL`, `FEDLORA_ADMIN_TOKEN`, `FEDLORA_SPEC_FILE`, `FEDLORA_OUT_DIR`.
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

from fedlora.specs import SpecError, load_spec
from protocol.messages import FederationCreated, FederationInfo
from services.secret_files import write_secret
from services.settings import Secret

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
    out_dir: Path = Field(description="where the enrolment tokens go: `edge/` and `client/` below it")
    wait_s: float = Field(
        default=300.0, gt=0, le=3600, description="how long to wait for the cloud's /readyz"
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
    edge_dir: Path
    client_dir: Path


def _has_tokens(folder: Path) -> bool:
    return (folder / TOKEN_FILE).is_file() and (folder / CONFIG_FILE).is_file()


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
    edge_dir, client_dir = settings.out_dir / EDGE_DIR, settings.out_dir / CLIENT_DIR
    for folder in (edge_dir, client_dir):  # before the cloud hands out tokens that could not be kept
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise BootstrapError(f"cannot write to {folder}")
    headers = {"Authorization": f"Bearer {settings.admin_token.get_secret_value()}"}
    async with httpx.AsyncClient(
        base_url=settings.cloud_url.rstrip("/"), headers=headers, transport=transport, timeout=120.0
    ) as http:
        await _wait_ready(http, settings.wait_s)
        # No retries on the POST: after a lost answer a repeat gets 409 and the tokens would be gone.
        response = await http.post("/federations", json=spec.model_dump(mode="json"))
        if response.status_code == 201:
            created = FederationCreated.model_validate_json(response.content)
            for folder, token, pins in (
                (edge_dir, created.edge_enrolment_token, {}),
                (client_dir, created.client_enrolment_token, {"he_fingerprint": created.he_fingerprint}),
            ):
                write_secret(folder / TOKEN_FILE, token)  # no newline: it becomes a header value
                write_secret(folder / CONFIG_FILE, yaml.safe_dump({"enrolment_token": token, **pins}))
            log.info("federation created", extra={"federation_id": fid})
            return Bootstrapped(fid, Outcome.CREATED, edge_dir, client_dir)
        if response.status_code != 409:
            raise BootstrapError(f"creating {fid!r} failed: {response.status_code} {response.text[:500]}")
        existing = await http.get(f"/federations/{fid}")
        if existing.status_code != 200:
            raise BootstrapError(f"reading {fid!r} failed: {existing.status_code} {existing.text[:500]}")
    info = FederationInfo.model_validate_json(existing.content)
    if info.spec != spec:
        raise BootstrapError(
            f"federation {fid!r} exists with another spec than {settings.spec_file}: a federation's spec "
            "cannot change; give the new one another federation_id"
        )
    missing = [str(folder) for folder in (edge_dir, client_dir) if not _has_tokens(folder)]
    if missing:
        raise BootstrapError(
            f"federation {fid!r} exists but its enrolment tokens are not in {', '.join(missing)}: the cloud "
            "gives them out once; copy them from wherever they were written, or create a federation under "
            "a new federation_id"
        )
    log.info("federation exists, tokens on disk", extra={"federation_id": fid})
    return Bootstrapped(fid, Outcome.EXISTS, edge_dir, client_dir)


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
    print(
        f"federation {done.federation_id}: {done.outcome.value}; tokens in {done.edge_dir} and {done.client_dir}"
    )


if __name__ == "__main__":
    run()
