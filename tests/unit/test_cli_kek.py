"""`fedlora kek generate / rotate / check` against a real redis-server: the cloud's sealed records re-sealed
under the new KEK, one transaction each, so that a run killed half-way or racing a running cloud's seal ends
consistent when run again."""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedlora.cli import app
from fedlora.kek_rotation import RecordState, rotate, sealed_records
from protocol.crypto import (
    KekRing,
    PlainParams,
    WrongKekError,
    generate_scheme,
    kek_id,
    open_bytes,
    open_secret,
    seal_bytes,
    seal_secret,
)
from services import keyspace
from services.keys import load_kek
from services.store import RedisStore, StoreError, TransactionFn, Updates
from tests.keks import FOREIGN_KEK, KEK, NEXT_KEK

SCHEME = generate_scheme(PlainParams())
NOISE_KEY = keyspace.fed_round_noise("fed-1", 3)
#: Per federation: its HE secret and plan key; fed-1 also has round 3's central noise.
RECORDS = 5


async def _seed(url: str, kek: bytes) -> None:
    """Two federations' sealed records, as a cloud under `kek` leaves them, beside records that are not
    sealed under the KEK (a round's status, a quarantined noise) and must be left alone."""
    store = RedisStore(url)
    for fid in ("fed-1", "fed-2"):
        await store.hset(keyspace.federations(), fid, b"2026-12-06T00:00:00+00:00")
        await store.set(keyspace.fed_secret(fid), seal_secret(SCHEME, kek, federation_id=fid))
        plan_key = keyspace.fed_plan_key(fid)
        await store.set(plan_key, seal_bytes(b"plan-key " + fid.encode(), kek, label=plan_key.encode()))
    await store.set(NOISE_KEY, seal_bytes(b"noise", kek, label=NOISE_KEY.encode()))
    await store.set(keyspace.fed_round_status("fed-1", 3), b"{}")
    await store.set(keyspace.quarantine_of(NOISE_KEY), b"{")
    await store.close()


async def _stored(url: str) -> dict[str, bytes | None]:
    store = RedisStore(url)
    try:
        return {r.key: await store.get(r.key) for r in await sealed_records(store)}
    finally:
        await store.close()


def _opens_under(stored: dict[str, bytes | None], kek: bytes) -> bool:
    """Whether every record opens under `kek` alone, its binding kept."""
    for fid in ("fed-1", "fed-2"):
        secret = stored[keyspace.fed_secret(fid)]
        assert secret is not None
        open_secret(SCHEME.params, secret, kek, federation_id=fid, fingerprint=SCHEME.fingerprint)
        plan_key = keyspace.fed_plan_key(fid)
        assert (
            open_bytes(stored[plan_key] or b"", kek, label=plan_key.encode()) == b"plan-key " + fid.encode()
        )
    return open_bytes(stored[NOISE_KEY] or b"", kek, label=NOISE_KEY.encode()) == b"noise"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def kek_env(redis_url: str) -> Iterator[dict[str, str]]:
    yield {"FEDLORA_STORE_URL": redis_url, "FEDLORA_KEK": NEXT_KEK.hex(), "COLUMNS": "200"}


def _kek(env: dict[str, str], *args: str, previous: bytes | None = None):  # type: ignore[no-untyped-def]
    extra = {"FEDLORA_KEK_PREVIOUS": previous.hex()} if previous is not None else {}
    return CliRunner().invoke(app, ["kek", *args], env=env | extra)


def test_generate_prints_a_kek_or_writes_it_owner_only_and_never_over_another(tmp_path: Path) -> None:
    printed = CliRunner().invoke(app, ["kek", "generate"])
    assert printed.exit_code == 0, printed.output
    kek = printed.stdout.strip()
    assert len(kek) == 64 and load_kek({"FEDLORA_KEK": kek})
    assert f"KEK id {kek_id(bytes.fromhex(kek)).hex()}" in printed.stderr

    out = tmp_path / "kek"
    written = CliRunner().invoke(app, ["kek", "generate", "--out", str(out)])
    assert written.exit_code == 0 and written.stdout == ""
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert load_kek({"FEDLORA_KEK_FILE": str(out)}) != bytes.fromhex(kek)
    before = out.read_bytes()
    again = CliRunner().invoke(app, ["kek", "generate", "--out", str(out)])
    assert again.exit_code == 2 and "never overwritten" in again.stderr
    assert out.read_bytes() == before


def test_rotate_reseals_every_record_and_check_then_passes(redis_url: str, kek_env: dict[str, str]) -> None:
    """The runbook's order: `check` under the new KEK alone fails while records need the old one; a dry run
    lists them and writes nothing; `rotate` with the old KEK as previous re-seals them all; `check` passes
    and every record opens under the new KEK alone."""
    asyncio.run(_seed(redis_url, KEK))
    before = asyncio.run(_stored(redis_url))

    failing = _kek(kek_env, "check")
    assert failing.exit_code == 1 and "unreadable" in failing.stdout and NOISE_KEY in failing.stdout

    dry = _kek(kek_env, "rotate", "--dry-run", "--json", previous=KEK)
    assert dry.exit_code == 0, dry.output
    report = json.loads(dry.stdout)
    assert report["dry_run"] and report["current_kek_id"] == kek_id(NEXT_KEK).hex()
    assert [r["state"] for r in report["records"]] == ["stale"] * RECORDS
    assert {r["reason"] for r in report["records"]} == {f"sealed under KEK {kek_id(KEK).hex()}"}
    assert asyncio.run(_stored(redis_url)) == before

    rotated = _kek(kek_env, "rotate", previous=KEK)
    assert rotated.exit_code == 0, rotated.output
    assert _count_row(rotated.stdout, "resealed") == RECORDS
    passing = _kek(kek_env, "check")
    assert passing.exit_code == 0, passing.output
    assert "FEDLORA_KEK_PREVIOUS can be unset" in passing.stdout
    after = asyncio.run(_stored(redis_url))
    assert _opens_under(after, NEXT_KEK)
    with pytest.raises(WrongKekError):
        _opens_under(after, KEK)


