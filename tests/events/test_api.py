"""ListEvents, WatchEvents, cluster status and `srctl events` against a real core."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest

from serviceradar.admin.v1 import cluster_service_pb2, cluster_service_pb2_grpc
from serviceradar.admin.v1 import event_service_pb2 as pb
from serviceradar.admin.v1 import event_service_pb2_grpc as pb_grpc
from serviceradar.edge.v1 import edge_service_pb2 as edge_pb
from serviceradar.edge.v1 import edge_service_pb2_grpc as edge_grpc
from srcore.security import pki
from srctl.main import main as srctl
from tests.events.support import NatsServer, chain, record, stream_messages, wait_for
from tests.helpers.core import RunningCore, running_core


@pytest.fixture(params=["sqlite", "postgres"])
async def core(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunningCore]:
    """An embedded core (no NATS), on SQLite and on PostgreSQL."""
    overrides: dict[str, Any] = {"heartbeat_flush_interval": 0.05, "events_poll_interval": 0.2}
    if request.param == "postgres":
        overrides["database_url"] = request.getfixturevalue("fresh_database")
    async with running_core(tmp_path / "data", **overrides) as running:
        yield running


async def next_event(
    call: grpc.aio.UnaryStreamCall[pb.WatchEventsRequest, pb.WatchEventsResponse], timeout: float = 10
) -> pb.WatchEventsResponse:
    """The next message of a WatchEvents stream."""
    response = await asyncio.wait_for(call.read(), timeout)
    assert isinstance(response, pb.WatchEventsResponse), response
    return response


async def register_and_degrade(core: RunningCore, partition: str = "dc1") -> None:
    """The demo poller registers (healthy), then reports itself degraded."""
    async with core.channel(core.creds.edge()) as channel:
        edge = edge_grpc.EdgeServiceStub(channel)
        session = await edge.RegisterPoller(
            edge_pb.RegisterPollerRequest(poller_id="demo", partition=partition)
        )
        await edge.ReportHealth(
            edge_pb.ReportHealthRequest(
                poller_id="demo", session_id=session.session_id, status=edge_pb.COMPONENT_STATUS_DEGRADED
            )
        )


async def test_watch_sees_a_poller_change_as_it_happens_and_list_keeps_it(core: RunningCore) -> None:
    async with core.channel(core.creds.operator()) as channel:
        events = pb_grpc.EventServiceStub(channel)
        watch = events.WatchEvents(pb.WatchEventsRequest(entity_type="poller"))
        first = asyncio.ensure_future(next_event(watch))
        await asyncio.sleep(0.2)
        assert not first.done()
        await register_and_degrade(core)
        response = await first
        watch.cancel()

        event = response.record.event
        assert (event.tenant, event.entity_type, event.entity_id, event.partition) == (
            "default", "poller", "demo", "dc1",
        )  # fmt: skip
        assert (event.old_state, event.new_state, event.type) == ("healthy", "degraded", "degraded")
        assert event.replica == core.app.replica_id
        leader = core.app.coordinator.leader()
        assert leader is not None and event.fencing_token == leader.fencing_token
        # Embedded: no NATS, so the event waits in the outbox, readable all the same.
        assert not response.record.HasField("published_at")

        listed = await events.ListEvents(pb.ListEventsRequest(entity_type="poller", event_type="degraded"))
        assert [r.event for r in listed.events] == [event]
        assert (await events.ListEvents(pb.ListEventsRequest(event_type="offline"))).events == []

        # Resuming after that event replays nothing; a new event arrives.
        resumed = events.WatchEvents(pb.WatchEventsRequest(resume_token=response.resume_token))
        pending = asyncio.ensure_future(next_event(resumed))
        await record(core.app.db, chain("default", "agent", "demo/a1", ["connected", "disconnected"]))
        assert (await pending).record.event.entity_id == "demo/a1"
        resumed.cancel()

        status = await cluster_service_pb2_grpc.ClusterServiceStub(channel).GetClusterStatus(
            cluster_service_pb2.GetClusterStatusRequest()
        )
        (dependency,) = [d for d in status.dependencies if d.name == "events"]
        assert (dependency.backend, dependency.healthy) == ("outbox", True)
        assert "2 events kept in the outbox" in dependency.detail


async def test_list_pages_and_watch_replays_from_since(core: RunningCore) -> None:
    for poller in range(7):
        await record(
            core.app.db, chain("default", "poller", f"p{poller}", ["healthy", "degraded", "offline"])
        )
    async with core.channel(core.creds.operator()) as channel:
        events = pb_grpc.EventServiceStub(channel)
        page = await events.ListEvents(pb.ListEventsRequest(page_size=5))
        seen = list(page.events)
        while page.next_page_token:
            page = await events.ListEvents(pb.ListEventsRequest(page_size=5, page_token=page.next_page_token))
            seen.extend(page.events)
        assert len(seen) == 14
        assert [r.sequence for r in seen] == sorted(r.sequence for r in seen)

        since = seen[0].event.time
        watch = events.WatchEvents(pb.WatchEventsRequest(since=since, event_type="offline"))
        replayed = [await next_event(watch) for _ in range(7)]
        watch.cancel()
        assert [r.record.event.entity_id for r in replayed] == [f"p{i}" for i in range(7)]

        for request, field in [
            (pb.ListEventsRequest(page_size=1001), "page_size"),
            (pb.ListEventsRequest(page_token="garbage"), "page_token"),
            (pb.ListEventsRequest(entity_type="poller.*"), "entity_type"),
            (pb.ListEventsRequest(entity_id="demo"), "entity_id"),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await events.ListEvents(request)
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert field in (error.value.details() or "")
        bad_watch = events.WatchEvents(pb.WatchEventsRequest(resume_token="garbage"))
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await bad_watch.read()
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_tenant_operator_sees_only_its_tenants_events(core: RunningCore) -> None:
    await core.app.pollers.ensure_tenant("acme", datetime.now(UTC))
    await record(core.app.db, chain("acme", "poller", "a1", ["healthy", "offline"]))
    await record(core.app.db, chain("default", "poller", "d1", ["healthy", "offline"]))
    ca = pki.load_or_create_ca(core.data_dir / "pki", "unused: the CA exists")
    issued = pki.issue_operator_certificate(ca, "serviceradar", "alice", "viewer", "acme")
    async with core.channel(core.creds.custom(issued.cert_pem, issued.key_pem)) as channel:
        events = pb_grpc.EventServiceStub(channel)
        mine = await events.ListEvents(pb.ListEventsRequest())
        assert [r.event.tenant for r in mine.events] == ["acme"]
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await events.ListEvents(pb.ListEventsRequest(tenant="default"))
        assert error.value.code() == grpc.StatusCode.NOT_FOUND

        watch = events.WatchEvents(pb.WatchEventsRequest(since=mine.events[0].event.time))
        assert (await next_event(watch)).record.event.tenant == "acme"
        later = asyncio.ensure_future(next_event(watch))
        await record(core.app.db, chain("default", "poller", "d2", ["healthy", "offline"]))
        await record(core.app.db, chain("acme", "poller", "a2", ["healthy", "offline"]))
        assert (await later).record.event.entity_id == "a2"
        watch.cancel()

        other = events.WatchEvents(pb.WatchEventsRequest(tenant="default"))
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await other.read()
        assert error.value.code() == grpc.StatusCode.NOT_FOUND


async def test_srctl_events_watch_shows_a_poller_going_offline_as_it_happens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Short heartbeat limits, so the leader's liveness monitor takes a silent poller offline
    # within a second or two.
    async with running_core(
        tmp_path / "data",
        heartbeat_interval=0.3,
        heartbeat_timeout=1.0,
        heartbeat_flush_interval=0.05,
        liveness_check_interval=0.1,
        events_poll_interval=0.2,
    ) as core:
        base = ["--data-dir", str(core.data_dir), "--server", core.address]
        watch = [
            "events",
            "watch",
            "--entity-type",
            "poller",
            "--type",
            "offline",
            "--count",
            "1",
            "-o",
            "json",
        ]
        watching = asyncio.ensure_future(asyncio.to_thread(srctl, [*watch, *base]))
        await asyncio.sleep(0.5)
        assert not watching.done()
        async with core.channel(core.creds.edge()) as channel:
            await edge_grpc.EdgeServiceStub(channel).RegisterPoller(
                edge_pb.RegisterPollerRequest(poller_id="demo", partition="dc1")
            )
        # No heartbeat follows: the poller goes late (degraded), then its lease expires.
        assert await asyncio.wait_for(watching, 20) == 0
        document = json.loads(capsys.readouterr().out)
        event = document["record"]["event"]
        assert (event["entity_id"], event["partition"], event["new_state"]) == ("demo", "dc1", "offline")
        assert document["resume_token"]

        assert await asyncio.to_thread(srctl, ["events", "list", "--entity-type", "poller", *base]) == 0
        table = capsys.readouterr().out.splitlines()
        assert table[0].split() == [
            "SEQ",
            "TIME",
            "TENANT",
            "ENTITY",
            "EVENT",
            "CHANGE",
            "REASON",
            "PUBLISHED",
        ]
        assert "poller/demo" in table[-1] and "-> offline" in table[-1] and table[-1].endswith("no")


async def test_a_core_with_nats_relays_and_reports_an_outage(tmp_path: Path, fresh_database: str) -> None:
    server = NatsServer(tmp_path / "nats")
    server.start()
    stream, prefix = "SRTEST_CORE", "srtestcore.infra"
    try:
        async with (
            running_core(
                tmp_path / "data",
                database_url=fresh_database,
                nats_url=server.url,
                nats_stream=stream,
                events_subject_prefix=prefix,
                heartbeat_flush_interval=0.05,
                events_poll_interval=0.1,
            ) as core,
            core.channel(core.creds.operator()) as channel,
        ):
            cluster = cluster_service_pb2_grpc.ClusterServiceStub(channel)

            async def events_health() -> cluster_service_pb2.DependencyHealth:
                status = await cluster.GetClusterStatus(cluster_service_pb2.GetClusterStatusRequest())
                (dependency,) = [d for d in status.dependencies if d.name == "events"]
                return dependency

            await wait_for(
                lambda: core.app.events.bus is not None and core.app.events.bus.connected, 10, "NATS"
            )
            await register_and_degrade(core)

            async def published() -> bool:
                listed = await pb_grpc.EventServiceStub(channel).ListEvents(pb.ListEventsRequest())
                return bool(listed.events) and all(r.HasField("published_at") for r in listed.events)

            await wait_for(published, 10, "the event to be published")
            health = await events_health()
            assert (health.backend, health.healthy) == ("nats", True)
            assert f"stream {stream}" in health.detail and "outbox backlog 0" in health.detail

            server.kill()
            await record(core.app.db, chain("default", "agent", "demo/a1", ["connected", "disconnected"]))

            async def reported_down() -> bool:
                health = await events_health()
                return not health.healthy and "outbox backlog 1 unpublished" in health.detail

            await wait_for(reported_down, 15, "cluster status to report the outage and backlog")

            server.start()

            async def recovered() -> bool:
                health = await events_health()
                return health.healthy and "outbox backlog 0" in health.detail

            await wait_for(recovered, 30, "the relay to catch up")
        nc = await nats.connect(server.url)
        try:
            messages = await stream_messages(nc.jetstream(), stream)
        finally:
            await nc.close()
        assert [m.subject for m in messages] == [
            f"{prefix}.default.poller.degraded",
            f"{prefix}.default.agent.disconnected",
        ]
    finally:
        if server.process is not None:
            with contextlib.suppress(Exception):
                server.kill()
