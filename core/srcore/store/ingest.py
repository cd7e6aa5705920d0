"""Ingest persistence: the batch ledger, raw result writes (COPY / executemany), raw reads.

Folding results into latest state is srcore.store.processing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from srcore.domain.coordination import LeaderInfo
from srcore.domain.ingest import BatchOpening, BatchRecord, BatchState, ResultKind, SweepCompletion
from srcore.store.database import Database
from srcore.store.fence import hold_fence
from srcore.store.ingest_tables import (
    CHECK_COLUMNS,
    DEVICE_COLUMNS,
    SWEEP_COLUMNS,
    device_updates,
    identity_pending,
    ingest_batches,
    ingest_flushes,
    service_check_results,
    sweep_executions,
    sweep_host_results,
)
from srcore.store.pollers import utc
from srcore.store.upsert import insert_ignore

TABLES: dict[ResultKind, tuple[str, tuple[str, ...]]] = {
    ResultKind.SWEEP_HOSTS: ("sweep_host_results", SWEEP_COLUMNS),
    ResultKind.SERVICE_CHECKS: ("service_check_results", CHECK_COLUMNS),
    ResultKind.DEVICE_UPDATES: ("device_updates", DEVICE_COLUMNS),
}

# PostgreSQL binary COPY types, column for column.
_ORIGIN_TYPES = ["text", "text", "text", "text", "text", "int4", "int4", "int8"]
COPY_TYPES: dict[ResultKind, list[str]] = {
    ResultKind.SWEEP_HOSTS: [*_ORIGIN_TYPES, "text", "text", "text", "text", "bool", "int8", "float8", "text",
                             "timestamptz", "timestamptz", "int8"],
    ResultKind.SERVICE_CHECKS: [*_ORIGIN_TYPES, "text", "text", "text", "bool", "int8", "text",
                                "timestamptz", "timestamptz"],
    ResultKind.DEVICE_UPDATES: [*_ORIGIN_TYPES, "text", "text", "text", "text", "text", "bool", "text",
                                "timestamptz", "timestamptz"],
}  # fmt: skip


def sqlite_timestamp(value: datetime) -> str:
    """The text form SQLAlchemy's SQLite DateTime type reads back (naive UTC)."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def pg_timestamp(value: datetime) -> datetime:
    """PostgreSQL's binary COPY takes aware datetimes as they are."""
    return value


def record_from_row(row: sa.Row[Any]) -> BatchRecord:
    """A ledger row as a BatchRecord."""
    return BatchRecord(
        tenant=row.tenant,
        poller_id=row.poller_id,
        batch_id=row.batch_id,
        kind=ResultKind(row.result_type),
        agent_id=row.agent_id,
        partition=row.partition,
        expected_chunks=row.expected_chunks,
        committed_index=row.committed_index,
        state=BatchState(row.state),
        accepted=row.accepted,
        rejected=row.rejected,
        first_reject=row.first_reject,
        execution_id=row.execution_id,
        sweep_id=row.sweep_id,
        target_network=row.target_network,
        completion=SweepCompletion(row.completion),
        opened_at=utc(row.opened_at),
        updated_at=utc(row.updated_at),
        completed_at=utc(row.completed_at),
    )


@dataclass(slots=True)
class LedgerAdvance:
    """One batch's progress within a flush: chunks (prev+1 .. last] and their counts."""

    record: BatchRecord
    previous_index: int
    last_index: int
    accepted: int
    rejected: int
    first_reject: str
    final: bool
    completion: SweepCompletion


def _key(tenant: str, poller_id: str, batch: str) -> sa.ColumnElement[bool]:
    return (
        (ingest_batches.c.tenant == tenant)
        & (ingest_batches.c.poller_id == poller_id)
        & (ingest_batches.c.batch_id == batch)
    )


