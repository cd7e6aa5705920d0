"""Alert storage: the facts the rules read (set-based: a handful of queries per round whatever
the fleet size), alerts and their fenced state changes, delivery attempts, and notifiers.

Every alert state change records its Transition (entity_type "alert") in the same transaction,
so the events outbox carries it. Leader-job writes pass the fence last, like the liveness
monitor's.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from srcore.domain import alerts as rules
from srcore.domain.alerts import AlertCause, AlertState, Condition, Facts, Key, Notice, OpenAlert, Plan
from srcore.domain.coordination import LeaderInfo
from srcore.domain.errors import AlreadyExists, NotFound
from srcore.domain.ingest import BatchState
from srcore.domain.model import Transition
from srcore.security.credentials import Sealed
from srcore.store.alert_tables import alert_deliveries, alerts, notifiers
from srcore.store.database import Database
from srcore.store.fence import hold_fence
from srcore.store.ingest_tables import ingest_batches
from srcore.store.pollers import utc
from srcore.store.tables import agents, pollers
from srcore.store.transitions import record_transitions

# Columns the processing migration (0008_processing) adds to the ingest tables; named here
# rather than on the shared table objects so this module does not depend on their edit order.
_check_latest = sa.table(
    "check_latest",
    sa.column("tenant"),
    sa.column("poller_id"),
    sa.column("agent_id"),
    sa.column("name"),
    sa.column("state"),
    sa.column("consecutive_failures"),
)
_sweep_executions = sa.table(
    "sweep_executions",
    sa.column("tenant"),
    sa.column("poller_id"),
    sa.column("sweep_id"),
    sa.column("execution_id"),
    sa.column("state"),
    sa.column("completed_at"),
    sa.column("hosts_total"),
    sa.column("hosts_available"),
)

# The two latest completed executions of every sweep, from ix_sweep_executions_latest: the
# recursive part steps from one (tenant, poller, sweep) to the next with one index descent each
# (PostgreSQL before 18 has no skip scan), and the lateral part reads the first two entries of
# each. Work grows with the number of sweeps, not with the executions they accumulate. The
# literals are the index's predicate.
_LATEST_TWO_PER_SWEEP = sa.text("""
WITH RECURSIVE sweeps AS (
  (SELECT tenant, poller_id, sweep_id FROM sweep_executions
   WHERE state = 'completed' AND sweep_id <> ''
   ORDER BY tenant, poller_id, sweep_id LIMIT 1)
  UNION ALL
  SELECT following.* FROM sweeps CROSS JOIN LATERAL (
    SELECT e.tenant, e.poller_id, e.sweep_id FROM sweep_executions e
    WHERE e.state = 'completed' AND e.sweep_id <> ''
      AND (e.tenant, e.poller_id, e.sweep_id) > (sweeps.tenant, sweeps.poller_id, sweeps.sweep_id)
    ORDER BY e.tenant, e.poller_id, e.sweep_id LIMIT 1
  ) following
)
SELECT sweeps.tenant, sweeps.poller_id, sweeps.sweep_id, latest.hosts_total, latest.hosts_available
FROM sweeps CROSS JOIN LATERAL (
  SELECT e.hosts_total, e.hosts_available, e.completed_at, e.execution_id FROM sweep_executions e
  WHERE e.state = 'completed' AND e.sweep_id <> ''
    AND e.tenant = sweeps.tenant AND e.poller_id = sweeps.poller_id AND e.sweep_id = sweeps.sweep_id
  ORDER BY e.completed_at DESC, e.execution_id DESC LIMIT 2
) latest
ORDER BY sweeps.tenant, sweeps.poller_id, sweeps.sweep_id, latest.completed_at DESC, latest.execution_id DESC
""")

# A poller in these states reports nothing (or is held by an operator): its agents and checks
# keep their last state, which says nothing new, so they raise no alerts of their own.
_SILENT_POLLER_STATES = ("offline", "inactive", "maintenance")
_DOWN_AGENT_STATES = ("disconnected", "unavailable")


def _at(value: datetime | None) -> datetime:
    stamped = utc(value)
    assert stamped is not None
    return stamped


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """An alert as stored."""

    tenant: str
    alert_id: str
    rule: str
    subject: str
    severity: str
    state: AlertState
    title: str
    detail: str
    created_at: datetime
    updated_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str
    escalated_at: datetime | None
    resolved_at: datetime | None
    resolved_by: str
    notified_at: datetime | None
    notify_pending: str
    notify_rounds: int
    suppressed: bool

    @property
    def key(self) -> Key:
        """Its deduplication key."""
        return Key(self.tenant, rules.Rule(self.rule), self.subject)


def _record(row: Any) -> AlertRecord:
    return AlertRecord(
        tenant=row.tenant,
        alert_id=row.alert_id,
        rule=row.rule,
        subject=row.subject,
        severity=row.severity,
        state=AlertState(row.state),
        title=row.title,
        detail=row.detail,
        created_at=_at(row.created_at),
        updated_at=_at(row.updated_at),
        acknowledged_at=utc(row.acknowledged_at),
        acknowledged_by=row.acknowledged_by,
        escalated_at=utc(row.escalated_at),
        resolved_at=utc(row.resolved_at),
        resolved_by=row.resolved_by,
        notified_at=utc(row.notified_at),
        notify_pending=row.notify_pending,
        notify_rounds=int(row.notify_rounds),
        suppressed=bool(row.suppressed),
    )


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One notification attempt."""

    tenant: str
    alert_id: str
    notifier: str
    kind: str
    attempt: int
    success: bool
    status_code: int
    error: str
    at: datetime


