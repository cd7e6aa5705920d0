"""RegisterPoller and ReportHealth over real mTLS, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2

from serviceradar.admin.v1 import poller_service_pb2 as admin_pb
from serviceradar.admin.v1 import poller_service_pb2_grpc as admin_grpc
from serviceradar.edge.v1 import edge_service_pb2 as pb
from serviceradar.edge.v1 import edge_service_pb2_grpc as pb_grpc
from tests.helpers.core import RunningCore, running_core


def register_request(**overrides: object) -> pb.RegisterPollerRequest:
    """The demo poller's registration with one agent."""
    fields: dict[str, object] = {
        "poller_id": "demo",
        "partition": "dc1",
        "version": "1.2.3",
        "capabilities": ["sweep", "icmp"],
        "agents": [pb.AgentInfo(agent_id="agent-1", version="1.0", capabilities=["icmp", "tcp"])],
        "labels": {"site": "north"},
        "hostname": "edge-01",
    }
    fields.update(overrides)
    return pb.RegisterPollerRequest(**fields)  # type: ignore[arg-type]


async def get_poller(core: RunningCore, poller_id: str = "demo") -> admin_pb.Poller:
    """The poller as operators see it."""
    async with core.channel(core.creds.operator()) as channel:
        answer = await admin_grpc.PollerServiceStub(channel).GetPoller(
            admin_pb.GetPollerRequest(poller_id=poller_id)
        )
    return answer.poller


async def test_register_then_heartbeat_is_recorded(core: RunningCore) -> None:
    async with core.channel(core.creds.edge()) as channel:
        edge = pb_grpc.EdgeServiceStub(channel)
        session = await edge.RegisterPoller(register_request())
        assert session.session_id
        assert session.tenant == "default"
        assert session.heartbeat_interval.ToSeconds() == 10
        assert session.config_version

        sent_at = timestamp_pb2.Timestamp()
        sent_at.GetCurrentTime()
        answer = await edge.ReportHealth(
            pb.ReportHealthRequest(
                session_id=session.session_id,
                poller_id="demo",
                status=pb.COMPONENT_STATUS_OK,
                agents=[pb.AgentHealth(agent_id="agent-1", status=pb.COMPONENT_STATUS_OK)],
                sent_at=sent_at,
                message="all good",
            )
        )
        # The poller runs no configuration yet, so it is told to sync.
        assert answer.config_outdated
        assert answer.config_version == session.config_version
        assert answer.next_interval.ToSeconds() == 10
        assert abs(answer.clock_skew.ToTimedelta().total_seconds()) < 5

        current = await edge.ReportHealth(
            pb.ReportHealthRequest(
                session_id=session.session_id,
                poller_id="demo",
                status=pb.COMPONENT_STATUS_OK,
                applied_config_version=session.config_version,
            )
        )
        assert not current.config_outdated

    await core.app.registry.flush()
    poller = await get_poller(core)
    assert poller.state == admin_pb.POLLER_STATE_HEALTHY
    assert poller.partition == "dc1"
    assert poller.version == "1.2.3"
    assert list(poller.capabilities) == ["icmp", "sweep"]
    assert poller.applied_config_version == session.config_version
    assert poller.last_seen.ToDatetime() >= poller.registered_at.ToDatetime()
    [agent] = poller.agents
    assert agent.agent_id == "agent-1"
    assert agent.state == admin_pb.AGENT_STATE_CONNECTED
    assert list(agent.capabilities) == ["icmp", "tcp"]


