"""Poller registration and heartbeats: who may register, sessions, liveness, answers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol

from srcore.domain.config import poller_config_version
from srcore.domain.coordination import PollerRegistry, RegistryEntry
from srcore.domain.errors import FailedPrecondition, NotFound, PermissionDenied
from srcore.domain.model import (
    AgentHealth,
    ComponentStatus,
    Heartbeat,
    Poller,
    PollerState,
    Registration,
    Transition,
)

# Operator-held states survive re-registration and heartbeats; only an operator ends them.
OPERATOR_STATES = frozenset({PollerState.MAINTENANCE, PollerState.DRAINING})
# Heartbeats written per transaction: preparing a write holds the event loop for tens of
# microseconds per heartbeat, so a fleet's second of heartbeats is written in slices, and
# the heartbeats arriving meanwhile are answered between them.
FLUSH_SLICE = 250


@dataclass(frozen=True, slots=True)
class Session:
    """What RegisterPoller answers."""

    session_id: str
    tenant: str
    heartbeat_interval: float
    heartbeat_timeout: float
    config_version: str
    server_time: datetime
    replica_id: str


@dataclass(frozen=True, slots=True)
class HeartbeatAnswer:
    """What ReportHealth answers."""

    next_interval: float
    config_outdated: bool
    config_version: str
    pending_action: PollerState | None
    server_time: datetime
    clock_skew_seconds: float


@dataclass(slots=True)
class PendingHeartbeat:
    """The latest heartbeat of one poller not yet written, with the transition it caused.

    `judged` is the state this replica remembered once it judged the heartbeat; `relearned`
    marks a heartbeat already judged a second time from the stored state (never a third).
    """

    heartbeat: Heartbeat
    agents: dict[str, AgentHealth] = field(default_factory=dict)
    transitions: list[Transition] = field(default_factory=list)
    state: PollerState | None = None
    judged: PollerState | None = None
    relearned: bool = False


class PollerStore(Protocol):
    """Persistence the registry needs (store/pollers.py implements it)."""

    async def tenant_state(self, tenant: str) -> str | None:
        """'active', 'suspended', or None when the tenant does not exist."""

    async def get_poller(self, tenant: str, poller_id: str, with_agents: bool = False) -> Poller | None:
        """One poller, or None."""

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
        """Upsert the poller and its agents, and record the transition, in one transaction."""

    async def config_entries(self, tenant: str, poller_id: str) -> list[tuple[str, str, str]]:
        """(kind, item id, digest) of each work item assigned to the poller."""

    async def live_views(self) -> dict[tuple[str, str], tuple[PollerState, str, str]]:
        """(state, desired configuration version, partition) of every poller, by (tenant, poller)."""

    async def record_heartbeats(
        self, pending: Sequence[PendingHeartbeat], replica_id: str, fencing_token: int
    ) -> dict[tuple[str, str], PollerState]:
        """Write a batch of heartbeats (and the transitions they caused) in one transaction.

        A poller's transitions are written only when the store still holds the state they
        start from: the leader's liveness monitor or an operator may have moved it since this
        replica remembered its state. Returns the state of each poller after the write.
        """


@dataclass(slots=True)
class _Live:
    """What this replica remembers of a live poller, so heartbeats need no store read."""

    state: PollerState
    desired_version: str
    partition: str


def heartbeat_state(current: PollerState, status: ComponentStatus) -> PollerState | None:
    """The state a heartbeat with `status` moves a poller to, or None to stay.

    A returning poller recovers before it is healthy; a poller that reports problems is
    degraded; operator-held states are left alone.
    """
    if current in OPERATOR_STATES:
        return None
    problem = status in (ComponentStatus.DEGRADED, ComponentStatus.DOWN)
    if current in (PollerState.OFFLINE, PollerState.INACTIVE):
        return PollerState.RECOVERING
    if problem:
        return PollerState.DEGRADED if current != PollerState.DEGRADED else None
    if current in (PollerState.DEGRADED, PollerState.RECOVERING):
        return PollerState.HEALTHY
    return None


class RegistryService:
    """Registration and heartbeat rules over the store and coordination ports."""

    def __init__(
        self,
        store: PollerStore,
        registry: PollerRegistry,
        clock: Callable[[], datetime],
        replica_id: str,
        heartbeat_interval: float,
        heartbeat_timeout: float,
        fencing_token: Callable[[], int],
    ) -> None:
        self._store = store
        self._registry = registry
        self._clock = clock
        self._replica_id = replica_id
        self._interval = heartbeat_interval
        self._timeout = heartbeat_timeout
        self._fencing_token = fencing_token
        self._live: dict[tuple[str, str], _Live] = {}
        self._pending: dict[tuple[str, str], PendingHeartbeat] = {}
        # One flush at a time: a flush returns once every heartbeat answered before it was
        # called is written, including those a flush already under way took.
        self._flushing = asyncio.Lock()

    async def _require_active_tenant(self, tenant: str) -> None:
        state = await self._store.tenant_state(tenant)
        if state is None:
            raise PermissionDenied(f"tenant {tenant!r} does not exist")
        if state != "active":
            raise PermissionDenied(f"tenant {tenant!r} is {state}")

    async def register(self, registration: Registration) -> Session:
        """Register (or re-register) a poller and open a new session."""
        await self._require_active_tenant(registration.tenant)
        now = self._clock()
        key = (registration.tenant, registration.poller_id)
        existing = await self._store.get_poller(*key)
        if existing is None:
            state, transition = PollerState.HEALTHY, None
        else:
            state = heartbeat_state(existing.state, ComponentStatus.OK) or existing.state
            if existing.state in (PollerState.OFFLINE, PollerState.INACTIVE):
                state = PollerState.RECOVERING
            transition = None
            if state != existing.state:
                transition = Transition(
                    registration.tenant, "poller", registration.poller_id,
                    existing.state.value, state.value, "registered", now,
                )  # fmt: skip
        # From the work assigned to it now (none for a new poller); the leader's dispatch, which
        # this registration triggers, rewrites it should a placement commit meanwhile.
        desired = poller_config_version(self._interval, await self._store.config_entries(*key))
        session_id = uuid.uuid4().hex
        await self._store.save_registration(
            registration,
            state,
            session_id,
            self._replica_id,
            desired,
            now,
            transition,
            self._fencing_token(),
        )
        await self._registry.put(
            RegistryEntry(
                tenant=registration.tenant,
                partition=registration.partition,
                poller_id=registration.poller_id,
                session_id=session_id,
                replica_id=self._replica_id,
                capabilities=registration.capabilities,
                registered_at=now.timestamp(),
            ),
            ttl=self._timeout,
        )
        self._live[key] = _Live(state, desired, registration.partition)
        self._pending.pop(key, None)
        return Session(
            session_id,
            registration.tenant,
            self._interval,
            self._timeout,
            desired,
            now,
            self._replica_id,
        )

    async def _live_view(self, entry: RegistryEntry) -> _Live:
        key = (entry.tenant, entry.poller_id)
        live = self._live.get(key)
        if live is None:
            # Registered through another replica: read the record once, then serve from memory.
            poller = await self._store.get_poller(*key)
            if poller is None:
                raise NotFound(f"poller {entry.poller_id!r} is not registered")
            live = _Live(poller.state, poller.desired_config_version, poller.partition)
            self._live[key] = live
        return live

    async def heartbeat(self, beat: Heartbeat) -> HeartbeatAnswer:
        """Record a heartbeat in memory and answer it; the store is written in batches."""
        entry = await self._registry.touch(beat.tenant, beat.poller_id, beat.session_id)
        if entry is None:
            raise FailedPrecondition(
                f"poller {beat.poller_id!r} has no live registration for this session: "
                "call RegisterPoller, then send heartbeats with the session id it returns"
            )
        live = await self._live_view(entry)
        key = (beat.tenant, beat.poller_id)
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = PendingHeartbeat(beat)
        else:
            pending.heartbeat = beat
        for agent in beat.agents:
            pending.agents[agent.agent_id] = agent
        target = heartbeat_state(live.state, beat.status)
        if target is not None:
            pending.transitions.append(
                Transition(beat.tenant, "poller", beat.poller_id, live.state.value, target.value,
                           f"heartbeat status {beat.status.value}", beat.received_at)
            )  # fmt: skip
            live.state = target
            pending.state = target
        pending.judged, pending.relearned = live.state, False
        return HeartbeatAnswer(
            next_interval=self._interval,
            config_outdated=beat.applied_config_version != live.desired_version,
            config_version=live.desired_version,
            pending_action=live.state if live.state in OPERATOR_STATES else None,
            server_time=beat.received_at,
            clock_skew_seconds=beat.clock_skew_seconds,
        )

    def config_changed(self, tenant: str, poller_id: str, version: str) -> None:
        """The leader gave the poller a new configuration version: answer heartbeats with it."""
        live = self._live.get((tenant, poller_id))
        if live is not None:
            live.desired_version = version

    async def refresh(self) -> int:
        """Re-read, in one store read, what heartbeats of the pollers this replica remembers
        are answered from (configuration changes may have been missed); returns how many
        changed. Heartbeats go on being answered from memory meanwhile: a fleet's worth of
        them never waits on the store at once."""
        if not self._live:
            return 0
        views = await self._store.live_views()
        changed = 0
        for key, live in self._live.items():
            found = views.get(key)
            if found is None:
                continue
            state, desired, partition = found
            # A queued heartbeat's transition is checked against the store when it is flushed.
            if key in self._pending:
                state = live.state
            if (state, desired, partition) != (live.state, live.desired_version, live.partition):
                live.state, live.desired_version, live.partition = state, desired, partition
                changed += 1
        return changed

    def take_pending(self) -> list[PendingHeartbeat]:
        """Hand over the heartbeats not yet written (the flusher writes them)."""
        pending = list(self._pending.values())
        self._pending.clear()
        return pending

    def requeue(self, pending: Sequence[PendingHeartbeat]) -> None:
        """Put back heartbeats whose write failed, unless a newer one arrived meanwhile."""
        for item in pending:
            key = (item.heartbeat.tenant, item.heartbeat.poller_id)
            newer = self._pending.get(key)
            if newer is None:
                self._pending[key] = item
            else:
                merged = {**item.agents, **newer.agents}
                self._pending[key] = replace(
                    newer, agents=merged, transitions=item.transitions + newer.transitions
                )

    async def flush(self) -> int:
        """Write pending heartbeats in batches of FLUSH_SLICE, one transaction each; returns how many.

        Also learns the states the store holds for those pollers, so the next heartbeat is
        judged from a state another replica or an operator set (degraded by the liveness
        monitor, maintenance), not from this replica's older memory.
        """
        async with self._flushing:
            pending = self.take_pending()
            for start in range(0, len(pending), FLUSH_SLICE):
                part = pending[start : start + FLUSH_SLICE]
                try:
                    stored = await self._store.record_heartbeats(
                        part, self._replica_id, self._fencing_token()
                    )
                except Exception:
                    self.requeue(pending[start:])
                    raise
                for item in part:
                    self._learn(item, stored.get((item.heartbeat.tenant, item.heartbeat.poller_id)))
            return len(pending)

    def _learn(self, written: PendingHeartbeat, stored: PollerState | None) -> None:
        """Take the state the store holds for a poller just written; heal it if it came back.

        The leader's liveness monitor may have degraded a poller, as late, whose heartbeat was
        waiting here to be written: judged from the state this replica remembered (healthy), it
        moved nothing. Judged again from the stored state, it is queued as a transition for the
        next flush (whose write checks that state once more), so the heartbeat that brought the
        poller back heals it within a flush, not at its next heartbeat one interval later. Only
        when nothing else changed this replica's memory of the poller meanwhile (a registration,
        a refresh), only from degraded (offline means its registration is gone; operator states
        are the operator's), and only once per heartbeat.
        """
        key = (written.heartbeat.tenant, written.heartbeat.poller_id)
        live = self._live.get(key)
        # A heartbeat queued meanwhile was judged from the old state; the next flush checks its
        # transitions against the store and corrects this memory then.
        if live is None or stored is None or key in self._pending:
            return
        judged_last = live.state == written.judged
        live.state = stored
        if written.relearned or not judged_last or stored != PollerState.DEGRADED or written.judged == stored:
            return
        beat = written.heartbeat
        target = heartbeat_state(stored, beat.status)
        if target is None:
            return
        self._pending[key] = PendingHeartbeat(
            beat,
            transitions=[
                Transition(beat.tenant, "poller", beat.poller_id, stored.value, target.value,
                           f"heartbeat status {beat.status.value}", self._clock())
            ],
            state=target,
            judged=target,
            relearned=True,
        )  # fmt: skip
        live.state = target
