"""In-process coordination for the embedded default: one replica, always the leader."""

from __future__ import annotations

import time
from dataclasses import dataclass

from srcore.domain.coordination import LeaderInfo, RegistryEntry, ReplicaInfo


@dataclass(slots=True)
class _Slot:
    entry: RegistryEntry
    ttl: float
    deadline: float


class LocalRegistry:
    """A dict of live pollers with per-entry deadlines on the monotonic clock."""

    def __init__(self) -> None:
        self._slots: dict[tuple[str, str], _Slot] = {}

    def _live(self, key: tuple[str, str], now: float) -> _Slot | None:
        slot = self._slots.get(key)
        if slot is not None and slot.deadline <= now:
            del self._slots[key]
            return None
        return slot

    async def put(self, entry: RegistryEntry, ttl: float) -> None:
        """Insert or replace the entry; it expires `ttl` seconds after its last touch."""
        self._slots[(entry.tenant, entry.poller_id)] = _Slot(entry, ttl, time.monotonic() + ttl)

    async def touch(self, tenant: str, poller_id: str, session_id: str) -> RegistryEntry | None:
        """Extend the entry's deadline when `session_id` matches; None otherwise."""
        now = time.monotonic()
        slot = self._live((tenant, poller_id), now)
        if slot is None or slot.entry.session_id != session_id:
            return None
        slot.deadline = now + slot.ttl
        return slot.entry

    async def get(self, tenant: str, poller_id: str) -> RegistryEntry | None:
        """The live entry for a poller, or None."""
        slot = self._live((tenant, poller_id), time.monotonic())
        return slot.entry if slot else None

    async def list(self, tenant: str | None = None, partition: str | None = None) -> list[RegistryEntry]:
        """Live entries, optionally of one tenant and partition, ordered by key."""
        now = time.monotonic()
        out = []
        for key in sorted(self._slots):
            slot = self._live(key, now)
            if slot is None:
                continue
            entry = slot.entry
            if (tenant is None or entry.tenant == tenant) and (
                partition is None or entry.partition == partition
            ):
                out.append(entry)
        return out

    async def remove(self, tenant: str, poller_id: str) -> None:
        """Delete the entry now."""
        self._slots.pop((tenant, poller_id), None)


class LocalCoordinator:
    """Single-replica coordination: this process is the cluster and its leader."""

    def __init__(self) -> None:
        self._registry = LocalRegistry()
        self._me: ReplicaInfo | None = None
        self._leader: LeaderInfo | None = None

    @property
    def backend(self) -> str:
        """Backend name."""
        return "local"

    @property
    def registry(self) -> LocalRegistry:
        """The in-process poller registry."""
        return self._registry

    async def start(self, me: ReplicaInfo) -> None:
        """Become the only replica and its leader.

        The fencing token is the start time in milliseconds, so a restarted embedded core
        always fences out writes made under its previous life.
        """
        self._me = me
        self._leader = LeaderInfo(me.replica_id, int(time.time() * 1000))

    async def close(self) -> None:
        """Give up leadership."""
        self._leader = None

    async def replicas(self) -> list[ReplicaInfo]:
        """Just this replica."""
        return [self._me] if self._me else []

    def leader(self) -> LeaderInfo | None:
        """This replica while started."""
        return self._leader

    def is_leader(self) -> bool:
        """True while started."""
        return self._leader is not None

    async def healthy(self) -> bool:
        """In-process coordination is always reachable."""
        return True
