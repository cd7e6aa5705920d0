"""Coordination ports: the registry of live pollers, replica membership and leadership.

Two adapters implement them (coord/local.py for the embedded default, coord/etcd.py for
production) and pass one contract test suite (tests/coord/).
"""

from __future__ import annotations

import enum
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
    """Who leads now. `fencing_token` orders leaderships: a later one has a larger token.

    Tokens only compare within one `epoch`: the coordination cluster that issued them (etcd's
    cluster id). An etcd rebuilt from scratch counts revisions from 1 again under a new epoch.
    """

    leader_id: str
    fencing_token: int
    epoch: str = ""


class RegistryChange(enum.StrEnum):
    """What happened to a registry entry."""

    UPSERTED = "upserted"
    """Registered, or registered again (new session, partition or capabilities)."""
    DELETED = "deleted"
    """Gone: removed, or expired because its heartbeats stopped."""


@dataclass(frozen=True, slots=True)
class RegistryEvent:
    """One change of the registry; a DELETED event carries the entry as it was last seen."""

    change: RegistryChange
    entry: RegistryEntry


class RegistryLagged(Exception):
    """A change subscription fell too far behind and was dropped: list again, subscribe again."""


class RegistryChanges(Protocol):
    """A subscription to registry changes: an async iterator of events, in the order seen."""

    def __aiter__(self) -> RegistryChanges:
        """The subscription is its own iterator."""

    async def __anext__(self) -> RegistryEvent:
        """The next change. Raises RegistryLagged after an overflow, StopAsyncIteration once closed."""

    def close(self) -> None:
        """Stop receiving changes."""


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
        """Live entries, optionally of one tenant and one partition.

        Ordered by (tenant, partition, poller_id), one entry per poller.
        """

    async def remove(self, tenant: str, poller_id: str) -> None:
        """Delete the entry now (e.g. when the poller is taken offline)."""

    def changes(self) -> RegistryChanges:
        """Subscribe to every change this replica sees from now on, expiries included.

        The subscription starts when this returns, so `changes()` then `list()` misses nothing.
        A consumer that falls too far behind gets RegistryLagged and should list and subscribe
        again. The leader's liveness monitor uses DELETED events to notice expired pollers at once.
        """


LeadershipCallback = Callable[[LeaderInfo | None], Awaitable[None]]
"""Told this replica's leadership when it gains it, and None when it loses it."""


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

    def on_leadership_change(self, callback: LeadershipCallback) -> None:
        """Call `callback(LeaderInfo)` when this replica becomes leader, `callback(None)` when not.

        Calls run one at a time, in order, on the event loop, and each is awaited before the
        next; a callback added while this replica leads is told so at once. close() waits (up
        to the lease TTL) for the final `callback(None)` before it lets another replica lead,
        so a leader-only job runner stops its jobs there. The callback is a notification:
        is_leader() and the fencing token stay the authority for leader-only writes.
        """

    async def healthy(self) -> bool:
        """Whether the backend answers."""