def _count_row(table: str, state: str) -> int:
    """The count on `state`'s row of the summary table."""
    for line in table.splitlines():
        cells = [c.strip() for c in line.replace("┃", "│").split("│") if c.strip()]
        if cells[:1] == [state]:
            return int(cells[1])
    raise AssertionError(f"no {state!r} row in\n{table}")


def test_a_record_under_neither_kek_is_reported_by_key_and_left_alone(
    redis_url: str, kek_env: dict[str, str]
) -> None:
    asyncio.run(_seed(redis_url, KEK))
    foreign = seal_bytes(b"noise", FOREIGN_KEK, label=NOISE_KEY.encode())
    asyncio.run(_set(redis_url, NOISE_KEY, foreign))

    rotated = _kek(kek_env, "rotate", previous=KEK)

    assert rotated.exit_code == 1
    assert _count_row(rotated.stdout, "resealed") == RECORDS - 1
    assert _count_row(rotated.stdout, "unreadable") == 1
    assert NOISE_KEY in rotated.stdout and kek_id(FOREIGN_KEK).hex() in rotated.stdout
    assert asyncio.run(_stored(redis_url))[NOISE_KEY] == foreign


async def _set(url: str, key: str, value: bytes) -> None:
    store = RedisStore(url)
    await store.set(key, value)
    await store.close()


class DiesAfterWrites(RedisStore):
    """The rotating process, killed before its `writes + 1`-th write (nothing of that one is written)."""

    def __init__(self, url: str, *, writes: int) -> None:
        super().__init__(url)
        self.left = writes

    async def transaction(self, keys: list[str], fn: TransactionFn) -> Updates:  # type: ignore[override]
        def counted(current: dict[str, bytes | None]) -> Updates:
            updates = fn(current)
            assert isinstance(updates, dict)
            if updates:
                if self.left == 0:
                    raise StoreError("killed")
                self.left -= 1
            return updates

        return await super().transaction(keys, counted)


@pytest.mark.anyio
async def test_a_rotation_killed_half_way_ends_consistent_when_run_again(redis_url: str) -> None:
    await _seed(redis_url, KEK)
    keks = KekRing(current=NEXT_KEK, previous=KEK)
    dying = DiesAfterWrites(redis_url, writes=2)
    with pytest.raises(StoreError, match="killed"):
        await rotate(dying, keks, write=True)
    await dying.close()
    # Half way: every record still opens under the rolled cloud's KEKs.
    store = RedisStore(redis_url)
    halfway = await rotate(store, keks, write=False)
    assert halfway.count(RecordState.CURRENT) == 2 and halfway.count(RecordState.STALE) == RECORDS - 2

    again = await rotate(store, keks, write=True)
    check = await rotate(store, KekRing(current=NEXT_KEK), write=False)
    await store.close()

    assert again.count(RecordState.RESEALED) == RECORDS - 2 and again.count(RecordState.CURRENT) == 2
    assert check.complete
    assert _opens_under(await _stored(redis_url), NEXT_KEK)


class CloudSealsMeanwhile(RedisStore):
    """A running cloud (another connection) seals the round's noise afresh between the rotation's read of it
    and its write: the WATCH makes the rotation read it again."""

    def __init__(self, url: str, *, fresh: bytes) -> None:
        super().__init__(url)
        self.cloud = RedisStore(url)
        self.fresh: bytes | None = fresh

    async def transaction(self, keys: list[str], fn: TransactionFn) -> Updates:  # type: ignore[override]
        async def racing(current: dict[str, bytes | None]) -> Updates:
            if keys == [NOISE_KEY] and self.fresh is not None:
                await self.cloud.set(NOISE_KEY, self.fresh)
                self.fresh = None
            updates = fn(current)
            assert isinstance(updates, dict)
            return updates

        return await super().transaction(keys, racing)


@pytest.mark.anyio
async def test_a_noise_the_cloud_seals_during_the_rotation_is_not_overwritten(redis_url: str) -> None:
    await _seed(redis_url, KEK)
    fresh = seal_bytes(b"noise drawn afresh", NEXT_KEK, label=NOISE_KEY.encode())
    store = CloudSealsMeanwhile(redis_url, fresh=fresh)

    report = await rotate(store, KekRing(current=NEXT_KEK, previous=KEK), write=True)
    kept = await store.get(NOISE_KEY)
    await store.cloud.close()
    await store.close()

    (noise,) = [r for r in report.records if r.key == NOISE_KEY]
    assert noise.state is RecordState.CURRENT
    assert kept == fresh
