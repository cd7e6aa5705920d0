"""The identity stage: resolves committed flushes' observations to canonical devices.

Runs off the ack path, like the latest-state projector: after each local flush and
periodically for flushes other replicas left behind. One round takes a set of unidentified
flushes off the queue (FOR UPDATE SKIP LOCKED on PostgreSQL, so replicas share the work), takes
their sweep host results and device updates (from memory when the local writer just handed
them over, else from the store), resolves them through an identity cache in front of the store,
and writes devices, identifiers and merges, all in one transaction: a rollback puts the flushes
back on the queue. The cache is only updated after that transaction commits.

Most sweep results are repeats whose identifiers all name one cached live device: those take
a fast path of a few dict lookups and fold into the device without the full rules, or, when
they change nothing, are not folded at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from itertools import chain
from operator import is_not, itemgetter, ne
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
    count_unidentified,
    external_ids_of,
    load_devices,
    load_links,
    lock_tenants,
    plan_for_arrays,
    read_device_updates,
    read_sweeps,
    take_flushes,
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


def _positions(kind: ResultKind, names: tuple[str, ...]) -> tuple[int, ...]:
    columns = TABLES[kind][1]
    return tuple(columns.index(name) for name in names)


# Where a sweep result's (tenant, partition, ip, mac, hostname, available, observed_at) are in
# a row: a SweepRow as the store read returns it, or a written row (TABLES column order).
Layout = tuple[int, int, int, int, int, int, int]
_SWEEP_ROW: Layout = (0, 1, 2, 3, 4, 5, 6)
_WRITTEN_SWEEP: Layout = _positions(  # type: ignore[assignment]
    ResultKind.SWEEP_HOSTS, ("tenant", "partition", "ip", "mac", "hostname", "available", "observed_at")
)
_SWEEP_FIELDS = itemgetter(*_WRITTEN_SWEEP)
_UPDATE_COLUMNS = ("tenant", "partition", "ip", "mac", "hostname", "available", "observed_at", "source")
_UPDATE_FIELDS = itemgetter(*_positions(ResultKind.DEVICE_UPDATES, (*_UPDATE_COLUMNS, "external_ids")))
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
        self.put_all(((key, value),), now, ne)

    def put_all(self, items: Iterable[tuple[K, V]], now: float, differs: Callable[[V, V], bool]) -> bool:
        """Cache each (key, value) as `put` does; whether one replaced a value it `differs` from.

        A round caches every link and device it resolved: one call, with no `move_to_end` for
        the new entries (a new key goes to the end as it is).
        """
        if self._size <= 0:
            return False
        entries = self._entries
        held_of = entries.get
        touch = entries.move_to_end
        expiry = now + self._ttl
        replaced = False
        for key, value in items:
            held = held_of(key)
            if held is not None:
                replaced = replaced or differs(held[1], value)
                touch(key)
            entries[key] = (expiry, value)
        while len(entries) > self._size:
            entries.popitem(last=False)
            self.evictions += 1
        return replaced

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
# A committed flush's rows as handed over: its written sweep rows, its device updates' fields.
_HeldRows = tuple[Sequence[tuple[Any, ...]], list[tuple[Any, ...]]]
# "Quiet until" of an entry whose device has not been folded since it was made.
_NOT_QUIET = datetime.min.replace(tzinfo=UTC)


class Indexed:
    """What the caches named for a SweepKey (IdentityStage.sweep_index).

    `expiry` is the first of the cache entries' expiries, `looked` how many identifiers were
    looked up. Once a result folded into the device and left it as stored, `until` is when its
    last_seen is next due: before then a result with the device's own attributes changes
    nothing of it (quiet), from then on only its last_seen (due). Mutable, so moving `until`
    allocates nothing.
    """

    __slots__ = ("device", "expiry", "key", "looked", "until")

    def __init__(self, expiry: float, device: Device, looked: int, key: DeviceKey) -> None:
        self.expiry = expiry
        self.device = device
        self.looked = looked
        self.until = _NOT_QUIET
        self.key = key


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

    Sweep results are rows in a `Layout`, known by their position in the round's list: a
    quiet one (see `IdentityStage.sweep_index`) is never turned into a SweepRow at all.
    """

    def __init__(
        self, stage: IdentityStage, resolution: timedelta, sweeps: Sequence[tuple[Any, ...]], layout: Layout
    ) -> None:
        self._stage = stage
        self._resolution = resolution
        self._sweeps = sweeps
        self._layout = layout
        # Written rows are reduced to SweepRows only when they need more than the index.
        self._to_sweep: Callable[[tuple[Any, ...]], SweepRow] | None = (
            None if layout == _SWEEP_ROW else itemgetter(*layout)
        )
        # The latest fast sweep result per device to fold, and its index entry (which names the
        # cached device: every entry of one device in a round holds the same one).
        self._latest: dict[DeviceKey, SweepRow] = {}
        self._marks: dict[DeviceKey, Indexed] = {}
        # Devices whose results only move last_seen: the latest such result's position (its
        # index entry in `_marks`; a device both here and in `_latest` goes to the rules).
        self._due: dict[DeviceKey, int] = {}
        self._updates: list[tuple[Device, Observation]] = []
        # Every other fast sweep result, by position, with its device.
        self._folded: list[tuple[int, DeviceKey]] = []
        # Quiet and due results (the device's own attributes) by position, and their devices.
        self._quiet_at: list[int] = []
        self._quiet: list[DeviceKey] = []
        # Devices the fast path changed and those whose last_seen alone moved, to write;
        # observations it resolved; cache hits.
        self.written: dict[DeviceKey, Device] = {}
        self.seen: dict[DeviceKey, Device] = {}
        self.resolved = 0
        self.hits = 0

    @property
    def quiet_only(self) -> bool:
        """Whether every observation the fast path took was quiet (so it has nothing to write)."""
        return not self._latest and not self._updates and not self._due

    def rows(self, positions: Sequence[int]) -> list[SweepRow]:
        """The sweep results at these positions, as SweepRows."""
        sweeps, to_sweep = self._sweeps, self._to_sweep
        if to_sweep is None:
            return [sweeps[i] for i in positions]
        return [to_sweep(sweeps[i]) for i in positions]

    def triage(self, updates: Sequence[Observation]) -> tuple[list[int], list[Observation]]:
        """Take what the fast path resolves; return the positions of the sweep results and the
        updates it leaves to the rules."""
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
        sweeps = self._sweeps
        if len(index) + len(sweeps) > stage.index_size:
            index.clear()
        at_tenant, at_partition, at_ip, at_mac, at_hostname, at_available, at_observed = self._layout
        key_of = itemgetter(at_tenant, at_partition, at_ip, at_mac)
        to_sweep = self._to_sweep
        latest = self._latest
        marks = self._marks
        due = self._due
        folded = self._folded.append
        quiet_at = self._quiet_at.append
        quiet = self._quiet.append
        slow: list[int] = []
        hits = 0
        for i, row in enumerate(sweeps):
            sweep_key = key_of(row)
            held = indexed(sweep_key)
            if held is not None and held.expiry >= now:
                device = held.device
                observed_at = row[at_observed]
                if device.merged_into is not None or observed_at < device.first_seen:
                    slow.append(i)
                    continue
                hits += held.looked
                key = held.key
                # The usual repeat: the device's own attributes, compared live, as the device
                # may have changed since the entry was made.
                if (
                    row[at_available] == device.available
                    and row[at_ip] == device.ip
                    and row[at_mac] == device.mac
                    and row[at_partition] == device.partition
                    and (not row[at_hostname] or row[at_hostname] == device.hostname)
                ):
                    if observed_at < held.until:
                        quiet_at(i)
                        quiet(key)
                        continue
                    if held.until is not _NOT_QUIET:
                        quiet_at(i)
                        quiet(key)
                        previous_due = due.get(key)
                        if previous_due is None or observed_at >= sweeps[previous_due][at_observed]:
                            due[key] = i
                            marks[key] = held
                        continue
                folded((i, key))
                previous = latest.get(key)
                if previous is None or observed_at >= previous[6]:
                    latest[key] = row if to_sweep is None else to_sweep(row)
                    marks[key] = held
                continue
            tenant, partition, ip, mac = sweep_key
            observed_at = row[at_observed]
            link_key = (tenant, (IP, ip, partition))
            entry = entry_of(link_key)
            if entry is None or entry[0] < now:
                slow.append(i)
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
                        slow.append(i)
                        continue
                    touch(link_key)
                    expires = min(expires, entry[0])
            key = (tenant, device_id)
            held_device = device_entries.get(key)
            if held_device is None or held_device[0] < now or held_device[1].merged_into is not None:
                slow.append(i)
                continue
            device = held_device[1]
            if observed_at < device.first_seen:
                slow.append(i)
                continue
            device_entries.move_to_end(key)
            held = index[sweep_key] = Indexed(min(expires, held_device[0]), device, looked, key)
            hits += looked
            folded((i, key))
            previous = latest.get(key)
            if previous is None or observed_at >= previous[6]:
                latest[key] = row if to_sweep is None else to_sweep(row)
                marks[key] = held
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

    def demote(self, named: Collection[DeviceKey]) -> tuple[list[int], list[Observation]]:
        """Leave every observation of a device the rules' observations name (`named`) to the rules.

        So is a device with quiet results and others: only the rules fold them in time order.
        Returns the positions of the sweep results and the updates taken back from the fast path.
        """
        if not named and not self._latest:
            return [], []
        # Devices with quiet or due results (the due ones are among them).
        quiet = set(self._quiet)
        fast = {(device.tenant, device.device_id) for device, _ in self._updates}
        fast.update(self._latest)
        fast.update(quiet)
        tainted = {key for key in named if key in fast}
        tainted.update(quiet.intersection(self._latest))
        if not tainted:
            return [], []
        positions = [i for i, key in self._folded if key in tainted]
        positions += [i for i, key in zip(self._quiet_at, self._quiet, strict=True) if key in tainted]
        for device_key in tainted:
            self._latest.pop(device_key, None)
            self._due.pop(device_key, None)
        updates = [obs for device, obs in self._updates if (device.tenant, device.device_id) in tainted]
        self._updates = [(d, o) for d, o in self._updates if (d.tenant, d.device_id) not in tainted]
        self.resolved -= len(positions) + len(updates)
        return positions, updates

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
        resolution = self._resolution
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
            held = self._marks[key]
            device = held.device
            current = view.devices.get(key, device)
            if key in touched or key in through_rules or current is not device:
                observe(key, current, _sweep_observation(row))
            else:
                write = fold_known_sweep(device, *row[1:], resolution)
                if write is Write.DEVICE:
                    self.written[key] = device
                    continue
                if write is Write.LAST_SEEN:
                    self.seen[key] = device
                # The device is as stored: a repeat of this result is quiet until its last_seen is due.
                held.until = device.last_seen + resolution
        # What fold_known_sweep decides for a result with the device's own attributes (one
        # folded before, so the device has the sweep among its sources): last_seen moves once due.
        at_observed = self._layout[6]
        for key, i in self._due.items():
            held = self._marks[key]
            device = held.device
            current = view.devices.get(key, device)
            if key in touched or key in through_rules or current is not device:
                observe(key, current, _sweep_observation(self.rows((i,))[0]))
                continue
            observed_at = self._sweeps[i][at_observed]
            if observed_at - device.last_seen >= resolution:
                device.last_seen = observed_at
                self.seen[key] = device
            held.until = device.last_seen + resolution


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
        # when the device's last_seen is next due: a repeat with the device's own attributes is
        # quiet before then (it changes nothing and is not folded at all) and due after (only
        # last_seen moves).
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
        self._memory: dict[int, _HeldRows] = {}
        self._memory_flushes = memory_flushes
        self._summarizer = RangeSummarizer(db)

    def notify(self, flush: CommittedFlush) -> None:
        """A flush committed: keep its observations in memory (within the bound) and resolve soon."""
        if len(self._memory) < self._memory_flushes:
            rows = flush.rows
            # The written sweep rows themselves, not a copy: most resolve from the index by a few
            # of their columns and are never reduced to a SweepRow.
            self._memory[flush.flush_id] = (
                rows.get(ResultKind.SWEEP_HOSTS, ()),
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

    def _take_from_memory(self, claimed: list[int], held: Collection[int]) -> dict[int, _HeldRows]:
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
        self, conn: AsyncConnection, flush_ids: list[int], taken: dict[int, _HeldRows]
    ) -> tuple[Sequence[tuple[Any, ...]], Layout, list[Observation]]:
        """The claimed flushes' sweep results and device updates: `taken` from memory.

        The sweep results are the written rows when every flush came from memory on PostgreSQL,
        else SweepRows; the layout says which.
        """
        postgres = conn.dialect.name == "postgresql"
        rest = [flush_id for flush_id in flush_ids if flush_id not in taken]
        written = [sweep_rows for sweep_rows, _ in taken.values()]
        sweeps: Sequence[tuple[Any, ...]]
        layout = _SWEEP_ROW
        if postgres and not rest:
            sweeps = written[0] if len(written) == 1 else list(chain.from_iterable(written))
            layout = _WRITTEN_SWEEP
        elif postgres:
            sweeps = list(map(_SWEEP_FIELDS, chain.from_iterable(written)))
        else:
            # SQLite rows hold timestamps as the text the store keeps.
            sweeps = [(*r[:6], _sqlite_time(r[6])) for r in map(_SWEEP_FIELDS, chain.from_iterable(written))]
        updates = list(chain.from_iterable(update_rows for _, update_rows in taken.values()))
        observations = [
            Observation(t, p, ip, mac, host, up, at if postgres else _sqlite_time(at), source,
                        external_ids_of(ids))
            for t, p, ip, mac, host, up, at, source, ids in updates
        ]  # fmt: skip
        if rest:
            # From a connection of its own: this round's transaction holds its claim meanwhile.
            await self._summarizer.catch_up(FLUSH_INDEXES)
            assert isinstance(sweeps, list)
            sweeps.extend(await read_sweeps(conn, rest))
            observations.extend(await read_device_updates(conn, rest))
        self.from_memory += len(taken)
        IDENTITY_FROM_MEMORY.inc(len(taken))
        return sweeps, layout, observations

    async def run_round(self) -> int:
        """Resolve one set of flushes in one transaction; returns how many flushes (0: none left)."""
        stored: dict[DeviceKey, tuple[DeviceState, datetime]] = {}
        try:
            async with self._db.begin() as conn:
                held = list(self._memory)
                flush_ids = await take_flushes(conn, self._flushes_per_round)
                taken = self._take_from_memory(flush_ids, held)
                if not flush_ids:
                    return 0
                await plan_for_arrays(conn)
                sweeps, layout, arrived = await self._observations(conn, flush_ids, taken)
                fast = _FastPath(self, timedelta(seconds=self._last_seen_resolution), sweeps, layout)
                with _collector_deferred():
                    slow, updates = fast.triage(arrived)
                # A round of quiet results only writes nothing: it need not wait for another
                # replica resolving the same tenant.
                if slow or updates or not fast.quiet_only:
                    tenants = set(map(itemgetter(layout[0]), sweeps))
                    await lock_tenants(conn, tenants | {o.tenant for o in arrived})
                rows = fast.rows(slow)
                started = time.perf_counter()
                view = IdentityView({}, {})
                # Every identifier the rules will look at, and how many observations carry it.
                carried: dict[LinkKey, int] = defaultdict(int)
                row_keys = await self._load_for(conn, rows, updates, view, stored, carried)
                # A device the rules' observations name takes all its observations to the rules.
                more_at, more_updates = fast.demote(view.devices)
                if more_at or more_updates:
                    more_rows = fast.rows(more_at)
                    row_keys += await self._load_for(conn, more_rows, more_updates, view, stored, carried)
                    # Back in arrival order: the rules take observations of the same time in that order.
                    positions = slow + more_at
                    order = sorted(range(len(positions)), key=positions.__getitem__)
                    both = rows + more_rows
                    rows, row_keys = [both[j] for j in order], [row_keys[j] for j in order]
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
        moved = self.links.put_all(view.links.items(), now, ne)
        moved = self.devices.put_all(view.devices.items(), now, is_not) or moved or merged
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
