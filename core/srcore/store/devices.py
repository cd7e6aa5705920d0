"""Device identity persistence: batch reads and bulk writes for resolution, and admin reads.

Resolution reads and writes whole batches: one query per table for lookups (`= ANY(array)` on
PostgreSQL, chunked IN lists on SQLite) and bulk upserts (COPY into a temporary table, then
one INSERT ... SELECT ... ON CONFLICT on PostgreSQL; one executemany on SQLite). Devices whose
last_seen alone moved, a repeat sweep's usual write, get that one column updated the same way.
New devices whose identifiers were all unknown, a first sweep's usual write, are COPYed straight
into their tables.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from srcore.domain.identity import (
    SWEEP_SOURCE,
    Device,
    IdentifierKey,
    Merge,
    Observation,
    Resolution,
    evidence_text,
)
from srcore.domain.model import Transition
from srcore.events.outbox import write_events
from srcore.store.database import Database
from srcore.store.device_tables import device_identifiers, device_merges, devices
from srcore.store.flush_reads import flush_index_reads
from srcore.store.ingest import sqlite_timestamp
from srcore.store.ingest_tables import device_updates, identity_pending, sweep_host_results
from srcore.store.lists import chunks, one_of

log = logging.getLogger(__name__)

_DEVICE_COLUMNS = (
    "tenant", "device_id", "partition", "ip", "mac", "hostname", "available", "first_seen", "last_seen",
    "merged_into", "external_ids", "sources",
)  # fmt: skip
_DEVICE_COPY_TYPES = ["text", "text", "text", "text", "text", "text", "bool", "timestamptz", "timestamptz",
                      "text", "text", "text"]  # fmt: skip
_IDENTIFIER_COLUMNS = ("tenant", "kind", "value", "partition", "device_id", "updated_at")
_IDENTIFIER_COPY_TYPES = ["text", "text", "text", "text", "text", "timestamptz"]

_TEMP_DEVICES = """
CREATE TEMPORARY TABLE IF NOT EXISTS srcore_identity_devices (
  tenant text, device_id text, partition text, ip text, mac text, hostname text, available bool,
  first_seen timestamptz, last_seen timestamptz, merged_into text, external_ids text, sources text
) ON COMMIT DELETE ROWS
"""
_TEMP_IDENTIFIERS = """
CREATE TEMPORARY TABLE IF NOT EXISTS srcore_identity_links (
  tenant text, kind text, value text, partition text, device_id text, updated_at timestamptz
) ON COMMIT DELETE ROWS
"""

# A merge is permanent: a replica holding an older view never un-merges a device. Attributes come
# from the latest observation: a replica writing from an older view (its cache, a skipped
# last_seen) never puts back what a later observation replaced.
_DEVICE_CONFLICT = """
ON CONFLICT (tenant, device_id) DO UPDATE SET
  partition = CASE WHEN excluded.last_seen >= devices.last_seen THEN excluded.partition
                   ELSE devices.partition END,
  ip = CASE WHEN excluded.last_seen >= devices.last_seen THEN excluded.ip ELSE devices.ip END,
  mac = CASE WHEN excluded.last_seen >= devices.last_seen OR devices.mac = '' THEN excluded.mac
             ELSE devices.mac END,
  hostname = CASE WHEN excluded.last_seen >= devices.last_seen THEN excluded.hostname
                  ELSE devices.hostname END,
  available = CASE WHEN excluded.last_seen >= devices.last_seen THEN excluded.available
                   ELSE devices.available END,
  first_seen = CASE WHEN excluded.first_seen < devices.first_seen THEN excluded.first_seen
                    ELSE devices.first_seen END,
  last_seen = CASE WHEN excluded.last_seen > devices.last_seen THEN excluded.last_seen
                   ELSE devices.last_seen END,
  merged_into = COALESCE(devices.merged_into, excluded.merged_into),
  external_ids = excluded.external_ids, sources = excluded.sources
