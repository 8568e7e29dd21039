"""The bootstrap's first step: one Redis instance per tier (the cloud's, and one per edge, each at its own
site), each knowing only its own operator and its own tier's ACL user, confined to that tier's keys and to
the commands the state store sends, and the default user turned off.

    OUT_DIR/cloud/                    what the cloud's site needs (the cloud's Redis and the cloud)
      redis/users.acl                 that Redis' `aclfile`: its operator and `fedlora-cloud` (mode 0644: it
                                      holds SHA-256 digests of the passwords, never a password; each
                                      password is 256 random bits)
      admin/store-password            its operator's user (every command and key: backups, SHUTDOWN, ACL LOAD)
      service/store-password          the cloud's user: `~cloud:*` only
    OUT_DIR/edge-<id>/                the same for edge <id>'s own Redis: its own operator, and
                                      `fedlora-edge-<id>` confined to `~edge:<id>:*` (no script)
                                      (each password file 0600, each folder given to one container alone)

Separate instances, because two tiers on one Redis are not kept apart by ACL users alone: Redis has no
memory quota per user (one tier's writes fill `maxmemory` for all) and SCAN lists key names past a user's
key patterns. An edge's password logs in nowhere but at its own Redis.

Run again, it keeps the passwords it finds and adds an instance for each new edge. `rotate` gives every user
a new password and keeps the previous one valid beside it (in `store-password.previous`, and both digests in
its instance's ACL file) until a run with `retire` drops it: load each file (`ACL LOAD` on its instance),
roll the services onto the new passwords, then retire the old ones and load again (docs/security.md, "Store
credentials").

`python -m fedlora.store_users` (the image's `store-users` entrypoint), settings from `FEDLORA_*`:
`FEDLORA_OUT_DIR`, `FEDLORA_EDGE_IDS` (comma-separated), `FEDLORA_ROTATE`, `FEDLORA_RETIRE`. With
`FEDLORA_CA_DIR` (the federation's CA, `fedlora.pki`; created there if absent) it also issues each instance's
TLS certificates (`fedlora.store_certs`): its Redis's, its service's and its operator's, beside their
passwords; `FEDLORA_RENEW_CERTIFICATES` issues them again (docs/security.md, "Redis over TLS").
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, TypeAdapter, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from fedlora.pki import CertificateError, load_or_create_authority
from fedlora.store_certs import DEFAULT_HOSTS, StoreCertificateError, issue_store_certificates
from protocol.messages import Identifier
from services import keyspace
from services.secret_files import write_secret
from services.store import EDGE_REDIS_COMMANDS, REDIS_COMMANDS

#: Inside an instance's folder: its ACL file, its operator's password, its tier's service password.
ACL_FILE = Path("redis") / "users.acl"
ADMIN_DIR = "admin"
SERVICE_DIR = "service"
PASSWORD_FILE = "store-password"  # noqa: S105 - a file name, not a secret
PREVIOUS_FILE = "store-password.previous"
ADMIN_USER = "fedlora-admin"
DEFAULT_USER_LINE = "user default reset off ~* &* +@all"
CLOUD_USER = "fedlora-cloud"


def edge_user(edge_id: str) -> str:
    return f"fedlora-edge-{edge_id}"


def cloud_folder(out_dir: Path) -> Path:
    """The folder of the cloud's Redis instance under the issuer's `out_dir`."""
    return out_dir / "cloud"


def edge_folder(out_dir: Path, edge_id: str) -> Path:
    """The folder of edge `edge_id`'s own Redis instance under the issuer's `out_dir`."""
    return out_dir / f"edge-{edge_id}"


class StoreUsersError(RuntimeError):
    """The users could not be issued: an unreadable or unwritable file, an edge id that is not an id."""


@dataclass(frozen=True)
class StoreUser:
    """One Redis ACL user: its name, password (and the previous one during a rotation), and what it may do."""

    name: str
    password: str
    password_file: Path
    key_patterns: tuple[str, ...]
    commands: tuple[str, ...] | None  # None: every command
    previous: str | None = None

    def acl_line(self) -> str:
        """Its line of the ACL file: off unless enabled here, passwords as SHA-256 digests, no channel."""
        digests = [f"#{_sha256(p)}" for p in (self.password, self.previous) if p is not None]
        keys = [f"~{pattern}" for pattern in self.key_patterns]
        grants = (
            ["+@all", "allchannels"]
            if self.commands is None
            else ["-@all", *(f"+{c}" for c in self.commands)]
        )
        return " ".join(["user", self.name, "reset", "on", *digests, *keys, "resetchannels", *grants])


@dataclass(frozen=True)
class RedisUsers:
    """The users of one Redis instance, issued into `folder`: its operator and the one tier it serves."""

    folder: Path
    admin: StoreUser
    service: StoreUser

    @property
    def acl_file(self) -> Path:
        return self.folder / ACL_FILE

    def acl_text(self) -> str:
        # Redis' own default user: off and without a password, so no connection is ever it (one that has not
        # logged in gets NOAUTH). Its grants are for Redis alone: 7.0 replays an AOF's MULTI/EXEC as the
        # default user, and a default user without them would drop every transaction at a restart.
        return "\n".join([DEFAULT_USER_LINE, self.admin.acl_line(), self.service.acl_line()]) + "\n"


@dataclass(frozen=True)
class StoreCredentials:
    """Every Redis instance issued under `folder`: the cloud's, and one per edge by its id."""

    folder: Path
    cloud: RedisUsers
    edges: dict[str, RedisUsers]

    def instances(self) -> list[RedisUsers]:
        return [self.cloud, *(self.edges[eid] for eid in sorted(self.edges))]


