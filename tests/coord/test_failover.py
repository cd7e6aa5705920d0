"""Failover of whole replicas: three `srcore serve` processes on one etcd and one PostgreSQL
database. The leader is killed, terminated, paused past its lease; etcd itself is stopped.
Leadership, the leader jobs (seen through the fence row they claim) and pollers' liveness
are observed through the real RPCs and the store. What is asserted is succession and its
order (fencing tokens rise, a terminated leader hands over while it still runs), never how
fast: bench/failover.py measures that."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import psycopg
import pytest

from serviceradar.admin.v1 import poller_service_pb2 as poller_pb
from serviceradar.edge.v1 import edge_service_pb2_grpc as edge_grpc
from serviceradar.edge.v1 import results_pb2 as rpb
from tests.coord.cluster import TTL, Cluster, Poller, Replica, libpq, poller_state
from tests.coord.support import EtcdProcess
from tests.helpers.results import RawStream, new_batch_id, open_sweep, push_chunks, sweep_chunk
from tests.helpers.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.etcd, pytest.mark.postgres]

# A drain that only an in-flight call can end: the grace period outlasts every wait of the
# tests, so a terminated replica exits only once its calls have finished.
HELD_DRAIN = {"SRCORE_GRACE_PERIOD": "300"}


async def _cluster(tmp_path: Path, endpoints: list[str], database_url: str) -> AsyncIterator[Cluster]:
    cluster = Cluster(tmp_path, endpoints, database_url)
    try:
        yield cluster
    finally:
        await cluster.stop()


@pytest.fixture
async def cluster(tmp_path: Path, etcd_endpoints: list[str], fresh_database: str) -> AsyncIterator[Cluster]:
    """Replicas on the shared etcd, under a prefix of this test's own."""
    async for made in _cluster(tmp_path, etcd_endpoints, fresh_database):
        yield made


async def test_a_killed_leader_is_replaced_and_a_terminated_one_hands_over_before_its_lease_ends(
    cluster: Cluster,
) -> None:
    """A killed leader is succeeded under a greater fencing token, and the successor runs the
    liveness monitor. A terminated leader resigns before it drains: the next replica is fenced
    in while the old one still runs, serving a call it had in flight, and it then exits
    cleanly."""
    replicas = await cluster.start("r1", "r2", "r3", env=HELD_DRAIN)
    first = await cluster.leader()
    first_token = (await first.status()).fencing_token
    followers = [r for r in replicas if r is not first]
    # A poller served by a follower falls silent as the leader dies.
    poller = Poller(cluster, followers[0], "edge-1")
    async with poller.channel:
        await poller.register()
        await poller.beats(1.0)

        first.signal(signal.SIGKILL)
        second = await cluster.leader(followers, timeout=TTL + 10)
        # A greater token is what lets the fence refuse anything the killed leader still had
        # in flight.
        token = (await second.status()).fencing_token
        assert token > first_token

        # The new leader runs the liveness monitor: the silent poller goes offline under its token.
        assert await eventually(lambda: went(cluster, "edge-1", "offline"), 10)
        history = await cluster.transitions("edge-1")
        assert history[-1][1] == "offline" and history[-1][2:] == (second.name, token)

        # Back, through another replica: recovering, then healthy after a clean heartbeat.
        returned = Poller(cluster, followers[1], "edge-1")
        async with returned.channel:
            await returned.register()
            await returned.beats(1.0)
        assert await poller_state(followers[0], "edge-1") == poller_pb.POLLER_STATE_HEALTHY
        assert [t[:2] for t in (await cluster.transitions("edge-1"))[-2:]] == [
            ("offline", "recovering"),
            ("recovering", "healthy"),
        ]

    # SIGTERM while a ReportResults call is open on the leader: its drain cannot end before the
    # call does, and it keeps its lease alive until it resigns, so a successor fenced in while
    # its process still runs can only come from a resignation ahead of the drain.
    third = next(r for r in followers if r is not second)
    pusher = Poller(cluster, second, "edge-2")
    async with pusher.channel:
        batch = new_batch_id()
        stream = RawStream(pusher.stub)
        stream.send(open_sweep(batch))
        opened = await stream.ack()
        assert opened.credits > 0

        second.signal(signal.SIGTERM)
        fence = await cluster.fenced_by(third.name)
        assert fence.replica == third.name, f"no handover while it drains: fenced by {fence.replica}"
        assert second.process.process.poll() is None, "it exited before the handover was seen"
        assert fence.token > token

        # The call in flight is still served to the end; then the drain is over.
        stream.send(sweep_chunk(batch, 0, 0, 5, final=True))
        chunk = await stream.ack()
        assert chunk.committed_index == 0 and chunk.state == rpb.BATCH_STATE_COMMITTED
        stream.close()
        assert await stream.call.code() == grpc.StatusCode.OK
    assert second.process.process.wait(timeout=15) == 0
    assert "leader jobs stopped" in second.log()
    assert await cluster.leader([third]) is third


async def went(cluster: Cluster, poller_id: str, state: str) -> bool:
    """Whether the store recorded a transition of the poller to `state`."""
    return any(t[1] == state for t in await cluster.transitions(poller_id))


