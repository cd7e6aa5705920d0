"""Behaviour only the etcd adapter has: several replicas, failover, batching, etcd outages."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import time

import aetcd
import pytest

from srcore.coord.etcd import EtcdCoordinator
from srcore.domain.coordination import LeaderInfo, RegistryEntry
from srcore.domain.errors import Unavailable
from tests import services
from tests.coord.support import (
    TEST_LEASE_TTL,
    Coordinators,
    EtcdProcess,
    ReplicaProcess,
    replica,
)
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.etcd

TTL = TEST_LEASE_TTL
# Liveness bounds: generous, and still shorter than "never".
FAILOVER_BOUND = TTL + 5


def entry(poller_id: str, session_id: str = "s1", partition: str = "dc1") -> RegistryEntry:
    """A registry entry of tenant acme."""
    return RegistryEntry("acme", partition, poller_id, session_id, "a", ("snmp",), 1.0)


def leaders(*coordinators: EtcdCoordinator) -> list[EtcdCoordinator]:
    """The coordinators that claim leadership now."""
    return [c for c in coordinators if c.is_leader()]


async def campaign_lease(endpoint: str, prefix: str, replica_id: str) -> int:
    """The lease behind `replica_id`'s campaign key, read straight from etcd."""
    host, _, port = endpoint.partition(":")
    client = aetcd.Client(host, int(port), timeout=3)
    try:
        for kv in await client.get_prefix(f"{prefix}election/leader/".encode()):
            if replica_id.encode() in kv.value:
                return int(kv.lease)
    finally:
        await client.close()
    raise AssertionError(f"no campaign key of {replica_id}")


async def revoke(endpoint: str, lease: int) -> None:
    """Revoke a lease behind the adapter's back, as an operator or a lease bug would."""
    host, _, port = endpoint.partition(":")
    client = aetcd.Client(host, int(port), timeout=3)
    try:
        await client.revoke_lease(lease)
    finally:
        await client.close()


async def test_two_replicas_have_exactly_one_leader_and_hand_over_at_once(
    etcd_coordinators: Coordinators,
) -> None:
    # A long lease: a takeover well inside it can only come from resigning.
    ttl = 8.0
    a = await etcd_coordinators.started_etcd("a", lease_ttl=ttl)
    b = await etcd_coordinators.started_etcd("b", lease_ttl=ttl)

    assert await eventually(lambda: leaders(a, b) == [a], 5)
    first = a.leader()
    assert first is not None
    assert await eventually(lambda: b.leader() == first, 5), "b observes a as leader"
    assert not b.is_leader()

    await a.close()

    assert await eventually(b.is_leader, ttl / 2), "b takes over without waiting for a's lease"
    second = b.leader()
    assert second is not None
    assert second.leader_id == "b"
    assert second.fencing_token > first.fencing_token


async def test_a_revoked_leader_lease_hands_over_and_the_old_leader_steps_down(
    etcd_coordinators: Coordinators,
) -> None:
    a = await etcd_coordinators.started_etcd("a")
    b = await etcd_coordinators.started_etcd("b")
    assert await eventually(lambda: leaders(a, b) == [a], 5)
    first = a.leader()
    assert first is not None

    endpoint = etcd_coordinators.endpoints[0]
    await revoke(endpoint, await campaign_lease(endpoint, etcd_coordinators.prefix, "a"))

    assert await eventually(b.is_leader, TTL + 1), "b leads once a's lease is gone"
    second = b.leader()
    assert second is not None
    assert second.fencing_token > first.fencing_token
    assert await eventually(lambda: leaders(a, b) == [b] and a.leader() == second, 5)
    # a campaigns again with a new lease, so it is a replica again, not a ghost.
    assert await eventually(lambda: _replicas_are(a, ["a", "b"]), 5), (
        "a's replica key comes back under its new lease"
    )


async def _replicas_are(coordinator: EtcdCoordinator, replica_ids: list[str]) -> bool:
    return [r.replica_id for r in await coordinator.replicas()] == replica_ids


async def test_an_entry_put_through_one_replica_is_in_the_others_memory(
    etcd_coordinators: Coordinators,
) -> None:
    a = await etcd_coordinators.started_etcd("a")
    b = await etcd_coordinators.started_etcd("b")

    await a.registry.put(entry("p1"), ttl=30)

    assert await eventually(lambda: _has(b, "p1"), 5)
    calls = b.counters.unary_calls
    assert await b.registry.touch("acme", "p1", "s1") == entry("p1")
    assert await b.registry.list(tenant="acme") == [entry("p1")]
    assert b.counters.unary_calls == calls, "reads and touches are served from memory"

    await b.registry.remove("acme", "p1")
    assert await eventually(lambda: _has(a, "p1", present=False), 5)


