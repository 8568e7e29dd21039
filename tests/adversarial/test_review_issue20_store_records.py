"""Issue 20, item 1 (second half): nothing read back from the store raises a 5xx. Each test writes what an
attacker with store access (or a bug) would, a record that does not parse or a value that is not the one
recorded, then drives the route or the tick that reads it: a corrupt record is quarantined, logged and
skipped or refused with 409 `stored_record_corrupt`, and a round that cannot proceed fails with a reason.
Run on the memory store and a real Redis (tests/adversarial/conftest.py). At the end, what was left of
item 6: Python warnings in the JSON logs, and the demo's secrets written 0600 from creation."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from fedlora.demo_run import DemoRunFolder
from protocol.messages import ClientEnrolment, DropReason, EdgeEnrolment, ErrorCode, Role, RoundState
from services import keyspace
from services.identity import SigningKey, token_digest
from tests.cloud.harness import (
    Cloud,
    Federation,
    issue_enrolment_token,
    one_sum_in,
    past_deadline_with_edge_1_quarantined,
    post_enrolment,
    replace_stored_sum,
    running_cloud,
    small_spec,
)
from tests.edge.conftest import client_scheme, make_world, secret_scheme  # noqa: F401
from tests.edge.harness import EID, FID, World, running_edge, until
from tests.metrics_text import metric_value

pytestmark = pytest.mark.anyio


def _non_finite(raw: bytes) -> bytes:
    """`raw` with its first weight made the JSON literal `Infinity`, which the parser reads as inf."""
    assert b'"weight":1.0' in raw, raw[:200]
    return raw.replace(b'"weight":1.0', b'"weight":Infinity', 1)


@pytest.mark.parametrize("corrupt", [lambda raw: b"{", _non_finite], ids=["truncated", "non_finite"])
async def test_an_edge_manifest_that_does_not_read_back_is_quarantined_and_the_round_goes_on(
    make_world: Callable[..., World],  # noqa: F811
    corrupt: Callable[[bytes], bytes],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Property: a stored manifest that does not parse never answers a later upload with a 5xx nor stalls
    the round: it is moved, with its sum, to the edge's quarantine keys, logged with the key and the reason
    (no value), the uploads it covered are counted dropped (`record_quarantined`), and the round closes and
    forwards with the uploads that came after.

    (Every later upload of the round got a 500 and the round never closed.)"""
    world = make_world(clients=3, k=2, quorum=0.5)
    manifest_key = keyspace.edge_manifest(EID, FID, 0)
    async with running_edge(world) as edge:
        first = await edge.upload(world.update(world.hospitals["hosp-a"]))
        assert first.status_code == 202, first.text
        stored = await world.store.get(manifest_key)
        assert stored is not None
        bad = corrupt(stored)
        await world.store.set(manifest_key, bad)
        for cid in ("hosp-b", "hosp-c"):
            answer = await edge.upload(world.update(world.hospitals[cid]))
            assert answer.status_code == 202, answer.text
        await until(lambda: len(world.cloud.attempts) == 1, what="round 0's forward")
        dropped = await world.ledger().dropped(0)
        quarantined = await world.store.get(keyspace.quarantine_of(manifest_key))
    assert {c.client_id for c in world.cloud.attempts[0].contributions} == {"hosp-b", "hosp-c"}
    assert dropped.get(DropReason.RECORD_QUARANTINED) == 1, dropped
    assert quarantined == bad
    lines = [r for r in caplog.records if "quarantined" in r.getMessage()]
    assert lines, [r.getMessage() for r in caplog.records]
    data = lines[0].__dict__["data"]
    assert data["key"] == manifest_key and data["quarantine"] == keyspace.quarantine_of(manifest_key)
    assert "Infinity" not in json.dumps(data)  # the reason names the field, never its value


def _flip_last_byte(value: bytes) -> bytes:
    return value[:-1] + bytes([value[-1] ^ 0xFF])


