"""The StateStore contract: every implementation runs this class, MemoryStore and RedisStore (a real
`redis-server` started for the session)."""

import asyncio
import random
import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from fedlora.store_users import StoreUser
from services.store import (
    REDIS_COMMANDS,
    Expiring,
    KeepingExpiry,
    MemoryStore,
    RedisStore,
    StateStore,
    StoreError,
    open_store,
    redacted_url,
)
from tests.clock import FakeClock
from tests.redis_server import redis_client


class StoreContract:
    """Subclasses provide `make_store(clock)` and `make_replica(store)` (a second handle on the same state,
    as a second process would have); TTL tests that need a clock skip where it cannot be injected."""

    clock_injectable = True

    def make_store(self, clock: FakeClock) -> StateStore:
        raise NotImplementedError

    def make_replica(self, store: StateStore) -> StateStore:
        raise NotImplementedError

    @pytest.fixture
    def clock(self):
        return FakeClock()

    @pytest.fixture
    def store(self, clock):
        return self.make_store(clock)

    def run(self, coro):
        return asyncio.run(coro)

    def test_get_set_delete(self, store):
        async def scenario():
            assert await store.get("k") is None
            await store.set("k", b"v1")
            await store.set("k", b"v2")
            assert await store.get("k") == b"v2"
            assert await store.delete("k", "missing") == 1
            assert await store.get("k") is None

        self.run(scenario())

    def test_set_if_absent_writes_once(self, store):
        async def scenario():
            assert await store.set_if_absent("round:1:client:a", b"first")
            assert not await store.set_if_absent("round:1:client:a", b"second")
            assert await store.get("round:1:client:a") == b"first"

        self.run(scenario())

    def test_time_is_one_clock_for_every_handle(self, store):
        """`time()` is the store's clock, aware and in UTC, and a second handle on the same state (another
        replica) reads the same clock, not its own."""
        replica = self.make_replica(store)

        async def scenario():
            first = await store.time()
            other = await replica.time()
            again = await store.time()
            assert first.tzinfo is not None and first.utcoffset() == timedelta(0)
            assert first <= other <= again

        self.run(scenario())

    def test_time_follows_the_store_clock(self, store, clock):
        if not self.clock_injectable:
            pytest.skip("this store keeps the server's time; see test_time_is_the_server_clock")

        async def scenario():
            assert await store.time() == clock.now
            clock.advance(90.5)
            assert await store.time() == clock.now

        self.run(scenario())

    def test_ttl_expires(self, store, clock):
        if not self.clock_injectable:
            pytest.skip("this store keeps the server's time; see test_ttl_expires_in_real_time")

        async def scenario():
            await store.set("short", b"x", ttl_s=10)
            await store.set_if_absent("nonce", b"1", ttl_s=5)
            clock.advance(6)
            assert await store.get("short") == b"x"
            assert await store.set_if_absent("nonce", b"2", ttl_s=5)  # expired, so writable again
            clock.advance(5)
            assert await store.get("short") is None

        self.run(scenario())

    def test_delete_if_equals_deletes_only_its_own_value(self, store):
        # A lease's holder releases it; a holder whose lease lapsed and was taken by another does not.
        async def scenario():
            assert await store.set_if_absent("lease", b"token-a", ttl_s=60)
            assert not await store.delete_if_equals("lease", b"token-b")
            assert await store.get("lease") == b"token-a"
            assert await store.delete_if_equals("lease", b"token-a")
            assert await store.get("lease") is None
            assert not await store.delete_if_equals("lease", b"token-a")  # gone: nothing to delete

        self.run(scenario())

    def test_expire_if_equals_renews_only_its_own_value(self, store):
        async def scenario():
            assert await store.set_if_absent("lease", b"token-a", ttl_s=60)
            assert not await store.expire_if_equals("lease", b"token-b", ttl_s=600)
            assert await store.expire_if_equals("lease", b"token-a", ttl_s=600)
            assert await store.get("lease") == b"token-a"
            assert not await store.expire_if_equals("missing", b"token-a", ttl_s=600)
            assert await store.get("missing") is None  # renewing creates nothing

        self.run(scenario())

    def test_expire_if_equals_extends_the_ttl(self, store, clock):
        if not self.clock_injectable:
            pytest.skip("this store keeps the server's time; see test_expire_if_equals_in_real_time")

        async def scenario():
            assert await store.set_if_absent("lease", b"token-a", ttl_s=10)
            clock.advance(8)
            assert await store.expire_if_equals("lease", b"token-a", ttl_s=10)
            clock.advance(8)  # 16 s after it was taken, 8 s after the renewal
            assert await store.get("lease") == b"token-a"
            assert not await store.expire_if_equals("lease", b"token-b", ttl_s=10)
            clock.advance(3)  # the other holder's renewal did not extend it
            assert await store.get("lease") is None
            assert not await store.expire_if_equals("lease", b"token-a", ttl_s=10)  # lapsed: not renewed
            assert await store.set_if_absent("lease", b"token-b", ttl_s=10)

        self.run(scenario())

    def test_incr_is_atomic_under_concurrency(self, store):
        async def scenario():
            await asyncio.gather(*(store.incr("count") for _ in range(200)))
            assert await store.get("count") == b"200"
            assert await store.incr("count", 5) == 205

        self.run(scenario())

    def test_hash_fields(self, store):
        async def scenario():
            await store.hset("h", "a", b"1")
            assert await store.hset_if_absent("h", "b", b"2")
            assert not await store.hset_if_absent("h", "b", b"3")
            assert await store.hget("h", "b") == b"2"
            assert await store.hgetall("h") == {"a": b"1", "b": b"2"}
            assert await store.hgetall("none") == {}
            assert await store.hkeys("h") == ["a", "b"]
            assert await store.hkeys("none") == []

        self.run(scenario())

    def test_scan_by_prefix(self, store):
        async def scenario():
            for key in ("edge:e1:r:2", "edge:e1:r:1", "edge:e2:r:1", "cloud:x"):
                await store.set(key, b"")
            assert await store.scan("edge:e1:") == ["edge:e1:r:1", "edge:e1:r:2"]

        self.run(scenario())

    def test_transaction_is_atomic_and_sees_fresh_values(self, store):
        # 50 concurrent read-modify-write transactions on two keys: no update may be lost, and the two
        # keys always move together.
        async def bump(i):
            def fn(values):
                total = int(values["sum"] or b"0") + i
                count = int(values["n"] or b"0") + 1
                return {"sum": str(total).encode(), "n": str(count).encode()}

            await store.transaction(["sum", "n"], fn)

        async def scenario():
            await asyncio.gather(*(bump(i) for i in range(50)))
            assert await store.get("sum") == str(sum(range(50))).encode()
            assert await store.get("n") == b"50"

        self.run(scenario())

    def test_transaction_abort_writes_nothing(self, store):
        async def scenario():
            await store.set("sum", b"10")

            def refuse(values):
                raise ValueError("duplicate upload")

            with pytest.raises(ValueError, match="duplicate upload"):
                await store.transaction(["sum", "marker"], refuse)
            assert await store.get("sum") == b"10"
            assert await store.get("marker") is None

        self.run(scenario())

    def test_transaction_deletes_and_refuses_unread_keys(self, store):
        async def scenario():
            await store.set("a", b"1")
            await store.transaction(["a"], lambda values: {"a": None})
            assert await store.get("a") is None
            with pytest.raises(StoreError, match="did not read"):
                await store.transaction(["a"], lambda values: {"b": b"x"})
            assert await store.get("b") is None

        self.run(scenario())

    def test_transaction_writes_a_value_and_its_ttl_in_one_step(self, store, clock):
        async def scenario():
            await store.set("nonce", b"stale", ttl_s=100)

            def fn(values):
                return {"nonce": Expiring(b"used", ttl_s=5), "sum": b"s"}

            written = await store.transaction(["nonce", "sum"], fn)
            assert written == {"nonce": Expiring(b"used", ttl_s=5), "sum": b"s"}
            assert await store.get("nonce") == b"used"
            assert 4 < (await store.ttl_s("nonce") or 0) <= 5  # the new TTL, not the old one
            assert await store.ttl_s("sum") is None
            if self.clock_injectable:
                clock.advance(6)
                assert await store.get("nonce") is None
                assert await store.get("sum") == b"s"

        self.run(scenario())

    def test_a_write_keeping_the_expiry_leaves_each_keys_ttl_as_it_was(self, store, clock):
        async def scenario():
            await store.set("noise", b"sealed-old", ttl_s=100)
            await store.set("secret", b"sealed-old")

            def fn(values):
                return {
                    key: KeepingExpiry(value.replace(b"old", b"new"))
                    for key, value in values.items()
                    if value
                }

            await store.transaction(["noise", "secret"], fn)
            assert await store.get("noise") == b"sealed-new"
            assert await store.get("secret") == b"sealed-new"
            assert 99 < (await store.ttl_s("noise") or 0) <= 100  # the remaining TTL, not none
            assert await store.ttl_s("secret") is None  # no TTL stays none
            if self.clock_injectable:
                clock.advance(101)
                assert await store.get("noise") is None
                assert await store.get("secret") == b"sealed-new"

        self.run(scenario())

    def test_an_expiring_write_needs_a_positive_ttl(self):
        with pytest.raises(ValueError, match="ttl_s must be positive, got 0"):
            Expiring(b"x", ttl_s=0)

    def test_expire_gives_existing_keys_a_ttl(self, store, clock):
        async def scenario():
            await store.set("sum", b"s")
            await store.hset("sums", "edge-1", b"x")
            assert await store.expire(["sum", "sums", "missing"], ttl_s=10) == 2
            assert 9 < (await store.ttl_s("sum") or 0) <= 10
            assert 9 < (await store.ttl_s("sums") or 0) <= 10
            assert await store.ttl_s("missing") is None
            assert await store.get("missing") is None
            if self.clock_injectable:
                clock.advance(11)
                assert await store.get("sum") is None
                assert await store.hgetall("sums") == {}
                assert await store.scan("sum") == []

        self.run(scenario())

    def test_memory_use_grows_with_a_big_value(self, store):
        async def scenario():
            await store.set("small", b"x")
            before = await store.memory_use()
            await store.set("big", bytes(2_000_000))
            after = await store.memory_use()
            assert before.used_bytes > 0
            assert after.used_bytes - before.used_bytes >= 1_900_000
            assert after.max_bytes is None  # neither the memory store nor the test's Redis has a limit

        self.run(scenario())

    def test_hset_if_absent_with_writes_the_field_and_the_keys_together(self, store):
        # The cloud accepts an edge's sum (a hash field) with the claims on its ciphertext digest and its
        # hospitals (plain keys) in one step: two edges racing for one claim, both with a fresh field.
        async def accept(edge, claim):
            def fn(values):
                if values[claim] is not None:
                    raise ValueError(f"{claim} is taken")
                return {claim: edge.encode(), "accepted": (values["accepted"] or b"") + edge.encode()}

            return await store.hset_if_absent_with("sums", edge, b"sum", keys=[claim, "accepted"], fn=fn)

        async def scenario():
            answers = await asyncio.gather(
                *(accept(f"e{i}", "digest") for i in range(8)), return_exceptions=True
            )
            assert [a for a in answers if a is True] == [True]
            assert all(isinstance(a, ValueError) for a in answers if a is not True)
            winner = (await store.get("digest") or b"").decode()
            assert await store.hgetall("sums") == {winner: b"sum"}
            assert await store.get("accepted") == winner.encode()
            # The field exists: nothing written, `fn` not called.
            assert not await store.hset_if_absent_with(
                "sums", winner, b"again", keys=["other"], fn=lambda values: {"other": b"x"}
            )
            assert await store.hget("sums", winner) == b"sum" and await store.get("other") is None

        self.run(scenario())

    def test_fields_transaction_moves_hash_fields_and_keys_together(self, store):
        # The cloud's enrolment: a hospital's record (a field of the roster hash), its token (a field of the
        # tokens hash) and its live-token pointer (a key) in one step. 40 concurrent read-modify-writes from
        # two handles on one state: none lost, and the field and the key end equal. (An attempt's reads are not a
        # snapshot: one that read values another commit changed meanwhile does not commit, and runs again.)
        replica = self.make_replica(store)
        record, token = ("roster", "client-a"), ("tokens", "count")

        async def bump(on, i):
            def fn(fields, keys):
                items = fields[record].split(b",") if fields[record] else []
                count = int(fields[token] or b"0") + 1
                joined = b",".join([*items, str(i).encode()])
                return {record: joined, token: str(count).encode()}, {"pointer": str(count).encode()}

            await on.fields_transaction([record, token], fn, keys=["pointer"])

        async def scenario():
            await asyncio.gather(*(bump(store if i % 2 else replica, i) for i in range(40)))
            items = sorted(int(x) for x in (await store.hget(*record) or b"").split(b","))
            assert items == list(range(40))
            assert await store.hget(*token) == b"40" and await replica.get("pointer") == b"40"

        self.run(scenario())

    def test_fields_transaction_aborts_deletes_and_refuses_what_it_did_not_read(self, store):
        async def scenario():
            await store.hset("roster", "a", b"1")
            await store.hset("roster", "b", b"2")

            def refuse(fields, keys):
                raise ValueError("another public key")

            with pytest.raises(ValueError, match="another public key"):
                await store.fields_transaction([("roster", "a")], refuse, keys=["marker"])
            assert await store.hgetall("roster") == {"a": b"1", "b": b"2"}
            assert await store.get("marker") is None
            await store.fields_transaction(
                [("roster", "a")], lambda fields, keys: ({("roster", "a"): None}, {})
            )
            assert await store.hgetall("roster") == {"b": b"2"}
            with pytest.raises(StoreError, match="did not read"):
                await store.fields_transaction(
                    [("roster", "a")], lambda fields, keys: ({("roster", "b"): b"x"}, {})
                )
            with pytest.raises(StoreError, match="did not read"):
                await store.fields_transaction([("roster", "a")], lambda fields, keys: ({}, {"k": b"x"}))
            assert await store.hgetall("roster") == {"b": b"2"} and await store.get("k") is None

        self.run(scenario())

    def test_values_are_bytes(self, store):
        with pytest.raises(TypeError, match="bytes"):
            self.run(store.set("k", "text"))

    def test_transaction_refuses_non_bytes_values(self, store):
        async def scenario():
            with pytest.raises(TypeError, match="bytes"):
                await store.transaction(["a"], lambda values: {"a": 1})
            assert await store.get("a") is None

        self.run(scenario())

    def test_async_transaction_function(self, store):
        # The edge folds ciphertexts in a thread inside the transaction: `fn` may be a coroutine.
        async def scenario():
            async def fold(values):
                await asyncio.sleep(0)
                return {"sum": (values["sum"] or b"") + b"+"}

            await asyncio.gather(*(store.transaction(["sum"], fold) for _ in range(10)))
            assert await store.get("sum") == b"+" * 10

        self.run(scenario())

    def test_a_cancelled_task_stops(self, store):
        # A service stops by cancelling its loops; a store call must never swallow that cancellation
        # (redis-py can, when the cancel lands while it hands a connection back to its pool).
        async def busy():
            while True:
                await store.get("k")
                await store.set("k", b"v")
                await store.transaction(["k"], lambda values: {"k": b"w"})
                await asyncio.sleep(0)  # an uncontended in-process lock never yields to the loop

        async def scenario():
            rng = random.Random(5)
            survivors = 0
            for _ in range(150):
                task = asyncio.create_task(busy())
                await asyncio.sleep(rng.uniform(0, 0.003))
                task.cancel()
                done, _ = await asyncio.wait({task}, timeout=2)
                if not done:
                    survivors += 1
                    task.cancel()
            assert survivors == 0, f"{survivors} of 150 cancelled tasks kept running"

        self.run(scenario())

    def test_two_replicas_never_lose_an_update(self, store):
        # Two handles on one state (two processes behind one Redis) racing on the same keys.
        replica = self.make_replica(store)

        async def bump(on, i):
            def fn(values):
                items = (values["list"] or b"").split(b",") if values["list"] else []
                return {"list": b",".join([*items, str(i).encode()]), "n": str(len(items) + 1).encode()}

            await on.transaction(["list", "n"], fn)

        async def scenario():
            await asyncio.gather(*(bump(store if i % 2 else replica, i) for i in range(40)))
            items = sorted(int(x) for x in (await store.get("list")).split(b","))
            assert items == list(range(40))
            assert await replica.get("n") == b"40"
            assert await replica.set_if_absent("once", b"a")
            assert not await store.set_if_absent("once", b"b")

        self.run(scenario())


