"""Adversarial review of issue 20's hardening (enrolment, credentials, store ACL), first pass. Each test holds
one credential an attacker could have (one edge's Redis password, one edge's API token, no credential at
all) and reproduces a way it still reaches past its party; each is a strict xfail until fixed.

The Redis tests run a real `redis-server` per tier with the ACL file the bootstrap writes for it
(`fedlora.store_users`), as tests/adversarial/test_review_issue20_store.py does; the cloud tests run on the
memory store and a real Redis (tests/adversarial/conftest.py)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from protocol.messages import ClientEnrolment, RoundPlan
from services import keyspace
from tests.adversarial.test_review_issue20_store import AclRedis, started_acl_redis
from tests.cloud.harness import Federation, bearer, post_enrolment, running_cloud, small_spec

pytestmark = pytest.mark.anyio

# Challenges an anonymous caller may have the cloud hold for one federation before it is refused: a party
# enrolling needs one at a time, so a bound in the hundreds serves every federation the caps allow.
ANONYMOUS_CHALLENGES = 1024


@contextlib.contextmanager
def _configured_acl_redis(folder: Path, configure: Callable[[redis.Redis], object]) -> Iterator[AclRedis]:
    """The cloud's Redis and each edge's, as tests/adversarial/test_review_issue20_store.py starts them
    (each with its own ACL file), each `configure`d first by its own operator's user."""
    with started_acl_redis(folder) as started:
        for server in started.servers.values():
            admin = server.admin_client()
            try:
                configure(admin)
            finally:
                admin.close()
        yield started


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[AclRedis]:
    with _configured_acl_redis(tmp_path, lambda admin: None) as got:
        yield got


def _logs_in(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.exceptions.AuthenticationError:  # WRONGPASS: no such user there, or another password
        return False


# -- an edge's Redis password --------------------------------------------------------------------------------
def test_an_edge_redis_user_cannot_list_the_key_names_of_other_tiers(acl_redis: AclRedis) -> None:
    """Property: an edge's Redis user learns nothing of keys outside `edge:{eid}:`, names included. Key
    names carry every hospital's id (`cloud:{fid}:token:client:{cid}`, `cloud:{fid}:client:{cid}:stats`,
    `edge:{other}:{fid}:round:{n}:upload:{cid}`), so listing them shows an edge the hospitals of every other
    edge, which the cloud's routes refuse it (403 on `GET /clients?edge_id=<other>`).

    Failed before the fix: the tiers shared one Redis, and SCAN is keyless (ACL key patterns do not filter its
    answer), so edge-1's user listed the cloud's key names and edge-2's. Now each tier has its own Redis: the
    others' do not know edge-1's user, and its own holds no key of another tier."""
    cloud, edge_2 = acl_redis.connect("cloud"), acl_redis.connect("edge-2")
    attempts = {at: acl_redis.connect("edge-1", at=at) for at in ("cloud", "edge-2", "edge-1")}
    try:
        cloud.set(keyspace.fed_subject_token("fed-r1", "client", "client-c"), b"digest")
        edge_2.set(keyspace.edge_upload("edge-2", "fed-r1", 0, "client-c"), b"upload")
        logged_in = {at: _logs_in(client) for at, client in attempts.items()}
        seen: set[bytes] = set()
        for at, client in attempts.items():
            if not logged_in[at]:
                continue
            # Refusing SCAN outright keeps the names too.
            with contextlib.suppress(redis.exceptions.NoPermissionError):
                seen.update(client.scan_iter(match="*", count=1000))
            try:  # the same from a script, which runs under the edge's user
                _, names = client.eval("return redis.call('SCAN', '0', 'COUNT', '1000')", 0)
                seen.update(names)
            except redis.exceptions.ResponseError:
                pass
    finally:
        for client in (cloud, edge_2, *attempts.values()):
            client.close()

    assert logged_in == {"cloud": False, "edge-2": False, "edge-1": True}
    assert not any(b"client-c" in name for name in seen), sorted(seen)


@pytest.fixture
def busy_redis(tmp_path: Path) -> Iterator[AclRedis]:
    """Redis answering BUSY after 50 ms of a running script instead of 5 s."""
    with _configured_acl_redis(tmp_path, lambda admin: admin.config_set("busy-reply-threshold", 50)) as got:
        yield got


def test_an_edge_redis_user_cannot_stall_the_store_for_the_cloud(busy_redis: AclRedis) -> None:
    """Property: one edge's Redis password cannot stop the cloud's commands: whatever the edge's user sends,
    the cloud's next command is answered (not `BUSY`), so every other region's round still closes.

    (The tier users may run EVAL with any script body; `while true do end` holds Redis' only thread, and
    every other client is answered `BUSY` until SCRIPT KILL, which no tier user may send.) Failed before the
    fix; an edge's user now runs no script (`EDGE_REDIS_COMMANDS`), and its Redis is not the cloud's."""
    edge, cloud = busy_redis.connect("edge-1"), busy_redis.connect("cloud")
    admin = busy_redis.servers["edge-1"].admin_client()
    outcome: list[BaseException | object] = []

    def run_forever() -> None:
        try:
            outcome.append(edge.eval("while true do end", 0))
        except redis.exceptions.RedisError as e:
            outcome.append(e)

    attacker = threading.Thread(target=run_forever, daemon=True)
    attacker.start()
    busy = False
    try:
        # Bounded poll: either the script was refused (the thread ends) or the cloud is answered BUSY.
        for _ in range(100_000):
            if not attacker.is_alive():
                break
            try:
                cloud.get(keyspace.fed_spec("fed-r1"))
            except redis.exceptions.ResponseError as e:
                if str(e).startswith("BUSY"):
                    busy = True
                    break
                raise
    finally:
        for _ in range(1000):  # stop the script, if it runs, with the operator's user
            try:
                admin.script_kill()
                break
            except redis.exceptions.ResponseError as e:
                if "NOTBUSY" in str(e) and not attacker.is_alive():
                    break
        attacker.join(timeout=10)
        for client in (edge, cloud, admin):
            client.close()

    assert not busy, "the cloud's command was answered BUSY while the edge's script ran"
    assert not attacker.is_alive(), outcome


@pytest.fixture
def full_redis(tmp_path: Path) -> Iterator[AclRedis]:
    """Each Redis with a `maxmemory` 4 MiB above what it uses empty (deploy/k8s sets 768 MiB)."""

    def limit(admin: redis.Redis) -> object:
        return admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) + 4 * 2**20)

    with _configured_acl_redis(tmp_path, limit) as got:
        yield got


