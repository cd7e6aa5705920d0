"""Coordination ports: the registry of live pollers, replica membership and leadership.

Two adapters implement them (coord/local.py for the embedded default, coord/etcd.py for
production) and pass one contract test suite (tests/coord/).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class RegistryEntry:
    """A live poller in the registry. It disappears when its heartbeats stop."""

    tenant: str
    partition: str
    poller_id: str
    session_id: str
    replica_id: str
    capabilities: tuple[str, ...] = ()
    registered_at: float = 0.0


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    """A running core replica."""

    replica_id: str
    address: str
    version: str
    started_at: float


@dataclass(frozen=True, slots=True)
class LeaderInfo:
    """Who leads now. `fencing_token` orders leaderships: a later one has a larger token."""

    leader_id: str
    fencing_token: int


class PollerRegistry(Protocol):
    """Cluster-wide registry of live pollers, keyed by (tenant, poller_id)."""

    async def put(self, entry: RegistryEntry, ttl: float) -> None:
        """Insert or replace the entry; it expires `ttl` seconds after its last touch."""

    async def touch(self, tenant: str, poller_id: str, session_id: str) -> RegistryEntry | None:
        """Record a heartbeat. Returns the live entry when `session_id` is its session, else None.

        Must not cost a round trip to the backend per call: adapters batch refreshes.
        """

    async def get(self, tenant: str, poller_id: str) -> RegistryEntry | None:
        """The live entry for a poller, or None."""

    async def list(self, tenant: str | None = None, partition: str | None = None) -> list[RegistryEntry]:
        """Live entries, optionally of one tenant and one partition, ordered by key."""

    async def remove(self, tenant: str, poller_id: str) -> None:
        """Delete the entry now (e.g. when the poller is taken offline)."""


LeadershipCallback = Callable[[LeaderInfo | None], Awaitable[None]]


class Coordinator(Protocol):
    """One replica's view of the cluster."""

    @property
    def backend(self) -> str:
        """Name of the backend, e.g. "etcd" or "local"."""

    @property
    def registry(self) -> PollerRegistry:
        """The poller registry."""

    async def start(self, me: ReplicaInfo) -> None:
        """Join the cluster as `me` and start campaigning for leadership."""

    async def close(self) -> None:
        """Resign leadership (if held), leave the cluster and release resources."""

    async def replicas(self) -> list[ReplicaInfo]:
        """Replicas alive now."""

    def leader(self) -> LeaderInfo | None:
        """The current leader as last observed, or None while there is none."""

    def is_leader(self) -> bool:
        """True while this replica holds leadership and its lease is fresh."""

    async def healthy(self) -> bool:
        """Whether the backend answers."""