"""
_SEEN_COLUMNS = ("tenant", "device_id", "last_seen")
_TEMP_SEEN = """
CREATE TEMPORARY TABLE IF NOT EXISTS srcore_identity_seen (
  tenant text, device_id text, last_seen timestamptz
) ON COMMIT DELETE ROWS
"""
# last_seen only ever moves forward, whoever wrote it last (another replica, a later round).
_LAST_SEEN_FROM_TEMP = (
    "UPDATE devices AS d SET last_seen = s.last_seen FROM srcore_identity_seen AS s"
    " WHERE d.tenant = s.tenant AND d.device_id = s.device_id AND s.last_seen > d.last_seen"
)
_LAST_SEEN_SQLITE = "UPDATE devices SET last_seen = ? WHERE tenant = ? AND device_id = ? AND last_seen < ?"
_IDENTIFIER_CONFLICT = """
ON CONFLICT (tenant, kind, value, partition) DO UPDATE SET
  device_id = excluded.device_id, updated_at = excluded.updated_at
"""


def _at(value: datetime) -> datetime:
    # SQLite returns naive datetimes; everything stored is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def device_from_row(row: Any) -> Device:
    """A devices row as a domain Device (aware timestamps, parsed JSON)."""
    external = row.external_ids
    sources = row.sources
    return Device(
        tenant=row.tenant,
        device_id=row.device_id,
        partition=row.partition,
        ip=row.ip,
        mac=row.mac,
        hostname=row.hostname,
        available=bool(row.available),
        first_seen=_at(row.first_seen),
        last_seen=_at(row.last_seen),
        merged_into=row.merged_into,
        external_ids=dict(json.loads(external) if isinstance(external, str) else external),
        sources=list(json.loads(sources) if isinstance(sources, str) else sources),
    )


async def take_flushes(conn: AsyncConnection, limit: int) -> list[int]:
    """Take up to `limit` committed flushes off the identity queue, oldest first.

    In one statement with the claim: the rows stay locked until the transaction ends, so other
    replicas skip them, and a rollback puts them back on the queue.
    """
    oldest = sa.select(identity_pending.c.flush_id).order_by(identity_pending.c.flush_id).limit(limit)
    if conn.dialect.name == "postgresql":
        oldest = oldest.with_for_update(skip_locked=True)
    taken = (
        identity_pending.delete()
        .where(identity_pending.c.flush_id.in_(oldest.scalar_subquery()))
        .returning(identity_pending.c.flush_id)
    )
    return sorted(int(i) for i in (await conn.execute(taken)).scalars())


async def plan_for_arrays(conn: AsyncConnection) -> None:
    """Have PostgreSQL plan the rest of this transaction's statements for their actual values.

    The driver prepares a statement once it has run a few times, and PostgreSQL may then
    switch to a generic plan, made without the parameters. For the `= ANY(array)` lookups of a
    round on a table without statistics (a young one, or autovacuum off), that plan checks
    every identifier of the tenant against the whole array: measured, 10 s a lookup at 150,000
    identifiers, against 20-60 ms planned for the array.
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.text("SET LOCAL plan_cache_mode = force_custom_plan"))


async def count_unidentified(db: Database) -> int:
    """Committed flushes whose observations are not resolved yet."""
    async with db.connect() as conn:
        query = sa.select(sa.func.count()).select_from(identity_pending)
        return int((await conn.execute(query)).scalar_one())


# A sweep result as identity needs it: (tenant, partition, ip, mac, hostname, available, observed_at).
SweepRow = tuple[str, str, str, str, str, bool, datetime]

# Rows fetched at a time when a round reads flushes back: bounds what the driver buffers.
READ_BACK_SLICE = 5_000


class _Shared:
    """One object per distinct value for the columns most rows of a read-back repeat.

    A round reading back 20 flushes holds about 100,000 rows at once; sharing the tenant,
    partition, source and observation time of each (chunks carry one default time) and
    fetching in slices measured 35 MiB for such a round, against 70 MiB for one buffered read
    of fresh objects; the peak stays resident after the round.
    """

    def __init__(self, postgres: bool) -> None:
        self._values: dict[Any, Any] = {}
        self._times: dict[Any, datetime] = {}
        self.value = self._values.setdefault
        self._postgres = postgres

    def time(self, stored: Any) -> datetime:
        """The aware observation time, one object per distinct stored value."""
        found = self._times.get(stored)
        if found is None:
            found = self._times[stored] = stored if self._postgres else _at(stored)
        return found


_SWEEP_READ_BACK = ("tenant", "partition", "ip", "mac", "hostname", "available", "observed_at")
_UPDATE_READ_BACK = (*_SWEEP_READ_BACK, "source", "external_ids")


