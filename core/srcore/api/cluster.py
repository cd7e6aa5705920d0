"""ClusterService: replicas, leader, fencing token and dependency health."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from serviceradar.admin.v1 import cluster_service_pb2 as pb
from serviceradar.admin.v1 import cluster_service_pb2_grpc as pb_grpc
from srcore.api.context import Context
from srcore.api.convert import timestamp
from srcore.domain.coordination import Coordinator, ReplicaInfo
from srcore.domain.errors import Unavailable
from srcore.security.principal import caller

DependencyProbe = Callable[[], Awaitable[pb.DependencyHealth]]


class ClusterServicer(pb_grpc.ClusterServiceServicer):
    """Answers cluster status from the coordinator and the dependency probes."""

    def __init__(self, coordinator: Coordinator, replica_id: str, probes: list[DependencyProbe]) -> None:
        self._coordinator = coordinator
        self._replica_id = replica_id
        self._probes = probes

    async def _replicas(self) -> list[ReplicaInfo] | None:
        try:
            return await self._coordinator.replicas()
        except Unavailable:
            return None

    async def _dependencies(self) -> list[pb.DependencyHealth]:
        return list(await asyncio.gather(*(probe() for probe in self._probes)))

    async def GetClusterStatus(
        self, request: pb.GetClusterStatusRequest, context: Context
    ) -> pb.GetClusterStatusResponse:
        """The cluster as this replica sees it.

        With etcd unreachable it still answers: the coordination dependency is reported down,
        the replica list is empty (unknown), and only a replica whose lease is still fresh is
        named leader; a leader seen before the outage is not reported as if it still led.
        """
        caller()  # authorised by the interceptor; fails closed if wired without it
        replicas, dependencies = await asyncio.gather(self._replicas(), self._dependencies())
        leader = self._coordinator.leader()
        if replicas is None:
            leader = leader if self._coordinator.is_leader() else None
        return pb.GetClusterStatusResponse(
            answered_by=self._replica_id,
            leader_id=leader.leader_id if leader else "",
            fencing_token=leader.fencing_token if leader else 0,
            replicas=[
                pb.Replica(
                    replica_id=r.replica_id,
                    address=r.address,
                    version=r.version,
                    started_at=timestamp(datetime.fromtimestamp(r.started_at, UTC)),
                    leader=leader is not None and leader.leader_id == r.replica_id,
                )
                for r in replicas or ()
            ],
            dependencies=dependencies,
            server_time=timestamp(datetime.now(UTC)),
        )
