"""Repository of the audit log: append and filtered reads, newest first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from srcore.domain.tenancy import AuditEvent
from srcore.store.database import Database
from srcore.store.pollers import utc
from srcore.store.tables import audit_events

# Outcomes the "denied" filter stands for.
DENIALS = ("UNAUTHENTICATED", "PERMISSION_DENIED")


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Filters of an audit listing; None or empty means "any"."""

    tenant: str | None = None
    actor: str = ""
    method_contains: str = ""
    outcome: str = ""
    since: datetime | None = None
    until: datetime | None = None


def _clip(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 3] + "..."


def _event(row: sa.Row[Any]) -> AuditEvent:
    return AuditEvent(
        id=row.id,
        at=utc(row.at) or row.at,
        actor=row.actor,
        tenant=row.tenant,
        method=row.method,
        target=row.target,
        outcome=row.outcome,
        message=row.message,
        peer=row.peer,
    )


class AuditRepository:
    """SQL access for audit events."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def append(self, event: AuditEvent) -> None:
        """Write one event; over-long free text is clipped to its column."""
        async with self._db.begin() as conn:
            await conn.execute(
                audit_events.insert().values(
                    at=event.at,
                    actor=_clip(event.actor, 300),
                    tenant=event.tenant,
                    method=_clip(event.method, 200),
                    target=_clip(event.target, 300),
                    outcome=event.outcome,
                    message=_clip(event.message, 512),
                    peer=_clip(event.peer, 128),
                )
            )

    async def list_events(self, where: AuditFilter, limit: int, before_id: int | None) -> list[AuditEvent]:
        """Events matching every filter, newest first, with ids below `before_id`."""
        query = sa.select(audit_events).order_by(audit_events.c.id.desc()).limit(limit)
        if where.tenant is not None:
            query = query.where(audit_events.c.tenant == where.tenant)
        if where.actor:
            query = query.where(audit_events.c.actor == where.actor)
        if where.method_contains:
            # Literal match: % and _ in the filter are not wildcards.
            query = query.where(audit_events.c.method.contains(where.method_contains, autoescape=True))
        if where.outcome == "denied":
            query = query.where(audit_events.c.outcome.in_(DENIALS))
        elif where.outcome:
            query = query.where(audit_events.c.outcome == where.outcome)
        if where.since is not None:
            query = query.where(audit_events.c.at >= where.since)
        if where.until is not None:
            query = query.where(audit_events.c.at < where.until)
        if before_id is not None:
            query = query.where(audit_events.c.id < before_id)
        async with self._db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_event(row) for row in rows]
