"""`fedlora.bootstrap` against a real cloud app (in-process, in-memory store): it creates the federation
once, issues each named edge and hospital its own enrolment token where that party (and no other) reads it,
and refuses what it cannot fix."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import httpx
import pytest
import yaml

from fedlora.bootstrap import (
    CLIENT_DIR,
    CONFIG_FILE,
    EDGE_DIR,
    TOKEN_FILE,
    BootstrapError,
    BootstrapSettings,
    Outcome,
    bootstrap,
)
from protocol.messages import ClientEnrolment, EdgeEnrolment, Role
from services.identity import SigningKey
from services.settings import CONFIG_ENV, ClientSettings, EdgeSettings
from services.store import MemoryStore
from tests.cloud import harness


def write_spec(path: Path, **overrides: object) -> Path:
    spec = harness.small_spec("boot-1", **overrides)
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    return path


def settings_for(tmp_path: Path, spec_file: Path, **overrides: object) -> BootstrapSettings:
    values: dict[str, object] = {
        "cloud_url": "http://cloud",
        "admin_token": harness.ADMIN_TOKEN,
        "spec_file": spec_file,
        "out_dir": tmp_path / "out",
        "wait_s": 5.0,
        "edges": ("edge-north", "edge-south"),
        "clients": ("hospital-a",),
    }
    return BootstrapSettings(**(values | overrides))  # type: ignore[arg-type]


async def _run_twice_then_enrol(tmp_path: Path) -> None:
    spec_file = write_spec(tmp_path / "spec.yaml")
    settings = settings_for(tmp_path, spec_file)
    async with harness.running_cloud(store=MemoryStore()) as cloud:
        transport = httpx.ASGITransport(app=cloud.app)
        first = await bootstrap(settings, transport=transport)
        assert first.outcome is Outcome.CREATED and first.federation_id == "boot-1"
        files = {p: p.read_bytes() for p in sorted((tmp_path / "out").rglob("*")) if p.is_file()}
        parties = (f"{EDGE_DIR}/edge-north", f"{EDGE_DIR}/edge-south", f"{CLIENT_DIR}/hospital-a")
        assert {p.relative_to(tmp_path / "out").as_posix() for p in files} == {
            f"{party}/{name}" for party in parties for name in (TOKEN_FILE, CONFIG_FILE)
        }
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)
        assert len({p.read_bytes() for p in files if p.name == TOKEN_FILE}) == 3  # one token per party

        again = await bootstrap(settings, transport=transport)
        assert again.outcome is Outcome.EXISTS and again.issued == ()
        assert files == {p: p.read_bytes() for p in files}, "a second run must not touch the tokens"

        # Each token on disk enrols its own party, and no other.
        north = (first.folders[(Role.EDGE, "edge-north")] / TOKEN_FILE).read_text()
        hospital = (first.folders[(Role.CLIENT, "hospital-a")] / TOKEN_FILE).read_text()
        key = SigningKey.generate()
        south = EdgeEnrolment(edge_id="edge-south", url="http://edge-south:8710", public_key=key.public_bytes)
        stolen = await harness.post_enrolment(cloud.http, "boot-1", south, key, token=north)
        body = south.model_copy(update={"edge_id": "edge-north", "url": "http://edge-north:8710"})
        enrolled = await harness.post_enrolment(cloud.http, "boot-1", body, key, token=north)
        client = ClientEnrolment(
            client_id="hospital-a", edge_id="edge-north", public_key=key.public_bytes, num_examples=10
        )
        as_edge = await harness.post_enrolment(cloud.http, "boot-1", south, key, token=hospital)
        hospital_enrolled = await harness.post_enrolment(cloud.http, "boot-1", client, key, token=hospital)
        assert stolen.status_code == 401 and as_edge.status_code == 401
        assert enrolled.status_code == 201, enrolled.text
        assert hospital_enrolled.status_code == 201, hospital_enrolled.text
    return None


def configured(monkeypatch: pytest.MonkeyPatch, folder: Path, **variables: str) -> None:
    """A service's environment: `FEDLORA_` + each of `variables`, and the settings file the bootstrap wrote
    into `folder` as `FEDLORA_CONFIG` (no enrolment token in the environment: it comes from the file)."""
    for name, value in variables.items():
        monkeypatch.setenv(f"FEDLORA_{name}", value)
    monkeypatch.delenv("FEDLORA_ENROLMENT_TOKEN", raising=False)
    monkeypatch.setenv(CONFIG_ENV, str(folder / CONFIG_FILE))


def test_creates_once_and_writes_tokens_that_enrol(tmp_path):
    asyncio.run(_run_twice_then_enrol(tmp_path))


def test_settings_file_feeds_the_edge_settings(tmp_path, monkeypatch):
    async def scenario() -> Path:
        async with harness.running_cloud(store=MemoryStore()) as cloud:
            done = await bootstrap(
                settings_for(tmp_path, write_spec(tmp_path / "spec.yaml")),
                transport=httpx.ASGITransport(app=cloud.app),
            )
        return done.folders[(Role.EDGE, "edge-north")]

    edge_dir = asyncio.run(scenario())
    configured(
        monkeypatch,
        edge_dir,
        EDGE_ID="edge-north",
        FEDERATION_ID="boot-1",
        CLOUD_URL="http://cloud:8700",
        PUBLIC_URL="http://edge-north:8710",
    )
    settings = EdgeSettings()  # type: ignore[call-arg]
    assert settings.enrolment_token is not None
    assert settings.enrolment_token.get_secret_value() == (edge_dir / TOKEN_FILE).read_text()


def test_the_hospitals_settings_file_pins_the_federations_he_key(tmp_path, monkeypatch):
    """A hospital's agent reads the federation's HE key fingerprint from the file the bootstrap wrote from the
    cloud's answer at creation, so a key swapped in the store later is refused even at first contact."""

    async def scenario() -> tuple[Path, str]:
        async with harness.running_cloud(store=MemoryStore()) as cloud:
            done = await bootstrap(
                settings_for(tmp_path, write_spec(tmp_path / "spec.yaml")),
                transport=httpx.ASGITransport(app=cloud.app),
            )
            info = await cloud.context.federations.info(done.federation_id)
        return done.folders[(Role.CLIENT, "hospital-a")], info.he_fingerprint

    client_dir, fingerprint = asyncio.run(scenario())
    configured(
        monkeypatch,
        client_dir,
        CLIENT_ID="hospital-a",
        FEDERATION_ID="boot-1",
        EDGE_ID="edge-north",
        CLOUD_URL="x",
    )
    settings = ClientSettings()  # type: ignore[call-arg]
    assert settings.he_fingerprint == fingerprint


