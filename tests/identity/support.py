"""Streaming observations into a core and reading devices back, for the identity tests."""

from __future__ import annotations

import grpc

from serviceradar.admin.v1 import device_service_pb2 as dpb
from serviceradar.admin.v1 import device_service_pb2_grpc as dgrpc
from serviceradar.edge.v1 import edge_service_pb2 as epb
from serviceradar.edge.v1 import edge_service_pb2_grpc as egrpc
from serviceradar.edge.v1 import results_pb2 as rpb
from tests.helpers.core import RunningCore
from tests.helpers.results import RawStream, new_batch_id


def sweep_host(ip: str, mac: str = "", hostname: str = "") -> rpb.SweepHostResult:
    """A reachable host seen by a sweep."""
    return rpb.SweepHostResult(ip=ip, mac=mac, hostname=hostname, available=True)


def device_update(source: str, ip: str = "", mac: str = "", **external: str) -> rpb.DeviceUpdate:
    """An integration's device update."""
    return rpb.DeviceUpdate(source=source, ip=ip, mac=mac, external_ids=external, available=True)


async def stream(
    edge: egrpc.EdgeServiceAsyncStub,
    partition: str,
    sweep: list[rpb.SweepHostResult] | None = None,
    updates: list[rpb.DeviceUpdate] | None = None,
) -> None:
    """One batch of sweep hosts or device updates, one chunk, until it is committed."""
    batch = new_batch_id()
    call = RawStream(edge)
    kind = rpb.RESULT_TYPE_SWEEP_HOSTS if sweep is not None else rpb.RESULT_TYPE_DEVICE_UPDATES
    call.send(
        epb.ReportResultsRequest(open=rpb.BatchOpen(batch_id=batch, result_type=kind, partition=partition))
    )
    await call.ack()
    chunk = rpb.ResultChunk(batch_id=batch, index=0, final=True)
    if sweep is not None:
        chunk.sweep_hosts.CopyFrom(rpb.SweepHostResults(results=sweep))
    else:
        chunk.device_updates.CopyFrom(rpb.DeviceUpdates(results=updates or []))
    call.send(epb.ReportResultsRequest(chunk=chunk))
    ack = await call.ack()
    call.close()
    assert ack.state == rpb.BATCH_STATE_COMMITTED and ack.rejected == 0, ack


async def push(
    core: RunningCore,
    partition: str,
    sweep: list[rpb.SweepHostResult] | None = None,
    updates: list[rpb.DeviceUpdate] | None = None,
) -> None:
    """Stream one batch as the demo poller, then resolve identity for everything committed."""
    async with core.channel(core.creds.edge()) as channel:
        await stream(egrpc.EdgeServiceStub(channel), partition, sweep, updates)
    assert core.app.identity is not None
    await core.app.identity.settle()


def devices_stub(channel: grpc.aio.Channel) -> dgrpc.DeviceServiceAsyncStub:
    """A DeviceService stub."""
    return dgrpc.DeviceServiceStub(channel)


async def list_devices(core: RunningCore, **filters: object) -> list[dpb.Device]:
    """Every device the platform operator sees in the default tenant."""
    async with core.channel(core.creds.operator()) as channel:
        answer = await devices_stub(channel).ListDevices(dpb.ListDevicesRequest(**filters))  # type: ignore[arg-type]
    return list(answer.devices)
