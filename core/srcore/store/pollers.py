"""Repository of tenants, partitions, pollers and agents (implements domain PollerStore)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from srcore.domain.model import (
    Agent,
    AgentState,
    ComponentStatus,
    Poller,
    PollerState,
    Registration,
    Transition,
)
from srcore.domain.registry import PendingHeartbeat
from srcore.domain.work import AssignmentState
from srcore.store.database import Database
from srcore.store.tables import agents, partitions, pollers, tenants, work_items
from srcore.store.transitions import record_transitions
from srcore.store.upsert import insert_ignore, upsert

# Keys per read of poller states after a heartbeat flush on SQLite (PostgreSQL reads them as it
# locks the rows): well under SQLite's limit on bound parameters per statement.
STATE_READ_CHUNK = 1000

_AGENT_STATE = {
    ComponentStatus.OK: AgentState.CONNECTED,
    ComponentStatus.DEGRADED: AgentState.DEGRADED,
    ComponentStatus.DOWN: AgentState.DISCONNECTED,
    ComponentStatus.UNKNOWN: AgentState.CONNECTING,
}


def utc(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; everything stored is UTC, so say so."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _poller(row: sa.Row[Any], agent_rows: Sequence[sa.Row[Any]] = (), agent_count: int = 0) -> Poller:
    return Poller(
        tenant=row.tenant,
        poller_id=row.poller_id,
        partition=row.partition,
        state=PollerState(row.state),
        version=row.version,
        capabilities=tuple(row.capabilities),
        labels=dict(row.labels),
        hostname=row.hostname,
        registered_at=utc(row.registered_at),
        last_seen=utc(row.last_seen),
        serving_replica=row.serving_replica,
        desired_config_version=row.desired_config_version,
        applied_config_version=row.applied_config_version,
        clock_skew_seconds=row.clock_skew_ms / 1000,
        message=row.message,
        agent_count=agent_count or len(agent_rows),
        assigned_work=row.assigned_work,
        agents=[
            Agent(
                agent_id=a.agent_id,
                state=AgentState(a.state),
                version=a.version,
                capabilities=tuple(a.capabilities),
                address=a.address,
                labels=dict(a.labels),
                message=a.message,
                last_seen=utc(a.last_seen),
            )
            for a in agent_rows
        ],
    )


def _assigned_work() -> sa.Label[int]:
    """The number of work items assigned to the poller of the row, as `assigned_work`."""
    return (
        sa.select(sa.func.count())
        .where(work_items.c.tenant == pollers.c.tenant, work_items.c.poller_id == pollers.c.poller_id)
        .scalar_subquery()
        .label("assigned_work")
    )


class PollerRepository:
    """SQL access for the registry; every multi-row change is one transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def ensure_tenant(self, name: str, now: datetime) -> None:
        """Create the tenant if it does not exist (used to bootstrap the embedded default).

        Replicas starting together all ensure it: the insert yields to whoever was first.
        """
        async with self._db.begin() as conn:
            await insert_ignore(conn, tenants, [{"name": name, "display_name": name, "created_at": now}])

    async def tenant_state(self, tenant: str) -> str | None:
        """'active', 'suspended', or None when the tenant does not exist."""
        async with self._db.connect() as conn:
            state: str | None = await conn.scalar(sa.select(tenants.c.state).where(tenants.c.name == tenant))
            return state

    async def get_poller(self, tenant: str, poller_id: str, with_agents: bool = False) -> Poller | None:
        """One poller (with its agents when asked), or None."""
        async with self._db.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(pollers, _assigned_work()).where(
                        pollers.c.tenant == tenant, pollers.c.poller_id == poller_id
                    )
                )
            ).first()
            if row is None:
                return None
            agent_rows = (
                await conn.execute(
                    sa.select(agents)
                    .where(agents.c.tenant == tenant, agents.c.poller_id == poller_id)
                    .order_by(agents.c.agent_id)
                )
            ).all()
        poller = _poller(row, agent_rows)
        if not with_agents:
            poller.agents = []
        return poller

    async def live_views(self) -> dict[tuple[str, str], tuple[PollerState, str, str]]:
        """(state, desired configuration version, partition) of every poller, by (tenant, poller)."""
        c = pollers.c
        query = sa.select(c.tenant, c.poller_id, c.state, c.desired_config_version, c.partition)
        async with self._db.connect() as conn:
            return {
                (r.tenant, r.poller_id): (PollerState(r.state), r.desired_config_version, r.partition)
                for r in await conn.execute(query)
            }

    async def config_entries(self, tenant: str, poller_id: str) -> list[tuple[str, str, str]]:
        """(kind, item id, digest) of each work item assigned to the poller."""
        query = sa.select(work_items.c.kind, work_items.c.item_id, work_items.c.digest).where(
            work_items.c.tenant == tenant,
            work_items.c.poller_id == poller_id,
            work_items.c.state == AssignmentState.ASSIGNED.value,
        )
        async with self._db.connect() as conn:
            return [(row.kind, row.item_id, row.digest) for row in await conn.execute(query)]

    async def list_pollers(
        self,
        tenant: str | None,
        partition: str | None,
        state: PollerState | None,
        limit: int,
        after: tuple[str, str] | None,
    ) -> list[Poller]:
        """A page of pollers ordered by (tenant, poller_id), starting after the key `after`."""
        count = (
            sa.select(sa.func.count())
            .where(agents.c.tenant == pollers.c.tenant, agents.c.poller_id == pollers.c.poller_id)
            .scalar_subquery()
        )
        query = sa.select(pollers, count.label("agent_count"), _assigned_work()).order_by(
            pollers.c.tenant, pollers.c.poller_id
        )
        if tenant is not None:
            query = query.where(pollers.c.tenant == tenant)
        if partition is not None:
            query = query.where(pollers.c.partition == partition)
        if state is not None:
            query = query.where(pollers.c.state == state.value)
        if after is not None:
            query = query.where(sa.tuple_(pollers.c.tenant, pollers.c.poller_id) > sa.tuple_(*after))
        async with self._db.connect() as conn:
            rows = (await conn.execute(query.limit(limit))).all()
        return [_poller(row, agent_count=row.agent_count) for row in rows]

    async def save_registration(
        self,
        registration: Registration,
        state: PollerState,
        session_id: str,
        replica_id: str,
        desired_config_version: str,
        now: datetime,
        transition: Transition | None,
        fencing_token: int,
    ) -> None:
        """Upsert the poller, its partition and its agents, and record the transition."""
        r = registration
        values: dict[str, Any] = {
            "partition": r.partition,
            "state": state.value,
            "version": r.version,
            "capabilities": list(r.capabilities),
            "labels": r.labels,
            "hostname": r.hostname,
            "session_id": session_id,
            "last_seen": now,
            "serving_replica": replica_id,
            "desired_config_version": desired_config_version,
        }
        key = (pollers.c.tenant == r.tenant) & (pollers.c.poller_id == r.poller_id)
        async with self._db.begin() as conn:
            await insert_ignore(
                conn, partitions, [{"tenant": r.tenant, "name": r.partition, "cidrs": [], "created_at": now}]
            )
            old_state = await conn.scalar(sa.select(pollers.c.state).where(key))
            if old_state != state.value:
                values["state_changed_at"] = now
            # An upsert, because a poller restarting in a loop can race its own registrations.
            await upsert(
                conn,
                pollers,
                {
                    "tenant": r.tenant,
                    "poller_id": r.poller_id,
                    "registered_at": now,
                    "state_changed_at": now,
                    **values,
                },
                keys=("tenant", "poller_id"),
                update=list(values),
            )
            await self._upsert_agents(conn, registration, now)
            if transition is not None:
                await record_transitions(conn, [transition], replica_id, fencing_token)

    @staticmethod
    async def _upsert_agents(conn: Any, r: Registration, now: datetime) -> None:
        existing = set(
            (
                await conn.execute(
                    sa.select(agents.c.agent_id).where(
                        agents.c.tenant == r.tenant, agents.c.poller_id == r.poller_id
                    )
                )
            ).scalars()
        )
        announced = {a.agent_id for a in r.agents}
        for agent in r.agents:
            # A re-announced agent starts over as connecting until its poller reports on it.
            values = {
                "version": agent.version,
                "capabilities": list(agent.capabilities),
                "address": agent.address,
                "labels": agent.labels,
                "state": AgentState.CONNECTING.value,
            }
            await upsert(
                conn,
                agents,
                {
                    "tenant": r.tenant,
                    "poller_id": r.poller_id,
                    "agent_id": agent.agent_id,
                    "last_seen": now,
                    **values,
                },
                keys=("tenant", "poller_id", "agent_id"),
                update=list(values),
            )
        gone = existing - announced
        if gone:
            # An agent the poller no longer announces is kept for history but marked unavailable.
            await conn.execute(
                agents.update()
                .where(
                    agents.c.tenant == r.tenant,
                    agents.c.poller_id == r.poller_id,
                    agents.c.agent_id.in_(gone),
                )
                .values(state=AgentState.UNAVAILABLE.value)
            )

    async def record_heartbeats(
        self, pending: Sequence[PendingHeartbeat], replica_id: str, fencing_token: int
    ) -> dict[tuple[str, str], PollerState]:
        """Write a batch of heartbeats in one transaction.

        Poller rows are locked in (tenant, poller_id) order, the order the liveness monitor
        locks them in, so the two never deadlock. A poller's state changes are applied only when
        the store still holds the state they start from (see `PollerStore.record_heartbeats`).
        Returns the state of every poller written, after the write.
        """
        ordered = sorted(pending, key=lambda item: (item.heartbeat.tenant, item.heartbeat.poller_id))
        poller_rows: list[dict[str, Any]] = []
        agent_rows: list[dict[str, Any]] = []
        for item in ordered:
            beat = item.heartbeat
            poller_rows.append(
                {
                    "k_tenant": beat.tenant,
                    "k_poller": beat.poller_id,
                    "last_seen": beat.received_at,
                    "applied_config_version": beat.applied_config_version,
                    "clock_skew_ms": int(beat.clock_skew_seconds * 1000),
                    "message": beat.message,
                }
            )
            for agent in item.agents.values():
                agent_rows.append(
                    {
                        "k_tenant": beat.tenant,
                        "k_poller": beat.poller_id,
                        "k_agent": agent.agent_id,
                        "state": _AGENT_STATE[agent.status].value,
                        "message": agent.message,
                        "last_seen": beat.received_at,
                    }
                )
        async with self._db.begin() as conn:
            # This locks the rows (PostgreSQL), so the states it returns stay as read until commit.
            stored = await _touch_pollers(conn, poller_rows)
            state_rows: list[dict[str, Any]] = []
            transitions: list[Transition] = []
            for item in ordered:
                key = (item.heartbeat.tenant, item.heartbeat.poller_id)
                if item.state is None or not item.transitions:
                    continue
                if stored.get(key) != PollerState(item.transitions[0].from_state):
                    continue  # moved by the leader or an operator since this replica looked
                state_rows.append(
                    {
                        "k_tenant": key[0],
                        "k_poller": key[1],
                        "state": item.state.value,
                        "at": item.heartbeat.received_at,
                    }
                )
                transitions.extend(item.transitions)
                stored[key] = item.state
            if state_rows:
                await conn.execute(
                    pollers.update()
                    .where(_POLLER_KEY)
                    .values(state=sa.bindparam("state"), state_changed_at=sa.bindparam("at")),
                    state_rows,
                )
            if agent_rows:
                await _touch_agents(conn, agent_rows)
            await record_transitions(conn, transitions, replica_id, fencing_token)
        return stored


