"""The read-through cache every call's tenant and token check goes through."""

from __future__ import annotations

import asyncio

import pytest

from srcore.api.access import ReadThroughCache


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Store:
    """A store read that counts its calls and can be held open."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {"acme": "active"}
        self.reads = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def read(self, key: str) -> str:
        # Like a query: it answers what the store held when it ran.
        self.reads += 1
        value = self.values[key]
        await self.gate.wait()
        return value


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def held_read(store: Store, cache: ReadThroughCache[str, str]) -> asyncio.Task[str]:
    """A read of "acme" that has reached the store and is held there."""
    store.gate.clear()
    read = asyncio.create_task(cache.get("acme"))
    await settle()
    return read


async def test_concurrent_misses_share_one_store_read(clock: Clock) -> None:
    store = Store()
    store.gate.clear()
    cache = ReadThroughCache(5.0, store.read, clock=clock)
    calls = [asyncio.create_task(cache.get("acme")) for _ in range(200)]
    await settle()
    store.gate.set()
    assert await asyncio.gather(*calls) == ["active"] * 200
    assert store.reads == 1


async def test_an_expired_entry_answers_at_once_while_one_read_refreshes_it(clock: Clock) -> None:
    store = Store()
    cache = ReadThroughCache(5.0, store.read, clock=clock)
    assert await cache.get("acme") == "active"
    store.values["acme"] = "suspended"
    store.gate.clear()
    clock.now += 6
    # Past the TTL: callers are not held by the store (the gate is closed) and send it one read.
    assert [await cache.get("acme") for _ in range(100)] == ["active"] * 100
    await settle()
    assert store.reads == 2
    store.gate.set()
    await settle()
    assert await cache.get("acme") == "suspended"
    assert store.reads == 2


async def test_an_entry_older_than_twice_the_ttl_waits_for_the_store(clock: Clock) -> None:
    store = Store()
    cache = ReadThroughCache(5.0, store.read, clock=clock)
    await cache.get("acme")
    store.values["acme"] = "suspended"
    clock.now += 10
    assert await cache.get("acme") == "suspended"


async def test_a_forgotten_key_is_read_again_and_a_read_begun_before_is_not_stored(clock: Clock) -> None:
    store = Store()
    cache = ReadThroughCache(5.0, store.read, clock=clock)
    before = await held_read(store, cache)
    # The change lands while that read is in flight; the replica that made it forgets the key.
    store.values["acme"] = "suspended"
    cache.forget("acme")
    store.gate.set()
    assert await before == "active"  # its own callers asked before the change
    assert await cache.get("acme") == "suspended"
    assert store.reads == 2


async def test_forgetting_one_key_does_not_freeze_another_keys_read(clock: Clock) -> None:
    store = Store()
    store.values["other"] = "active"
    cache = ReadThroughCache(5.0, store.read, clock=clock)
    pending = await held_read(store, cache)
    cache.forget("other")
    store.gate.set()
    assert await pending == "active"
    store.values["acme"] = "suspended"
    assert await cache.get("acme") == "suspended"
    store.values["acme"] = "deleted"
    clock.now += 10
    assert await cache.get("acme") == "deleted"


async def test_a_failed_read_reaches_its_callers_and_is_not_cached(clock: Clock) -> None:
    store = Store()
    cache = ReadThroughCache(5.0, store.read, clock=clock)
    with pytest.raises(KeyError):
        await cache.get("nobody")
    store.values["nobody"] = "active"
    assert await cache.get("nobody") == "active"