async def test_reregistration_keeps_the_record_and_replaces_the_session(core: RunningCore) -> None:
    async with core.channel(core.creds.edge()) as channel:
        edge = pb_grpc.EdgeServiceStub(channel)
        first = await edge.RegisterPoller(register_request())
        registered_at = (await get_poller(core)).registered_at
        second = await edge.RegisterPoller(
            register_request(agents=[pb.AgentInfo(agent_id="agent-2", capabilities=["snmp"])])
        )
        assert second.session_id != first.session_id

        with pytest.raises(grpc.aio.AioRpcError) as stale:
            await edge.ReportHealth(pb.ReportHealthRequest(session_id=first.session_id, poller_id="demo"))
        assert stale.value.code() == grpc.StatusCode.FAILED_PRECONDITION

        await edge.ReportHealth(pb.ReportHealthRequest(session_id=second.session_id, poller_id="demo"))

    poller = await get_poller(core)
    assert poller.registered_at == registered_at
    states = {a.agent_id: a.state for a in poller.agents}
    # The agent no longer announced is kept for history, marked unavailable.
    assert states == {"agent-1": admin_pb.AGENT_STATE_UNAVAILABLE, "agent-2": admin_pb.AGENT_STATE_CONNECTING}


async def test_degraded_report_moves_the_poller_and_a_clean_one_heals_it(core: RunningCore) -> None:
    async with core.channel(core.creds.edge()) as channel:
        edge = pb_grpc.EdgeServiceStub(channel)
        session = await edge.RegisterPoller(register_request())
        beat = pb.ReportHealthRequest(session_id=session.session_id, poller_id="demo")
        beat.status = pb.COMPONENT_STATUS_DEGRADED
        await edge.ReportHealth(beat)
        await core.app.registry.flush()
        assert (await get_poller(core)).state == admin_pb.POLLER_STATE_DEGRADED
        beat.status = pb.COMPONENT_STATUS_OK
        await edge.ReportHealth(beat)
        await core.app.registry.flush()
        assert (await get_poller(core)).state == admin_pb.POLLER_STATE_HEALTHY


async def test_health_before_registration_is_failed_precondition(core: RunningCore) -> None:
    async with core.channel(core.creds.edge()) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await pb_grpc.EdgeServiceStub(channel).ReportHealth(
                pb.ReportHealthRequest(session_id="0" * 32, poller_id="demo")
            )
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "RegisterPoller" in (error.value.details() or "")


async def test_heartbeats_are_answered_from_memory_and_written_in_one_batch(tmp_path: Path) -> None:
    # A flush interval longer than the test: nothing reaches the store until flush().
    async with running_core(tmp_path / "data", heartbeat_flush_interval=3600) as core:
        async with core.channel(core.creds.edge()) as channel:
            edge = pb_grpc.EdgeServiceStub(channel)
            session = await edge.RegisterPoller(register_request())
            for i in range(20):
                await edge.ReportHealth(
                    pb.ReportHealthRequest(
                        session_id=session.session_id, poller_id="demo", message=f"beat {i}"
                    )
                )
        assert (await get_poller(core)).message == ""
        # Twenty heartbeats of one poller collapse into one pending write holding the latest.
        assert await core.app.registry.flush() == 1
        assert (await get_poller(core)).message == "beat 19"


async def test_a_flush_waits_for_the_flush_already_writing(tmp_path: Path) -> None:
    # What a flush returns promises: every heartbeat answered before it is in the store, even
    # one that the periodic flush had already taken and was still writing.
    async with running_core(tmp_path / "data", heartbeat_flush_interval=3600) as core:
        async with core.channel(core.creds.edge()) as channel:
            edge = pb_grpc.EdgeServiceStub(channel)
            session = await edge.RegisterPoller(register_request())
            await edge.ReportHealth(
                pb.ReportHealthRequest(session_id=session.session_id, poller_id="demo", message="taken")
            )
        store = core.app.pollers
        write = store.record_heartbeats
        writing, release = asyncio.Event(), asyncio.Event()

        async def held_write(*args: Any, **kwargs: Any) -> Any:
            writing.set()
            await release.wait()
            return await write(*args, **kwargs)

        store.record_heartbeats = held_write  # type: ignore[method-assign]
        periodic = asyncio.create_task(core.app.registry.flush())
        await writing.wait()
        second = asyncio.create_task(core.app.registry.flush())
        for _ in range(20):
            await asyncio.sleep(0)
        assert not second.done(), "a flush returned while the heartbeat it follows was unwritten"
        release.set()
        assert await periodic == 1
        assert await second == 0
        assert (await get_poller(core)).message == "taken"
