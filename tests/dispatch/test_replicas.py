"""Two `srcore serve` processes on one etcd and one PostgreSQL database: a change made through
replica 1 reaches a SyncConfig stream held by replica 2 (pushed, not polled: keepalives are a
minute apart), and replica 2 shutting down ends that stream with UNAVAILABLE."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aetcd
import grpc
import pytest

from serviceradar.admin.v1 import cluster_service_pb2 as cluster_pb
from serviceradar.admin.v1 import cluster_service_pb2_grpc as cluster_grpc
from serviceradar.edge.v1 import edge_service_pb2 as pb
from serviceradar.edge.v1 import edge_service_pb2_grpc as pb_grpc
from srcore.coord.etcd_client import parse_endpoint
from tests.dispatch.support import DEADLINE, ConfigStream, Operator, names
from tests.helpers.core import CoreProcess, DevCredentials, start_core_process
from tests.services import free_port

pytestmark = pytest.mark.slow


async def _wipe(endpoints: list[str], prefix: str) -> None:
    client = aetcd.Client(*parse_endpoint(endpoints[0]), timeout=3)
    try:
        await client.delete_prefix(prefix.encode())
    finally:
        await client.close()


def _stop(replica: CoreProcess) -> None:
    if replica.process.poll() is None:
        replica.terminate()
        replica.process.wait(timeout=30)


async def test_a_change_through_replica_1_is_pushed_by_replica_2(
    tmp_path: Path, etcd_endpoints: list[str], fresh_database: str
) -> None:
    prefix = f"/srcore-test/{uuid.uuid4().hex[:12]}/"
    env = {
        "SRCORE_ETCD_ENDPOINTS": ",".join(etcd_endpoints),
        "SRCORE_ETCD_PREFIX": prefix,
        "SRCORE_DATABASE_URL": fresh_database,
        "SRCORE_LEASE_TTL": "3",
        "SRCORE_SYNC_KEEPALIVE_INTERVAL": "60",
        "SRCORE_GRACE_PERIOD": "5",
    }
    # One data dir: both replicas serve with the same development PKI and secret key.
    data_dir = tmp_path / "data"
    replicas: list[CoreProcess] = []
    try:
        replicas.append(await asyncio.to_thread(start_core_process, data_dir, free_port(), env))
        replicas.append(await asyncio.to_thread(start_core_process, data_dir, free_port(), env))
        one, two = replicas
        creds = DevCredentials(data_dir / "pki")
        async with (
            grpc.aio.secure_channel(one.address, creds.operator()) as admin,
            grpc.aio.secure_channel(two.address, creds.edge()) as edge_channel,
        ):
            status = await cluster_grpc.ClusterServiceStub(admin).GetClusterStatus(
                cluster_pb.GetClusterStatusRequest()
            )
            assert len(status.replicas) == 2 and status.leader_id
            operator = Operator(admin)
            await operator.partition("dc1")
            edge = pb_grpc.EdgeServiceStub(edge_channel)
            await edge.RegisterPoller(
                pb.RegisterPollerRequest(poller_id="demo", partition="dc1", capabilities=["icmp"])
            )
            stream = ConfigStream(edge.SyncConfig(pb.SyncConfigRequest(poller_id="demo")))
            first = await stream.next()
            assert names(first.config) == set()

            await operator.check("gw", "dc1")
            pushed = await stream.next()
            assert names(pushed.config) == {"gw"} and pushed.version != first.version
            assert stream.messages.empty(), "one push, no keepalive: it was not polled"

            await asyncio.to_thread(_stop, two)
            async with asyncio.timeout(DEADLINE):
                await stream.ended.wait()
            assert stream.error is not None and stream.error.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        for replica in replicas:
            await asyncio.to_thread(_stop, replica)
        await _wipe(etcd_endpoints, prefix)