async def _has(coordinator: EtcdCoordinator, poller_id: str, present: bool = True) -> bool:
    found = await coordinator.registry.get("acme", poller_id) is not None
    return found == present


async def test_touches_are_batched_into_few_lease_refreshes(
    etcd_coordinators: Coordinators,
) -> None:
    a = await etcd_coordinators.started_etcd("a", refresh_interval=0.5)
    pollers = [f"p{i}" for i in range(50)]
    ttl = 2.0
    for poller in pollers:
        await a.registry.put(entry(poller), ttl=ttl)
    before = dataclasses.replace(a.counters)

    # 2,000 touches a second for twice the pollers' TTL, round robin over the 50 pollers.
    rate, seconds = 2_000, 2 * ttl + 1
    loop = asyncio.get_running_loop()
    start = loop.time()
    touched = 0
    while (elapsed := loop.time() - start) < seconds:
        while touched < int(elapsed * rate):
            poller = pollers[touched % len(pollers)]
            assert await a.registry.touch("acme", poller, "s1") is not None, f"{poller} expired"
            touched += 1
        await asyncio.sleep(0.005)

    after = a.counters
    touches = after.touches - before.touches
    refreshes = after.lease_refreshes - before.lease_refreshes
    assert touches >= rate * seconds * 0.95
    assert refreshes <= touches / 10, f"{refreshes} lease refreshes for {touches} touches"
    assert refreshes >= len(pollers), "every touched poller's lease was refreshed"
    assert after.unary_calls == before.unary_calls, "touches make no request/response calls"
    # One long-lived stream for the poller leases (and one for the replica's own lease).
    assert after.keepalive_streams - before.keepalive_streams <= 2
    # The pollers outlived their TTL only because the batched refreshes reached etcd.
    assert len(await a.registry.list()) == len(pollers)


async def test_a_killed_leader_process_is_replaced_within_its_ttl(
    etcd_coordinators: Coordinators,
) -> None:
    child = ReplicaProcess(etcd_coordinators.endpoints, etcd_coordinators.prefix, "child", TTL)
    await child.start()
    try:
        assert await eventually(child.leading, 5)
        b = await etcd_coordinators.started_etcd("b")
        assert await eventually(lambda: (b.leader() or _nobody).leader_id == "child", 5)

        child.signal(signal.SIGKILL)

        assert await eventually(b.is_leader, FAILOVER_BOUND)
    finally:
        await child.kill()


async def test_a_terminated_leader_process_resigns_at_once(
    etcd_coordinators: Coordinators,
) -> None:
    ttl = 8.0
    child = ReplicaProcess(etcd_coordinators.endpoints, etcd_coordinators.prefix, "child", ttl)
    await child.start()
    try:
        assert await eventually(child.leading, 5)
        b = await etcd_coordinators.started_etcd("b", lease_ttl=ttl)
        assert await eventually(lambda: (b.leader() or _nobody).leader_id == "child", 5)

        child.signal(signal.SIGTERM)

        assert await eventually(b.is_leader, ttl / 2), "handover without waiting for the TTL"
        assert await child.wait(10) == 0
        assert child.lines[-1] == {"event": "closed"}
    finally:
        await child.kill()


async def test_a_paused_leader_steps_down_before_its_lease_runs_out(
    etcd_coordinators: Coordinators,
) -> None:
    child = ReplicaProcess(etcd_coordinators.endpoints, etcd_coordinators.prefix, "child", TTL)
    await child.start()
    try:
        assert await eventually(child.leading, 5)
        old_token = child.claims()[-1]["token"]
        b = await etcd_coordinators.started_etcd("b")
        assert await eventually(lambda: (b.leader() or _nobody).leader_id == "child", 5)

        child.signal(signal.SIGSTOP)
        assert await eventually(b.is_leader, FAILOVER_BOUND), "a new leader while it sleeps"
        new = b.leader()
        assert new is not None
        assert new.fencing_token > old_token
        resumed_at = time.monotonic()
        child.signal(signal.SIGCONT)

        assert await eventually(lambda: any(c["t"] >= resumed_at for c in child.claims()), 5)
        after = [c for c in child.claims() if c["t"] >= resumed_at]
        assert not any(c["leader"] for c in after), f"claimed leadership after waking: {after}"
        # It stays a follower: b keeps leading, alone.
        await asyncio.sleep(1)
        assert not child.leading()
        assert b.is_leader()
        assert b.leader() == new
    finally:
        await child.kill()


_nobody = LeaderInfo("", 0)