_POLLER_KEY = (pollers.c.tenant == sa.bindparam("k_tenant")) & (
    pollers.c.poller_id == sa.bindparam("k_poller")
)

# PostgreSQL writes a flush in three statements over one JSON document each, not one statement
# per row (executemany held the event loop ~48 µs per heartbeat; array parameters ~21, quoted
# element by element in Python; JSON ~12, json.dumps being C). Poller rows are locked first, in
# (tenant, poller_id) order, the order the liveness monitor locks them in, so the two never
# deadlock; agent rows are only written under their poller's lock.
_PG_LOCK_POLLERS = sa.text(
    """
    SELECT p.tenant, p.poller_id, p.state
      FROM pollers AS p
      JOIN jsonb_to_recordset(CAST(:rows AS jsonb)) AS k(k_tenant varchar, k_poller varchar)
        ON p.tenant = k.k_tenant AND p.poller_id = k.k_poller
     ORDER BY p.tenant, p.poller_id
       FOR UPDATE OF p
    """
)
_PG_TOUCH_POLLERS = sa.text(
    """
    UPDATE pollers AS p
       SET last_seen = v.last_seen, applied_config_version = v.applied_config_version,
           clock_skew_ms = v.clock_skew_ms, message = v.message
      FROM jsonb_to_recordset(CAST(:rows AS jsonb))
           AS v(k_tenant varchar, k_poller varchar, last_seen timestamptz,
                applied_config_version varchar, clock_skew_ms bigint, message varchar)
     WHERE p.tenant = v.k_tenant AND p.poller_id = v.k_poller
    """
)
_PG_TOUCH_AGENTS = sa.text(
    """
    UPDATE agents AS a
       SET state = v.state, message = v.message, last_seen = v.last_seen
      FROM jsonb_to_recordset(CAST(:rows AS jsonb))
           AS v(k_tenant varchar, k_poller varchar, k_agent varchar, state varchar,
                message varchar, last_seen timestamptz)
     WHERE a.tenant = v.k_tenant AND a.poller_id = v.k_poller AND a.agent_id = v.k_agent
    """
)


