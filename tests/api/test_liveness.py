"""Liveness through the real RPCs on one embedded core: a silent poller is degraded, then offline
with its agents unavailable, and recovers when it returns; maintenance holds it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from serviceradar.admin.v1 import poller_service_pb2 as admin_pb
from serviceradar.admin.v1 import poller_service_pb2_grpc as admin_grpc
from serviceradar.edge.v1 import edge_service_pb2 as pb
from serviceradar.edge.v1 import edge_service_pb2_grpc as pb_grpc
from tests.helpers.core import RunningCore, running_core
from tests.helpers.waiting import eventually

P = admin_pb
# Late after 1.5 * 0.4 + 0.1 = 0.7 s of silence, offline when the 1.5 s registry lease expires.
FAST = {
    "heartbeat_interval": 0.4,
    "heartbeat_timeout": 1.5,
    "heartbeat_flush_interval": 0.1,
    "liveness_check_interval": 0.1,
}


@pytest.fixture(params=["sqlite", "postgres"])
async def core(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunningCore]:
    """A core with second-scale liveness limits, on SQLite and on PostgreSQL."""
    overrides: dict[str, object] = dict(FAST)
    if request.param == "postgres":
        overrides["database_url"] = request.getfixturevalue("fresh_database")
    async with running_core(tmp_path / "data", **overrides) as running:
        yield running


class Operator:
    """PollerService calls as the platform admin."""

    def __init__(self, core: RunningCore) -> None:
        self.channel = core.channel(core.creds.operator())
        self.stub = admin_grpc.PollerServiceStub(self.channel)

    async def get(self) -> admin_pb.GetPollerResponse:
        """The demo poller with its history."""
        return await self.stub.GetPoller(admin_pb.GetPollerRequest(poller_id="demo"))

    async def state(self) -> int:
        """The demo poller's state."""
        return (await self.get()).poller.state

    async def in_state(self, state: int) -> bool:
        """Whether the demo poller is in `state` now."""
        return await self.state() == state

    async def maintenance(self, enabled: bool) -> admin_pb.Poller:
        """Start or end the demo poller's maintenance."""
        answer = await self.stub.SetMaintenance(
            admin_pb.SetMaintenanceRequest(poller_id="demo", enabled=enabled, reason="test")
        )
        return answer.poller


async def register(edge: pb_grpc.EdgeServiceAsyncStub) -> str:
    """Register the demo poller with one agent; returns its session."""
    session = await edge.RegisterPoller(
        pb.RegisterPollerRequest(
            poller_id="demo", partition="dc1", agents=[pb.AgentInfo(agent_id="a1", capabilities=["icmp"])]
        )
    )
    return session.session_id


def beat(session: str) -> pb.ReportHealthRequest:
    """A clean heartbeat reporting its agent connected."""
    return pb.ReportHealthRequest(
        session_id=session,
        poller_id="demo",
        status=pb.COMPONENT_STATUS_OK,
        agents=[pb.AgentHealth(agent_id="a1", status=pb.COMPONENT_STATUS_OK)],
    )


