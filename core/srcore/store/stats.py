"""Fleet stats: set-based GROUP BY reads over the registry, results and device tables, written
whole into `stats_partitions` by the leader, and the one indexed read GetStats makes.

`devices` (identity) and `check_latest.state` (processing) belong to other subsystems' migration
branches; they are named here as lightweight table clauses, not redeclared on the metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from srcore.domain.coordination import LeaderInfo
from srcore.domain.ingest import BatchState
from srcore.domain.stats import (
    DeviceRow,
    IngestRow,
    PartitionStats,
    Snapshot,
    StateRow,
    assemble,
    totals,
)
from srcore.store.database import Database
from srcore.store.fence import hold_fence
from srcore.store.ingest_tables import ingest_batches
from srcore.store.pollers import utc
from srcore.store.stats_tables import stats_partitions, stats_refresh
from srcore.store.tables import agents, pollers
from srcore.store.tenancy import tenant_known

REFRESH_ROW = "stats"

devices = sa.table(
    "devices",
    sa.column("tenant", sa.String),
    sa.column("partition", sa.String),
    sa.column("available", sa.Boolean),
    sa.column("merged_into", sa.String),
)
check_states = sa.table(
    "check_latest",
    sa.column("tenant", sa.String),
    sa.column("poller_id", sa.String),
    sa.column("state", sa.String),
)


def _states(rows: Any) -> list[StateRow]:
    return [StateRow(r.tenant, r.partition, r.state, int(r.n)) for r in rows]


async def _poller_states(conn: AsyncConnection) -> list[StateRow]:
    query = sa.select(
        pollers.c.tenant, pollers.c.partition, pollers.c.state, sa.func.count().label("n")
    ).group_by(pollers.c.tenant, pollers.c.partition, pollers.c.state)
    return _states(await conn.execute(query))


async def _joined_states(conn: AsyncConnection, table: Any) -> list[StateRow]:
    # Agents and checks have no partition of their own: they are in their poller's.
    joined = table.join(
        pollers, (pollers.c.tenant == table.c.tenant) & (pollers.c.poller_id == table.c.poller_id)
    )
    query = (
        sa.select(pollers.c.tenant, pollers.c.partition, table.c.state, sa.func.count().label("n"))
        .select_from(joined)
        .group_by(pollers.c.tenant, pollers.c.partition, table.c.state)
    )
    return _states(await conn.execute(query))


async def _devices(conn: AsyncConnection) -> list[DeviceRow]:
    available = sa.func.sum(sa.case((devices.c.available, 1), else_=0))
    query = (
        sa.select(devices.c.tenant, devices.c.partition, sa.func.count().label("n"), available.label("up"))
        .where(devices.c.merged_into.is_(None))
        .group_by(devices.c.tenant, devices.c.partition)
    )
    return [DeviceRow(r.tenant, r.partition, int(r.n), int(r.up or 0)) for r in await conn.execute(query)]


async def _ingest(conn: AsyncConnection, since: datetime) -> list[IngestRow]:
    c = ingest_batches.c
    # Naming every state lets PostgreSQL range-scan ix_ingest_batches_state_updated per state.
    query = (
        sa.select(
            c.tenant,
            c.partition,
            sa.func.sum(c.accepted).label("accepted"),
            sa.func.sum(c.rejected).label("rejected"),
        )
        .where(c.state.in_([s.value for s in BatchState]), c.updated_at >= since)
        .group_by(c.tenant, c.partition)
    )
    rows = await conn.execute(query)
    return [IngestRow(r.tenant, r.partition, int(r.accepted or 0), int(r.rejected or 0)) for r in rows]


def _row(stats: PartitionStats) -> dict[str, Any]:
    return {
        "tenant": stats.tenant,
        "partition": stats.partition,
        "devices_total": stats.devices_total,
        "devices_available": stats.devices_available,
        "pollers": stats.pollers,
        "agents": stats.agents,
        "checks": stats.checks,
        "accepted_recent": stats.accepted_recent,
        "rejected_recent": stats.rejected_recent,
    }


def _counts(value: Any) -> dict[str, int]:
    return {str(k): int(v) for k, v in (value or {}).items()}


class StatsRepository:
    """Computes the figures (leader) and reads them (GetStats)."""

    def __init__(self, db: Database, clock: Callable[[], datetime], window_seconds: int) -> None:
        self._db = db
        self._clock = clock
        self.window_seconds = window_seconds

    async def compute(self, now: datetime) -> list[PartitionStats]:
        """The figures of every tenant and partition as of `now` (five grouped reads)."""
        since = now - timedelta(seconds=self.window_seconds)
        async with self._db.connect() as conn:
            return assemble(
                await _poller_states(conn),
                await _joined_states(conn, agents),
                await _joined_states(conn, check_states),
                await _devices(conn),
                await _ingest(conn, since),
            )

    async def refresh(self, leader: LeaderInfo) -> int:
        """Recompute and replace the stored figures (a leader job); returns the rows written.

        Raises Fenced when a later leadership has written.
        """
        now = self._clock()
        rows = [_row(stats) for stats in await self.compute(now)]
        async with self._db.begin() as conn:
            await conn.execute(stats_partitions.delete())
            if rows:
                await conn.execute(stats_partitions.insert(), rows)
            await conn.execute(stats_refresh.delete())
            await conn.execute(
                stats_refresh.insert().values(
                    name=REFRESH_ROW, refreshed_at=now, window_seconds=self.window_seconds
                )
            )
            await hold_fence(conn, leader, now)
        return len(rows)

    async def tenant_exists(self, tenant: str) -> bool:
        """Whether the tenant exists."""
        async with self._db.connect() as conn:
            return await tenant_known(conn, tenant)

    async def snapshot(self, tenant: str, partition: str | None) -> Snapshot:
        """The stored figures of a tenant (one partition when named), with their totals."""
        query = sa.select(stats_partitions).where(stats_partitions.c.tenant == tenant)
        if partition is not None:
            query = query.where(stats_partitions.c.partition == partition)
        async with self._db.connect() as conn:
            rows = (await conn.execute(query.order_by(stats_partitions.c.partition))).all()
            marker = (
                await conn.execute(sa.select(stats_refresh).where(stats_refresh.c.name == REFRESH_ROW))
            ).first()
        partitions = [
            PartitionStats(
                tenant=r.tenant,
                partition=r.partition,
                devices_total=r.devices_total,
                devices_available=r.devices_available,
                pollers=_counts(r.pollers),
                agents=_counts(r.agents),
                checks=_counts(r.checks),
                accepted_recent=r.accepted_recent,
                rejected_recent=r.rejected_recent,
            )
            for r in rows
        ]
        return Snapshot(
            tenant=tenant,
            partitions=partitions,
            totals=totals(tenant, partitions),
            refreshed_at=utc(marker.refreshed_at) if marker else None,
            window_seconds=marker.window_seconds if marker else self.window_seconds,
        )