def issue_store_users(
    out_dir: Path, edge_ids: Iterable[str], *, rotate: bool = False, retire: bool = False
) -> StoreCredentials:
    """Write (or keep) each instance's passwords and its ACL file under `out_dir`: the cloud's, each edge's."""
    ids = sorted(set(edge_ids))
    for eid in ids:
        if not _is_identifier(eid):
            raise StoreUsersError(f"edge id {eid!r} is not an id (lower-case letters, digits, '_', '.', '-')")
    cloud = _instance(
        cloud_folder(out_dir), CLOUD_USER, keyspace.CLOUD_PREFIX, REDIS_COMMANDS, rotate=rotate, retire=retire
    )
    edges = {
        eid: _instance(
            edge_folder(out_dir, eid),
            edge_user(eid),
            keyspace.edge_prefix(eid),
            EDGE_REDIS_COMMANDS,
            rotate=rotate,
            retire=retire,
        )
        for eid in ids
    }
    return StoreCredentials(out_dir, cloud, edges)


def _instance(
    folder: Path, name: str, prefix: str, commands: tuple[str, ...], *, rotate: bool, retire: bool
) -> RedisUsers:
    """One instance's operator and service user `name` (confined to `prefix` and `commands`), and its file."""
    admin = _user(folder / ADMIN_DIR, ADMIN_USER, (), None, rotate=rotate, retire=retire)
    service = _user(folder / SERVICE_DIR, name, (prefix + "*",), commands, rotate=rotate, retire=retire)
    users = RedisUsers(folder, admin, service)
    try:
        users.acl_file.parent.mkdir(parents=True, exist_ok=True)
        _write_public(users.acl_file, users.acl_text())
    except OSError as e:
        raise StoreUsersError(f"cannot write the ACL file {users.acl_file}: {e}") from e
    return users


