"""The identity stage: resolves committed flushes' observations to canonical devices.

Runs off the ack path, like the latest-state projector: after each local flush and
periodically for flushes other replicas left behind. One round takes a set of unidentified
flushes (FOR UPDATE SKIP LOCKED on PostgreSQL, so replicas share the work), reads their sweep
host results and device updates, resolves them through an identity cache in front of the
store, and writes devices, identifiers and merges and marks the flushes identified, all in
one transaction. The cache is only updated after that transaction commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from prometheus_client import Counter, Histogram
from sqlalchemy.ext.asyncio import AsyncConnection

from srcore.domain.identity import (
    Device,
    DeviceState,
    IdentifierKey,
    IdentityResolver,
    IdentityView,
    Observation,
    Resolution,
    device_state,
    identifiers,
    needs_write,
)
from srcore.ingest.writer import CommittedFlush
from srcore.store.database import Database
from srcore.store.devices import (
    claim_flushes,
    count_unidentified,
    flush_tenants,
    load_devices,
    load_links,
    lock_tenants,
    mark_identified,
    read_device_updates,
    read_observations,
    resolve_known_sweeps,
    write_resolution,
)

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
    "Sweep results whose identifiers all named one known device, resolved in the store without the rules.",
)

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

    def discard(self, key: K) -> None:
        """Forget one entry (the store changed it behind the cache)."""
        self._entries.pop(key, None)

    def clear(self) -> None:
        """Forget everything."""
        self._entries.clear()


LinkKey = tuple[str, IdentifierKey]
DeviceKey = tuple[str, str]


class IdentityStage:
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
    ) -> None:
        self._db = db
        self._clock = clock
        self.replica_id = replica_id
        self._flushes_per_round = flushes_per_round
        self._poll_interval = poll_interval
        self._last_seen_resolution = last_seen_resolution
        self.links: TtlCache[LinkKey, str] = TtlCache(cache_size, cache_ttl)
        self.devices: TtlCache[DeviceKey, Device] = TtlCache(cache_size, cache_ttl)
        self.hits = 0
        self.misses = 0
        # Sweep results resolved by the known-sweep fast path; device rows written.
        self.known = 0
        self.device_writes = 0
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def notify(self, _flush: CommittedFlush) -> None:
        """A flush committed: resolve soon."""
        self._wakeup.set()

    def start(self) -> None:
        """Start the resolution loop."""
        self._task = asyncio.create_task(self._run(), name="identity-resolution")

    async def stop(self) -> None:
        """Resolve what is pending, then stop."""
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            await self._task

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

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval):
                    await self._wakeup.wait()
            self._wakeup.clear()
            try:
                await self.drain()
            except Exception as exc:
                log.warning("device identity resolution failed, will retry: %s", exc)
            if self._stopping:
                return

    async def run_round(self) -> int:
        """Resolve one set of flushes in one transaction; returns how many flushes (0: none left)."""
        stored: dict[DeviceKey, tuple[DeviceState, datetime]] = {}
        updated: list[tuple[str, str]] = []
        try:
            async with self._db.begin() as conn:
                flush_ids = await claim_flushes(conn, self._flushes_per_round)
                if not flush_ids:
                    return 0
                known = 0
                if conn.dialect.name == "postgresql":
                    await lock_tenants(conn, await flush_tenants(conn, flush_ids))
                    fast = await resolve_known_sweeps(conn, flush_ids, self._last_seen_resolution)
                    known, updated = fast.resolved, fast.updated
                    for device_key in updated:
                        self.devices.discard(device_key)
                    observations = fast.rest
                    observations.extend(await read_device_updates(conn, flush_ids))
                    observations.sort(key=lambda o: o.observed_at)
                else:
                    observations = await read_observations(conn, flush_ids)
                by_tenant: dict[str, list[Observation]] = defaultdict(list)
                for obs in observations:
                    by_tenant[obs.tenant].append(obs)
                if conn.dialect.name != "postgresql":
                    await lock_tenants(conn, by_tenant)
                started = time.perf_counter()
                view = IdentityView({}, {})
                for tenant, batch in by_tenant.items():
                    await self._load(conn, tenant, batch, view, stored)
                IDENTITY_LOOKUP_SECONDS.observe(time.perf_counter() - started)
                resolution = IdentityResolver(view).resolve_all(observations)
                self._skip_unchanged(resolution, stored)
                await write_resolution(conn, resolution, self._clock(), self.replica_id)
                await mark_identified(conn, flush_ids)
        except BaseException:
            # The resolver mutates cached devices in place; after a rollback they may be wrong.
            self.devices.clear()
            self.links.clear()
            raise
        IDENTITY_MERGES.inc(len(resolution.merges))
        IDENTITY_OBSERVATIONS.inc(len(observations) + known)
        IDENTITY_KNOWN.inc(known)
        now = self.links.clock()
        for key, device_id in view.links.items():
            self.links.put(key, device_id, now)
        for loaded, device in view.devices.items():
            self.devices.put(loaded, device, now)
        self.known += known
        self.device_writes += len(resolution.devices) + len(updated)
        return len(flush_ids)

    def _skip_unchanged(
        self, resolution: Resolution, stored: dict[DeviceKey, tuple[DeviceState, datetime]]
    ) -> None:
        """Drop devices from the write whose only change is a last_seen moved less than the resolution.

        Their in-memory last_seen goes back to the stored one, so the cache says what the store says.
        """
        resolution_td = timedelta(seconds=self._last_seen_resolution)
        unchanged = [
            key
            for key, device in resolution.devices.items()
            if not needs_write(device, stored.get(key), resolution_td)
        ]
        for key in unchanged:
            resolution.devices.pop(key).last_seen = stored[key][1]

    async def _load(
        self,
        conn: AsyncConnection,
        tenant: str,
        batch: list[Observation],
        view: IdentityView,
        stored: dict[DeviceKey, tuple[DeviceState, datetime]],
    ) -> None:
        """Fill `view` with the links and devices a tenant's observations need: cache first.

        `stored` receives the state of every device loaded, to tell later what changed.
        """
        keys: set[IdentifierKey] = set()
        for obs in batch:
            strong, weak, recorded = identifiers(obs)
            keys.update(strong)
            keys.update(weak)
            keys.update(recorded)
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

    @property
    def hit_rate(self) -> float:
        """Share of identifier lookups the cache answered since start."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