async def _read_back(
    conn: AsyncConnection, table: sa.Table, columns: tuple[str, ...], flush_ids: Sequence[int]
) -> AsyncIterator[Sequence[Any]]:
    """`columns` of the rows these flushes wrote to `table`, in slices on PostgreSQL.

    A named (server-side) cursor of psycopg's own: the driver holds one slice at a time, and
    it measured as fast as one buffered read, where SQLAlchemy's streaming took twice as long.
    SQLite, a single replica's store, is read at once.
    """
    if conn.dialect.name != "postgresql":
        query = sa.select(*(table.c[name] for name in columns)).where(table.c.flush_id.in_(list(flush_ids)))
        yield (await conn.execute(query)).all()
        return
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    async with driver.cursor(name="srcore_identity_read_back") as cursor:
        # The plan is made here, at DECLARE: fetching needs no setting.
        async with flush_index_reads(conn):
            await cursor.execute(
                f"SELECT {', '.join(columns)} FROM {table.name} WHERE flush_id = ANY(%s)", (list(flush_ids),)
            )
        while part := await cursor.fetchmany(READ_BACK_SLICE):
            yield part


async def read_sweeps(conn: AsyncConnection, flush_ids: Sequence[int]) -> list[SweepRow]:
    """The sweep host results of these flushes, as plain tuples (see _Shared, _read_back)."""
    shared = _Shared(conn.dialect.name == "postgresql")
    same, time_of = shared.value, shared.time
    out: list[SweepRow] = []
    append = out.append
    async for part in _read_back(conn, sweep_host_results, _SWEEP_READ_BACK, flush_ids):
        for t, p, ip, mac, host, up, at in part:
            append((same(t, t), same(p, p), ip, mac, host, bool(up), time_of(at)))
    return out


def external_ids_of(stored: str) -> dict[str, str]:
    """A device update's external ids from the JSON text the raw table keeps."""
    return json.loads(stored) if stored and stored != "{}" else {}


async def read_device_updates(conn: AsyncConnection, flush_ids: Sequence[int]) -> list[Observation]:
    """The device updates of these flushes (integrations: external ids, sources)."""
    shared = _Shared(conn.dialect.name == "postgresql")
    same, time_of = shared.value, shared.time
    out: list[Observation] = []
    async for part in _read_back(conn, device_updates, _UPDATE_READ_BACK, flush_ids):
        for tenant, partition, ip, mac, hostname, available, observed, source, external in part:
            out.append(
                Observation(
                    same(tenant, tenant), same(partition, partition), ip, mac, hostname, bool(available),
                    time_of(observed), same(source, source), external_ids_of(external),
                )
            )  # fmt: skip
    return out


async def load_links(
    conn: AsyncConnection, tenant: str, keys: Iterable[IdentifierKey]
) -> dict[IdentifierKey, str]:
    """The device each of these identifiers names, for those that name one."""
    wanted = set(keys)
    by_kind: dict[str, set[str]] = {}
    for kind, value, _ in wanted:
        by_kind.setdefault(kind, set()).add(value)
    found: dict[IdentifierKey, str] = {}
    c = device_identifiers.c
    # (tenant, kind, value) is the primary key's prefix: an index lookup per value.
    for kind, values in sorted(by_kind.items()):
        for part in chunks(conn, sorted(values)):
            rows = await conn.execute(
                sa.select(c.value, c.partition, c.device_id).where(
                    c.tenant == tenant, c.kind == kind, one_of(conn, c.value, part)
                )
            )
            for value, partition, device_id in rows:
                key = (kind, value, partition)
                if key in wanted:
                    found[key] = device_id
    return found


async def load_devices(conn: AsyncConnection, tenant: str, device_ids: Iterable[str]) -> dict[str, Device]:
    """Devices by id (merged ones included, with what they merged into)."""
    ids = sorted(set(device_ids))
    found: dict[str, Device] = {}
    for part in chunks(conn, ids):
        rows = await conn.execute(
            sa.select(devices).where(devices.c.tenant == tenant, one_of(conn, devices.c.device_id, part))
        )
        for row in rows:
            found[row.device_id] = device_from_row(row)
    return found


