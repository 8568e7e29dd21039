"""Service settings: environment variables (prefix `FEDLORA_`) over an optional YAML file (`FEDLORA_CONFIG`).

Validated on construction; secrets that are placeholders ("changeme", "<token>", too short) are refused
with the variable's name, as the FastAPI full-stack template does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self

from limits import parse_many
from pydantic import AfterValidator, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from protocol.messages import Identifier
from services import keyspace
from services.store_tls import StoreTLS

if TYPE_CHECKING:
    from services.store import StateStore

CONFIG_ENV = "FEDLORA_CONFIG"
MIN_SECRET_CHARS = 16
_PLACEHOLDERS = (
    "changeme",
    "change-me",
    "change_me",
    "secret",
    "password",
    "token",
    "example",
    "xxx",
    "todo",
)


def _real_secret(value: SecretStr) -> SecretStr:
    text = value.get_secret_value().strip()
    lowered = text.lower()
    if len(text) < MIN_SECRET_CHARS:
        raise ValueError(f"must be at least {MIN_SECRET_CHARS} characters, got {len(text)}")
    if text.startswith("<") or any(lowered.startswith(p) for p in _PLACEHOLDERS) or len(set(text)) < 4:
        raise ValueError(
            "is a placeholder; generate one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
    return value


Secret = Annotated[SecretStr, AfterValidator(_real_secret)]


class ServiceSettings(BaseSettings):
    """What every service shares."""

    model_config = SettingsConfigDict(env_prefix="FEDLORA_", extra="ignore", frozen=True, allow_inf_nan=False)

    host: str = "127.0.0.1"
    port: int = Field(default=8700, ge=1, le=65535)
    store_url: str = Field(
        default="memory://",
        description="redis://host:port/db or rediss://host:port/db (TLS); memory:// (lost at exit) only with "
        "ephemeral_store, or in-process",
    )
    ephemeral_store: bool = Field(
        default=False,
        description="UNSAFE: let `python -m cloud_server` / `python -m edge_aggregator` run on memory://, "
        "which loses every record (the HE secret included) when the process exits",
    )
    store_username: Identifier | None = Field(
        default=None,
        description="the Redis ACL user of this service (`fedlora.store_users` issues one per tier, limited to "
        "the tier's keys); unset: the URL's, or Redis' default user",
    )
    store_password_file: Path | None = Field(
        default=None,
        description="the file (0600) holding `store_username`'s password, as the bootstrap wrote it",
    )
    store_ca_file: Path | None = Field(
        default=None,
        description="rediss:// only: the CA bundle (PEM) the Redis server's certificate must chain to; unset: "
        "the system's trust store. The certificate and its host name are always verified",
    )
    store_cert_file: Path | None = Field(
        default=None,
        description="rediss:// only: this service's client certificate (PEM), for a Redis that "
        "asks for one (tls-auth-clients yes); with store_key_file",
    )
    store_key_file: Path | None = Field(
        default=None, description="rediss:// only: the private key (PEM, 0600) of store_cert_file"
    )
    log_level: str = "INFO"
    log_json: bool = True
    max_body_bytes: int = Field(
        default=600 * 1024 * 1024,
        ge=1024,
        description="ceiling of any request body; an upload route's own limit comes from the federation's "
        "layout and HE scheme (`services.limits.upload_body_bytes`) and is never above this",
    )
    max_json_body_bytes: int = Field(
        default=64 * 1024, ge=1024, description="limit of a request body on every route that is not an upload"
    )
    rate_limit: str = Field(
        default="1200/minute",
        description="requests per authenticated caller (admin, edge id or client id), in the `limits` "
        "notation (`N/second|minute|hour`, several separated by `;`); over it: 429 with Retry-After",
    )
    anonymous_rate_limit: str = Field(
        default="6000/minute",
        description="requests per client IP on the routes that take no bearer token (health, metrics, "
        "enrolment, the edge's signed uploads)",
    )
    max_concurrent_per_caller: int = Field(
        default=128, ge=1, description="requests of one caller (or one IP) in progress at once; over it: 429"
    )
    max_long_polls: int = Field(
        default=2000, ge=1, description="long-polls (a plan poll with `wait`) open in this process at once"
    )
    max_long_polls_per_caller: int = Field(default=8, ge=1, description="long-polls one caller holds open")

    @field_validator("rate_limit", "anonymous_rate_limit")
    @classmethod
    def _rate_limit_notation(cls, value: str) -> str:
        try:
            parse_many(value)
        except ValueError as e:
            raise ValueError(f"must be in the `limits` notation such as '600/minute', got {value!r}") from e
        return value

    tls_ca_file: Path | None = Field(
        default=None,
        description="the federation's CA certificate (`ca.crt`): the only CA this service verifies its peers "
        "against (servers it calls, and the client certificates presented to it)",
    )
    tls_cert_file: Path | None = Field(
        default=None,
        description="this party's certificate (`fedlora pki issue`): what it serves with and presents as a "
        "client (an edge to the cloud)",
    )
    tls_key_file: Path | None = Field(default=None, description="the key of tls_cert_file (0600)")

    @model_validator(mode="after")
    def _tls_pair_complete(self) -> Self:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError(
                "tls_cert_file and tls_key_file go together: set both or neither, got "
                f"tls_cert_file={self.tls_cert_file!r}, tls_key_file={self.tls_key_file!r}"
            )
        return self

    @model_validator(mode="after")
    def _store_login_complete(self) -> Self:
        if (self.store_username is None) != (self.store_password_file is None):
            raise ValueError(
                "store_username and store_password_file go together: set both (a Redis ACL user) or neither, "
                f"got store_username={self.store_username!r}, store_password_file={self.store_password_file!r}"
            )
        return self

    @model_validator(mode="after")
    def _store_tls_complete(self) -> Self:
        self.store_tls()  # a client certificate without its key (or the reverse) is refused here
        return self

    def store_tls(self) -> StoreTLS | None:
        """The store's TLS files (None when none is set: a rediss:// URL then trusts the system's CAs)."""
        files = (self.store_ca_file, self.store_cert_file, self.store_key_file)
        if all(f is None for f in files):
            return None
        return StoreTLS(*files)

    def require_durable_store(self) -> None:
        """Refuse memory:// for a service process unless `ephemeral_store` says it is a throwaway."""
        if self.store_url == "memory://" and not self.ephemeral_store:
            raise ValueError(
                "FEDLORA_STORE_URL is memory://, which loses every record (the HE secret included) when the "
                "process exits: set FEDLORA_STORE_URL=redis://host:port/db, or FEDLORA_EPHEMERAL_STORE=1 for "
                "a throwaway run"
            )

    def open_store(self) -> StateStore:
        """The store these settings name, logged in and over TLS as they say: how every process that
        reaches a service's store opens it (the service itself, `fedlora kek`)."""
        from services.store import open_store

        return open_store(
            self.store_url, username=self.store_username, password=self.store_password(), tls=self.store_tls()
        )

    def store_password(self) -> str | None:
        """The Redis password read from `store_password_file` (None without one)."""
        if self.store_password_file is None:
            return None
        try:
            password = self.store_password_file.read_text().strip()
        except OSError as e:
            raise ValueError(
                f"store_password_file {str(self.store_password_file)!r} cannot be read: {e}"
            ) from e
        if not password:
            raise ValueError(f"store_password_file {str(self.store_password_file)!r} is empty")
        return password

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, file_secret_settings]
        path = os.environ.get(CONFIG_ENV)
        if path:
            if not Path(path).is_file():
                raise ValueError(f"{CONFIG_ENV}={path!r} is not a file")
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)


