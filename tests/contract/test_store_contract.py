"""The StateStore contract: every implementation runs this class (MemoryStore here; Redis with issue 5)."""

import asyncio

import pytest

from services.store import MemoryStore, StateStore, StoreError


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class StoreContract:
    """Subclasses provide `make_store(clock)`; TTL tests that need a clock skip where it cannot be injected."""

    def make_store(self, clock: FakeClock) -> StateStore:
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

    def test_ttl_expires(self, store, clock):
        async def scenario():
            await store.set("short", b"x", ttl_s=10)
            await store.set_if_absent("nonce", b"1", ttl_s=5)
            clock.now += 6
            assert await store.get("short") == b"x"
            assert await store.set_if_absent("nonce", b"2", ttl_s=5)  # expired, so writable again
            clock.now += 5
            assert await store.get("short") is None

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

    def test_values_are_bytes(self, store):
        with pytest.raises(TypeError, match="bytes"):
            self.run(store.set("k", "text"))


class TestMemoryStore(StoreContract):
    def make_store(self, clock):
        return MemoryStore(clock=clock)
