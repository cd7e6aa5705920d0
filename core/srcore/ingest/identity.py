"""The identity stage: resolves committed flushes' observations to canonical devices.

Runs off the ack path, like the latest-state projector: after each local flush and
periodically for flushes other replicas left behind. One round claims a set of unidentified
flushes (FOR UPDATE SKIP LOCKED on PostgreSQL, so replicas share the work), takes their sweep
host results and device updates (from memory when the local writer just handed them over,
else from the store), resolves them through an identity cache in front of the store, and
writes devices, identifiers and merges and marks the flushes identified, all in one
transaction. The cache is only updated after that transaction commits.

Most sweep results are repeats whose identifiers all name one cached live device: those take
a fast path of a few dict lookups and fold into the device without the full rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from itertools import chain
from operator import itemgetter
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from prometheus_client import Counter, Histogram
from sqlalchemy.ext.asyncio import AsyncConnection

from srcore.domain.identity import (
    IP,
    MAC,
    SWEEP_SOURCE,
    Device,
    DeviceState,
    IdentifierKey,
    IdentityResolver,
    IdentityView,
    Observation,
    Resolution,
    Write,
    device_state,
    fold_known_sweep,
    identifiers,
    mac_class,
    needs_write,
    sweep_identifiers,
)
from srcore.domain.ingest import ResultKind
from srcore.ingest.rounds import RoundLoop
from srcore.ingest.writer import CommittedFlush
from srcore.store.database import Database
from srcore.store.devices import (
    SweepRow,
    claim_flushes,
    count_unidentified,
    external_ids_of,
    load_devices,
    load_links,
    lock_tenants,
    mark_identified,
    read_device_updates,
    read_sweeps,
    write_resolution,
)
from srcore.store.flush_reads import FLUSH_INDEXES, RangeSummarizer
from srcore.store.ingest import TABLES

log = logging.getLogger(__name__)

IDENTITY_CACHE_HITS = Counter("srcore_identity_cache_hits_total", "Identifier lookups answered by the cache.")
IDENTITY_CACHE_MISSES = Counter(
    "srcore_identity_cache_misses_total",
    "Identifier lookups the cache could not answer (read from the store).",
)
IDENTITY_LOOKUP_SECONDS = Histogram(
    "srcore_identity_lookup_seconds", "Time to look up one round's identifiers and devices.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)  # fmt: skip
IDENTITY_MERGES = Counter("srcore_identity_merges_total", "Devices merged into another.")
IDENTITY_OBSERVATIONS = Counter("srcore_identity_observations_total", "Observations resolved to devices.")
IDENTITY_KNOWN = Counter(
    "srcore_identity_known_total",
    "Observations whose identifiers all named one cached live device, resolved without the full rules.",
)
IDENTITY_FROM_MEMORY = Counter(
    "srcore_identity_flushes_from_memory_total",
    "Flushes resolved from the rows the writer handed over, without reading them back.",
)


def _picker(kind: ResultKind, names: tuple[str, ...]) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    columns = TABLES[kind][1]
    return itemgetter(*(columns.index(name) for name in names))


# Written rows (TABLES column order) reduced to what identity reads, as the store read returns it.
_SWEEP_FIELDS = _picker(
    ResultKind.SWEEP_HOSTS, ("tenant", "partition", "ip", "mac", "hostname", "available", "observed_at")
)
_UPDATE_FIELDS = _picker(
    ResultKind.DEVICE_UPDATES,
    ("tenant", "partition", "ip", "mac", "hostname", "available", "observed_at", "source", "external_ids"),
)
# Sweep results carry no external ids; one shared empty mapping instead of a dict per row.
_NO_EXTERNAL_IDS: Mapping[str, str] = MappingProxyType({})

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """A least-recently-used map bounded in size, whose entries expire after `ttl` seconds.

    The TTL bounds how long a replica may act on a link another replica has changed. Callers
    read the clock once per round and pass it in, so a hit is one dict lookup, a comparison and
    a move to the end, with nothing allocated.
    """

    def __init__(self, size: int, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._size = size
        self._ttl = ttl
        self.clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        # Entries dropped for room, ever: what was derived from them may no longer hold.
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K, now: float) -> V | None:
        """The cached value, or None when absent or expired at `now` (a reading of `clock`)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] < now:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: K, value: V, now: float) -> None:
        """Cache a value, evicting the least recently used entries beyond the size bound."""
        if self._size <= 0:
            return
        entries = self._entries
        entries[key] = (now + self._ttl, value)
        entries.move_to_end(key)
        if len(entries) > self._size:
            while len(entries) > self._size:
                entries.popitem(last=False)
                self.evictions += 1

    @property
    def entries(self) -> OrderedDict[K, tuple[float, V]]:
        """The map itself, (expiry, value) by key, for hot loops that inline `get`.

        Such a loop must treat an entry whose expiry is before its clock reading as absent and
        move a hit to the end, as `get` does.
        """
        return self._entries

    def clear(self) -> None:
        """Forget everything."""
        self._entries.clear()