class TestMemoryStore(StoreContract):
    def make_store(self, clock):
        return MemoryStore(clock=clock.seconds)

    def make_replica(self, store):
        return store  # one process: the replica is the same object


class TestRedisStore(StoreContract):
    clock_injectable = False

    @pytest.fixture(autouse=True)
    def _server(self, redis_url):
        self.url = redis_url
        self.opened: list[RedisStore] = []

    def make_store(self, clock):
        store = RedisStore(self.url)
        self.opened.append(store)
        return store

    def make_replica(self, store):
        return self.make_store(None)

    def run(self, coro):
        # Redis connections belong to the event loop that opened them: close them in the same loop.
        async def scenario():
            try:
                return await coro
            finally:
                for store in self.opened:
                    await store.close()

        return asyncio.run(scenario())

    def test_hset_if_absent_with_retries_after_a_write_to_the_hash(self, store):
        # A second process writing to the hash while `fn` computes (one process cannot: the memory store's
        # lock holds it off).
        replica = self.make_replica(store)

        async def scenario():
            calls = []

            async def fn(values):
                calls.append(values["n"])
                if len(calls) == 1:  # another writer (a second process) adds to the hash meanwhile
                    await replica.hset("sums", "other", b"x")
                return {"n": b"1"}

            assert await store.hset_if_absent_with("sums", "mine", b"y", keys=["n"], fn=fn)
            assert await store.hgetall("sums") == {"other": b"x", "mine": b"y"}
            assert await store.get("n") == b"1" and len(calls) == 2  # recomputed once, after the write

        self.run(scenario())

    def test_a_transaction_sets_the_ttl_in_its_own_exec(self, store):
        # PTTL read by a second client right after EXEC: no window in which the key lives without its TTL.
        async def scenario():
            raw = aioredis.Redis.from_url(self.url)
            try:
                await store.transaction(["nonce"], lambda values: {"nonce": Expiring(b"1", ttl_s=60)})
                assert 59_000 < await raw.pttl("nonce") <= 60_000
            finally:
                await raw.aclose()

    def test_time_is_the_server_clock(self, store):
        # The test's redis-server runs on this machine: its clock is this process's, to the scheduling noise.
        async def scenario():
            before = datetime.now(UTC)
            read = await store.time()
            after = datetime.now(UTC)
            assert before - timedelta(seconds=1) <= read <= after + timedelta(seconds=1)

        self.run(scenario())

    def test_ttl_expires_in_real_time(self, store):
        async def scenario():
            await store.set("short", b"x", ttl_s=0.2)
            assert await store.set_if_absent("nonce", b"1", ttl_s=0.2)
            assert not await store.set_if_absent("nonce", b"2", ttl_s=0.2)
            await store.set("forever", b"y")
            deadline = time.monotonic() + 5
            while await store.get("short") is not None:
                assert time.monotonic() < deadline, "a 0.2 s TTL did not expire within 5 s"
                await asyncio.sleep(0.05)
            assert await store.set_if_absent("nonce", b"2", ttl_s=10)
            assert await store.get("forever") == b"y"

        self.run(scenario())

    def test_expire_if_equals_in_real_time(self, store):
        async def scenario():
            assert await store.set_if_absent("lease", b"token-a", ttl_s=0.2)
            assert await store.expire_if_equals("lease", b"token-a", ttl_s=60)
            assert await store.set_if_absent("other", b"token-a", ttl_s=0.2)
            assert not await store.expire_if_equals("other", b"token-b", ttl_s=60)
            deadline = time.monotonic() + 5
            while await store.get("other") is not None:
                assert time.monotonic() < deadline, "a 0.2 s TTL did not expire within 5 s"
                await asyncio.sleep(0.05)
            assert await store.get("lease") == b"token-a"  # renewed to 60 s: still there

        self.run(scenario())

    def test_compare_and_delete_works_when_redis_is_full(self, store, redis_server):
        # `maxmemory` reached with `noeviction` refuses every write that adds data; a lease's holder must
        # still release (and renew) it, or the round waits out the whole TTL.
        client = redis_client(redis_server.port)

        policy = client.config_get("maxmemory-policy")["maxmemory-policy"]

        async def scenario():
            assert await store.set_if_absent("lease", b"token-a", ttl_s=60)
            client.config_set("maxmemory-policy", "noeviction")
            client.config_set("maxmemory", 1)
            try:
                with pytest.raises(StoreError, match="maxmemory"):
                    await store.set("more", b"x")
                assert await store.expire_if_equals("lease", b"token-a", ttl_s=60)
                assert await store.delete_if_equals("lease", b"token-a")
            finally:
                client.config_set("maxmemory", 0)
                client.config_set("maxmemory-policy", policy)
            assert await store.get("lease") is None

        try:
            self.run(scenario())
        finally:
            client.close()

    def test_scan_treats_glob_characters_literally(self, store):
        async def scenario():
            for key in ("a*b:1", "a*b:2", "axb:1", "a?b:1"):
                await store.set(key, b"")
            assert await store.scan("a*b:") == ["a*b:1", "a*b:2"]

        self.run(scenario())

    def test_unreachable_server_is_a_store_error(self):
        from fedlora.launcher import free_port

        async def scenario():
            store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", reconnect_attempts=1)
            try:
                assert not await store.ping()
                with pytest.raises(StoreError, match="unreachable"):
                    await store.get("k")
            finally:
                await store.close()

        asyncio.run(scenario())