@pytest.mark.parametrize("digests_rewritten", [False, True], ids=["value_digest", "ciphertext_digest"])
async def test_a_stored_sum_whose_digest_does_not_match_fails_its_round_cleanly(
    digests_rewritten: bool,
) -> None:
    """Property: a stored edge sum that is not the value recorded in the round's digests, or whose
    ciphertext does not hash to the digest its header names, is quarantined and the round fails at the next
    tick with a reason naming the edge; the next round opens (no close retried forever).

    (A value differing from its recorded digest stalled the round: every tick logged and returned.)"""
    async with running_cloud() as cloud:
        fed = await one_sum_in(cloud, np.random.default_rng(11))
        value = await cloud.store.hget(keyspace.fed_round_aggregates(fed.fid, 0), "edge-1")
        assert value is not None
        altered = _flip_last_byte(value)
        await replace_stored_sum(cloud, fed.fid, altered, recorded=digests_rewritten)
        status, quarantined, next_round = await past_deadline_with_edge_1_quarantined(cloud, fed)
    assert status.state is RoundState.FAILED, status
    assert status.failure is not None and "edge-1" in status.failure, status.failure
    assert quarantined == altered
    assert next_round.state is RoundState.OPEN


@dataclass(frozen=True)
class Corruption:
    """A record to spoil (`key(fid)`, a hash `field` or a plain key) and the route that reads it back."""

    key: Callable[[str], str]
    route: str
    field: str | None = None
    listed: Callable[[list[dict[str, object]]], bool] | None = None  # a list route: is the entry still there?


def _ids(entries: list[dict[str, object]], name: str, value: str) -> bool:
    return any(entry.get(name) == value for entry in entries)


CORRUPTIONS = {
    "federation_record": Corruption(keyspace.fed_state, "/federations/{fid}"),
    "round_plan": Corruption(lambda fid: keyspace.fed_round_plan(fid, 0), "/federations/{fid}/plan"),
    "round_status": Corruption(lambda fid: keyspace.fed_round_status(fid, 0), "/federations/{fid}/rounds/0"),
    "round_list": Corruption(lambda fid: keyspace.fed_round_status(fid, 0), "/federations/{fid}/rounds"),
    "privacy_ledger": Corruption(keyspace.fed_privacy, "/federations/{fid}/privacy"),
    "ranks": Corruption(keyspace.fed_ranks, "/federations/{fid}/clients"),
    "client_stats": Corruption(
        lambda fid: keyspace.fed_client_stats(fid, "client-a"), "/federations/{fid}/clients"
    ),
    "adapter_vector": Corruption(lambda fid: keyspace.fed_adapter(fid, 0), "/federations/{fid}/adapters/0"),
    "adapter_meta": Corruption(
        lambda fid: keyspace.fed_adapter_meta(fid, 0), "/federations/{fid}/adapters/0"
    ),
    "close_failures": Corruption(
        lambda fid: keyspace.fed_round_close_failures(fid, 0), "/federations/{fid}/rounds/0"
    ),
    "client_entry": Corruption(
        keyspace.fed_clients,
        "/federations/{fid}/clients",
        field="client-a",
        listed=lambda entries: _ids(entries, "client_id", "client-a"),
    ),
    "edge_entry": Corruption(
        keyspace.fed_edges,
        "/federations/{fid}/edges",
        field="edge-1",
        listed=lambda entries: _ids(entries, "edge_id", "edge-1"),
    ),
    "edge_clock": Corruption(
        keyspace.fed_edge_clocks,
        "/federations/{fid}/edges",
        field="edge-1",
        listed=lambda entries: _ids(entries, "edge_id", "edge-1"),
    ),
}


async def _spoil(cloud: Cloud, fid: str, corruption: Corruption, value: bytes) -> str:
    """Write `value` over the record; its quarantine key."""
    key = corruption.key(fid)
    if corruption.field is None:
        await cloud.store.set(key, value)
    else:
        await cloud.store.hset(key, corruption.field, value)
    return keyspace.quarantine_of(key, corruption.field)


async def _quarantine_count(cloud: Cloud, fid: str) -> float:
    text = (await cloud.http.get("/metrics")).text
    return metric_value(text, "fedlora_records_quarantined", {"federation": fid}) or 0.0