class ServerSettings(ServiceSettings):
    """A service that serves HTTP: over TLS (`tls_cert_file`) unless the operator says otherwise."""

    allow_plain_http: bool = Field(
        default=False,
        description="UNSAFE: serve (and call peers over) plain http; only behind a TLS-terminating proxy on "
        "the same host, or in tests. Without it a service with no tls_cert_file refuses to start",
    )


class CloudSettings(ServerSettings):
    port: int = Field(default=8700, ge=1, le=65535)
    admin_token: Secret
    admin_token_previous: Secret | None = Field(
        default=None,
        description="accepted too while a new admin_token rolls out to every replica; unset it afterwards",
    )
    model_path: Path | None = Field(
        default=None, description="base model folder; default: the bundled MiniLM"
    )
    long_poll_s: float = Field(default=25.0, gt=0, le=300)
    deadline_check_s: float = Field(default=1.0, gt=0, le=60)
    retain_round_s: float = Field(
        default=3600.0,
        gt=0,
        description="seconds a finished round's edge sums (late buckets, mask corrections, digests) are kept "
        "after it closed or failed; its status, plan and ledger entry are kept for good",
    )
    retain_versions: int = Field(
        default=8,
        ge=1,
        description="adapter vectors kept: the last N versions (the current one always); an older one answers "
        "410 version_pruned, its meta and evaluation stay",
    )
    close_lease_ttl_s: float = Field(
        default=keyspace.ROUND_CLOSE_LEASE_TTL_S,
        ge=1.0,
        le=3600.0,
        description="TTL of the lease a replica holds while it closes a round (renewed every third of it); "
        "a replica that dies holding it delays the round's close by at most this long",
    )
    close_max_attempts: int = Field(
        default=5,
        ge=1,
        le=100,
        description="failed attempts to close a round (crypto errors aside) after which the round is failed",
    )
    close_retry_s: float = Field(
        default=5.0,
        gt=0,
        le=3600.0,
        description="back-off after the first failed close attempt; it doubles after each further one",
    )
    close_retry_max_s: float = Field(
        default=300.0, gt=0, le=86_400.0, description="the longest back-off between two close attempts"
    )
    decrypt_workers: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="worker processes a round's decryption is spread over (packed Paillier; a small sum stays "
        "in the cloud's process); unset: every core the cloud may run on",
    )


