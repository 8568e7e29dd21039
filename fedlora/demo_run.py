"""What a `fedlora demo` run folder keeps so that its cloud can be started again on the run's state.

    runs/demo/
      redis/        the cloud's Redis: its append-only file and redis.log
      store-users/  its ACL users (`fedlora.store_users`): the cloud's Redis instance (`cloud/`: the ACL file,
                    the cloud's and the admin's passwords, and each one's TLS certificate: Redis serves
                    `rediss://` only, `fedlora.store_certs`); the edges run in memory and have none
      ca/           the run's certificate authority (`fedlora.pki`), which signs those certificates and the
                    parties' below
      admin-token   the admin token (owner-only)
      kek           the key-encryption key that seals the federation's HE secret, hex (owner-only)
      cloud.yaml    the cloud's other settings (read through FEDLORA_CONFIG); the port and the store's
                    address are chosen at each start, because the ports of the demo may be taken since
      tls/          each party's certificate and key: cloud/, edge/<id>/, client/<id>/ (every hop is https)
      logs/ state/ adapter/ report.json   (the launcher's)

`fedlora demo` writes it (`prepare`) and starts its cloud with `cloud_env`; `fedlora view` starts the
same cloud again with the same call (`fedlora.demo_view`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fedlora.pki import load_or_create_authority
from fedlora.pki_setup import PartyCertificate, PkiSettings, issue_certificates, party_certificate
from fedlora.redis_process import RedisProcess
from fedlora.store_certs import InstanceTLS, instance_tls, issue_store_certificates
from fedlora.store_users import (
    ACL_FILE,
    CLOUD_USER,
    PASSWORD_FILE,
    SERVICE_DIR,
    RedisUsers,
    cloud_folder,
    issue_store_users,
)
from protocol.messages import Role
from services.keys import KEK_FILE_ENV
from services.secret_files import write_secret
from services.settings import CONFIG_ENV
from services.store_tls import StoreTLS

_SETTINGS_HEADER = (
    "# The demo cloud's settings besides its secrets, port and store (fedlora view starts it again with\n"
    "# them). The admin token is in admin-token, the KEK in kek, the state in redis-server on redis/.\n"
)


class RunFolderError(ValueError):
    """The folder was not written by `fedlora demo` with a Redis store, or lacks one of its files."""


@dataclass(frozen=True)
class DemoRunFolder:
    root: Path

    @property
    def redis_dir(self) -> Path:
        return self.root / "redis"

    @property
    def store_users_dir(self) -> Path:
        return self.root / "store-users"

    def store_users(self) -> RedisUsers:
        """The users of the run's Redis, the cloud's instance (the cloud's, confined to `cloud:` keys, and the
        admin's that stops Redis): issued by the first call of a run, read back by the next ones."""
        return issue_store_users(self.store_users_dir, ()).cloud

    def redis_process(self, *, port: int) -> RedisProcess:
        """The run's redis-server on `port`: its data in `redis_dir`, its users' ACL file, TLS only with the
        run's certificates. `everysec`: a demo may lose the last second of writes if the machine itself goes
        down, and the hospitals' uploads are not slowed."""
        return RedisProcess(
            self.redis_dir,
            port=port,
            appendfsync="everysec",
            acl=self.store_users(),
            tls=self.store_tls().server,
        )

    @property
    def ca_dir(self) -> Path:
        return self.root / "ca"

    def store_tls(self) -> InstanceTLS:
        """The TLS files of the run's Redis (loopback only), its cloud's and its admin's, from the run's CA:
        issued by the first call, kept by the next ones while still good (`fedlora.store_certs`)."""
        authority = load_or_create_authority(self.ca_dir, "fedlora demo CA")
        instance = {"cloud": (cloud_folder(self.store_users_dir), CLOUD_USER)}
        return issue_store_certificates(
            instance, authority, federation_id="demo", hosts="localhost,127.0.0.1"
        )["cloud"]

    @property
    def admin_token_file(self) -> Path:
        return self.root / "admin-token"

    @property
    def kek_file(self) -> Path:
        return self.root / "kek"

    @property
    def settings_file(self) -> Path:
        return self.root / "cloud.yaml"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def tls_dir(self) -> Path:
        return self.root / "tls"

    def issue_certificates(self, *, federation_id: str, edges: list[str], clients: list[str]) -> None:
        """A certificate for the cloud, each edge and each hospital, all on loopback, from the run's CA (the
        one that signs its Redis' certificates)."""
        loopback = ("127.0.0.1", "localhost")
        settings = PkiSettings(
            ca_dir=self.ca_dir,
            out_dir=self.tls_dir,
            federation_id=federation_id,
            cloud_hosts=loopback,
            edges=dict.fromkeys(edges, loopback),
            clients=tuple(clients),
        )
        issue_certificates(settings)

    def party(self, role: Role | None, party_id: str = "cloud") -> PartyCertificate:
        """A party's certificate files (`role` None: the cloud's)."""
        return party_certificate(self.tls_dir, role, party_id)

    def prepare(self, *, admin_token: str, kek_hex: str, cloud_settings: dict[str, Any]) -> None:
        """A new run: an empty store (the previous run's is removed), fresh secrets, the cloud's settings."""
        self.root.mkdir(parents=True, exist_ok=True)
        # A new run is a new federation: the previous run's store and its edges' keys and hospitals' state
        # (API tokens, privacy histories) belong to the old one.
        for folder in (self.redis_dir, self.store_users_dir, self.root / "state", self.tls_dir):
            if folder.exists():
                shutil.rmtree(folder)
        write_secret(self.admin_token_file, admin_token)
        write_secret(self.kek_file, kek_hex)
        self.settings_file.write_text(_SETTINGS_HEADER + yaml.safe_dump(cloud_settings, sort_keys=True))

    def check(self) -> None:
        """Raise `RunFolderError` naming what is missing, before anything is started on the folder."""
        if not self.root.is_dir():
            raise RunFolderError(f"{self.root} is not a folder; run `make demo` (or `fedlora demo`) first")
        missing = [
            str(p.relative_to(self.root))
            for p in (
                self.redis_dir,
                cloud_folder(self.store_users_dir) / ACL_FILE,
                self.admin_token_file,
                self.kek_file,
                self.settings_file,
                self.party(None).cert_file,
            )
            if not p.exists()
        ]
        if missing:
            raise RunFolderError(
                f"{self.root} is not a demo run with a Redis store (no {', '.join(missing)}): demos run "
                "before the cloud kept its state in Redis cannot be viewed; run `make demo` again"
            )

    def cloud_env(self, *, port: int, store_url: str) -> dict[str, str]:
        """The cloud's environment: the settings file, the secrets from their files, port and store, and its
        certificate."""
        return self.party(None).env() | {
            CONFIG_ENV: str(self.settings_file.resolve()),
            "FEDLORA_ADMIN_TOKEN": self.admin_token_file.read_text().strip(),
            KEK_FILE_ENV: str(self.kek_file.resolve()),
            "FEDLORA_PORT": str(port),
            "FEDLORA_STORE_URL": store_url,
            "FEDLORA_STORE_USERNAME": CLOUD_USER,
            "FEDLORA_STORE_PASSWORD_FILE": str(
                (cloud_folder(self.store_users_dir) / SERVICE_DIR / PASSWORD_FILE).resolve()
            ),
            **_store_tls_env(instance_tls(cloud_folder(self.store_users_dir)).service),
        }


def _store_tls_env(files: StoreTLS) -> dict[str, str]:
    """A service's FEDLORA_STORE_CA_FILE, _CERT_FILE and _KEY_FILE for `files` (absolute paths)."""
    named = {"CA": files.ca_file, "CERT": files.cert_file, "KEY": files.key_file}
    return {
        f"FEDLORA_STORE_{name}_FILE": str(path.resolve()) for name, path in named.items() if path is not None
    }