@pytest.mark.parametrize("value", [b"{", b'{"offset_s": Infinity}'], ids=["truncated", "non_finite"])
@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
async def test_a_cloud_record_that_does_not_read_back_is_quarantined_never_a_5xx(
    name: str, value: bytes
) -> None:
    """Property: for each record the cloud reads back, a value that does not parse answers the route that
    reads it with 409 `stored_record_corrupt` naming the key (or, for a list, leaves the entry out), is
    copied to its quarantine key, and `fedlora_records_quarantined` counts it.

    (A `ValidationError` or `JSONDecodeError` answered 500, on every request that read the record.)"""
    corruption = CORRUPTIONS[name]
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        await fed.start(cloud.http)
        if name == "adapter_meta" and await cloud.store.get(corruption.key(fed.fid)) is None:
            pytest.skip("no adapter meta stored for version 0")
        target = await _spoil(cloud, fed.fid, corruption, value)
        answer = await cloud.http.get(corruption.route.format(fid=fed.fid))
        assert answer.status_code < 500, answer.text
        if corruption.listed is None and answer.status_code != 200:
            assert answer.status_code == 409, answer.text
            assert answer.json()["code"] == ErrorCode.STORED_RECORD_CORRUPT.value
            assert answer.json()["detail"]["key"] == corruption.key(fed.fid)
        elif corruption.listed is not None and name != "edge_clock":
            assert answer.status_code == 200, answer.text
            assert not corruption.listed(answer.json()), answer.text
        quarantined = await cloud.store.get(target)
        count = await _quarantine_count(cloud, fed.fid)
    assert quarantined == value
    assert count >= 1


TICK_RECORDS: dict[str, Callable[[str], str]] = {
    "status": lambda fid: keyspace.fed_round_status(fid, 0),
    "digests": lambda fid: keyspace.fed_round_aggregate_digests(fid, 0),
}