def test_an_edge_redis_user_cannot_fill_the_store_the_cloud_writes_to(full_redis: AclRedis) -> None:
    """Property: one edge's Redis password cannot stop the cloud's writes (and so every region's rounds):
    whatever the edge's user writes, the cloud's next write succeeds.

    Failed before the fix: the tiers shared one Redis and its `maxmemory`, and Redis has no quota per ACL
    user: with `maxmemory-policy noeviction`, as deploy/ sets it, a loop of large values under the edge's own
    `edge:{eid}:` prefix made every later write of the cloud fail (OOM). Now the edge's password does not log
    in at the cloud's Redis, and filling its own Redis leaves the cloud's memory alone."""
    at_cloud = full_redis.connect("edge-1", at="cloud")
    edge, cloud = full_redis.connect("edge-1"), full_redis.connect("cloud")
    written, full = 0, False
    try:
        reaches_cloud = _logs_in(at_cloud)
        # Large values, then small ones to fill what a large one's query buffer left: bounded loops.
        for size, most in ((64 * 1024, 1000), (1024, 10_000), (16, 10_000)):
            for _ in range(most):
                try:
                    edge.set(f"edge:edge-1:fed-r1:filler:{written}", bytes(size))
                    written += 1
                except redis.exceptions.OutOfMemoryError:  # refused: its own store is full
                    full = True
                    break
        try:
            cloud.set(keyspace.fed_round_status("fed-r1", 0), b"{}")
            refused: str | None = None
        except redis.exceptions.OutOfMemoryError as e:
            refused = str(e)
    finally:
        for client in (at_cloud, edge, cloud):
            client.close()

    assert not reaches_cloud, "edge-1's Redis password logs in at the cloud's Redis"
    assert full, f"edge-1's own Redis took all {written} values: the fill did not reach maxmemory"
    assert refused is None, f"after the edge wrote {written} values, the cloud's write: {refused}"