async def test_a_paused_leader_is_refused_by_the_fence_and_steps_down(cluster: Cluster) -> None:
    replicas = await cluster.start("r1", "r2", "r3")
    old = await cluster.leader()
    old_token = (await old.status()).fencing_token
    follower = next(r for r in replicas if r is not old)
    poller = Poller(cluster, follower, "edge-2")
    async with poller.channel:
        await poller.register()
        await poller.beats(1.0)
    await asyncio.sleep(0.5)  # its last heartbeat is flushed

    # Hold the poller's row, so the leader's monitor blocks inside its write when the poller
    # turns late; pause the leader there, past its lease.
    async with await psycopg.AsyncConnection.connect(libpq(cluster.database_url)) as lock:
        async with lock.transaction():
            await lock.execute("SELECT 1 FROM pollers WHERE poller_id = 'edge-2' FOR UPDATE")
            assert await eventually(lambda: monitor_blocked(cluster), 10), "the monitor never tried"
            old.signal(signal.SIGSTOP)
            new = await cluster.leader([r for r in replicas if r is not old], timeout=TTL + 10)
            new_token = (await new.status()).fencing_token
            assert new_token > old_token
        # The row is free: the paused leader's update goes through in PostgreSQL, and its
        # transaction waits for it to wake up and pass the fence.
        await asyncio.sleep(0.5)
    old.signal(signal.SIGCONT)

    assert await eventually(lambda: logged(old, "refused by the fence"), 10), old.log()
    # Nothing it did under its old token stays; the new leader takes the poller offline.
    assert await eventually(lambda: went(cluster, "edge-2", "offline"), 10)
    history = await cluster.transitions("edge-2")
    assert old_token not in {t[3] for t in history}, history
    assert {t[3] for t in history if t[1] in ("degraded", "offline")} == {new_token}
    # It stepped down and stays a follower; exactly one leader.
    assert await cluster.leader() is new
    assert not await old.claims()


async def monitor_blocked(cluster: Cluster) -> bool:
    """Whether a transaction waits on a lock in an update of a poller's state."""
    async with await psycopg.AsyncConnection.connect(libpq(cluster.database_url)) as conn:
        cursor = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE 'UPDATE pollers SET state=%%'"
        )
        row = await cursor.fetchone()
    return row is not None and row[0] > 0


async def logged(replica: Replica, text: str) -> bool:
    """Whether the replica's log has `text`."""
    return text in replica.log()


@pytest.fixture
async def outage_cluster(
    tmp_path: Path, private_etcd: EtcdProcess, fresh_database: str
) -> AsyncIterator[tuple[Cluster, EtcdProcess]]:
    """Replicas on an etcd of this test's own, which it stops and starts by PID."""
    async for made in _cluster(tmp_path, [private_etcd.endpoint], fresh_database):
        yield made, private_etcd


async def test_an_etcd_outage_spares_heartbeats_and_ingest_and_nobody_leads_blind(
    outage_cluster: tuple[Cluster, EtcdProcess],
) -> None:
    cluster, etcd = outage_cluster
    replicas = await cluster.start("r1", "r2", "r3")
    await cluster.leader()
    pollers = [Poller(cluster, r, f"edge-{r.name}") for r in replicas]
    for poller in pollers:
        await poller.register()
    # Heartbeats on time throughout, each poller to its own replica; any failure ends the test.
    beating = asyncio.gather(*(p.beats(3600) for p in pollers))
    try:
        etcd.kill()
        # Past the replica lease TTL no replica claims leadership, each says coordination is
        # down, and every replica still takes batches.
        await asyncio.sleep(TTL + 1)
        statuses = await asyncio.gather(*(r.status() for r in replicas))
        for replica, status in zip(replicas, statuses, strict=True):
            assert status.leader_id != replica.name, f"{replica.name} claims leadership blind"
            coordination = next(d for d in status.dependencies if d.name == "coordination")
            assert not coordination.healthy and "unreachable" in coordination.detail
        await asyncio.gather(*(ingest_one_batch(p.stub) for p in pollers))
        assert not beating.done(), "a heartbeat failed during the outage"

        await etcd.restart()
        await cluster.leader(timeout=TTL + 15)
        await asyncio.sleep(2)
        assert not beating.done(), "a heartbeat failed after the outage"
        # The pollers never missed a beat, so nobody was degraded or taken offline.
        for poller, replica in zip(pollers, replicas, strict=True):
            assert await poller_state(replica, poller.poller_id) == poller_pb.POLLER_STATE_HEALTHY
            assert await cluster.transitions(poller.poller_id) == []
    finally:
        beating.cancel()
        await asyncio.gather(beating, return_exceptions=True)
        for poller in pollers:
            await poller.channel.close()


async def ingest_one_batch(stub: edge_grpc.EdgeServiceAsyncStub) -> None:
    """One sweep batch of two chunks, all acked as committed."""
    batch = new_batch_id()
    stream = RawStream(stub)
    stream.send(open_sweep(batch))
    acks = await push_chunks(stream, batch, total_chunks=2, per_chunk=5)
    stream.close()
    assert acks[-1].committed_index == 1


async def test_a_replica_booting_while_etcd_is_down_waits_for_it(
    outage_cluster: tuple[Cluster, EtcdProcess],
) -> None:
    cluster, etcd = outage_cluster
    etcd.kill()
    booting = asyncio.get_running_loop().create_task(cluster.start("r1"))
    log = cluster.root / "r1" / "srcore.log"
    retried = "cannot join the cluster (attempt 2)"
    assert await eventually(lambda: asyncio.to_thread(has_text, log, retried), 30), "it retries, not exits"
    assert not booting.done()
    await etcd.restart()
    [replica] = await asyncio.wait_for(booting, 60)
    assert await cluster.leader([replica]) is replica


def has_text(path: Path, text: str) -> bool:
    """Whether the file exists and has `text`."""
    return path.exists() and text in path.read_text()
