"""The coordination contract: every test runs against the in-process and the etcd adapter."""

from __future__ import annotations

import asyncio

from srcore.domain.coordination import (
    LeaderInfo,
    PollerRegistry,
    RegistryChange,
    RegistryEntry,
    RegistryEvent,
)
from tests.coord.support import Coordinators, replica
from tests.helpers.waiting import eventually

# etcd leases have whole-second TTLs of at least 2 s and are expired by etcd's lessor every
# 0.5 s; these bounds are liveness bounds, far above what either adapter needs.
EXPIRY_SLACK = 5.0


def entry(
    poller_id: str,
    tenant: str = "acme",
    partition: str = "dc1",
    session_id: str = "s1",
    capabilities: tuple[str, ...] = ("snmp",),
) -> RegistryEntry:
    """A registry entry registered through replica r1."""
    return RegistryEntry(tenant, partition, poller_id, session_id, "r1", capabilities, 1_700_000_000.0)


async def test_put_then_get_returns_the_entry(coordinators: Coordinators) -> None:
    registry = (await coordinators.started("r1")).registry
    await registry.put(entry("p1"), ttl=30)

    assert await registry.get("acme", "p1") == entry("p1")
    assert await registry.get("acme", "unknown") is None
    assert await registry.get("other-tenant", "p1") is None


async def test_touch_answers_only_the_live_session(coordinators: Coordinators) -> None:
    registry = (await coordinators.started("r1")).registry
    await registry.put(entry("p1", session_id="first"), ttl=30)

    assert await registry.touch("acme", "p1", "first") == entry("p1", session_id="first")
    assert await registry.touch("acme", "p1", "someone-else") is None
    assert await registry.touch("acme", "nobody", "first") is None
    assert await registry.touch("other-tenant", "p1", "first") is None


async def test_put_again_replaces_the_session(coordinators: Coordinators) -> None:
    registry = (await coordinators.started("r1")).registry
    await registry.put(entry("p1", session_id="first"), ttl=30)
    await registry.put(entry("p1", session_id="second"), ttl=30)

    assert await registry.touch("acme", "p1", "first") is None
    assert await registry.touch("acme", "p1", "second") == entry("p1", session_id="second")
    assert await registry.list() == [entry("p1", session_id="second")]


async def test_list_filters_by_tenant_and_partition_in_order(coordinators: Coordinators) -> None:
    registry = (await coordinators.started("r1")).registry
    entries = [
        entry("p3", tenant="acme", partition="dc2"),
        entry("p1", tenant="acme", partition="dc1"),
        entry("p2", tenant="acme", partition="dc1"),
        entry("p1", tenant="beta", partition="dc1"),
        entry("p9", tenant="acme-eu", partition="dc1"),
    ]
    for e in entries:
        await registry.put(e, ttl=30)

    ordered = sorted(entries, key=lambda e: (e.tenant, e.partition, e.poller_id))
    assert await registry.list() == ordered
    assert await registry.list(tenant="acme") == [entries[1], entries[2], entries[0]]
    assert await registry.list(tenant="acme", partition="dc1") == [entries[1], entries[2]]
    assert await registry.list(partition="dc1") == [e for e in ordered if e.partition == "dc1"]
    assert await registry.list(tenant="nobody") == []


async def test_registering_in_another_partition_moves_the_entry(coordinators: Coordinators) -> None:
    registry = (await coordinators.started("r1")).registry
    await registry.put(entry("p1", partition="dc1", session_id="first"), ttl=30)
    await registry.put(entry("p1", partition="dc2", session_id="second"), ttl=30)

    assert await registry.list(partition="dc1") == []
    assert await registry.list(partition="dc2") == [entry("p1", partition="dc2", session_id="second")]
    assert await registry.get("acme", "p1") == entry("p1", partition="dc2", session_id="second")


async def test_remove_deletes_the_entry(coordinators: Coordinators) -> None:
    registry = (await coordinators.started("r1")).registry
    await registry.put(entry("p1"), ttl=30)
    await registry.put(entry("p2"), ttl=30)

    await registry.remove("acme", "p1")
    await registry.remove("acme", "never-registered")

    assert await registry.get("acme", "p1") is None
    assert await registry.touch("acme", "p1", "s1") is None
    assert await registry.list() == [entry("p2")]