async def lock_tenants(conn: AsyncConnection, tenants: Iterable[str]) -> None:
    """Serialise resolution per tenant across replicas (PostgreSQL; SQLite has one writer).

    Advisory locks held to the end of the transaction, taken in sorted order so two replicas
    never wait on each other in a cycle.
    """
    if conn.dialect.name != "postgresql":
        return
    for tenant in sorted(set(tenants)):
        await conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"srcore.identity.{tenant}"}
        )


def _device_tuple(device: Device, encode: Any, sources_json: dict[tuple[str, ...], str]) -> tuple[Any, ...]:
    external = device.external_ids
    # Most devices share a handful of source lists and have no external id: encode those once.
    sources = tuple(device.sources)
    encoded = sources_json.get(sources)
    if encoded is None:
        encoded = sources_json[sources] = json.dumps(device.sources)
    return (
        device.tenant, device.device_id, device.partition, device.ip, device.mac, device.hostname,
        device.available, encode(device.first_seen), encode(device.last_seen), device.merged_into,
        json.dumps(external, sort_keys=True) if external else "{}", encoded,
    )  # fmt: skip


@contextlib.asynccontextmanager
async def _staged(
    conn: AsyncConnection,
    temp: str,
    temp_ddl: str,
    columns: Sequence[str],
    types: list[str],
    rows: Iterable[tuple[Any, ...]],
) -> AsyncIterator[psycopg.AsyncCursor[Any]]:
    """A cursor in `conn`'s transaction once `rows` are COPYed into the temporary table `temp`.

    Binary COPY formats rows in C; statement parameters (arrays included) are built in Python.
    """
    async with _driver_cursor(conn) as cursor:
        await cursor.execute(temp_ddl)
        await _copy_rows(cursor, temp, columns, types, rows)
        yield cursor


@contextlib.asynccontextmanager
async def _driver_cursor(conn: AsyncConnection) -> AsyncIterator[psycopg.AsyncCursor[Any]]:
    """A psycopg cursor in `conn`'s transaction, for COPY."""
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    async with driver.cursor() as cursor:
        yield cursor


async def _copy_rows(
    cursor: psycopg.AsyncCursor[Any],
    table: str,
    columns: Sequence[str],
    types: list[str],
    rows: Iterable[tuple[Any, ...]],
) -> None:
    async with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(types)
        for row in rows:
            await copy.write_row(row)


@dataclass(frozen=True)
class _Upsert:
    """How one table is bulk-upserted on PostgreSQL: staged in `temp`, then INSERT ... ON CONFLICT."""

    table: str
    columns: tuple[str, ...]
    temp: str
    temp_ddl: str
    # Binary COPY types into the temporary table (text for JSON), and into the table itself.
    temp_types: list[str]
    table_types: list[str]
    casts: dict[str, str]
    conflict: str


_DEVICES_UPSERT = _Upsert(
    "devices", _DEVICE_COLUMNS, "srcore_identity_devices", _TEMP_DEVICES, _DEVICE_COPY_TYPES,
    [*_DEVICE_COPY_TYPES[:-2], "jsonb", "jsonb"], {"external_ids": "jsonb", "sources": "jsonb"},
    _DEVICE_CONFLICT,
)  # fmt: skip
_IDENTIFIERS_UPSERT = _Upsert(
    "device_identifiers", _IDENTIFIER_COLUMNS, "srcore_identity_links", _TEMP_IDENTIFIERS,
    _IDENTIFIER_COPY_TYPES, _IDENTIFIER_COPY_TYPES, {}, _IDENTIFIER_CONFLICT,
)  # fmt: skip


class _JsonText(psycopg.adapt.Dumper):
    """jsonb in binary COPY from JSON already encoded as text: the format's version byte, then the text."""

    format = psycopg.pq.Format.BINARY
    oid = psycopg.adapters.types["jsonb"].oid

    def dump(self, obj: str) -> bytes:
        """The binary jsonb of JSON text."""
        return b"\x01" + obj.encode()