@pytest.mark.parametrize("name", sorted(TICK_RECORDS))
async def test_a_tick_over_a_record_that_does_not_read_back_raises_no_raw_parse_error(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Property: the deadline check over a round whose record does not parse logs a typed
    `StoredRecordError` naming the key (a JSON line, no traceback of a `ValidationError`), quarantines it,
    and the status route answers 409, never 500. An unreadable record of the round's aggregate digests is
    removed as well, and the next check fails the round (a sum it held would be unrecorded, so quarantined
    and named in the failure)."""
    key = TICK_RECORDS[name]
    async with running_cloud() as cloud:
        spec = small_spec()
        fed = await Federation.create(cloud.http, spec)
        await fed.start(cloud.http)
        await cloud.store.set(key(fed.fid), b"{")
        cloud.clock.advance(spec.round_deadline_s + 1)
        with caplog.at_level(logging.ERROR):
            await cloud.tick()
        answer = await cloud.http.get(f"/federations/{fed.fid}/rounds/0")
        quarantined = await cloud.store.get(keyspace.quarantine_of(key(fed.fid)))
        if name == "digests":  # derived: quarantined and removed, the next check fails the round
            await cloud.tick()
            failed, next_round = await cloud.status(fed.fid, 0), await cloud.status(fed.fid, 1)
            assert failed.state is RoundState.FAILED, failed
            assert next_round.state is RoundState.OPEN, next_round
    assert answer.status_code in (200, 409), answer.text
    assert quarantined == b"{"
    raw_errors = [r for r in caplog.records if r.exc_info and "ValidationError" in repr(r.exc_info[1])]
    assert raw_errors == []


# -- issue 20, item 6: what is left ------------------------------------------------------------------------
def test_a_python_warning_in_a_service_is_a_json_log_line() -> None:
    """Property: once a service has set up its logs, a library's `warnings.warn` (Opacus and torch warn on
    an empty Poisson batch) is written as one JSON line with the others, never as bare text on stderr.

    (Warnings went to stderr outside the JSON logs.)"""
    script = (
        "import warnings\n"
        "from services.logs import configure\n"
        "configure('client:hosp-a')\n"
        "warnings.warn('the batch is empty', UserWarning, stacklevel=1)\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
        timeout=60,
    )
    lines = [json.loads(line) for line in done.stderr.splitlines()]  # every line is JSON
    assert any("the batch is empty" in line["msg"] for line in lines), done.stderr
    assert all(line["service"] == "client:hosp-a" for line in lines)


def test_the_demo_writes_its_secrets_0600_from_creation_and_never_through_a_planted_link(
    tmp_path: Path,
) -> None:
    """Property: the demo's admin token and KEK files are created 0600 (`services.secret_files`), and a
    symbolic link planted where one goes is replaced, never written through.

    (`write_private` opened the path, so a planted link sent the secret to the file it pointed at.)"""
    folder = DemoRunFolder(tmp_path / "run")
    folder.root.mkdir()
    elsewhere = tmp_path / "readable-by-all"
    elsewhere.write_text("")
    elsewhere.chmod(0o644)
    folder.admin_token_file.symlink_to(elsewhere)
    folder.prepare(admin_token="a" * 43, kek_hex="0" * 64, cloud_settings={})
    assert elsewhere.read_text() == ""
    assert not folder.admin_token_file.is_symlink()
    assert folder.admin_token_file.read_text() == "a" * 43
    for secret in (folder.admin_token_file, folder.kek_file):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret


ENROLMENT_RECORDS = ("edge_entry", "client_entry", "enrolment_token", "enrolled_count")


@pytest.mark.parametrize("name", ENROLMENT_RECORDS)
async def test_an_enrolment_over_a_record_that_does_not_read_back_is_a_409_never_a_5xx(name: str) -> None:
    """Property: an enrolment whose transaction reads a record that does not parse (the party's own roster
    entry, its enrolment token's record, the federation's enrolled count) answers 409
    `stored_record_corrupt` naming the key, and quarantines it; listing enrolment tokens leaves a bad one out,
    and issuing more still works.
    (Found after the quarantine work: these reads still parsed raw, a `ValidationError` answered 500.)"""
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        fid = fed.fid
        if name == "edge_entry":
            edge = fed.edges["edge-1"]
            key, field = keyspace.fed_edges(fid), "edge-1"
            body: EdgeEnrolment | ClientEnrolment = EdgeEnrolment(
                edge_id="edge-1", url="http://edge-1.test:8710", public_key=edge.key.public_bytes
            )
            signer, token = edge.key, None
        elif name == "client_entry":
            key, field = keyspace.fed_clients(fid), "client-a"
            signer, token = fed.client_keys["client-a"], None
            body = ClientEnrolment(
                client_id="client-a", edge_id="edge-1", public_key=signer.public_bytes, num_examples=100
            )
        else:
            signer = SigningKey.generate()
            token = await issue_enrolment_token(cloud.http, fid, Role.CLIENT, "client-new")
            body = ClientEnrolment(
                client_id="client-new", edge_id="edge-1", public_key=signer.public_bytes, num_examples=100
            )
            if name == "enrolment_token":
                key, field = keyspace.fed_enrolment_tokens(fid), token_digest(token)
            else:
                key, field = keyspace.fed_enrolled_count(fid, Role.CLIENT.value), None
        if field is None:
            await cloud.store.set(key, b"{")
        else:
            await cloud.store.hset(key, field, b"{")
        answer = await post_enrolment(cloud.http, fid, body, signer, token=token)
        quarantined = await cloud.store.get(keyspace.quarantine_of(key, field))
        listing = await cloud.http.get(f"/federations/{fid}/enrolment-tokens")
        another = await issue_enrolment_token(cloud.http, fid, Role.CLIENT, "client-other")

    assert answer.status_code == 409, answer.text
    assert answer.json()["code"] == ErrorCode.STORED_RECORD_CORRUPT.value
    assert answer.json()["detail"]["key"] == key
    assert quarantined == b"{"
    assert listing.status_code == 200, listing.text
    assert another