class TestRedisStoreAsTheCloudsUser(TestRedisStore):
    """The contract as the cloud runs it: logged in as an ACL user granted exactly `REDIS_COMMANDS`, as
    `fedlora.store_users` writes it. A command a `RedisStore` method sends without a grant fails here (the
    cloud's close once read stored sums with HKEYS, which no user was granted: every demo round failed)."""

    @pytest.fixture(autouse=True)
    def _server(self, redis_url, redis_server):
        self.password = secrets.token_urlsafe(16)
        user = StoreUser("contract-cloud", self.password, Path("unused"), ("*",), REDIS_COMMANDS)
        admin = redis_client(redis_server.port)
        try:
            admin.execute_command("ACL", "SETUSER", *user.acl_line().split()[1:])
        finally:
            admin.close()
        self.url = f"redis://contract-cloud:{self.password}@127.0.0.1:{redis_server.port}/0"
        self.opened: list[RedisStore] = []

    def test_a_command_outside_the_grant_is_refused(self, store):
        async def scenario():
            with pytest.raises(aioredis.ResponseError, match="no permissions"):
                await store._redis.execute_command("FLUSHALL")

        self.run(scenario())


class TestRedisStoreOverTLS(StoreContract):
    """The contract on a Redis that serves TLS only (`rediss://`, the server's certificate and host name
    verified against the federation's CA, the service's client certificate shown), opened as a service opens
    its store."""

    clock_injectable = False

    @pytest.fixture(autouse=True)
    def _server(self, tls_redis):
        server, files = tls_redis
        server.flush()
        self.url, self.tls = server.url, files.service
        self.opened: list[StateStore] = []

    def make_store(self, clock):
        store = open_store(self.url, tls=self.tls)
        self.opened.append(store)
        return store

    def make_replica(self, store):
        return self.make_store(None)

    run = TestRedisStore.run


def test_open_store_by_url():
    assert isinstance(open_store("memory://"), MemoryStore)
    assert isinstance(open_store("redis://127.0.0.1:6390/2"), RedisStore)
    assert isinstance(open_store("rediss://127.0.0.1:6390/2"), RedisStore)
    with pytest.raises(StoreError, match="memory://, redis://"):
        open_store("postgres://db")


def test_redacted_url_hides_the_password():
    assert redacted_url("redis://:s3cret@cache:6379/0") == "redis://:***@cache:6379/0"
    assert redacted_url("redis://ops:s3cret@cache/1") == "redis://ops:***@cache/1"
    assert redacted_url("redis://cache:6379/0") == "redis://cache:6379/0"
    # redis-py also logs in with the URL's query parameters
    assert redacted_url("redis://cache/0?password=s3cret&db=1") == "redis://cache/0?password=***&db=1"
    assert redacted_url("rediss://:a@cache/0?username=ops&Password=b") == (
        "rediss://:***@cache/0?username=***&Password=***"
    )
    assert "s3cret" not in RedisStore("redis://:s3cret@cache:6379/0").describe()
