"""The transactional outbox: events are written with the state change, in its transaction.

`write_events` is called by `store.transitions.record_transitions`, through which every state
change of the core goes. The relay (events/relay.py) reads unpublished rows in sequence order;
ListEvents and WatchEvents read them through `Outbox`.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from srcore.domain.model import Transition
from srcore.events.metrics import EVENTS_WRITTEN
from srcore.events.schema import Event, entity_key, event_from_transition, relative_subject
from srcore.store.database import Database
from srcore.store.lists import one_of, one_of_ints
from srcore.store.tables import event_outbox, pollers

# Set in the connection's info dict by a transaction that wrote events; read when the
# connection goes back to the pool, which is after its commit (see OutboxSignal).
_WRITTEN = "srcore.events.written"


def _utc(value: datetime) -> datetime:
    # SQLite keeps no offset: everything stored is UTC, so naive values read back as UTC and
    # aware ones are converted before they are written or compared.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _poller_of(transition: Transition) -> str | None:
    # Entity ids are paths within the tenant: "demo" for a poller, "demo/a1" for its agent,
    # "demo/a1/http" for a checker of that agent.
    if transition.entity_type == "poller":
        return transition.entity_id
    if transition.entity_type in ("agent", "checker"):
        return transition.entity_id.partition("/")[0]
    return None


async def _partitions(conn: AsyncConnection, transitions: Sequence[Transition]) -> dict[tuple[str, str], str]:
    """The partition of every poller the transitions are about: one query per tenant."""
    wanted: dict[str, set[str]] = defaultdict(set)
    for t in transitions:
        poller = _poller_of(t)
        if poller is not None:
            wanted[t.tenant].add(poller)
    found: dict[tuple[str, str], str] = {}
    for tenant, ids in wanted.items():
        match = one_of(conn, pollers.c.poller_id, sorted(ids))
        rows = await conn.execute(
            sa.select(pollers.c.poller_id, pollers.c.partition).where(pollers.c.tenant == tenant, match)
        )
        found.update(((tenant, row.poller_id), row.partition) for row in rows)
    return found


async def write_events(
    conn: AsyncConnection, transitions: Sequence[Transition], replica_id: str, fencing_token: int
) -> None:
    """Insert one outbox row per transition, in the caller's transaction."""
    if not transitions:
        return
    partitions = await _partitions(conn, transitions)
    rows: list[dict[str, Any]] = []
    for t in transitions:
        event_id = uuid.uuid4()
        poller = _poller_of(t)
        partition = partitions.get((t.tenant, poller), "") if poller is not None else ""
        event = event_from_transition(t, partition, replica_id, fencing_token, event_id)
        rows.append(
            {
                "event_id": event_id,
                "tenant": t.tenant,
                "entity_type": t.entity_type,
                "event_type": event.type,
                "entity_key": entity_key(t.entity_type, t.entity_id),
                "subject": relative_subject(t.tenant, t.entity_type, event.type),
                "payload": event.SerializeToString(),
                "created_at": _utc(t.at),
            }
        )
    await conn.execute(event_outbox.insert(), rows)
    conn.info[_WRITTEN] = True
    EVENTS_WRITTEN.inc(len(rows))


class OutboxSignal:
    """Wakes the relay and watchers of this replica when it commits events.

    A pool "checkin" listener sees the flag `write_events` left on the connection: a
    connection returns to the pool after its transaction ended, so a woken reader finds the
    rows committed (a rolled-back transaction wakes readers for nothing, which is harmless).
    Writes by other replicas are found by polling.
    """

    def __init__(self, db: Database) -> None:
        self._engine = db.engine.sync_engine
        self._event = asyncio.Event()
        sa.event.listen(self._engine, "checkin", self._on_checkin)

    def _on_checkin(self, _dbapi_connection: Any, record: Any) -> None:
        if record.info.pop(_WRITTEN, False):
            self.notify()

    def notify(self) -> None:
        """Wake everyone waiting now."""
        current, self._event = self._event, asyncio.Event()
        current.set()

    def waiter(self) -> asyncio.Event:
        """An event set at the next notification. Take it before reading, wait on it after,
        so a commit between the read and the wait is not missed."""
        return self._event

    def close(self) -> None:
        """Stop listening to the engine."""
        sa.event.remove(self._engine, "checkin", self._on_checkin)