async def test_an_etcd_outage_stops_leadership_but_not_reads_or_heartbeats(
    private_etcd: EtcdProcess, key_prefix: str
) -> None:
    made = Coordinators("etcd", [private_etcd.endpoint], key_prefix)
    try:
        a = await made.started_etcd("a", op_timeout=1.0)
        b = await made.started_etcd("b", op_timeout=1.0)
        assert await eventually(lambda: len(leaders(a, b)) == 1, 5)
        await a.registry.put(entry("p1"), ttl=30)
        assert await eventually(lambda: _has(b, "p1"), 5)

        private_etcd.pause()

        assert await eventually(lambda: leaders(a, b) == [], TTL), "nobody leads blind"
        assert not await asyncio.wait_for(b.healthy(), 5)
        for coordinator in (a, b):
            # Registry reads and heartbeats are served from memory, at once.
            assert await asyncio.wait_for(coordinator.registry.get("acme", "p1"), 0.5) == entry("p1")
            assert await asyncio.wait_for(coordinator.registry.touch("acme", "p1", "s1"), 0.5) == entry("p1")
        with pytest.raises(Unavailable):
            await asyncio.wait_for(a.registry.put(entry("p2"), ttl=30), 10)
        # Stay down past the replica lease TTL: nobody may claim leadership meanwhile.
        loop = asyncio.get_running_loop()
        until = loop.time() + TTL
        while loop.time() < until:
            assert leaders(a, b) == []
            await asyncio.sleep(0.05)

        private_etcd.resume()

        assert await eventually(lambda: len(leaders(a, b)) == 1, FAILOVER_BOUND)
        leader = leaders(a, b)[0].leader()
        assert await eventually(lambda: a.leader() == b.leader() == leader, 5)
        for _ in range(20):
            assert len(leaders(a, b)) == 1
            await asyncio.sleep(0.05)
        assert await a.healthy()
        assert await b.registry.get("acme", "p1") == entry("p1")
    finally:
        await made.close_all()


async def test_a_wiped_etcd_is_listed_again_and_campaigned_on(
    private_etcd: EtcdProcess, key_prefix: str
) -> None:
    made = Coordinators("etcd", [private_etcd.endpoint], key_prefix)
    try:
        a = await made.started_etcd("a", op_timeout=1.0)
        assert await eventually(a.is_leader, 5)
        # Revisions well ahead of where the new cluster will count.
        for i in range(50):
            await a.registry.put(entry(f"p{i}"), ttl=30)
        resyncs = a.counters.resyncs

        await private_etcd.restart(fresh=True)

        assert await eventually(lambda: _has(a, "p1", present=False), FAILOVER_BOUND), (
            "the copy follows the new, empty cluster"
        )
        assert a.counters.resyncs > resyncs
        assert await eventually(a.is_leader, FAILOVER_BOUND), "it campaigns on the new cluster"
        leadership = a.leader()
        assert leadership is not None
        # Fencing tokens count from 1 again on a new cluster. A copy stuck at the old
        # revision would see its fresh campaign key as gone and campaign over and over.
        assert leadership.fencing_token < 50
        assert [r.replica_id for r in await a.replicas()] == ["a"]
        # Its copy follows the new cluster's revisions: a newcomer's write shows up in it.
        b = await made.started_etcd("b", op_timeout=1.0)
        await b.registry.put(entry("new"), ttl=30)
        assert await eventually(lambda: _has(a, "new"), 5)
        assert await eventually(lambda: b.leader() == a.leader(), 5)
    finally:
        await made.close_all()


async def test_an_unreachable_endpoint_is_skipped_for_the_next_one(
    etcd_endpoints: list[str], key_prefix: str
) -> None:
    dead = f"127.0.0.1:{services.free_port()}"
    made = Coordinators("etcd", [dead, *etcd_endpoints], key_prefix)
    try:
        a = await made.started_etcd("a")
        assert await eventually(a.is_leader, 5)
        await a.registry.put(entry("p1"), ttl=30)
        assert await a.registry.get("acme", "p1") == entry("p1")
        assert await a.healthy()
    finally:
        await made.close_all()


async def test_start_fails_fast_when_etcd_is_unreachable(key_prefix: str) -> None:
    coordinator = EtcdCoordinator([f"127.0.0.1:{services.free_port()}"], key_prefix, op_timeout=1.0)
    try:
        assert not await asyncio.wait_for(coordinator.healthy(), 5)
        with pytest.raises(Unavailable):
            await asyncio.wait_for(coordinator.start(replica("a")), 10)
        assert not coordinator.is_leader()
        assert coordinator.leader() is None
    finally:
        await coordinator.close()
