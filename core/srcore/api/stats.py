"""StatsService: the fleet figures the leader last computed, for one tenant."""

from __future__ import annotations

from serviceradar.admin.v1 import stats_service_pb2 as pb
from serviceradar.admin.v1 import stats_service_pb2_grpc as pb_grpc
from srcore.api.context import Context
from srcore.api.convert import timestamp
from srcore.domain import validation
from srcore.domain.errors import NotFound
from srcore.domain.stats import PartitionStats
from srcore.security.principal import caller
from srcore.store.stats import StatsRepository


def _states(counts: dict[str, int]) -> list[pb.StateCount]:
    return [pb.StateCount(state=state, count=counts[state]) for state in sorted(counts)]


def partition_message(stats: PartitionStats, window_seconds: int) -> pb.PartitionStats:
    """The admin view of one partition's (or the totals') figures."""
    return pb.PartitionStats(
        partition=stats.partition,
        devices_total=stats.devices_total,
        devices_available=stats.devices_available,
        pollers=_states(stats.pollers),
        agents=_states(stats.agents),
        checks=_states(stats.checks),
        ingest_rate=stats.ingest_rate(window_seconds),
        accepted_recent=stats.accepted_recent,
        rejected_recent=stats.rejected_recent,
    )


class StatsServicer(pb_grpc.StatsServiceServicer):
    """Reads the stats table; the leader job writes it."""

    def __init__(self, repository: StatsRepository) -> None:
        self._repository = repository

    async def GetStats(self, request: pb.GetStatsRequest, context: Context) -> pb.GetStatsResponse:
        """Per-partition figures and tenant totals as of the last refresh."""
        tenant = caller().tenant_for(request.tenant)
        partition = validation.slug("partition", request.partition) if request.partition else None
        if not await self._repository.tenant_exists(tenant):
            raise NotFound(f"tenant {tenant!r} not found")
        snapshot = await self._repository.snapshot(tenant, partition)
        window = snapshot.window_seconds
        return pb.GetStatsResponse(
            tenant=tenant,
            partitions=[partition_message(p, window) for p in snapshot.partitions],
            totals=partition_message(snapshot.totals, window),
            refreshed_at=timestamp(snapshot.refreshed_at),
            window_seconds=window,
        )