LinkKey = tuple[str, IdentifierKey]
DeviceKey = tuple[str, str]
# A sweep result's (tenant, partition, ip, mac).
SweepKey = tuple[str, str, str, str]
# What the caches named for a SweepKey: (expiry, device, identifiers looked up, quiet until,
# the device's key). Up to "quiet until", a result with the device's own attributes changes
# nothing of it (IdentityStage.sweep_index).
Indexed = tuple[float, Device, int, datetime, DeviceKey]
# "Quiet until" of an entry whose device has not been folded since it was made.
_NOT_QUIET = datetime.min.replace(tzinfo=UTC)


@contextlib.contextmanager
def _collector_deferred() -> Iterator[None]:
    """Hold the cyclic garbage collector over a stretch of a round that allocates per observation.

    Resolving new hosts allocates several tracked objects per device, and with the collector on
    its collections (full ones over every cached device included) ran often enough to cost more
    than the rules themselves: 9 against 2.6 microseconds per new device, measured. The stretch
    never awaits, so no other task runs meanwhile; the collector catches up once re-enabled.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _sqlite_time(value: Any) -> datetime:
    """An observation time as SQLite keeps it (naive UTC text or datetime), made aware."""
    when = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _sweep_observation(row: SweepRow) -> Observation:
    tenant, partition, ip, mac, hostname, available, observed_at = row
    return Observation(
        tenant, partition, ip, mac, hostname, available, observed_at, SWEEP_SOURCE, _NO_EXTERNAL_IDS
    )


class _FastPath:
    """One round's fast path: observations whose every identifier names one cached live device.

    By the rules such an observation resolves to that device and changes no link and no merge,
    so only the device's attributes move. A device some other observation of the round also
    names (through the cache) is left to the full rules with all its observations, so the
    rules still see them in time order.
    """

    def __init__(self, stage: IdentityStage, resolution: timedelta) -> None:
        self._stage = stage
        self._resolution = resolution
        # The latest fast sweep result per device, and the cached device it names.
        self._latest: dict[DeviceKey, SweepRow] = {}
        self._devices: dict[DeviceKey, Device] = {}
        self._updates: list[tuple[Device, Observation]] = []
        # The devices of quiet results (ones that change nothing), one entry per result.
        self._quiet: list[DeviceKey] = []
        # Devices the fast path changed and those whose last_seen alone moved, to write;
        # observations it resolved; cache hits.
        self.written: dict[DeviceKey, Device] = {}
        self.seen: dict[DeviceKey, Device] = {}
        self.resolved = 0
        self.hits = 0

    def triage(
        self, sweeps: Sequence[SweepRow], updates: Sequence[Observation]
    ) -> tuple[list[SweepRow], list[Observation]]:
        """Take what the fast path resolves; return the sweep results and updates it leaves."""
        stage = self._stage
        now = stage.links.clock()
        link = stage.links.get
        cached = stage.devices.get
        # TtlCache.get inlined: this loop runs for every sweep result.
        entries = stage.links.entries
        entry_of = entries.get
        touch = entries.move_to_end
        device_entries = stage.devices.entries
        index = stage.sweep_index
        indexed = index.get
        if len(index) + len(sweeps) > stage.index_size:
            index.clear()
        latest = self._latest
        devices = self._devices
        quiet = self._quiet
        slow: list[SweepRow] = []
        hits = 0
        for row in sweeps:
            held = indexed(row[:4])
            if held is not None and held[0] >= now:
                device = held[1]
                observed_at = row[6]
                if device.merged_into is not None or observed_at < device.first_seen:
                    slow.append(row)
                    continue
                hits += held[2]
                # The usual repeat: the device's own attributes, before its last_seen is due.
                # Compared live, as the device may have changed since the entry was made.
                if (
                    observed_at < held[3]
                    and row[5] == device.available
                    and row[2] == device.ip
                    and row[3] == device.mac
                    and row[1] == device.partition
                    and (not row[4] or row[4] == device.hostname)
                ):
                    quiet.append(held[4])
                    continue
                key = held[4]
                devices[key] = device
                previous = latest.get(key)
                if previous is None or observed_at >= previous[6]:
                    latest[key] = row
                continue
            tenant, partition, ip, mac, _, _, observed_at = row
            link_key = (tenant, (IP, ip, partition))
            entry = entry_of(link_key)
            if entry is None or entry[0] < now:
                slow.append(row)
                continue
            touch(link_key)
            device_id = entry[1]
            expires = entry[0]
            looked = 1
            if mac:
                kind = mac_class(mac)
                if kind:
                    looked = 2
                    link_key = (tenant, (kind, mac, "" if kind == MAC else partition))
                    entry = entry_of(link_key)
                    if entry is None or entry[0] < now or entry[1] != device_id:
                        slow.append(row)
                        continue
                    touch(link_key)
                    expires = min(expires, entry[0])
            key = (tenant, device_id)
            held_device = device_entries.get(key)
            if held_device is None or held_device[0] < now or held_device[1].merged_into is not None:
                slow.append(row)
                continue
            device = held_device[1]
            if observed_at < device.first_seen:
                slow.append(row)
                continue
            if key not in devices:
                device_entries.move_to_end(key)
                devices[key] = device
            index[row[:4]] = (min(expires, held_device[0]), device, looked, _NOT_QUIET, key)
            hits += looked
            previous = latest.get(key)
            if previous is None or observed_at >= previous[6]:
                latest[key] = row
        resolved = len(sweeps) - len(slow)
        rest: list[Observation] = []
        for obs in updates:
            strong, weak, recorded = identifiers(obs)
            keys = (*strong, *weak, *recorded)
            named = {link((obs.tenant, key), now) for key in keys}
            if len(named) == 1 and None not in named:
                named_device = cached((obs.tenant, named.pop() or ""), now)
                if (
                    named_device is not None
                    and named_device.merged_into is None
                    and obs.observed_at >= named_device.first_seen
                ):
                    hits += len(keys)
                    resolved += 1
                    self._updates.append((named_device, obs))
                    continue
            rest.append(obs)
        self.resolved = resolved
        self.hits = hits
        return slow, rest

    def demote(
        self, named: Collection[DeviceKey], sweeps: Sequence[SweepRow], slow: Sequence[SweepRow]
    ) -> tuple[list[SweepRow], list[Observation]]:
        """Leave every observation of a device the rules' observations name (`named`) to the rules.

        So is a device with quiet results and others: only the rules fold them in time order.
        Returns the sweep results and updates taken back from the fast path.
        """
        if not named and not self._latest:
            return [], []
        quiet = set(self._quiet)
        fast = {(device.tenant, device.device_id) for device, _ in self._updates}
        fast.update(self._latest)
        fast.update(quiet)
        tainted = {key for key in named if key in fast}
        tainted.update(quiet.intersection(self._latest))
        if not tainted:
            return [], []
        rows: list[SweepRow] = []
        if not tainted.isdisjoint(self._latest) or not tainted.isdisjoint(quiet):
            link = self._stage.links.get
            now = self._stage.links.clock()
            already = {id(row) for row in slow}
            for row in sweeps:
                tenant = row[0]
                if id(row) not in already and (tenant, link((tenant, (IP, row[2], row[1])), now)) in tainted:
                    rows.append(row)
            for device_key in tainted:
                self._latest.pop(device_key, None)
        updates = [obs for device, obs in self._updates if (device.tenant, device.device_id) in tainted]
        self._updates = [(d, o) for d, o in self._updates if (d.tenant, d.device_id) not in tainted]
        self.resolved -= len(rows) + len(updates)
        return rows, updates

    def apply(
        self, resolver: IdentityResolver, stored: dict[DeviceKey, tuple[DeviceState, datetime]]
    ) -> None:
        """Fold the fast observations into their devices, after the rules resolved the rest.

        A device the rules also touched (or reloaded) takes its observations through the
        resolver, so the round decides whether to write it once; the others are folded in
        place and collected in `written` when they changed, in `seen` when only their last_seen
        must be written.
        """
        view = resolver.view
        index = self._stage.sweep_index
        through_rules: set[DeviceKey] = set()

        def observe(key: DeviceKey, device: Device, obs: Observation) -> None:
            if key not in stored:
                stored[key] = (device_state(device), device.last_seen)
            resolver.observe(view.live(key[0], key[1]) or device, obs)
            through_rules.add(key)

        for device, obs in self._updates:
            key = (device.tenant, device.device_id)
            observe(key, view.devices.get(key, device), obs)
        touched = resolver.result.devices
        for key, row in self._latest.items():
            device = self._devices[key]
            current = view.devices.get(key, device)
            if key in touched or key in through_rules or current is not device:
                observe(key, current, _sweep_observation(row))
            else:
                write = fold_known_sweep(device, *row[1:], self._resolution)
                if write is Write.DEVICE:
                    self.written[key] = device
                    continue
                if write is Write.LAST_SEEN:
                    self.seen[key] = device
                # The device is as stored: a repeat of this result is quiet until its last_seen is due.
                held = index.get(row[:4])
                if held is not None and held[1] is device:
                    index[row[:4]] = (held[0], device, held[2], device.last_seen + self._resolution, key)


class IdentityStage(RoundLoop):
    """Resolves unidentified flushes in rounds; see the module docstring."""

    def __init__(
        self,
        db: Database,
        clock: Callable[[], datetime],
        replica_id: str = "",
        cache_size: int = 200_000,
        cache_ttl: float = 300.0,
        last_seen_resolution: float = 60.0,
        flushes_per_round: int = 20,
        poll_interval: float = 5.0,
        memory_flushes: int = 10,
    ) -> None:
        super().__init__("identity-resolution", poll_interval)
        self._db = db
        self._clock = clock
        self.replica_id = replica_id
        self._flushes_per_round = flushes_per_round
        self._last_seen_resolution = last_seen_resolution
        self.links: TtlCache[LinkKey, str] = TtlCache(cache_size, cache_ttl)
        self.devices: TtlCache[DeviceKey, Device] = TtlCache(cache_size, cache_ttl)
        # What the fast path found for a sweep result's (tenant, partition, ip, mac) in the caches
        # above (`Indexed`), so a repeat of that result is resolved with one lookup. Derived from
        # the caches, it holds only while they do: an entry expires with the first of its cache
        # entries, and the whole index is dropped whenever a cached link moves to another device,
        # a cached device is replaced, a merge is written, a cache entry is evicted or a round
        # fails. Once a result folded into its device without changing it, the entry also says
        # until when a repeat with the same attributes is quiet: it changes nothing, and is not
        # folded at all (the last_seen it would move is not due yet).
        self.sweep_index: dict[SweepKey, Indexed] = {}
        self.index_size = cache_size
        self._evictions = 0
        self.hits = 0
        self.misses = 0
        # Observations resolved by the fast path; device rows written; flushes taken from memory.
        self.known = 0
        self.device_writes = 0
        self.from_memory = 0
        # Rows of committed flushes the writer handed over, by flush id, until a round claims them.
        # Bounded: past `memory_flushes` waiting, a flush is read back from the store instead.
        self._memory: dict[int, tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]] = {}
        self._memory_flushes = memory_flushes
        self._summarizer = RangeSummarizer(db)

    def notify(self, flush: CommittedFlush) -> None:
        """A flush committed: keep its observations in memory (within the bound) and resolve soon."""
        if len(self._memory) < self._memory_flushes:
            rows = flush.rows
            # Only the columns identity reads, so the rest of the written rows can be freed.
            with _collector_deferred():
                self._memory[flush.flush_id] = (
                    list(map(_SWEEP_FIELDS, rows.get(ResultKind.SWEEP_HOSTS, ()))),
                    list(map(_UPDATE_FIELDS, rows.get(ResultKind.DEVICE_UPDATES, ()))),
                )
        self._wakeup.set()

    @property
    def waiting_in_memory(self) -> int:
        """Flushes whose rows are held in memory for a coming round."""
        return len(self._memory)

    async def drain(self) -> int:
        """Resolve every pending flush now; returns how many flushes."""
        total = 0
        while done := await self.run_round():
            total += done
        return total

    async def settle(self) -> None:
        """Return once every flush committed so far is resolved, by this replica or another."""
        while True:
            await self.drain()
            if not await count_unidentified(self._db):
                return
            # Another round (ours in the background, or another replica's) holds the rest.
            await asyncio.sleep(0.01)

    def _take_from_memory(
        self, claimed: list[int], held: Collection[int]
    ) -> dict[int, tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
        """The in-memory rows of the claimed flushes; forgets flushes no round of ours will claim.

        `held` is what memory held when the claim started. The claim takes the oldest
        unidentified flushes not locked elsewhere, so a flush held then, not claimed, and older
        than the newest claimed (or any, when the claim was not full) is identified or being
        identified by another replica (which, if it fails, leaves it to be read from the store).
        A flush handed over while the claim ran may not have been visible to it: it stays.
        """
        memory = self._memory
        taken = {flush_id: memory.pop(flush_id) for flush_id in claimed if flush_id in memory}
        if memory:
            full = len(claimed) >= self._flushes_per_round
            newest = max(claimed, default=0)
            for flush_id in [f for f in held if f in memory and (not full or f < newest)]:
                del memory[flush_id]
        return taken

    async def _observations(
        self,
        conn: AsyncConnection,
        flush_ids: list[int],
        taken: dict[int, tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]],
    ) -> tuple[list[SweepRow], list[Observation]]:
        """The claimed flushes' sweep results (as tuples) and device updates: `taken` from memory."""
        sweeps: list[SweepRow] = []
        updates: list[tuple[Any, ...]] = []
        for sweep_rows, update_rows in taken.values():
            sweeps.extend(sweep_rows)
            updates.extend(update_rows)
        postgres = conn.dialect.name == "postgresql"
        if not postgres:
            # SQLite rows hold timestamps as the text the store keeps.
            sweeps = [(*r[:6], _sqlite_time(r[6])) for r in sweeps]
        observations = [
            Observation(t, p, ip, mac, host, up, at if postgres else _sqlite_time(at), source,
                        external_ids_of(ids))
            for t, p, ip, mac, host, up, at, source, ids in updates
        ]  # fmt: skip
        rest = [flush_id for flush_id in flush_ids if flush_id not in taken]
        if rest:
            # From a connection of its own: this round's transaction holds its claim meanwhile.
            await self._summarizer.catch_up(FLUSH_INDEXES)
            sweeps.extend(await read_sweeps(conn, rest))
            observations.extend(await read_device_updates(conn, rest))
        self.from_memory += len(taken)
        IDENTITY_FROM_MEMORY.inc(len(taken))
        return sweeps, observations

    async def run_round(self) -> int:
        """Resolve one set of flushes in one transaction; returns how many flushes (0: none left)."""
        stored: dict[DeviceKey, tuple[DeviceState, datetime]] = {}
        try:
            async with self._db.begin() as conn:
                held = list(self._memory)
                flush_ids = await claim_flushes(conn, self._flushes_per_round)
                taken = self._take_from_memory(flush_ids, held)
                if not flush_ids:
                    return 0
                sweeps, arrived = await self._observations(conn, flush_ids, taken)
                await lock_tenants(conn, {r[0] for r in sweeps} | {o.tenant for o in arrived})
                fast = _FastPath(self, timedelta(seconds=self._last_seen_resolution))
                with _collector_deferred():
                    rows, updates = fast.triage(sweeps, arrived)
                started = time.perf_counter()
                view = IdentityView({}, {})
                # Every identifier the rules will look at, and how many observations carry it.
                carried: dict[LinkKey, int] = defaultdict(int)
                row_keys = await self._load_for(conn, rows, updates, view, stored, carried)
                # A device the rules' observations name takes all its observations to the rules.
                more_rows, more_updates = fast.demote(view.devices, sweeps, rows)
                if more_rows or more_updates:
                    row_keys += await self._load_for(conn, more_rows, more_updates, view, stored, carried)
                    # Back in arrival order: the rules take observations of the same time in that order.
                    keys_of = {id(row): keys for row, keys in zip(rows + more_rows, row_keys, strict=True)}
                    rows = [row for row in sweeps if id(row) in keys_of]
                    row_keys = [keys_of[id(row)] for row in rows]
                    left = {id(obs) for obs in updates + more_updates}
                    updates = [obs for obs in arrived if id(obs) in left]
                IDENTITY_LOOKUP_SECONDS.observe(time.perf_counter() - started)
                with _collector_deferred():
                    resolver = IdentityResolver(view)
                    # A sweep result whose identifiers are all unknown and its own in the round is a new
                    # device whatever the order: created in one step, without an Observation.
                    links = view.links
                    observations: list[Observation] = []
                    for row, keys in zip(rows, row_keys, strict=True):
                        tenant = row[0]
                        for key in keys:
                            link_key = (tenant, key)
                            if link_key in links or carried[link_key] != 1:
                                break
                        else:
                            if resolver.create_unseen(*row, keys):
                                continue
                        observations.append(_sweep_observation(row))
                    observations.extend(updates)
                    observations.sort(key=lambda o: o.observed_at)
                    resolution = resolver.resolve_all(observations)
                    fast.apply(resolver, stored)
                    self._sort_writes(resolution, stored)
                    resolution.devices.update(fast.written)
                    resolution.seen.update(fast.seen)
                await write_resolution(conn, resolution, self._clock(), self.replica_id)
                await mark_identified(conn, flush_ids)
        except BaseException:
            # Resolution mutates cached devices in place; after a rollback they may be wrong.
            self.devices.clear()
            self.links.clear()
            self.sweep_index.clear()
            raise
        IDENTITY_MERGES.inc(len(resolution.merges))
        IDENTITY_OBSERVATIONS.inc(len(sweeps) + len(arrived))
        IDENTITY_KNOWN.inc(fast.resolved)
        IDENTITY_CACHE_HITS.inc(fast.hits)
        self.hits += fast.hits
        self._remember(view, bool(resolution.merges))
        self.known += fast.resolved
        self.device_writes += len(resolution.devices) + len(resolution.seen)
        return len(flush_ids)

    def _remember(self, view: IdentityView, merged: bool) -> None:
        """Cache a committed round's links and devices; drop the sweep index if they moved."""
        now = self.links.clock()
        moved = merged
        links = self.links.entries
        for link_key, device_id in view.links.items():
            held = links.get(link_key)
            moved = moved or (held is not None and held[1] != device_id)
            self.links.put(link_key, device_id, now)
        devices = self.devices.entries
        for loaded, device in view.devices.items():
            held_device = devices.get(loaded)
            moved = moved or (held_device is not None and held_device[1] is not device)
            self.devices.put(loaded, device, now)
        evictions = self.links.evictions + self.devices.evictions
        if moved or evictions != self._evictions:
            self.sweep_index.clear()
        self._evictions = evictions

    async def _load_for(
        self,
        conn: AsyncConnection,
        rows: Sequence[SweepRow],
        updates: Sequence[Observation],
        view: IdentityView,
        stored: dict[DeviceKey, tuple[DeviceState, datetime]],
        carried: dict[LinkKey, int],
    ) -> list[tuple[IdentifierKey, ...]]:
        """Load what these observations' identifiers name into `view`, counting them in `carried`.

        Returns the sweep results' identifiers, row for row.
        """
        row_keys = [sweep_identifiers(row[1], row[2], row[3]) for row in rows]
        by_tenant: dict[str, set[IdentifierKey]] = defaultdict(set)
        named: list[tuple[str, tuple[IdentifierKey, ...]]] = [
            (obs.tenant, (*strong, *weak, *recorded))
            for obs in updates
            for strong, weak, recorded in (identifiers(obs),)
        ]
        for tenant, keys in chain(zip((row[0] for row in rows), row_keys, strict=True), named):
            wanted = by_tenant[tenant]
            for key in keys:
                carried[(tenant, key)] += 1
                wanted.add(key)
        for tenant, wanted in by_tenant.items():
            await self._load(conn, tenant, wanted, view, stored)
        return row_keys

    def _sort_writes(
        self, resolution: Resolution, stored: dict[DeviceKey, tuple[DeviceState, datetime]]
    ) -> None:
        """Sort the rules' devices by what they need written; only changed ones stay in `devices`.

        A device whose only change is a last_seen moved less than the resolution is not written:
        its in-memory last_seen goes back to the stored one, so the cache says what the store
        says. One whose last_seen alone moved further goes to `seen`.
        """
        resolution_td = timedelta(seconds=self._last_seen_resolution)
        for key, device in list(resolution.devices.items()):
            write = needs_write(device, stored.get(key), resolution_td)
            if write is Write.NOTHING:
                resolution.devices.pop(key).last_seen = stored[key][1]
            elif write is Write.LAST_SEEN:
                resolution.seen[key] = resolution.devices.pop(key)

    async def _load(
        self,
        conn: AsyncConnection,
        tenant: str,
        keys: set[IdentifierKey],
        view: IdentityView,
        stored: dict[DeviceKey, tuple[DeviceState, datetime]],
    ) -> None:
        """Fill `view` with the links of a tenant's identifiers `keys` and their devices: cache first.

        `stored` receives the state of every device loaded, to tell later what changed.
        """
        links = view.links
        now = self.links.clock()
        cached_link = self.links.get
        missing: list[IdentifierKey] = []
        for key in keys:
            device_id = cached_link((tenant, key), now)
            if device_id is None:
                missing.append(key)
            else:
                links[(tenant, key)] = device_id
        hits = len(keys) - len(missing)
        self.hits += hits
        self.misses += len(missing)
        IDENTITY_CACHE_HITS.inc(hits)
        IDENTITY_CACHE_MISSES.inc(len(missing))
        if missing:
            for key, device_id in (await load_links(conn, tenant, missing)).items():
                links[(tenant, key)] = device_id
        wanted = {device_id for (t, _), device_id in links.items() if t == tenant}
        cached_device = self.devices.get
        for _ in range(3):
            absent: list[str] = []
            for device_id in wanted:
                device = cached_device((tenant, device_id), now)
                if device is None:
                    absent.append(device_id)
                else:
                    view.devices[(tenant, device_id)] = device
            if absent:
                for device_id, device in (await load_devices(conn, tenant, absent)).items():
                    view.devices[(tenant, device_id)] = device
            # Merged devices name their survivor, which must be in the view too.
            wanted = {
                d.merged_into
                for (t, _), d in view.devices.items()
                if t == tenant and d.merged_into and (tenant, d.merged_into) not in view.devices
            }
            if not wanted:
                break
        for device_key, device in view.devices.items():
            if device_key[0] == tenant and device_key not in stored:
                stored[device_key] = (device_state(device), device.last_seen)