async def test_entry_expires_without_touches(coordinators: Coordinators) -> None:
    registry = (await coordinators.started("r1")).registry
    await registry.put(entry("p1"), ttl=1)
    await registry.put(entry("p2"), ttl=60)

    assert await registry.get("acme", "p1") == entry("p1")

    assert await eventually(lambda: gone(registry, "p1"), 1 + EXPIRY_SLACK), (
        "an entry nobody touches must expire"
    )
    assert await registry.touch("acme", "p1", "s1") is None
    assert await registry.list() == [entry("p2")]


async def gone(registry: PollerRegistry, poller_id: str, tenant: str = "acme") -> bool:
    """Whether the registry no longer has the poller."""
    return await registry.get(tenant, poller_id) is None


async def test_touches_keep_an_entry_alive_past_its_ttl(coordinators: Coordinators) -> None:
    registry = (await coordinators.started("r1")).registry
    ttl = 2.0
    await registry.put(entry("p1"), ttl=ttl)

    loop = asyncio.get_running_loop()
    until = loop.time() + 3 * ttl
    while loop.time() < until:
        assert await registry.touch("acme", "p1", "s1") == entry("p1"), "expired while touched"
        await asyncio.sleep(0.2)

    assert await eventually(lambda: gone(registry, "p1"), ttl + EXPIRY_SLACK), (
        "once touches stop, the entry must expire"
    )


async def test_changes_report_puts_removals_and_expiries(coordinators: Coordinators) -> None:
    registry = (await coordinators.started("r1")).registry
    changes = registry.changes()
    seen: list[RegistryEvent] = []

    async def collect() -> None:
        async for event in changes:
            seen.append(event)

    collector = asyncio.get_running_loop().create_task(collect())
    await registry.put(entry("p1"), ttl=30)
    await registry.put(entry("p2"), ttl=1)
    await registry.remove("acme", "p1")
    expected = [
        RegistryEvent(RegistryChange.UPSERTED, entry("p1")),
        RegistryEvent(RegistryChange.UPSERTED, entry("p2")),
        RegistryEvent(RegistryChange.DELETED, entry("p1")),
        RegistryEvent(RegistryChange.DELETED, entry("p2")),
    ]
    try:
        assert await eventually(lambda: len(seen) >= 4, 1 + EXPIRY_SLACK), seen
        assert seen == expected
    finally:
        changes.close()
        await asyncio.wait_for(collector, 5)


async def test_replicas_lists_this_replica(coordinators: Coordinators) -> None:
    coordinator = await coordinators.started("r1")

    replicas = await coordinator.replicas()

    assert [r.replica_id for r in replicas] == ["r1"]
    assert replicas[0].address == replica("r1").address


async def test_a_single_replica_leads_with_a_positive_fencing_token(
    coordinators: Coordinators,
) -> None:
    coordinator = coordinators.new()
    told: list[LeaderInfo | None] = []

    async def remember(info: LeaderInfo | None) -> None:
        told.append(info)

    coordinator.on_leadership_change(remember)
    await coordinator.start(replica("r1"))

    assert await eventually(coordinator.is_leader, 5)
    leader = coordinator.leader()
    assert leader is not None
    assert leader.leader_id == "r1"
    assert leader.fencing_token > 0
    assert await eventually(lambda: told == [leader], 5), told


async def test_a_callback_added_while_leading_is_told_at_once(coordinators: Coordinators) -> None:
    coordinator = await coordinators.started("r1")
    assert await eventually(coordinator.is_leader, 5)
    told: list[LeaderInfo | None] = []

    async def remember(info: LeaderInfo | None) -> None:
        told.append(info)

    coordinator.on_leadership_change(remember)

    assert await eventually(lambda: told == [coordinator.leader()], 5), told


async def test_close_resigns_and_tells_the_callbacks(coordinators: Coordinators) -> None:
    coordinator = coordinators.new()
    told: list[LeaderInfo | None] = []

    async def remember(info: LeaderInfo | None) -> None:
        told.append(info)

    coordinator.on_leadership_change(remember)
    await coordinator.start(replica("r1"))
    assert await eventually(lambda: len(told) == 1, 5)
    leadership = told[0]
    assert leadership is not None

    await coordinator.close()

    assert not coordinator.is_leader()
    assert coordinator.leader() is None
    assert told == [leadership, None], "close() returns after the callbacks heard of the loss"


async def test_the_backend_is_healthy(coordinators: Coordinators) -> None:
    coordinator = await coordinators.started("r1")

    assert await coordinator.healthy()
    assert coordinator.backend == coordinators.backend