async def _bulk_upsert(conn: AsyncConnection, spec: _Upsert, rows: Sequence[tuple[Any, ...]]) -> None:
    names = ", ".join(spec.columns)
    if conn.dialect.name == "postgresql":
        async with _staged(conn, spec.temp, spec.temp_ddl, spec.columns, spec.temp_types, rows) as cursor:
            selected = ", ".join(f"{c}::{spec.casts[c]}" if c in spec.casts else c for c in spec.columns)
            # ORDER BY: concurrent upserts touch rows in the same order, so they cannot deadlock.
            await cursor.execute(
                f"INSERT INTO {spec.table} ({names}) SELECT {selected} FROM {spec.temp}"
                f" ORDER BY 1, 2, 3 {spec.conflict}"
            )
        return
    marks = ", ".join("?" * len(spec.columns))
    statement = f"INSERT INTO {spec.table} ({names}) VALUES ({marks}) {spec.conflict}"
    await conn.exec_driver_sql(statement, list(rows))


async def _copy_new(conn: AsyncConnection, spec: _Upsert, rows: Sequence[tuple[Any, ...]]) -> bool:
    """COPY rows that cannot exist yet straight into the table; False, having written none, if one did.

    Half the PostgreSQL work of the staged upsert: each row is written once, with no temporary
    table and no speculative insertion. When the caller was wrong after all, the unique
    violation rolls back to a savepoint and the caller upserts instead.
    """
    try:
        async with conn.begin_nested(), _driver_cursor(conn) as cursor:
            cursor.adapters.register_dumper(None, _JsonText)
            await _copy_rows(cursor, spec.table, spec.columns, spec.table_types, rows)
    except psycopg.errors.UniqueViolation:
        log.warning("a row taken for new was in %s already; the round upserts it instead", spec.table)
        return False
    return True


async def _upsert(
    conn: AsyncConnection, spec: _Upsert, rows: list[tuple[Any, ...]], new: Callable[[tuple[Any, ...]], bool]
) -> None:
    """Upsert `rows`; on PostgreSQL those `new` says no store row can share a key with are COPYed."""
    if conn.dialect.name == "postgresql":
        fresh: list[tuple[Any, ...]] = []
        known: list[tuple[Any, ...]] = []
        for row in rows:
            (fresh if new(row) else known).append(row)
        if fresh and await _copy_new(conn, spec, fresh):
            rows = known
    if rows:
        await _bulk_upsert(conn, spec, rows)


async def write_resolution(
    conn: AsyncConnection, resolution: Resolution, now: datetime, replica_id: str
) -> None:
    """Persist devices, links and merges (with audit rows and outbox events) in `conn`'s transaction."""
    postgres = conn.dialect.name == "postgresql"
    encode: Any = (lambda d: d) if postgres else sqlite_timestamp
    # New devices and their identifiers: nothing in the store can have their keys.
    unseen = resolution.unseen
    if resolution.devices:
        sources_json: dict[tuple[str, ...], str] = {}
        rows = [_device_tuple(d, encode, sources_json) for d in resolution.devices.values()]
        rows.sort(key=lambda r: (r[0], r[1]))
        await _upsert(conn, _DEVICES_UPSERT, rows, lambda row: (row[0], row[1]) in unseen)
    if resolution.seen:
        await _write_last_seen(conn, list(resolution.seen.values()))
    if resolution.links:
        stamp = encode(now)
        links = sorted(
            (tenant, kind, value, partition, device_id, stamp)
            for (tenant, (kind, value, partition)), device_id in resolution.links.items()
        )
        await _upsert(conn, _IDENTIFIERS_UPSERT, links, lambda row: (row[0], row[4]) in unseen)
    if resolution.merges:
        await _write_merges(conn, resolution.merges, now, replica_id)


async def _write_last_seen(conn: AsyncConnection, seen: Sequence[Device]) -> None:
    """Move these devices' last_seen forward, and nothing else of their rows."""
    if conn.dialect.name == "postgresql":
        rows = ((d.tenant, d.device_id, d.last_seen) for d in seen)
        types = ["text", "text", "timestamptz"]
        async with _staged(conn, "srcore_identity_seen", _TEMP_SEEN, _SEEN_COLUMNS, types, rows) as cursor:
            await cursor.execute(_LAST_SEEN_FROM_TEMP)
        return
    params = []
    for d in seen:
        stamp = sqlite_timestamp(d.last_seen)
        params.append((stamp, d.tenant, d.device_id, stamp))
    await conn.exec_driver_sql(_LAST_SEEN_SQLITE, params)


