"""Service settings: environment variables (prefix `FEDLORA_`) over an optional YAML file (`FEDLORA_CONFIG`).

Validated on construction; secrets that are placeholders ("changeme", "<token>", too short) are refused
with the variable's name, as the FastAPI full-stack template does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from protocol.messages import Identifier

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

    model_config = SettingsConfigDict(env_prefix="FEDLORA_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8700, ge=1, le=65535)
    store_url: str = Field(default="memory://", description="memory:// or redis://host:port/db")
    log_level: str = "INFO"
    log_json: bool = True
    max_body_bytes: int = Field(default=600 * 1024 * 1024, ge=1024)

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


class CloudSettings(ServiceSettings):
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


class EdgeSettings(ServiceSettings):
    port: int = Field(default=8710, ge=1, le=65535)
    edge_id: Identifier
    federation_id: Identifier
    cloud_url: str
    public_url: str = Field(description="the URL hospitals use to reach this edge")
    enrolment_token: Secret
    key_file: Path = Path("edge-key.bin")
    deadline_check_s: float = Field(default=1.0, gt=0, le=60)


class ClientSettings(ServiceSettings):
    client_id: Identifier
    federation_id: Identifier
    edge_id: Identifier
    cloud_url: str
    enrolment_token: Secret
    state_dir: Path = Path("client-state")
    model_path: Path | None = Field(
        default=None, description="base model folder; default: the bundled MiniLM"
    )
    data_file: Path | None = None
    task: str | None = None
    partition: str | None = Field(default=None, description="e.g. 'mild:2/4' = mild split, hospital 2 of 4")
    max_train_examples: int | None = None
    threads: int = Field(default=1, ge=1, le=256)
    poll_s: float = Field(default=2.0, gt=0, le=300)
    max_rank: int | None = Field(
        default=None, ge=1, le=256, description="the highest LoRA rank this hospital will train (compute cap)"
    )
    local_epsilon_budget: float | None = Field(
        default=None,
        gt=0.0,
        le=100.0,
        description="this hospital's own example-level limit (at the federation's delta); it calibrates its "
        "DP-SGD noise to the smaller of this and the federation's local_dp.epsilon, and stops training "
        "before a round would take it past this",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="serve Prometheus metrics at http://{host}:{metrics_port}/metrics (off when unset)",
    )


def describe(settings: BaseSettings) -> dict[str, Any]:
    """Settings for a log line, with secrets masked (a password inside `store_url` too)."""
    from services.store import redacted_url

    masked = {k: ("***" if isinstance(v, SecretStr) else v) for k, v in settings.model_dump().items()}
    if isinstance(masked.get("store_url"), str):
        masked["store_url"] = redacted_url(masked["store_url"])
    return masked