def _user(
    folder: Path,
    name: str,
    patterns: tuple[str, ...],
    commands: tuple[str, ...] | None,
    *,
    rotate: bool,
    retire: bool,
) -> StoreUser:
    """The user whose password lives in `folder`: kept, created, rotated (the old kept beside) or retired."""
    folder.mkdir(parents=True, exist_ok=True)
    current_file, previous_file = folder / PASSWORD_FILE, folder / PREVIOUS_FILE
    try:
        current = current_file.read_text().strip() if current_file.exists() else None
        previous = previous_file.read_text().strip() if previous_file.exists() else None
        if current is None or rotate:
            if current is not None:
                write_secret(previous_file, current)
                previous = current
            current = secrets.token_urlsafe(32)
            write_secret(current_file, current)
        if retire and previous is not None:
            previous_file.unlink()
            previous = None
    except OSError as e:
        raise StoreUsersError(f"cannot keep the password of {name} in {folder}: {e}") from e
    return StoreUser(name, current, current_file, patterns, commands, previous)


def _write_public(path: Path, text: str) -> None:
    """The ACL file, readable by the Redis server's own user (it holds digests only)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o644)
    tmp.replace(path)


def _sha256(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def _is_identifier(text: str) -> bool:
    try:
        _IDENTIFIER.validate_python(text)
    except ValidationError:
        return False
    return True


_IDENTIFIER: TypeAdapter[str] = TypeAdapter(Identifier)


class StoreUsersSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FEDLORA_", extra="ignore", frozen=True, allow_inf_nan=False)

    out_dir: Path = Field(description="where the ACL file and the tiers' password folders go")
    edge_ids: str = Field(
        default="",
        pattern=r"^[a-z0-9_.,-]*$",
        description="the edges, comma-separated ids (each gets a Redis instance of its own and its user)",
    )
    rotate: bool = Field(default=False, description="give every user a new password, keeping the previous")
    retire: bool = Field(default=False, description="drop the previous passwords kept by a rotation")
    ca_dir: Path | None = Field(
        default=None,
        description="the federation's CA (ca.crt, ca.key; created if absent): set, each Redis instance and its "
        "users get TLS certificates (rediss://)",
    )
    federation_id: Identifier = Field(
        default="fedlora", description="the federation named in the certificates' fedlora:// URIs"
    )
    redis_hosts: str = Field(
        default=DEFAULT_HOSTS,
        description="the names each Redis is reached under, comma-separated; {store} is `cloud` or the edge id",
    )
    renew_certificates: bool = Field(default=False, description="issue every Redis certificate again")


def issue_store_tls(credentials: StoreCredentials, settings: StoreUsersSettings) -> None:
    """Each instance's certificates from the CA in `settings.ca_dir` (`fedlora.store_certs`)."""
    if settings.ca_dir is None:
        return
    authority = load_or_create_authority(settings.ca_dir, f"fedlora {settings.federation_id} CA")
    issue_store_certificates(
        {"cloud": (credentials.cloud.folder, credentials.cloud.service.name)}
        | {eid: (users.folder, users.service.name) for eid, users in credentials.edges.items()},
        authority,
        federation_id=settings.federation_id,
        hosts=settings.redis_hosts,
        renew=settings.renew_certificates,
    )


def run() -> None:
    try:
        settings = StoreUsersSettings()  # type: ignore[call-arg]  # pydantic-settings reads the environment
        credentials = issue_store_users(
            settings.out_dir,
            [eid for eid in settings.edge_ids.split(",") if eid],
            rotate=settings.rotate,
            retire=settings.retire,
        )
        issue_store_tls(credentials, settings)
    except (ValidationError, StoreUsersError, CertificateError, StoreCertificateError) as e:
        sys.exit(f"store-users: {e}")
    tls = f"; TLS certificates from the CA in {settings.ca_dir}" if settings.ca_dir is not None else ""
    print(
        f"store users for the cloud's Redis and {len(credentials.edges)} edge Redis instance(s): ACL files "
        + ", ".join(str(users.acl_file) for users in credentials.instances())
        + tls
    )


if __name__ == "__main__":
    run()