async def _refusals(tmp_path: Path) -> None:
    spec_file = write_spec(tmp_path / "spec.yaml")
    async with harness.running_cloud(store=MemoryStore()) as cloud:
        transport = httpx.ASGITransport(app=cloud.app)
        await bootstrap(settings_for(tmp_path, spec_file), transport=transport)

        # The same id with another spec: refused, the spec cannot change.
        other = write_spec(tmp_path / "other.yaml", rounds=7)
        with pytest.raises(BootstrapError, match="another spec"):
            await bootstrap(settings_for(tmp_path, other), transport=transport)

        # A party's token lost: a run issues that party a new one, and only that party.
        lost = tmp_path / "out" / CLIENT_DIR / "hospital-a" / TOKEN_FILE
        before = lost.with_name(CONFIG_FILE).read_text()
        lost.unlink()
        rerun = await bootstrap(settings_for(tmp_path, spec_file), transport=transport)
        assert rerun.issued == ("client:hospital-a",) and lost.with_name(CONFIG_FILE).read_text() != before

        # A wrong admin token: the cloud's 401 is reported, nothing written.
        wrong = settings_for(
            tmp_path, spec_file, admin_token="adm-Wr0ngTokenButLongEnough", out_dir=tmp_path / "x"
        )
        with pytest.raises(BootstrapError, match="401"):
            await bootstrap(wrong, transport=transport)
        assert not list((tmp_path / "x").rglob("*.yaml"))


def test_refuses_a_changed_spec_and_a_wrong_admin_token_and_reissues_a_lost_token(tmp_path):
    asyncio.run(_refusals(tmp_path))


def test_refuses_an_invalid_spec_naming_the_field(tmp_path):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text("federation_id: boot-1\nr_max: 0\n")
    with pytest.raises(BootstrapError, match="r_max"):
        asyncio.run(bootstrap(settings_for(tmp_path, spec_file)))


def test_gives_up_on_a_cloud_that_never_answers(tmp_path):
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    settings = settings_for(
        tmp_path, write_spec(tmp_path / "spec.yaml"), cloud_url="http://127.0.0.1:1", wait_s=0.01
    )
    with pytest.raises(BootstrapError, match="not ready"):
        asyncio.run(bootstrap(settings))