def _json_rows(rows: Sequence[dict[str, Any]]) -> str:
    """Rows as one JSON document for jsonb_to_recordset (timestamps in ISO 8601)."""
    return json.dumps(rows, default=datetime.isoformat)


async def _touch_pollers(conn: Any, rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str], PollerState]:
    """Write heartbeats' poller columns (rows in key order); returns the states stored."""
    if conn.dialect.name == "postgresql":
        document = _json_rows(rows)
        locked = await conn.execute(_PG_LOCK_POLLERS, {"rows": document})
        stored = {(row.tenant, row.poller_id): PollerState(row.state) for row in locked}
        await conn.execute(_PG_TOUCH_POLLERS, {"rows": document})
        return stored
    await conn.execute(
        pollers.update()
        .where(_POLLER_KEY)
        .values(
            last_seen=sa.bindparam("last_seen"),
            applied_config_version=sa.bindparam("applied_config_version"),
            clock_skew_ms=sa.bindparam("clock_skew_ms"),
            message=sa.bindparam("message"),
        ),
        rows,
    )
    return await _states(conn, [(r["k_tenant"], r["k_poller"]) for r in rows])


async def _touch_agents(conn: Any, rows: Sequence[dict[str, Any]]) -> None:
    """Write heartbeats' agent columns."""
    if conn.dialect.name == "postgresql":
        await conn.execute(_PG_TOUCH_AGENTS, {"rows": _json_rows(rows)})
        return
    await conn.execute(
        agents.update()
        .where(
            agents.c.tenant == sa.bindparam("k_tenant"),
            agents.c.poller_id == sa.bindparam("k_poller"),
            agents.c.agent_id == sa.bindparam("k_agent"),
        )
        .values(
            state=sa.bindparam("state"),
            message=sa.bindparam("message"),
            last_seen=sa.bindparam("last_seen"),
        ),
        rows,
    )


async def _states(conn: Any, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], PollerState]:
    """The stored states of these pollers (SQLite: its single writer holds the database)."""
    states: dict[tuple[str, str], PollerState] = {}
    for start in range(0, len(keys), STATE_READ_CHUNK):
        chunk = keys[start : start + STATE_READ_CHUNK]
        rows = await conn.execute(
            sa.select(pollers.c.tenant, pollers.c.poller_id, pollers.c.state).where(
                sa.tuple_(pollers.c.tenant, pollers.c.poller_id).in_(chunk)
            )
        )
        for row in rows:
            states[(row.tenant, row.poller_id)] = PollerState(row.state)
    return states