async def _write_merges(
    conn: AsyncConnection, merges: Sequence[Merge], now: datetime, replica_id: str
) -> None:
    params = [{"tenant": m.tenant, "survivor": m.survivor_id, "merged": m.merged_id} for m in merges]
    # Chains stay one hop long: whatever had merged into a merged device now names the survivor.
    await conn.execute(
        sa.text(
            "UPDATE devices SET merged_into = :survivor WHERE tenant = :tenant"
            " AND (device_id = :merged OR merged_into = :merged)"
        ),
        params,
    )
    await conn.execute(
        sa.text(
            "UPDATE device_identifiers SET device_id = :survivor"
            " WHERE tenant = :tenant AND device_id = :merged"
        ),
        params,
    )
    await conn.execute(
        device_merges.insert(),
        [
            {
                "tenant": m.tenant,
                "survivor_id": m.survivor_id,
                "merged_id": m.merged_id,
                "evidence": [list(key) for key in m.evidence],
                "source": m.source[:64],
                "partition": m.partition,
                "observed_at": m.observed_at,
                "merged_at": now,
            }
            for m in merges
        ],
    )
    transitions = [
        Transition(
            tenant=m.tenant,
            entity_type="device",
            entity_id=m.merged_id,
            from_state="active",
            to_state="merged",
            reason=f"merged into {m.survivor_id}: {evidence_text(m.evidence)} seen together by {m.source}",
            at=now,
        )
        for m in merges
    ]
    await write_events(conn, transitions, replica_id, 0)


# Admin reads.


@dataclass(frozen=True, slots=True)
class IdentifierRow:
    """One identifier naming a device."""

    kind: str
    value: str
    partition: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class MergeRow:
    """One merge audit row."""

    survivor_id: str
    merged_id: str
    evidence: list[list[str]]
    source: str
    partition: str
    observed_at: datetime
    merged_at: datetime


@dataclass(frozen=True, slots=True)
class ObservationRow:
    """One raw observation of a device: a sweep host result or a device update."""

    kind: str
    observed_at: datetime
    partition: str
    poller_id: str
    batch_id: str
    chunk_index: int
    seq: int
    source: str
    ip: str
    mac: str
    hostname: str
    available: bool
    external_ids: dict[str, str]


