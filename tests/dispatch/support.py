"""Driving dispatch end to end: operators creating work, edge pollers registering, sending
heartbeats and holding SyncConfig streams, all over the real gRPC API of a real core."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

from serviceradar.admin.v1 import assignment_service_pb2 as assignment_pb
from serviceradar.admin.v1 import assignment_service_pb2_grpc as assignment_grpc
from serviceradar.admin.v1 import check_service_pb2 as check_pb
from serviceradar.admin.v1 import check_service_pb2_grpc as check_grpc
from serviceradar.admin.v1 import partition_service_pb2 as partition_pb
from serviceradar.admin.v1 import partition_service_pb2_grpc as partition_grpc
from serviceradar.edge.v1 import config_pb2
from serviceradar.edge.v1 import edge_service_pb2 as pb
from serviceradar.edge.v1 import edge_service_pb2_grpc as pb_grpc
from srcore.security.pki import IssuedCertificate

T = TypeVar("T")

# Generous: these bound how long a test waits for something that normally takes milliseconds.
DEADLINE = 10.0


async def eventually(
    probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout: float = DEADLINE
) -> T:
    """Call `probe` until `done` says its answer is right; the last answer after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        answer = await probe()
        if done(answer) or time.monotonic() > deadline:
            return answer
        await asyncio.sleep(0.05)


class ConfigStream:
    """A SyncConfig call read in the background: every message lands in a queue."""

    def __init__(self, call: grpc.aio.UnaryStreamCall[pb.SyncConfigRequest, pb.SyncConfigResponse]) -> None:
        self.call = call
        self.messages: asyncio.Queue[pb.SyncConfigResponse] = asyncio.Queue()
        self.error: grpc.aio.AioRpcError | None = None
        self.ended = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            async for message in self.call:
                self.messages.put_nowait(message)
        except grpc.aio.AioRpcError as exc:
            self.error = exc
        finally:
            self.ended.set()

    async def next(self, timeout: float = DEADLINE, *, keepalives: bool = False) -> pb.SyncConfigResponse:
        """The next message (keepalives skipped unless asked for)."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self.messages.get()
                if keepalives or message.WhichOneof("body") != "keepalive":
                    return message

    async def config_where(
        self, wanted: Callable[[config_pb2.PollerConfig], bool], timeout: float = DEADLINE
    ) -> pb.SyncConfigResponse:
        """The first pushed configuration `wanted` accepts."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self.next(timeout)
                if message.WhichOneof("body") == "config" and wanted(message.config):
                    return message

    async def close(self) -> None:
        """Cancel the call."""
        self.call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@dataclass
class EdgePoller:
    """One edge poller with its own certificate, channel and (optionally) heartbeats."""

    poller_id: str
    partition: str
    channel: grpc.aio.Channel
    capabilities: Sequence[str] = ()
    agents: Sequence[pb.AgentInfo] = ()
    session: str = ""
    applied: str = ""
    streams: list[ConfigStream] = field(default_factory=list)
    _beating: asyncio.Task[None] | None = None

    @property
    def edge(self) -> pb_grpc.EdgeServiceAsyncStub:
        """The EdgeService stub."""
        return pb_grpc.EdgeServiceStub(self.channel)

    async def register(self) -> pb.RegisterPollerResponse:
        """RegisterPoller with this poller's partition, capabilities and agents."""
        answer = await self.edge.RegisterPoller(
            pb.RegisterPollerRequest(
                poller_id=self.poller_id,
                partition=self.partition,
                version="1.0",
                capabilities=list(self.capabilities),
                agents=list(self.agents),
            )
        )
        self.session = answer.session_id
        return answer

    async def heartbeat(self) -> pb.ReportHealthResponse:
        """One ReportHealth, reporting `applied` as the applied configuration version."""
        return await self.edge.ReportHealth(
            pb.ReportHealthRequest(
                session_id=self.session,
                poller_id=self.poller_id,
                status=pb.COMPONENT_STATUS_OK,
                applied_config_version=self.applied,
            )
        )

    def start_heartbeats(self, interval: float) -> None:
        """Heartbeat every `interval` seconds until `stop_heartbeats` (a live poller)."""

        async def beat() -> None:
            while True:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await self.heartbeat()
                await asyncio.sleep(interval)

        self._beating = asyncio.get_running_loop().create_task(beat())

    async def stop_heartbeats(self) -> None:
        """Go silent, as a poller that was killed."""
        if self._beating is not None:
            self._beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beating
            self._beating = None

    def sync(self, known_version: str = "") -> ConfigStream:
        """Open a SyncConfig stream."""
        stream = ConfigStream(
            self.edge.SyncConfig(pb.SyncConfigRequest(poller_id=self.poller_id, known_version=known_version))
        )
        self.streams.append(stream)
        return stream

    async def close(self) -> None:
        """Stop everything and close the channel."""
        await self.stop_heartbeats()
        for stream in self.streams:
            await stream.close()
        await self.channel.close()


def check_spec(partition: str, **fields: Any) -> check_pb.CheckSpec:
    """An ICMP check of 10.0.0.1 unless `fields` say otherwise."""
    values: dict[str, Any] = {"check_type": config_pb2.CHECK_TYPE_ICMP, "target": "10.0.0.1", **fields}
    return check_pb.CheckSpec(partition=partition, **values)


class Operator:
    """Admin calls over one channel."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.checks = check_grpc.CheckServiceStub(channel)
        self.assignments = assignment_grpc.AssignmentServiceStub(channel)
        self.partitions = partition_grpc.PartitionServiceStub(channel)

    async def partition(self, name: str, tenant: str = "") -> None:
        """Create a partition."""
        await self.partitions.CreatePartition(partition_pb.CreatePartitionRequest(tenant=tenant, name=name))

    async def check(
        self, name: str, partition: str, tenant: str = "", **fields: object
    ) -> check_pb.ServiceCheck:
        """Create a check."""
        answer = await self.checks.CreateCheck(
            check_pb.CreateCheckRequest(tenant=tenant, name=name, spec=check_spec(partition, **fields))
        )
        return answer.check

    async def assignments_of(self, tenant: str = "", **filters: Any) -> list[assignment_pb.WorkAssignment]:
        """Every assignment matching the filters."""
        answer = await self.assignments.ListAssignments(
            assignment_pb.ListAssignmentsRequest(tenant=tenant, page_size=1000, **filters)
        )
        return list(answer.assignments)

    async def placement(self, tenant: str = "") -> dict[str, tuple[str, str]]:
        """name -> (state short name, poller) of every item."""
        return {
            a.name: (
                assignment_pb.AssignmentState.Name(a.assignment.state)
                .removeprefix("ASSIGNMENT_STATE_")
                .lower(),
                a.assignment.poller_id,
            )
            for a in await self.assignments_of(tenant)
        }

    async def placement_where(
        self, done: Callable[[dict[str, tuple[str, str]]], bool], tenant: str = ""
    ) -> dict[str, tuple[str, str]]:
        """The placement once `done` accepts it (or the last one seen)."""
        return await eventually(lambda: self.placement(tenant), done)


def names(config: config_pb2.PollerConfig) -> set[str]:
    """Names of every item in a configuration."""
    return (
        {c.name for c in config.checks} | {s.name for s in config.sweeps} | {s.name for s in config.sources}
    )


def edge_channel(address: str, ca_pem: bytes, issued: IssuedCertificate) -> grpc.aio.Channel:
    """A mutual-TLS channel presenting `issued`."""
    return grpc.aio.secure_channel(
        address, grpc.ssl_channel_credentials(ca_pem, issued.key_pem, issued.cert_pem)
    )
