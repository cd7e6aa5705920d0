"""Fleet figures per tenant and partition: the shape of the stats, and how the grouped counts
the store reads are assembled into it. Pure: the store runs the GROUP BY queries.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

# (tenant, partition)
Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class StateRow:
    """One grouped count: how many entities of a tenant's partition are in one state."""

    tenant: str
    partition: str
    state: str
    count: int


@dataclass(frozen=True, slots=True)
class DeviceRow:
    """Canonical devices of one partition: all of them, and those available."""

    tenant: str
    partition: str
    total: int
    available: int


@dataclass(frozen=True, slots=True)
class IngestRow:
    """Results accepted and rejected by one partition's batches active in the window."""

    tenant: str
    partition: str
    accepted: int
    rejected: int


@dataclass(slots=True)
class PartitionStats:
    """The figures of one partition, or the totals of a tenant (partition "")."""

    tenant: str
    partition: str
    devices_total: int = 0
    devices_available: int = 0
    pollers: dict[str, int] = field(default_factory=dict)
    agents: dict[str, int] = field(default_factory=dict)
    checks: dict[str, int] = field(default_factory=dict)
    accepted_recent: int = 0
    rejected_recent: int = 0

    def ingest_rate(self, window_seconds: float) -> float:
        """Results accepted per second over the window."""
        return self.accepted_recent / window_seconds if window_seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The figures of one tenant as of the last refresh."""

    tenant: str
    partitions: list[PartitionStats]
    totals: PartitionStats
    refreshed_at: datetime | None
    window_seconds: int


def _add_states(target: dict[str, int], states: Mapping[str, int]) -> None:
    for state, count in states.items():
        target[state] = target.get(state, 0) + count


def assemble(
    pollers: Iterable[StateRow],
    agents: Iterable[StateRow],
    checks: Iterable[StateRow],
    devices: Iterable[DeviceRow],
    ingest: Iterable[IngestRow],
) -> list[PartitionStats]:
    """One PartitionStats per (tenant, partition) that has anything to count, sorted."""
    rows: dict[Key, PartitionStats] = {}

    def row(tenant: str, partition: str) -> PartitionStats:
        key = (tenant, partition)
        if key not in rows:
            rows[key] = PartitionStats(tenant, partition)
        return rows[key]

    for kind, counts in (("pollers", pollers), ("agents", agents), ("checks", checks)):
        for r in counts:
            target: dict[str, int] = getattr(row(r.tenant, r.partition), kind)
            target[r.state] = target.get(r.state, 0) + r.count
    for d in devices:
        stats = row(d.tenant, d.partition)
        stats.devices_total += d.total
        stats.devices_available += d.available
    for i in ingest:
        stats = row(i.tenant, i.partition)
        stats.accepted_recent += i.accepted
        stats.rejected_recent += i.rejected
    return [rows[key] for key in sorted(rows)]


def totals(tenant: str, partitions: Iterable[PartitionStats]) -> PartitionStats:
    """The sum of a tenant's partition rows."""
    total = PartitionStats(tenant, "")
    for p in partitions:
        total.devices_total += p.devices_total
        total.devices_available += p.devices_available
        _add_states(total.pollers, p.pollers)
        _add_states(total.agents, p.agents)
        _add_states(total.checks, p.checks)
        total.accepted_recent += p.accepted_recent
        total.rejected_recent += p.rejected_recent
    return total