class IngestStore:
    """SQL of the ingest pipeline."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.encode_timestamp = pg_timestamp if db.is_postgres else sqlite_timestamp

    async def open_batch(
        self, tenant: str, poller_id: str, opening: BatchOpening, now: datetime
    ) -> BatchRecord:
        """Create the batch if it is new; return its ledger record either way."""
        row = {
            "tenant": tenant,
            "poller_id": poller_id,
            "batch_id": opening.batch_id,
            "result_type": opening.kind.value,
            "agent_id": opening.agent_id,
            "partition": opening.partition,
            "expected_chunks": opening.expected_chunks,
            "committed_index": -1,
            "state": BatchState.OPEN.value,
            "execution_id": opening.execution_id,
            "sweep_id": opening.sweep_id,
            "target_network": opening.target_network,
            "opened_at": now,
            "updated_at": now,
        }
        async with self.db.begin() as conn:
            await insert_ignore(conn, ingest_batches, [row])
            if opening.execution_id:
                await insert_ignore(
                    conn,
                    sweep_executions,
                    [
                        {
                            "tenant": tenant,
                            "poller_id": poller_id,
                            "execution_id": opening.execution_id,
                            "partition": opening.partition,
                            "sweep_id": opening.sweep_id,
                            "target_network": opening.target_network,
                            "state": "running",
                            "started_at": now,
                        }
                    ],
                )
            found = (
                await conn.execute(sa.select(ingest_batches).where(_key(tenant, poller_id, opening.batch_id)))
            ).one()
            # A reopen counts as activity, so the resume window restarts.
            if found.state == BatchState.OPEN.value:
                await conn.execute(
                    ingest_batches.update()
                    .where(_key(tenant, poller_id, opening.batch_id))
                    .values(updated_at=now)
                )
        return record_from_row(found)

    async def begin_flush(self, conn: AsyncConnection, now: datetime) -> int:
        """Start a flush inside `conn`'s transaction; its id tags every row it writes.

        The flush is queued for device identity in the same transaction, so a committed flush
        is always resolved, whether identity is on now or later.
        """
        result = await conn.execute(
            ingest_flushes.insert().values(created_at=now).returning(ingest_flushes.c.id)
        )
        flush_id = int(result.scalar_one())
        await conn.execute(identity_pending.insert().values(flush_id=flush_id))
        return flush_id

    async def advance(self, conn: AsyncConnection, advance: LedgerAdvance, now: datetime) -> bool:
        """Move a batch's committed_index forward, only from where this flush expects it.

        False when another writer moved it first (a superseded stream): the caller must then
        drop that batch's rows, so no chunk is ever stored twice.
        """
        record = advance.record
        values: dict[str, Any] = {
            "committed_index": advance.last_index,
            "accepted": ingest_batches.c.accepted + advance.accepted,
            "rejected": ingest_batches.c.rejected + advance.rejected,
            "updated_at": now,
        }
        if advance.first_reject:
            values["first_reject"] = sa.case(
                (ingest_batches.c.first_reject == "", advance.first_reject),
                else_=ingest_batches.c.first_reject,
            )
        if advance.final:
            values.update(
                state=BatchState.COMMITTED.value, completed_at=now, completion=advance.completion.value
            )
        result = await conn.execute(
            ingest_batches.update()
            .where(
                _key(record.tenant, record.poller_id, record.batch_id),
                ingest_batches.c.committed_index == advance.previous_index,
                ingest_batches.c.state == BatchState.OPEN.value,
            )
            .values(**values)
        )
        if result.rowcount != 1:
            return False
        if (
            advance.final
            and record.execution_id
            and advance.completion
            not in (
                SweepCompletion.NONE,
                SweepCompletion.IN_PROGRESS,
            )
        ):
            await conn.execute(
                sweep_executions.update()
                .where(
                    sweep_executions.c.tenant == record.tenant,
                    sweep_executions.c.poller_id == record.poller_id,
                    sweep_executions.c.execution_id == record.execution_id,
                )
                .values(state=advance.completion.value, completed_at=now)
            )
        return True

    async def refresh(self, conn: AsyncConnection, record: BatchRecord) -> None:
        """Bring an in-memory record up to the ledger (after another writer moved it)."""
        row = (
            await conn.execute(
                sa.select(ingest_batches.c.committed_index, ingest_batches.c.state).where(
                    _key(record.tenant, record.poller_id, record.batch_id)
                )
            )
        ).one()
        record.committed_index = max(record.committed_index, int(row.committed_index))
        record.state = BatchState(row.state)

    async def write_rows(
        self, conn: AsyncConnection, kind: ResultKind, rows: Sequence[tuple[Any, ...]]
    ) -> None:
        """Append rows: binary COPY on PostgreSQL, one executemany on SQLite."""
        if not rows:
            return
        table, columns = TABLES[kind]
        if self.db.is_postgres:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            async with driver.cursor() as cursor:
                statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
                async with cursor.copy(statement) as copy:
                    copy.set_types(COPY_TYPES[kind])
                    for row in rows:
                        await copy.write_row(row)
        else:
            marks = ", ".join("?" * len(columns))
            await conn.exec_driver_sql(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", list(rows)
            )

    async def get_batch(self, tenant: str, poller_id: str, batch: str) -> BatchRecord | None:
        """One ledger record, or None."""
        async with self.db.connect() as conn:
            row = (
                await conn.execute(sa.select(ingest_batches).where(_key(tenant, poller_id, batch)))
            ).first()
        return record_from_row(row) if row else None

    async def list_batches(
        self,
        tenant: str | None,
        poller_id: str | None,
        state: BatchState | None,
        kind: ResultKind | None,
        limit: int,
        after: tuple[datetime, str, str, str] | None,
    ) -> list[BatchRecord]:
        """A page of batches, newest first (keyset on opened_at, tenant, poller, batch)."""
        c = ingest_batches.c
        query = sa.select(ingest_batches).order_by(
            c.opened_at.desc(), c.tenant.desc(), c.poller_id.desc(), c.batch_id.desc()
        )
        if tenant is not None:
            query = query.where(c.tenant == tenant)
        if poller_id is not None:
            query = query.where(c.poller_id == poller_id)
        if state is not None:
            query = query.where(c.state == state.value)
        if kind is not None:
            query = query.where(c.result_type == kind.value)
        if after is not None:
            query = query.where(sa.tuple_(c.opened_at, c.tenant, c.poller_id, c.batch_id) < sa.tuple_(*after))
        async with self.db.connect() as conn:
            rows = (await conn.execute(query.limit(limit))).all()
        return [record_from_row(r) for r in rows]

    async def expire_batches(self, idle_before: datetime, now: datetime, leader: LeaderInfo) -> int:
        """Mark batches open but idle since before `idle_before` as expired (a leader job).

        Raises Fenced, expiring nothing, when a later leadership has written.
        """
        async with self.db.begin() as conn:
            result = await conn.execute(
                ingest_batches.update()
                .where(
                    ingest_batches.c.state == BatchState.OPEN.value, ingest_batches.c.updated_at < idle_before
                )
                .values(state=BatchState.EXPIRED.value, updated_at=now)
            )
            await hold_fence(conn, leader, now)
        return int(result.rowcount)


RAW_TABLES = {
    ResultKind.SWEEP_HOSTS: sweep_host_results,
    ResultKind.SERVICE_CHECKS: service_check_results,
    ResultKind.DEVICE_UPDATES: device_updates,
}

ResultKey = tuple[datetime, str, str, int, int]


async def list_results(
    db: Database,
    kind: ResultKind,
    tenant: str,
    partition: str | None,
    poller_id: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    after: ResultKey | None,
    check_name: str | None = None,
) -> list[sa.Row[Any]]:
    """Raw results of one kind, newest first, keyset-paginated on (observed_at, poller, batch, chunk, seq).

    `check_name` narrows service check results to one check: its result history.
    """
    table = RAW_TABLES[kind]
    c = table.c
    key = (c.observed_at, c.poller_id, c.batch_id, c.chunk_index, c.seq)
    query = sa.select(table).where(c.tenant == tenant).order_by(*(k.desc() for k in key))
    if partition is not None:
        query = query.where(c.partition == partition)
    if poller_id is not None:
        query = query.where(c.poller_id == poller_id)
    if check_name is not None:
        query = query.where(c.name == check_name)
    if since is not None:
        query = query.where(c.observed_at >= since)
    if until is not None:
        query = query.where(c.observed_at < until)
    if after is not None:
        query = query.where(sa.tuple_(*key) < sa.tuple_(*after))
    async with db.connect() as conn:
        return list((await conn.execute(query.limit(limit))).all())