async def wait_signalled(waiter: asyncio.Event, timeout: float) -> None:
    """Wait until `waiter` is set or `timeout` passed.

    Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that arrives as the
    awaited event completes, and a loop built on it then never stops.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await waiter.wait()


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a reader wants; None (or empty) means any."""

    tenant: str | None = None
    entity_type: str = ""
    event_type: str = ""
    entity_id: str = ""
    since: datetime | None = None

    def clause(self) -> sa.ColumnElement[bool] | None:
        """The SQL condition, or None when every event matches."""
        t = event_outbox.c
        conditions: list[sa.ColumnElement[bool]] = []
        if self.tenant is not None:
            conditions.append(t.tenant == self.tenant)
        if self.entity_type:
            conditions.append(t.entity_type == self.entity_type)
        if self.entity_id:
            conditions.append(t.entity_key == entity_key(self.entity_type, self.entity_id))
        if self.event_type:
            conditions.append(t.event_type == self.event_type)
        if self.since is not None:
            conditions.append(t.created_at >= _utc(self.since))
        return sa.and_(*conditions) if conditions else None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as the outbox holds it."""

    seq: int
    event: Event
    published_at: datetime | None


@dataclass(frozen=True, slots=True)
class ScannedRow:
    """One outbox row seen by a follower; `event` is None when the filter rejects it."""

    seq: int
    event: StoredEvent | None


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """An unpublished row, as the relay needs it."""

    seq: int
    event_id: str
    subject: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Backlog:
    """Unpublished events: how many, and when the oldest happened."""

    unpublished: int
    oldest: datetime | None


def _stored(seq: int, payload: bytes, published_at: datetime | None) -> StoredEvent:
    return StoredEvent(seq, Event.FromString(payload), _utc(published_at) if published_at else None)


class Outbox:
    """Reads and housekeeping of the outbox table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def page(self, flt: EventFilter, after: int, limit: int) -> list[StoredEvent]:
        """Up to `limit` matching events with a sequence above `after`, in sequence order."""
        t = event_outbox.c
        query = sa.select(t.seq, t.payload, t.published_at).where(t.seq > after)
        clause = flt.clause()
        if clause is not None:
            query = query.where(clause)
        async with self._db.connect() as conn:
            rows = (await conn.execute(query.order_by(t.seq).limit(limit))).all()
        return [_stored(row.seq, row.payload, row.published_at) for row in rows]

    async def scan(self, flt: EventFilter, after: int, also: Sequence[int], limit: int) -> list[ScannedRow]:
        """Every row above `after` (plus the rows `also` names), matching the filter or not.

        Followers need the sequence numbers of rows they skip to tell a gap (a transaction
        still running, or rolled back) from a row of another tenant; the payload is read only
        for matching rows.
        """
        t = event_outbox.c
        clause = flt.clause()
        payload = t.payload if clause is None else sa.case((clause, t.payload), else_=sa.null())
        where = t.seq > after
        if also:
            where = sa.or_(where, t.seq.in_(list(also)))
        query = sa.select(t.seq, payload.label("payload"), t.published_at).where(where)
        async with self._db.connect() as conn:
            rows = (await conn.execute(query.order_by(t.seq).limit(limit))).all()
        return [
            ScannedRow(
                row.seq, _stored(row.seq, row.payload, row.published_at) if row.payload is not None else None
            )
            for row in rows
        ]

    async def last_seq(self) -> int:
        """The highest sequence written so far (0 for an empty outbox)."""
        async with self._db.connect() as conn:
            value = await conn.scalar(sa.select(sa.func.max(event_outbox.c.seq)))
        return int(value or 0)

    async def first_seq_since(self, since: datetime) -> int | None:
        """The lowest sequence of an event at or after `since`, or None when there is none."""
        t = event_outbox.c
        async with self._db.connect() as conn:
            value = await conn.scalar(sa.select(sa.func.min(t.seq)).where(t.created_at >= _utc(since)))
        return None if value is None else int(value)

    async def unpublished(self, limit: int, after: int = 0) -> list[PendingEvent]:
        """The oldest `limit` unpublished events with a sequence above `after`, in order."""
        t = event_outbox.c
        query = (
            sa.select(t.seq, t.event_id, t.subject, t.payload)
            .where(t.published_at.is_(None), t.seq > after)
            .order_by(t.seq)
            .limit(limit)
        )
        async with self._db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            PendingEvent(seq, str(event_id), subject, payload) for seq, event_id, subject, payload in rows
        ]

    async def mark_published(self, seqs: Sequence[int], at: datetime) -> int:
        """Stamp the rows as published (those not stamped already); returns how many were."""
        if not seqs:
            return 0
        t = event_outbox.c
        async with self._db.begin() as conn:
            result = await conn.execute(
                event_outbox.update()
                .where(one_of_ints(conn, t.seq, seqs), t.published_at.is_(None))
                .values(published_at=_utc(at))
            )
        return int(result.rowcount)

    async def backlog(self) -> Backlog:
        """How many events wait for the relay, and when the oldest of them happened."""
        t = event_outbox.c
        async with self._db.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(sa.func.count(), sa.func.min(t.created_at)).where(t.published_at.is_(None))
                )
            ).one()
        count, oldest = row
        return Backlog(int(count), _utc(oldest) if oldest is not None else None)

    async def prune(self, before: datetime, keep_unpublished: bool, chunk: int = 10_000) -> int:
        """Delete events that happened before `before`, a chunk per transaction.

        With `keep_unpublished`, rows the relay has not published yet stay whatever their age:
        an event is never lost to retention before it reached JetStream.
        """
        t = event_outbox.c
        condition = t.created_at < _utc(before)
        if keep_unpublished:
            condition = condition & t.published_at.is_not(None)
        deleted = 0
        while True:
            victims = sa.select(t.seq).where(condition).order_by(t.seq).limit(chunk).scalar_subquery()
            async with self._db.begin() as conn:
                result = await conn.execute(event_outbox.delete().where(t.seq.in_(victims)))
            deleted += int(result.rowcount)
            if result.rowcount < chunk:
                return deleted