class EdgeSettings(ServerSettings):
    port: int = Field(default=8710, ge=1, le=65535)
    edge_id: Identifier
    federation_id: Identifier
    cloud_url: str
    public_url: str = Field(description="the URL hospitals use to reach this edge")
    enrolment_token: Secret | None = Field(
        default=None,
        description="the single-use enrolment token an admin issued for this edge's id; needed only to enrol "
        "the first time (a re-enrolment proves possession of the enrolled key instead)",
    )
    key_file: Path = Path("edge-key.bin")
    deadline_check_s: float = Field(default=1.0, gt=0, le=60)
    masking_stage_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="masking federations: longest each masking stage waits for hospitals that have not posted",
    )
    retain_round_s: float = Field(
        default=3600.0,
        gt=0,
        description="seconds a round's sum, manifest, plan and late buckets are kept once its forward has an "
        "outcome (its single uploads are deleted then)",
    )


#: The longest `FEDLORA_DEVICE` accepted ("cuda:" and a device index).
MAX_DEVICE_CHARS = 16


class ClientSettings(ServiceSettings):
    client_id: Identifier
    federation_id: Identifier
    edge_id: Identifier
    cloud_url: str
    enrolment_token: Secret | None = Field(
        default=None,
        description="the single-use enrolment token an admin issued for this hospital's id; needed only to "
        "enrol the first time (a re-enrolment proves possession of the enrolled key instead)",
    )
    state_dir: Path = Path("client-state")
    model_path: Path | None = Field(
        default=None, description="base model folder; default: the bundled MiniLM"
    )
    data_file: Path | None = None
    deid_engine: Literal["presidio", "rules"] = Field(
        default="presidio",
        description="what finds PHI before tokenising: Presidio with our rules (default), or our rules alone",
    )
    task: str | None = None
    partition: str | None = Field(default=None, description="e.g. 'mild:2/4' = mild split, hospital 2 of 4")
    max_train_examples: int | None = None
    threads: int = Field(default=1, ge=1, le=256)
    device: str = Field(
        default="auto",
        description="where the hospital trains: auto (the first CUDA device when torch sees one, else the "
        "CPU), cpu, cuda or cuda:N (client_agent/device.py); the encryption and masking stay on the CPU",
    )

    poll_s: float = Field(default=2.0, gt=0, le=300)
    max_rank: int = Field(
        default=16,
        ge=1,
        le=256,
        description="the highest LoRA rank this hospital will train (told to the cloud at enrolment); a plan "
        "with a higher rank for it is refused",
    )
    # -- the hospital's own privacy policy (client_agent/policy.py): what it refuses whatever the cloud asks
    local_epsilon_budget: float = Field(
        default=10.0,
        gt=0.0,
        le=100.0,
        description="this hospital's own example-level limit (at the federation's delta): a spec or plan whose "
        "local_dp.epsilon is above it is refused, and training stops before a round would take it past it",
    )
    min_batch_size: int = Field(
        default=16,
        ge=2,
        le=65_536,
        description="the smallest DP-SGD batch it trains with (the plan's batch size, and its own examples): "
        "a batch of one, run once, hands its gradient (one note's embedding) to whoever reads the update",
    )
    min_clients_per_edge: int = Field(
        default=2,
        ge=2,
        le=10_000,
        description="the smallest k (sums an edge may forward) it joins a federation with",
    )
    max_global_norm: float = Field(
        default=1000.0,
        gt=0.0,
        le=1e9,
        description="the largest L2 norm of a global adapter it starts a round from (a crafted one is refused)",
    )
    plan_public_key: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="the federation's plan-signing key (hex), given out of band; unset: pinned at first contact",
    )
    he_fingerprint: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="the federation's HE key fingerprint (hex, `FederationCreated.he_fingerprint`), given out "
        "of band beside the enrolment token; unset: pinned at first contact. A federation that presents another "
        "key is refused",
    )
    edge_url: str | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        description="the URL of the edge this hospital's region runs, given out of band; the cloud's answer at "
        "enrolment must name it (unset: pinned at first enrolment)",
    )
    allow_plaintext: bool = Field(
        default=False,
        description="UNSAFE: join a federation without encryption (he.kind 'none', CLAIR), where the edge "
        "and the cloud see this hospital's update",
    )
    allow_unmasked: bool = Field(
        default=False,
        description="UNSAFE: join an encrypted federation whose uploads are not masked below the encryption "
        "(CKKS, or packed Paillier without he.masking), where an edge colluding with the cloud can decrypt "
        "this hospital's update",
    )
    allow_without_local_dp: bool = Field(
        default=False, description="UNSAFE: train without DP-SGD when the federation turns it off"
    )
    allow_insecure_http: bool = Field(
        default=False,
        description="UNSAFE: talk plain http to a cloud or edge that is not on this machine (loopback http is "
        "always allowed)",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="serve Prometheus metrics at http://{host}:{metrics_port}/metrics (off when unset)",
    )

    @field_validator("device")
    @classmethod
    def _device_is_short(cls, value: str) -> str:
        # Named by its variable, as client_agent.device names every other refused value; the grammar itself
        # (auto | cpu | cuda | cuda:N) is checked there, against the devices the machine has.
        if len(value) > MAX_DEVICE_CHARS:
            raise ValueError(
                f"FEDLORA_DEVICE must be auto, cpu, cuda or cuda:N (at most {MAX_DEVICE_CHARS} characters), "
                f"got {value!r}"
            )
        return value


def describe(settings: BaseSettings) -> dict[str, Any]:
    """Settings for a log line, with secrets masked (a password inside `store_url` too)."""
    from services.store import redacted_url

    masked = {k: ("***" if isinstance(v, SecretStr) else v) for k, v in settings.model_dump().items()}
    if isinstance(masked.get("store_url"), str):
        masked["store_url"] = redacted_url(masked["store_url"])
    return masked