# -- an edge's API token -------------------------------------------------------------------------------------
async def test_an_edge_reads_no_other_edges_hospitals_in_the_round_plan() -> None:
    """Property: an edge sees its own hospitals only (issue 20, item 3), through every route: the plan it
    polls names no hospital of another edge.

    (`GET /clients?edge_id=edge-2` is 403 for edge-1, but the plan it polls lists client-c and client-d,
    edge-2's hospitals, with their ranks.) Failed before the fix; an edge is now served its own view of the
    plan (`RoundPlan.view`), signed with its edge id."""
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        await fed.start(cloud.http)
        as_edge_1 = bearer(fed.edges["edge-1"].token)
        own = await cloud.http.get(f"/federations/{fed.fid}/clients?edge_id=edge-2", headers=as_edge_1)
        polled = await cloud.http.get(f"/federations/{fed.fid}/plan", headers=as_edge_1)

    assert own.status_code == 403, own.text
    assert polled.status_code == 200, polled.text
    named = set(RoundPlan.model_validate_json(polled.content).client_ranks)
    assert named <= set(fed.edges["edge-1"].clients), sorted(named)


# -- no credential at all ------------------------------------------------------------------------------------
async def test_anonymous_challenges_cannot_grow_the_store_without_bound() -> None:
    """Property: a caller with no credential cannot make the cloud hold an unbounded number of records, so
    the store's memory, which every round's writes need, is not its to fill.

    (Every call to the unauthenticated route wrote a fresh challenge key that lived 120 s; a loop of them
    filled Redis to `maxmemory`, after which the cloud's own writes, and so the rounds, failed.) Failed
    before the fix; a challenge is now stateless (an HMAC'd nonce with its expiry)."""
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(), {})
        answered = 0
        for i in range(2 * ANONYMOUS_CHALLENGES):
            response = await cloud.http.post(
                f"/federations/{fed.fid}/enrolment-challenges", headers={"Authorization": ""}
            )
            assert response.status_code in (201, 429, 503), response.text
            answered += response.status_code == 201
            if i == 0:
                before = await cloud.store.scan("cloud:")
        after = await cloud.store.scan("cloud:")

    assert answered >= 1
    assert after == before, f"{len(after) - len(before)} records stored by anonymous challenges"


# -- one hospital's enrolled key -----------------------------------------------------------------------------
def _hospital(fed: Federation, cid: str, edge_id: str, *, max_rank: int | None = None) -> ClientEnrolment:
    key = fed.client_keys[cid]
    return ClientEnrolment(
        client_id=cid, edge_id=edge_id, public_key=key.public_bytes, num_examples=100, max_rank=max_rank
    )


async def test_re_enrolling_in_a_loop_leaves_no_record_behind() -> None:
    """Property: what one party's credential makes the cloud store is bounded: a hospital re-enrolling (a
    proof by its key, no enrolment token) replaces its API token's record, so its federation's token hash
    holds one record per party however often it re-enrols.

    (Each re-enrolment adds a `TokenRecord` under the new digest and only moves the party's pointer; the
    revoked records stay for ever, one per loop of a hospital's or edge's own key.) Failed before the fix."""
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        before = len(await cloud.store.hgetall(keyspace.fed_tokens(fed.fid)))
        body, key = _hospital(fed, "client-a", "edge-1"), fed.client_keys["client-a"]
        for _ in range(20):
            answer = await post_enrolment(cloud.http, fed.fid, body, key, token=None)
            assert answer.status_code == 200, answer.text
        after = len(await cloud.store.hgetall(keyspace.fed_tokens(fed.fid)))

    assert before == len(fed.edges) + len(fed.client_tokens)
    assert after == before, f"{after - before} records left by 20 re-enrolments of one hospital"


async def test_a_hospitals_re_enrolment_changes_nothing_but_its_api_token() -> None:
    """Property (docs/security.md, "A re-enrolment changes nothing but the API token"): a hospital that
    re-enrols at its own edge keeps its enrolled record: `max_rank` and `rank` as the first enrolment set
    them (the admin's spec and the rank policy decide a rank later, not a re-enrolment). Failed before the
    fix: the request's max_rank, and the rank drawn from it, replaced them."""
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(), max_ranks={"client-a": 1})
        before = await cloud.http.get(f"/federations/{fed.fid}/clients?edge_id=edge-1")
        body = _hospital(fed, "client-a", "edge-1", max_rank=2)
        again = await post_enrolment(cloud.http, fed.fid, body, fed.client_keys["client-a"], token=None)
        after = await cloud.http.get(f"/federations/{fed.fid}/clients?edge_id=edge-1")

    assert again.status_code == 200, again.text

    def record(listing: httpx.Response) -> tuple[int, int]:
        info = next(c for c in listing.json() if c["client_id"] == "client-a")
        return info["max_rank"], info["rank"]

    assert record(before) == (1, 1)
    assert record(after) == record(before), record(after)
