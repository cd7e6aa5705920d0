"""Fixtures and drivers for result processing tests: real cores on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from serviceradar.admin.v1 import result_service_pb2 as pb
from serviceradar.admin.v1 import result_service_pb2_grpc as pb_grpc
from serviceradar.edge.v1 import edge_service_pb2 as epb
from serviceradar.edge.v1 import edge_service_pb2_grpc as egrpc
from serviceradar.edge.v1 import results_pb2 as rpb
from tests.helpers.core import RunningCore, running_core
from tests.helpers.results import RawStream, new_batch_id

FAILING_AFTER = 3
MAX_PORTS = 4


@pytest.fixture(params=["sqlite", "postgres"])
async def core(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunningCore]:
    """A core on SQLite and one on a fresh PostgreSQL database, with small processing bounds."""
    overrides: dict[str, object] = {
        "check_failing_after": FAILING_AFTER,
        "max_open_ports_per_host": MAX_PORTS,
    }
    if request.param == "postgres":
        overrides["database_url"] = request.getfixturevalue("fresh_database")
    async with running_core(tmp_path / "data", **overrides) as running:
        yield running


async def send_batch(core: RunningCore, opening: rpb.BatchOpen, chunks: Sequence[rpb.ResultChunk]) -> None:
    """Stream one batch as the demo poller, chunk by chunk, each acknowledged; then process it."""
    async with core.channel(core.creds.edge()) as channel:
        stream = RawStream(egrpc.EdgeServiceStub(channel))
        stream.send(epb.ReportResultsRequest(open=opening))
        await stream.ack()
        for chunk in chunks:
            stream.send(epb.ReportResultsRequest(chunk=chunk))
            ack = await stream.ack()
            assert ack.rejected == 0, ack.first_reject
        stream.close()
    await settle(core)


async def settle(core: RunningCore) -> None:
    """Wait until every committed flush is processed and every ended execution closed.

    Processing runs off the ack path: this replica's projector may be in the middle of a
    round (its rows locked), so drain, then look, until nothing is left.
    """
    pending = (
        "SELECT (SELECT count(*) FROM ingest_flushes WHERE projected = false)"
        " + (SELECT count(*) FROM sweep_executions WHERE closed_at IS NULL AND state <> 'running')"
    )
    async with asyncio.timeout(30):
        while True:
            await core.app.ingest.projector.drain()
            async with core.app.db.connect() as conn:
                if not (await conn.execute(sa.text(pending))).scalar_one():
                    return
            await asyncio.sleep(0.05)


def sweep_host(
    ip: str,
    available: bool = True,
    *,
    rtt_us: int = 0,
    loss: float = 0.0,
    open_ports: dict[int, int] | None = None,
    closed_ports: Sequence[int] = (),
) -> rpb.SweepHostResult:
    """A host result; `open_ports` maps port to connect time in microseconds."""
    host = rpb.SweepHostResult(ip=ip, available=available, icmp_packet_loss=loss)
    if rtt_us:
        host.icmp_rtt.FromMicroseconds(rtt_us)
    for port, took in (open_ports or {}).items():
        result = host.ports.add(port=port, open=True)
        result.response_time.FromMicroseconds(took)
    for port in closed_ports:
        host.ports.add(port=port, open=False)
    return host


async def sweep(
    core: RunningCore,
    hosts: Sequence[rpb.SweepHostResult],
    *,
    execution_id: str,
    sweep_id: str = "sweep-a",
    target: str = "10.9.0.0/24",
    partition: str = "dc1",
    completion: rpb.SweepCompletion.ValueType = rpb.SWEEP_COMPLETION_COMPLETED,
) -> None:
    """One sweep execution in one batch, ended with `completion`, processed."""
    batch = new_batch_id()
    opening = rpb.BatchOpen(
        batch_id=batch,
        result_type=rpb.RESULT_TYPE_SWEEP_HOSTS,
        partition=partition,
        sweep=rpb.SweepInfo(execution_id=execution_id, sweep_id=sweep_id, target_network=target),
    )
    chunk = rpb.ResultChunk(
        batch_id=batch,
        index=0,
        final=True,
        completion=completion,
        sweep_hosts=rpb.SweepHostResults(results=list(hosts)),
    )
    await send_batch(core, opening, [chunk])


T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def check_result(name: str, passed: bool, second: int | None = None) -> rpb.ServiceCheckResult:
    """A result of check `name` run by agent a1; observed T0 + `second` when given."""
    result = rpb.ServiceCheckResult(
        name=name, check_type="tcp", available=passed, agent_id="a1", message="ok" if passed else "refused"
    )
    result.response_time.FromMicroseconds(2500)
    if second is not None:
        result.observed_at.FromDatetime(T0 + timedelta(seconds=second))
    return result


async def report_checks(core: RunningCore, results: Sequence[rpb.ServiceCheckResult]) -> None:
    """One batch of one chunk carrying `results`, processed."""
    batch = new_batch_id()
    opening = rpb.BatchOpen(batch_id=batch, result_type=rpb.RESULT_TYPE_SERVICE_CHECKS, partition="dc1")
    chunk = rpb.ResultChunk(
        batch_id=batch, index=0, final=True, service_checks=rpb.ServiceCheckResults(results=list(results))
    )
    await send_batch(core, opening, [chunk])


async def host_states(core: RunningCore, **filters: Any) -> dict[tuple[str, str], pb.HostState]:
    """Latest host states as an operator reads them, keyed by (partition, ip)."""
    async with core.channel(core.creds.operator()) as channel:
        answer = await pb_grpc.ResultServiceStub(channel).ListHostStates(pb.ListHostStatesRequest(**filters))
    return {(h.partition, h.ip): h for h in answer.hosts}


async def check_states(core: RunningCore) -> dict[str, pb.CheckState]:
    """Check states as an operator reads them, keyed by check name."""
    async with core.channel(core.creds.operator()) as channel:
        answer = await pb_grpc.ResultServiceStub(channel).ListCheckStates(pb.ListCheckStatesRequest())
    return {c.name: c for c in answer.checks}


async def executions(core: RunningCore) -> dict[str, pb.SweepExecution]:
    """Sweep executions as an operator reads them, keyed by execution id."""
    async with core.channel(core.creds.operator()) as channel:
        answer = await pb_grpc.ResultServiceStub(channel).ListSweepExecutions(pb.ListSweepExecutionsRequest())
    return {e.execution_id: e for e in answer.executions}