@dataclass(frozen=True, slots=True)
class NotifierRecord:
    """A notifier as stored; its URL and headers only sealed."""

    tenant: str
    name: str
    notifier_id: str
    kind: rules.NotifierKind
    enabled: bool
    endpoint: str
    header_names: tuple[str, ...]
    sealed: Sealed
    created_at: datetime
    updated_at: datetime


def _notifier(row: Any) -> NotifierRecord:
    return NotifierRecord(
        tenant=row.tenant,
        name=row.name,
        notifier_id=row.notifier_id,
        kind=rules.NotifierKind(row.kind),
        enabled=bool(row.enabled),
        endpoint=row.endpoint,
        header_names=tuple(row.header_names),
        sealed=Sealed(bytes(row.sealed_config), row.config_key_id),
        created_at=_at(row.created_at),
        updated_at=_at(row.updated_at),
    )


@dataclass(frozen=True, slots=True)
class AlertFilter:
    """Which alerts a list wants; None or empty means any."""

    tenant: str | None = None
    state: AlertState | None = None
    rule: rules.Rule | None = None
    open_only: bool = False


class AlertRepository:
    """Alerts, deliveries and notifiers."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # ---- evaluation ------------------------------------------------------------------------

    async def facts(self, window_start: datetime) -> Facts:
        """What the rules read, in five set-based queries."""
        async with self.db.connect() as conn:
            offline = await conn.execute(
                sa.select(pollers.c.tenant, pollers.c.poller_id).where(pollers.c.state == "offline")
            )
            offline_pollers = [(r.tenant, r.poller_id) for r in offline]
            live = sa.and_(
                pollers.c.tenant == agents.c.tenant,
                pollers.c.poller_id == agents.c.poller_id,
                pollers.c.state.not_in(_SILENT_POLLER_STATES),
            )
            down = await conn.execute(
                sa.select(agents.c.tenant, agents.c.poller_id, agents.c.agent_id, agents.c.state)
                .join(pollers, live)
                .where(agents.c.state.in_(_DOWN_AGENT_STATES))
            )
            down_agents = [(r.tenant, r.poller_id, r.agent_id, r.state) for r in down]
            c = _check_latest.c
            failing = await conn.execute(
                sa.select(c.tenant, c.poller_id, c.agent_id, c.name, c.consecutive_failures)
                .join(
                    pollers,
                    sa.and_(
                        pollers.c.tenant == c.tenant,
                        pollers.c.poller_id == c.poller_id,
                        pollers.c.state.not_in(_SILENT_POLLER_STATES),
                    ),
                )
                .where(c.state == "failing")
            )
            failing_checks = [
                (r.tenant, r.poller_id, r.agent_id, r.name, int(r.consecutive_failures or 0)) for r in failing
            ]
            sweeps = await self._sweep_pairs(conn)
            ingest = await conn.execute(
                sa.select(
                    ingest_batches.c.tenant,
                    sa.func.sum(ingest_batches.c.accepted).label("accepted"),
                    sa.func.sum(ingest_batches.c.rejected).label("rejected"),
                )
                .where(
                    # Naming every state lets PostgreSQL range-scan ix_ingest_batches_state_updated
                    # per state (as stats does) instead of reading the whole ledger.
                    ingest_batches.c.state.in_([s.value for s in BatchState]),
                    ingest_batches.c.updated_at >= window_start,
                )
                .group_by(ingest_batches.c.tenant)
            )
            windows = [
                rules.IngestWindow(r.tenant, int(r.accepted or 0), int(r.rejected or 0)) for r in ingest
            ]
        return Facts(offline_pollers, down_agents, failing_checks, sweeps, windows)

    async def _sweep_pairs(self, conn: AsyncConnection) -> list[rules.SweepPair]:
        # Rows come grouped by sweep, newest first, at most two per sweep.
        if conn.dialect.name == "postgresql":
            rows = await conn.execute(_LATEST_TWO_PER_SWEEP)
        else:
            s = _sweep_executions.c
            ranked = (
                sa.select(
                    s.tenant,
                    s.poller_id,
                    s.sweep_id,
                    s.hosts_total,
                    s.hosts_available,
                    sa.func.row_number()
                    .over(
                        partition_by=(s.tenant, s.poller_id, s.sweep_id),
                        order_by=(s.completed_at.desc(), s.execution_id.desc()),
                    )
                    .label("rank"),
                )
                # Literals, as ix_sweep_executions_latest's predicate: SQLite then reads that
                # index in the window's order instead of sorting the table.
                .where(s.state == sa.literal_column("'completed'"), s.sweep_id != sa.literal_column("''"))
                .subquery()
            )
            rows = await conn.execute(
                sa.select(ranked)
                .where(ranked.c.rank <= 2)
                .order_by(ranked.c.tenant, ranked.c.poller_id, ranked.c.sweep_id, ranked.c.rank)
            )
        latest: dict[tuple[str, str, str], tuple[int, int]] = {}
        pairs: list[rules.SweepPair] = []
        for r in rows:
            key = (r.tenant, r.poller_id, r.sweep_id)
            counts = (int(r.hosts_total or 0), int(r.hosts_available or 0))
            if key not in latest:
                latest[key] = counts
            else:
                pairs.append(rules.SweepPair(*key, *counts, *latest[key]))
        return pairs

    async def open_alerts(self) -> list[OpenAlert]:
        """Every alert that is not resolved."""
        async with self.db.connect() as conn:
            rows = await conn.execute(
                sa.select(
                    alerts.c.alert_id,
                    alerts.c.tenant,
                    alerts.c.rule,
                    alerts.c.subject,
                    alerts.c.state,
                    alerts.c.created_at,
                ).where(alerts.c.state != AlertState.RESOLVED.value)
            )
            return [
                OpenAlert(
                    r.alert_id,
                    Key(r.tenant, rules.Rule(r.rule), r.subject),
                    AlertState(r.state),
                    _at(r.created_at),
                )
                for r in rows
            ]

    async def apply(self, plan: Plan, now: datetime, leader: LeaderInfo, replica_id: str) -> list[Transition]:
        """Write a round's plan in one fenced transaction; returns the transitions made.

        Updates are conditioned on the state the plan saw, so an operator's change made
        meanwhile wins and the evaluator sees the alert again next round.
        """
        transitions: list[Transition] = []
        async with self.db.begin() as conn:
            transitions += await self._open(conn, plan.opens, now)
            transitions += await self._move(conn, plan.escalations, AlertState.ESCALATED, now)
            transitions += await self._move(conn, plan.resolves, AlertState.RESOLVED, now)
            await record_transitions(conn, transitions, replica_id, leader.fencing_token)
            await hold_fence(conn, leader, now)
        return transitions

    async def _open(
        self, conn: AsyncConnection, opens: Sequence[Condition], now: datetime
    ) -> list[Transition]:
        if not opens:
            return []
        rows: list[dict[str, Any]] = []
        transitions: list[Transition] = []
        for condition in opens:
            alert_id = uuid.uuid4().hex
            rows.append(
                {
                    "alert_id": alert_id,
                    "tenant": condition.key.tenant,
                    "rule": condition.key.rule.value,
                    "subject": condition.key.subject[:300],
                    "severity": condition.severity.value,
                    "state": AlertState.PENDING.value,
                    "title": condition.title[:255],
                    "detail": condition.detail[:512],
                    "created_at": now,
                    "updated_at": now,
                    "notify_pending": Notice.OPENED.value,
                }
            )
            transitions.append(rules.opened(condition.key.tenant, alert_id, now, condition.title))
        await conn.execute(alerts.insert(), rows)
        return transitions

    async def _move(
        self, conn: AsyncConnection, found: Sequence[OpenAlert], target: AlertState, now: datetime
    ) -> list[Transition]:
        transitions: list[Transition] = []
        by_state: dict[AlertState, list[OpenAlert]] = {}
        for alert in found:
            by_state.setdefault(alert.state, []).append(alert)
        for current, group in by_state.items():
            ids = [a.alert_id for a in group]
            values: dict[str, Any] = {"state": target.value, "updated_at": now}
            if target == AlertState.ESCALATED:
                values.update(escalated_at=now, notify_pending=Notice.ESCALATED.value, **_FRESH_NOTICE)
                cause = AlertCause.ESCALATION_TIMEOUT
            else:
                values.update(
                    resolved_at=now,
                    resolved_by=rules.CORE_ACTOR,
                    notify_pending=_resolved_notice(),
                    **_FRESH_NOTICE,
                )
                cause = AlertCause.CLEARED
            changed = await conn.execute(
                alerts.update()
                .where(alerts.c.alert_id.in_(ids), alerts.c.state == current.value)
                .values(**values)
                .returning(alerts.c.alert_id)
            )
            moved = {r.alert_id for r in changed}
            transitions.extend(
                rules.transition(current, target, cause, tenant=a.key.tenant, alert_id=a.alert_id, at=now)
                for a in group
                if a.alert_id in moved
            )
        return transitions

    # ---- operators -------------------------------------------------------------------------

    async def change_state(
        self,
        tenant: str,
        alert_id: str,
        target: AlertState,
        cause: AlertCause,
        actor: str,
        note: str,
        now: datetime,
        replica_id: str,
        fencing_token: int,
    ) -> AlertRecord:
        """An operator's acknowledge or resolve; FailedPrecondition for an illegal move."""
        async with self.db.begin() as conn:
            query = sa.select(alerts).where(alerts.c.tenant == tenant, alerts.c.alert_id == alert_id)
            if conn.dialect.name == "postgresql":
                query = query.with_for_update()
            row = (await conn.execute(query)).one_or_none()
            if row is None:
                raise NotFound(f"alert {alert_id!r} not found")
            current = _record(row)
            change = rules.transition(
                current.state, target, cause, tenant=tenant, alert_id=alert_id, at=now, detail=note
            )
            values: dict[str, Any] = {"state": target.value, "updated_at": now}
            if target == AlertState.ACKNOWLEDGED:
                values.update(acknowledged_at=now, acknowledged_by=actor)
            else:
                values.update(
                    resolved_at=now, resolved_by=actor, notify_pending=_resolved_notice(), **_FRESH_NOTICE
                )
            await conn.execute(
                alerts.update()
                .where(alerts.c.alert_id == alert_id, alerts.c.state == current.state.value)
                .values(**values)
            )
            await record_transitions(conn, [change], replica_id, fencing_token)
            updated = (await conn.execute(sa.select(alerts).where(alerts.c.alert_id == alert_id))).one()
        return _record(updated)

    async def get(self, tenant: str, alert_id: str) -> tuple[AlertRecord, list[DeliveryRecord]]:
        """One alert and its delivery attempts; NotFound outside `tenant`."""
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(alerts).where(alerts.c.tenant == tenant, alerts.c.alert_id == alert_id)
                )
            ).one_or_none()
            if row is None:
                raise NotFound(f"alert {alert_id!r} not found")
            attempts = await conn.execute(
                sa.select(alert_deliveries)
                .where(alert_deliveries.c.alert_id == alert_id)
                .order_by(alert_deliveries.c.id)
            )
            deliveries = [
                DeliveryRecord(
                    d.tenant,
                    d.alert_id,
                    d.notifier,
                    d.kind,
                    d.attempt,
                    bool(d.success),
                    d.status_code,
                    d.error,
                    _at(d.at),
                )
                for d in attempts
            ]
        return _record(row), deliveries

    async def list_alerts(
        self, where: AlertFilter, limit: int, after: tuple[datetime, str] | None
    ) -> list[AlertRecord]:
        """A page of alerts, newest first (keyset on created_at, alert_id)."""
        query = sa.select(alerts)
        if where.tenant is not None:
            query = query.where(alerts.c.tenant == where.tenant)
        if where.state is not None:
            query = query.where(alerts.c.state == where.state.value)
        elif where.open_only:
            query = query.where(alerts.c.state != AlertState.RESOLVED.value)
        if where.rule is not None:
            query = query.where(alerts.c.rule == where.rule.value)
        if after is not None:
            query = query.where(
                sa.or_(
                    alerts.c.created_at < after[0],
                    sa.and_(alerts.c.created_at == after[0], alerts.c.alert_id < after[1]),
                )
            )
        query = query.order_by(alerts.c.created_at.desc(), alerts.c.alert_id.desc()).limit(limit)
        async with self.db.connect() as conn:
            return [_record(r) for r in await conn.execute(query)]

    # ---- delivery --------------------------------------------------------------------------

    async def pending_notifications(self, limit: int, now: datetime) -> list[AlertRecord]:
        """Alerts with a notice due to be sent, oldest change first."""
        async with self.db.connect() as conn:
            rows = await conn.execute(
                sa.select(alerts)
                .where(
                    alerts.c.notify_pending != "",
                    sa.or_(alerts.c.notify_after.is_(None), alerts.c.notify_after <= now),
                )
                .order_by(alerts.c.updated_at, alerts.c.alert_id)
                .limit(limit)
            )
            return [_record(r) for r in rows]

    async def last_notified(self, key: Key, excluding: str) -> datetime | None:
        """When another alert of `key` was last notified successfully."""
        async with self.db.connect() as conn:
            value = await conn.scalar(
                sa.select(sa.func.max(alerts.c.notified_at)).where(
                    alerts.c.tenant == key.tenant,
                    alerts.c.rule == key.rule.value,
                    alerts.c.subject == key.subject,
                    alerts.c.alert_id != excluding,
                )
            )
        return utc(value)

    async def finish_notification(
        self,
        alert_id: str,
        notice: Notice,
        attempts: Sequence[DeliveryRecord],
        *,
        delivered: bool,
        suppressed: bool,
        now: datetime,
        leader: LeaderInfo,
        retry_at: datetime | None = None,
    ) -> None:
        """Record the attempts and end the notice, or, with `retry_at`, keep it queued until
        then; the cooldown (`notified_at`) moves only when a receiver accepted it. A newer
        notice queued meanwhile stays queued."""
        async with self.db.begin() as conn:
            if attempts:
                await conn.execute(
                    alert_deliveries.insert(),
                    [
                        {
                            "alert_id": a.alert_id,
                            "tenant": a.tenant,
                            "notifier": a.notifier,
                            "kind": a.kind,
                            "attempt": a.attempt,
                            "success": a.success,
                            "status_code": a.status_code,
                            "error": a.error[:512],
                            "at": a.at,
                        }
                        for a in attempts
                    ],
                )
            values: dict[str, Any] = {}
            if delivered:
                values["notified_at"] = now
            if suppressed:
                values["suppressed"] = True
            if values:
                await conn.execute(alerts.update().where(alerts.c.alert_id == alert_id).values(**values))
            this_notice = (alerts.c.alert_id == alert_id, alerts.c.notify_pending == notice.value)
            if retry_at is None:
                queue: dict[str, Any] = {"notify_pending": "", **_FRESH_NOTICE}
            else:
                queue = {"notify_after": retry_at, "notify_rounds": alerts.c.notify_rounds + 1}
            await conn.execute(alerts.update().where(*this_notice).values(**queue))
            await hold_fence(conn, leader, now)

    # ---- notifiers -------------------------------------------------------------------------

    async def create_notifier(self, record: NotifierRecord) -> NotifierRecord:
        """Store a new notifier; AlreadyExists for a taken name."""
        try:
            async with self.db.begin() as conn:
                await conn.execute(notifiers.insert().values(**_notifier_row(record)))
        except IntegrityError:
            raise AlreadyExists(f"notifier {record.name!r} already exists") from None
        return record

    async def get_notifier(self, tenant: str, name: str) -> NotifierRecord:
        """One notifier; NotFound outside `tenant`."""
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(notifiers).where(notifiers.c.tenant == tenant, notifiers.c.name == name)
                )
            ).one_or_none()
        if row is None:
            raise NotFound(f"notifier {name!r} not found")
        return _notifier(row)

    async def list_notifiers(
        self, tenant: str | None, limit: int, after: tuple[str, str] | None, *, enabled_only: bool = False
    ) -> list[NotifierRecord]:
        """Notifiers by tenant and name."""
        query = sa.select(notifiers)
        if tenant is not None:
            query = query.where(notifiers.c.tenant == tenant)
        if enabled_only:
            query = query.where(notifiers.c.enabled.is_(True))
        if after is not None:
            query = query.where(sa.tuple_(notifiers.c.tenant, notifiers.c.name) > sa.tuple_(*after))
        query = query.order_by(notifiers.c.tenant, notifiers.c.name).limit(limit)
        async with self.db.connect() as conn:
            return [_notifier(r) for r in await conn.execute(query)]

    async def update_notifier(self, record: NotifierRecord) -> NotifierRecord:
        """Replace a notifier's mutable fields."""
        async with self.db.begin() as conn:
            row = _notifier_row(record)
            for fixed in ("tenant", "name", "notifier_id", "created_at"):
                row.pop(fixed)
            result = await conn.execute(
                notifiers.update()
                .where(notifiers.c.tenant == record.tenant, notifiers.c.name == record.name)
                .values(**row)
            )
        if result.rowcount != 1:
            raise NotFound(f"notifier {record.name!r} not found")
        return record

    async def delete_notifier(self, tenant: str, name: str) -> None:
        """Delete a notifier; NotFound when there is none."""
        async with self.db.begin() as conn:
            result = await conn.execute(
                notifiers.delete().where(notifiers.c.tenant == tenant, notifiers.c.name == name)
            )
        if result.rowcount != 1:
            raise NotFound(f"notifier {name!r} not found")


# A newly queued notice starts its own delivery rounds.
_FRESH_NOTICE: dict[str, Any] = {"notify_after": None, "notify_rounds": 0}


def _resolved_notice() -> sa.ColumnElement[str]:
    # Resolution is notified only when the opening (or escalation) was: nobody needs to hear
    # that something they never heard of is over (and a flap that cleared before its page went
    # out pages nobody at all).
    return sa.case((alerts.c.notified_at.is_(None), ""), else_=Notice.RESOLVED.value)


def _notifier_row(record: NotifierRecord) -> dict[str, Any]:
    return {
        "tenant": record.tenant,
        "name": record.name,
        "notifier_id": record.notifier_id,
        "kind": record.kind.value,
        "enabled": record.enabled,
        "endpoint": record.endpoint,
        "header_names": list(record.header_names),
        "sealed_config": record.sealed.value,
        "config_key_id": record.sealed.key_id,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }
