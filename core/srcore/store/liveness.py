"""Liveness writes: the monitor's fenced transitions, operator state changes, transition history.

Every state change here is conditional on the state it was decided from (and, for the
monitor, on the last-seen time it read), so a heartbeat flushed or an operator change made
in the meantime is never overwritten by a stale decision. Rows are locked in (tenant,
poller_id) order, the order the heartbeat flush locks them in, so the two never deadlock.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from srcore.domain.coordination import LeaderInfo
from srcore.domain.liveness import WATCHED, LivenessChange, PollerSnapshot, TransitionRecord, offline_agents
from srcore.domain.model import AgentState, Poller, PollerState, Transition
from srcore.store.database import Database
from srcore.store.fence import hold_fence
from srcore.store.pollers import PollerRepository, utc
from srcore.store.tables import agents, pollers, state_transitions
from srcore.store.transitions import record_transitions


def _key(tenant: str, poller_id: str) -> sa.ColumnElement[bool]:
    return (pollers.c.tenant == tenant) & (pollers.c.poller_id == poller_id)


class LivenessRepository:
    """Implements domain.liveness.LivenessStore."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._pollers = PollerRepository(db)

    async def liveness_candidates(
        self, silent_before: datetime, offline_before: datetime
    ) -> list[PollerSnapshot]:
        """Watched pollers silent since before `silent_before`, offline ones since before
        `offline_before`, ordered by (tenant, poller_id)."""
        watched = [s.value for s in WATCHED]
        query = (
            sa.select(
                pollers.c.tenant,
                pollers.c.poller_id,
                pollers.c.state,
                pollers.c.last_seen,
                pollers.c.state_changed_at,
            )
            .where(
                sa.or_(
                    pollers.c.state.in_(watched)
                    & sa.or_(pollers.c.last_seen < silent_before, pollers.c.last_seen.is_(None)),
                    (pollers.c.state == PollerState.OFFLINE.value)
                    & (pollers.c.state_changed_at < offline_before),
                )
            )
            .order_by(pollers.c.tenant, pollers.c.poller_id)
        )
        async with self._db.connect() as conn:
            rows = (await conn.execute(query)).all()
        out = []
        for row in rows:
            changed_at = utc(row.state_changed_at)
            assert changed_at is not None
            out.append(
                PollerSnapshot(
                    row.tenant, row.poller_id, PollerState(row.state), utc(row.last_seen), changed_at
                )
            )
        return out

    async def apply_liveness(
        self, changes: Sequence[LivenessChange], leader: LeaderInfo, now: datetime
    ) -> list[LivenessChange]:
        """Make each change whose poller is still as snapshotted, in one transaction that
        passes the fence last; returns the changes made. Raises Fenced (nothing is written)."""
        applied: list[LivenessChange] = []
        transitions: list[Transition] = []
        async with self._db.begin() as conn:
            for change in sorted(changes, key=lambda c: (c.snapshot.tenant, c.snapshot.poller_id)):
                snapshot = change.snapshot
                seen = (
                    pollers.c.last_seen.is_(None)
                    if snapshot.last_seen is None
                    else pollers.c.last_seen <= snapshot.last_seen
                )
                result = await conn.execute(
                    pollers.update()
                    .where(
                        _key(snapshot.tenant, snapshot.poller_id),
                        pollers.c.state == snapshot.state.value,
                        seen,
                    )
                    .values(state=change.target.value, state_changed_at=now)
                )
                if result.rowcount != 1:
                    continue  # a heartbeat or an operator got there first
                applied.append(change)
                transitions.append(change.transition)
                if change.target is PollerState.OFFLINE:
                    transitions += await self._agents_unavailable(conn, snapshot, now)
            await hold_fence(conn, leader, now)
            await record_transitions(conn, transitions, leader.leader_id, leader.fencing_token)
        return applied

    @staticmethod
    async def _agents_unavailable(
        conn: AsyncConnection, poller: PollerSnapshot, now: datetime
    ) -> list[Transition]:
        key = (agents.c.tenant == poller.tenant) & (agents.c.poller_id == poller.poller_id)
        rows = (
            await conn.execute(
                sa.select(agents.c.agent_id, agents.c.state).where(key).order_by(agents.c.agent_id)
            )
        ).all()
        moved = offline_agents(
            poller.tenant, poller.poller_id, [(r.agent_id, AgentState(r.state)) for r in rows], now
        )
        if moved:
            ids = [t.entity_id.rsplit("/", 1)[1] for t in moved]
            await conn.execute(
                agents.update()
                .where(key, agents.c.agent_id.in_(ids))
                .values(state=AgentState.UNAVAILABLE.value)
            )
        return moved

    async def get_poller(self, tenant: str, poller_id: str, with_agents: bool = False) -> Poller | None:
        """One poller, or None."""
        return await self._pollers.get_poller(tenant, poller_id, with_agents)

    async def change_state(self, transition: Transition, replica_id: str, fencing_token: int) -> bool:
        """Move the poller from `transition.from_state` to `to_state` and record it; False when
        it no longer is in `from_state`."""
        t = transition
        async with self._db.begin() as conn:
            result = await conn.execute(
                pollers.update()
                .where(_key(t.tenant, t.entity_id), pollers.c.state == t.from_state)
                .values(state=t.to_state, state_changed_at=t.at)
            )
            if result.rowcount != 1:
                return False
            await record_transitions(conn, [t], replica_id, fencing_token)
        return True

    async def history(self, tenant: str, poller_id: str, limit: int) -> list[TransitionRecord]:
        """The poller's latest transitions, newest first."""
        query = (
            sa.select(state_transitions)
            .where(
                state_transitions.c.tenant == tenant,
                state_transitions.c.entity_type == "poller",
                state_transitions.c.entity_id == poller_id,
            )
            .order_by(state_transitions.c.id.desc())
            .limit(limit)
        )
        async with self._db.connect() as conn:
            rows = (await conn.execute(query)).all()
        out = []
        for row in rows:
            at = utc(row.at)
            assert at is not None
            transition = Transition(
                row.tenant, row.entity_type, row.entity_id, row.from_state, row.to_state, row.reason, at
            )
            out.append(TransitionRecord(transition, row.replica, row.fencing_token))
        return out
