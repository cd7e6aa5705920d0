"""This replica's in-memory copy of the coordination keyspace, fed by one etcd watch.

Registry reads and leadership decisions are made against this copy, never with a round
trip: it is listed once at one revision and then follows the watch from the next revision,
so it always equals etcd's keyspace as of `Mirror.revision`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from aetcd import rpc

from srcore.coord.local import ChangeFeed
from srcore.domain.coordination import RegistryChange, RegistryEntry, ReplicaInfo

log = logging.getLogger(__name__)

POLLERS = b"pollers/"
CORES = b"cores/"
CAMPAIGN = b"election/leader/"


def poller_key(prefix: bytes, entry: RegistryEntry) -> bytes:
    """`<prefix>pollers/<tenant>/<partition>/<poller>`; ids never contain '/' (validation)."""
    return prefix + POLLERS + f"{entry.tenant}/{entry.partition}/{entry.poller_id}".encode()


def encode_entry(entry: RegistryEntry) -> bytes:
    """The JSON stored under a poller key."""
    return json.dumps(asdict(entry), separators=(",", ":"), sort_keys=True).encode()


def decode_entry(value: bytes) -> RegistryEntry:
    """Inverse of encode_entry; raises ValueError/KeyError/TypeError on a foreign value."""
    data = json.loads(value)
    return RegistryEntry(
        tenant=str(data["tenant"]),
        partition=str(data["partition"]),
        poller_id=str(data["poller_id"]),
        session_id=str(data["session_id"]),
        replica_id=str(data["replica_id"]),
        capabilities=tuple(str(c) for c in data.get("capabilities", ())),
        registered_at=float(data.get("registered_at", 0.0)),
    )


def encode_replica(info: ReplicaInfo) -> bytes:
    """The JSON stored under a replica key."""
    return json.dumps(asdict(info), separators=(",", ":"), sort_keys=True).encode()


def decode_replica(value: bytes) -> ReplicaInfo:
    """Inverse of encode_replica."""
    data = json.loads(value)
    return ReplicaInfo(
        replica_id=str(data["replica_id"]),
        address=str(data["address"]),
        version=str(data["version"]),
        started_at=float(data["started_at"]),
    )


@dataclass(frozen=True, slots=True)
class PollerRecord:
    """A registry entry with where it lives in etcd."""

    key: bytes
    entry: RegistryEntry
    lease: int
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Candidate:
    """A campaign key: the live candidate with the lowest create revision leads."""

    key: bytes
    replica_id: str
    create_revision: int
    lease: int


class Mirror:
    """The pollers and election keys under one prefix, as of `revision`."""

    def __init__(self, prefix: bytes, feed: ChangeFeed, on_change: Callable[[], None]) -> None:
        self._prefix = prefix
        self._feed = feed
        self._on_change = on_change
        self.revision = 0
        self.cluster_id = 0
        self._records: dict[bytes, PollerRecord] = {}
        self._by_poller: dict[tuple[str, str], dict[bytes, PollerRecord]] = {}
        self._candidates: dict[bytes, Candidate] = {}
        self._by_lease: dict[int, bytes] = {}
        self._dead: set[int] = set()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    # reads

    def poller(self, tenant: str, poller_id: str) -> PollerRecord | None:
        """The visible record of a poller: its newest key whose lease is not known dead."""
        records = self._by_poller.get((tenant, poller_id))
        if not records:
            return None
        best: PollerRecord | None = None
        for record in records.values():
            if record.lease in self._dead:
                continue
            if best is None or record.mod_revision > best.mod_revision:
                best = record
        return best

    def records(self, tenant: str, poller_id: str) -> list[PollerRecord]:
        """Every key held for a poller (more than one only after a partition change race)."""
        return list(self._by_poller.get((tenant, poller_id), {}).values())

    def pollers(self, tenant: str | None, partition: str | None) -> list[PollerRecord]:
        """Visible records, filtered, ordered by (tenant, partition, poller_id)."""
        out = []
        for tenant_id, poller_id in self._by_poller:
            if tenant is not None and tenant_id != tenant:
                continue
            record = self.poller(tenant_id, poller_id)
            if record is None or (partition is not None and record.entry.partition != partition):
                continue
            out.append(record)
        out.sort(key=lambda r: (r.entry.tenant, r.entry.partition, r.entry.poller_id))
        return out

    def lowest_candidate(self) -> Candidate | None:
        """The campaign key with the lowest create revision: the leader's."""
        return min(self._candidates.values(), key=lambda c: c.create_revision, default=None)

    def has_candidate(self, key: bytes) -> bool:
        """Whether the campaign key `key` is live as of `revision`."""
        return key in self._candidates

    # writes

    def mark_dead(self, lease: int) -> None:
        """etcd said `lease` no longer exists: hide its entries before the watch deletes them."""
        key = self._by_lease.get(lease)
        record = self._records.get(key) if key is not None else None
        if record is None:
            return
        ident = (record.entry.tenant, record.entry.poller_id)
        before = self.poller(*ident)
        self._dead.add(lease)
        self._publish(before, self.poller(*ident))

    def reset(self, kvs: Iterable[Any], revision: int, cluster_id: int) -> None:
        """Replace the copy by a full listing made at `revision`, reporting what changed."""
        before = {ident: self.poller(*ident) for ident in self._by_poller}
        self._records.clear()
        self._by_poller.clear()
        self._by_lease.clear()
        self._candidates.clear()
        for kv in kvs:
            self._put(kv)
        self._dead &= {r.lease for r in self._records.values()}
        for ident in before.keys() | self._by_poller.keys():
            self._publish(before.get(ident), self.poller(*ident))
        self.cluster_id = cluster_id
        # Set, not raised: a new cluster (etcd rebuilt from scratch) counts from 1 again.
        self.revision = revision
        self._advance(revision)

    def apply(self, response: Any) -> None:
        """Apply one WatchResponse."""
        if response.events:
            revision = self.revision
            for event in response.events:
                kv = event.kv
                key = bytes(kv.key)
                ident = self._ident(key)
                before = self.poller(*ident) if ident else None
                if event.type == rpc.Event.DELETE:
                    self._delete(key)
                else:
                    self._put(kv)
                if ident:
                    self._publish(before, self.poller(*ident))
                revision = max(revision, int(kv.mod_revision))
            self._advance(revision)
        elif not response.created:
            # A progress notification: nothing under the prefix changed up to this revision.
            self._advance(int(response.header.revision))

    async def wait_for(self, revision: int, timeout: float) -> bool:
        """Wait until the copy includes `revision`; False when `timeout` ran out first."""
        if self.revision >= revision:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((revision, future))
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            return False
        finally:
            self._waiters = [(r, f) for r, f in self._waiters if f is not future]
        return True

    # internals

    def _ident(self, key: bytes) -> tuple[str, str] | None:
        rest = key[len(self._prefix) :]
        if not rest.startswith(POLLERS):
            return None
        parts = rest[len(POLLERS) :].decode(errors="replace").split("/")
        if len(parts) != 3:
            return None
        return parts[0], parts[2]

    def _put(self, kv: Any) -> None:
        key = bytes(kv.key)
        rest = key[len(self._prefix) :]
        if rest.startswith(CAMPAIGN):
            try:
                replica_id = str(json.loads(kv.value)["replica_id"])
            except (ValueError, KeyError, TypeError):
                # Still a candidate: its create revision takes part in the ordering.
                replica_id = ""
            self._candidates[key] = Candidate(key, replica_id, int(kv.create_revision), int(kv.lease))
            return
        ident = self._ident(key)
        if ident is None:
            return
        try:
            entry = decode_entry(kv.value)
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring unreadable registry entry %r", key)
            self._delete(key)
            return
        record = PollerRecord(key, entry, int(kv.lease), int(kv.mod_revision))
        previous = self._records.get(key)
        if previous is not None and previous.lease != record.lease:
            self._by_lease.pop(previous.lease, None)
            self._dead.discard(previous.lease)
        self._records[key] = record
        self._by_poller.setdefault(ident, {})[key] = record
        self._by_lease[record.lease] = key

    def _delete(self, key: bytes) -> None:
        self._candidates.pop(key, None)
        record = self._records.pop(key, None)
        if record is None:
            return
        ident = (record.entry.tenant, record.entry.poller_id)
        records = self._by_poller.get(ident)
        if records is not None:
            records.pop(key, None)
            if not records:
                del self._by_poller[ident]
        if self._by_lease.get(record.lease) == key:
            del self._by_lease[record.lease]
        self._dead.discard(record.lease)

    def _publish(self, before: PollerRecord | None, after: PollerRecord | None) -> None:
        if after is None:
            if before is not None:
                self._feed.publish(RegistryChange.DELETED, before.entry)
        elif before is None or before.entry != after.entry:
            self._feed.publish(RegistryChange.UPSERTED, after.entry)

    def _advance(self, revision: int) -> None:
        self.revision = max(self.revision, revision)
        if self._waiters:
            still = []
            for wanted, future in self._waiters:
                if wanted <= self.revision:
                    if not future.done():
                        future.set_result(None)
                else:
                    still.append((wanted, future))
            self._waiters = still
        self._on_change()