async def heartbeats(edge: pb_grpc.EdgeServiceAsyncStub, session: str, seconds: float) -> None:
    """Heartbeat on time (every 0.2 s, half the interval) for `seconds`."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        await edge.ReportHealth(beat(session))
        await asyncio.sleep(0.2)


async def heals(edge: pb_grpc.EdgeServiceAsyncStub, session: str, operator: Operator) -> bool:
    """Heartbeat on time until the demo poller is healthy; False if it never gets there.

    Polled, not read after a fixed stretch: on a loaded machine one beat can come late enough
    to degrade it again on the way.
    """
    beating = asyncio.create_task(heartbeats(edge, session, 30.0))
    try:
        return await eventually(lambda: operator.in_state(P.POLLER_STATE_HEALTHY))
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating


async def late(edge: pb_grpc.EdgeServiceAsyncStub, operator: Operator) -> str:
    """Register the demo poller, heartbeat once, and wait until the leader degrades it as late;
    returns its session (still live: the lease outlasts the degradation)."""
    session = await register(edge)
    await edge.ReportHealth(beat(session))
    assert await eventually(lambda: operator.in_state(P.POLLER_STATE_DEGRADED), 3)
    return session


async def test_a_silent_poller_is_degraded_then_offline_and_recovers_when_it_returns(
    core: RunningCore,
) -> None:
    operator = Operator(core)
    leader = core.app.coordinator.leader()
    assert leader is not None
    async with operator.channel, core.channel(core.creds.edge()) as channel:
        edge: pb_grpc.EdgeServiceAsyncStub = pb_grpc.EdgeServiceStub(channel)
        session = await register(edge)
        assert await heals(edge, session, operator)

        # Silence: the leader's monitor degrades it, then takes it offline when its lease expires.
        assert await eventually(lambda: operator.in_state(P.POLLER_STATE_OFFLINE))
        shown = await operator.get()
        [agent] = shown.poller.agents
        assert agent.state == P.AGENT_STATE_UNAVAILABLE
        newest = [(t.from_state, t.to_state) for t in shown.history]
        assert newest[:2] == [
            (P.POLLER_STATE_DEGRADED, P.POLLER_STATE_OFFLINE),
            (P.POLLER_STATE_HEALTHY, P.POLLER_STATE_DEGRADED),
        ]
        offline, late = shown.history[0], shown.history[1]
        assert late.reason.startswith("heartbeat_late: last heartbeat")
        assert offline.reason.startswith("heartbeat_timeout")
        # Recorded by the leader under its fencing token, and the server clock decided.
        assert {offline.fencing_token, late.fencing_token} == {leader.fencing_token}
        assert offline.replica == core.app.replica_id
        # Never before the heartbeat timeout (how much later depends on the machine's load).
        silent = offline.at.ToDatetime() - shown.poller.last_seen.ToDatetime()
        assert silent.total_seconds() >= FAST["heartbeat_timeout"]

        # Back: its old session is gone, it registers again, recovers, and a clean heartbeat heals it.
        with pytest.raises(grpc.aio.AioRpcError) as stale:
            await edge.ReportHealth(beat(session))
        assert stale.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        session = await register(edge)
        assert await operator.state() == P.POLLER_STATE_RECOVERING
        await edge.ReportHealth(beat(session))
        assert await eventually(lambda: operator.in_state(P.POLLER_STATE_HEALTHY), 3)
        newest = [(t.from_state, t.to_state) for t in (await operator.get()).history][:2]
        assert newest == [
            (P.POLLER_STATE_RECOVERING, P.POLLER_STATE_HEALTHY),
            (P.POLLER_STATE_OFFLINE, P.POLLER_STATE_RECOVERING),
        ]


async def test_a_late_poller_heals_when_its_heartbeats_come_back(core: RunningCore) -> None:
    operator = Operator(core)
    async with operator.channel, core.channel(core.creds.edge()) as channel:
        edge: pb_grpc.EdgeServiceAsyncStub = pb_grpc.EdgeServiceStub(channel)
        session = await late(edge, operator)
        # Back before the lease expires: the clean heartbeats that follow heal it.
        assert await heals(edge, session, operator)
        newest = [(t.from_state, t.to_state) for t in (await operator.get()).history][:2]
        assert newest == [
            (P.POLLER_STATE_DEGRADED, P.POLLER_STATE_HEALTHY),
            (P.POLLER_STATE_HEALTHY, P.POLLER_STATE_DEGRADED),
        ]


async def test_the_one_heartbeat_that_brings_a_late_poller_back_heals_it(core: RunningCore) -> None:
    operator = Operator(core)
    async with operator.channel, core.channel(core.creds.edge()) as channel:
        edge: pb_grpc.EdgeServiceAsyncStub = pb_grpc.EdgeServiceStub(channel)
        session = await late(edge, operator)

        # The serving replica still remembers it healthy when this heartbeat arrives; the flush
        # that writes it learns the leader degraded it, and heals it without waiting for another.
        await edge.ReportHealth(beat(session))

        async def healed() -> bool:
            # Oldest first: the poller may go late again once this heartbeat is behind it.
            history = list(reversed((await operator.get()).history))
            if len(history) < 2:
                return False
            healthy, degraded = P.POLLER_STATE_HEALTHY, P.POLLER_STATE_DEGRADED
            went_late, came_back = history[0], history[1]
            return (
                (went_late.from_state, went_late.to_state) == (healthy, degraded)
                and went_late.reason.startswith("heartbeat_late")
                and (came_back.from_state, came_back.to_state) == (degraded, healthy)
                and came_back.reason == "heartbeat status ok"
            )

        assert await eventually(healed, 3)


async def test_maintenance_holds_a_silent_poller_and_illegal_requests_name_the_state(
    core: RunningCore,
) -> None:
    operator = Operator(core)
    async with operator.channel, core.channel(core.creds.edge()) as channel:
        edge: pb_grpc.EdgeServiceAsyncStub = pb_grpc.EdgeServiceStub(channel)
        session = await register(edge)
        await edge.ReportHealth(beat(session))
        assert (await operator.maintenance(True)).state == P.POLLER_STATE_MAINTENANCE
        with pytest.raises(grpc.aio.AioRpcError) as twice:
            await operator.maintenance(True)
        assert twice.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "already in state maintenance" in (twice.value.details() or "")

        # Past the heartbeat timeout: its lease is gone, and still it is not offline.
        await asyncio.sleep(2.5)
        assert await core.app.coordinator.registry.get("default", "demo") is None
        assert await operator.state() == P.POLLER_STATE_MAINTENANCE

        # Ending it while the poller is gone leaves it offline; ending it again is refused.
        assert (await operator.maintenance(False)).state == P.POLLER_STATE_OFFLINE
        with pytest.raises(grpc.aio.AioRpcError) as again:
            await operator.maintenance(False)
        assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "not under maintenance: it is offline" in (again.value.details() or "")

        # A live poller leaving maintenance recovers, then heals on a clean heartbeat.
        session = await register(edge)
        await operator.maintenance(True)
        await edge.ReportHealth(beat(session))
        assert (await operator.maintenance(False)).state == P.POLLER_STATE_RECOVERING
        assert await heals(edge, session, operator)
        reasons = [t.reason for t in (await operator.get()).history]
        assert "maintenance_on: test" in reasons and "maintenance_off: test" in reasons