class DeviceRepository:
    """Reads of the identity tables for the admin API."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def list_devices(
        self, tenant: str, partition: str | None, include_merged: bool, limit: int, after: str | None
    ) -> list[Device]:
        """A page of devices ordered by id."""
        c = devices.c
        query = sa.select(devices).where(c.tenant == tenant).order_by(c.device_id).limit(limit)
        if partition is not None:
            query = query.where(c.partition == partition)
        if not include_merged:
            query = query.where(c.merged_into.is_(None))
        if after is not None:
            query = query.where(c.device_id > after)
        async with self.db.connect() as conn:
            return [device_from_row(r) for r in await conn.execute(query)]

    async def get_device(self, tenant: str, device_id: str) -> Device | None:
        """One device, merged or not."""
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(devices).where(devices.c.tenant == tenant, devices.c.device_id == device_id)
                )
            ).first()
        return device_from_row(row) if row is not None else None

    async def identifiers(self, tenant: str, device_id: str) -> list[IdentifierRow]:
        """The identifiers naming a device, strong ones first."""
        c = device_identifiers.c
        async with self.db.connect() as conn:
            rows = await conn.execute(
                sa.select(c.kind, c.value, c.partition, c.updated_at)
                .where(c.tenant == tenant, c.device_id == device_id)
                .order_by(c.partition, c.kind, c.value)
            )
            return [IdentifierRow(r.kind, r.value, r.partition, _at(r.updated_at)) for r in rows]

    async def lookup(self, tenant: str, kind: str, value: str, partition: str | None) -> list[str]:
        """Ids of the devices an identifier names (in any partition when `partition` is None)."""
        c = device_identifiers.c
        query = sa.select(c.device_id).where(c.tenant == tenant, c.kind == kind, c.value == value)
        if partition is not None:
            query = query.where(c.partition == partition)
        async with self.db.connect() as conn:
            return sorted({str(r) for r in (await conn.execute(query)).scalars()})

    async def merges(self, tenant: str, device_id: str) -> list[MergeRow]:
        """Merges into or of a device, newest first."""
        c = device_merges.c
        async with self.db.connect() as conn:
            rows = await conn.execute(
                sa.select(device_merges)
                .where(c.tenant == tenant, (c.survivor_id == device_id) | (c.merged_id == device_id))
                .order_by(c.merged_at.desc(), c.id.desc())
            )
            return [
                MergeRow(
                    r.survivor_id,
                    r.merged_id,
                    list(r.evidence),
                    r.source,
                    r.partition,
                    _at(r.observed_at),
                    _at(r.merged_at),
                )
                for r in rows
            ]

    async def observations(
        self,
        tenant: str,
        identifiers: Sequence[IdentifierRow],
        limit: int,
        after: tuple[datetime, str, str, str, int, int] | None,
    ) -> list[ObservationRow]:
        """Raw observations carrying any of a device's identifiers, newest first.

        Keyset-paginated on (observed_at, kind, poller, batch, chunk, seq), descending.
        """
        ips = [(i.partition, i.value) for i in identifiers if i.kind == "ip"]
        macs = sorted({i.value for i in identifiers if i.kind in ("mac", "random-mac")})
        externals = [i.value for i in identifiers if i.kind == "external"]
        found: list[ObservationRow] = []
        async with self.db.connect() as conn:
            postgres = conn.dialect.name == "postgresql"
            for kind, table in (("sweep", sweep_host_results), ("device_update", device_updates)):
                c = table.c
                # On device_updates each alternative is one index lookup of 0011_query_indexes, so
                # the OR is a union of index scans (sweep_host_results has no such index, to keep
                # its COPY fast, and is scanned). The tenant is in every alternative: SQLite
                # (no statistics) would otherwise walk the whole tenant through an index's prefix;
                # PostgreSQL factors it out. The partial indexes' predicates are literals: a bound
                # parameter does not prove them in a generic plan.
                in_tenant = c.tenant == tenant
                matches: list[sa.ColumnElement[bool]] = [
                    in_tenant & (c.partition == partition) & (c.ip == ip) for partition, ip in ips
                ]
                if macs:
                    matches.append(in_tenant & c.mac.in_(macs) & (c.mac != sa.literal_column("''")))
                if kind == "device_update":
                    for value in externals:
                        system, _, ident = value.partition(":")
                        if postgres:
                            document = sa.cast(c.external_ids, JSONB)
                            has_ids = c.external_ids != sa.literal_column("'{}'")
                            matches.append(in_tenant & has_ids & document.contains({system: ident}))
                        else:
                            # No index serves a substring: unary + keeps SQLite from walking the
                            # tenant through an index for it, so the OR is one plain table scan.
                            needle = json.dumps({system: ident})[1:-1]
                            unindexed = sa.literal_column(f"+{table.name}.tenant", sa.String) == tenant
                            matches.append(unindexed & c.external_ids.contains(needle, autoescape=True))
                if not matches:
                    continue
                key = (c.observed_at, c.poller_id, c.batch_id, c.chunk_index, c.seq)
                query = sa.select(table).where(sa.or_(*matches))
                if after is not None:
                    at, after_kind, *rest = after
                    if kind < after_kind:
                        query = query.where(c.observed_at <= at)
                    elif kind == after_kind:
                        query = query.where(sa.tuple_(*key) < sa.tuple_(at, *rest))
                    else:
                        query = query.where(c.observed_at < at)
                query = query.order_by(*(k.desc() for k in key)).limit(limit)
                for r in await conn.execute(query):
                    update = kind == "device_update"
                    found.append(
                        ObservationRow(
                            kind=kind,
                            observed_at=_at(r.observed_at),
                            partition=r.partition,
                            poller_id=r.poller_id,
                            batch_id=r.batch_id,
                            chunk_index=r.chunk_index,
                            seq=r.seq,
                            source=r.source if update else SWEEP_SOURCE,
                            ip=r.ip,
                            mac=r.mac,
                            hostname=r.hostname,
                            available=r.available,
                            external_ids=json.loads(r.external_ids) if update else {},
                        )
                    )
        found.sort(
            key=lambda o: (o.observed_at, o.kind, o.poller_id, o.batch_id, o.chunk_index, o.seq), reverse=True
        )
        return found[:limit]
