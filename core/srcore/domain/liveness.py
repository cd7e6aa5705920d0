"""Poller liveness: the rules the leader's liveness monitor applies, the monitor, maintenance.

Who changes a poller's state, and from what:

- the replica serving a poller, from its heartbeats (domain/registry.py): a returning poller
  recovers, a clean heartbeat heals, a heartbeat reporting problems degrades;
- the leader's liveness monitor, from the server clock (this module): a poller whose last
  heartbeat is older than `late_after` is degraded, and one whose registry entry expired
  (its lease ran out: no heartbeat for `heartbeat_timeout`) is offline, its agents unavailable;
  offline longer than `inactive_after` is inactive;
- an operator: maintenance on and off (and later drain and resume).

Both automatic writers change a state only if the store still holds the state they decided
from, so neither undoes the other's (or an operator's) change with a stale view. The
monitor's writes are leader-only: they pass the fence (domain/leadership.py).

The rules (`assess`, `decide`, `offline_agents`, `maintenance_transition`) are pure functions
of an observation and the time; the transition tables in domain/states.py say what may follow
what, so maintenance holds against missed heartbeats because the table says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from srcore.domain import states
from srcore.domain.coordination import LeaderInfo, PollerRegistry, RegistryChange, RegistryLagged
from srcore.domain.errors import Aborted, FailedPrecondition, NotFound
from srcore.domain.leadership import Leadership
from srcore.domain.model import AgentState, Poller, PollerState, Transition
from srcore.domain.states import Cause, EntityKind

log = logging.getLogger(__name__)

DEFAULT_INACTIVE_AFTER = 7 * 86400.0

# States the monitor watches heartbeats of; the others are offline already or held by an operator
# (draining is watched too: a drained poller that stops answering is offline).
WATCHED = frozenset({PollerState.HEALTHY, PollerState.DEGRADED, PollerState.RECOVERING, PollerState.DRAINING})


@dataclass(frozen=True, slots=True)
class LivenessPolicy:
    """The time limits of poller liveness, in seconds."""

    heartbeat_interval: float
    heartbeat_timeout: float
    flush_interval: float = 1.0
    inactive_after: float = DEFAULT_INACTIVE_AFTER

    @property
    def late_after(self) -> float:
        """Silence after which a poller is late: one heartbeat missed plus half an interval of
        grace, plus the flush interval by which the stored last-seen time may lag."""
        return 1.5 * self.heartbeat_interval + self.flush_interval

    @property
    def suspect_after(self) -> float:
        """Silence after which a poller may need a transition (the monitor's scan bound)."""
        return min(self.late_after, self.heartbeat_timeout)


@dataclass(frozen=True, slots=True)
class PollerSnapshot:
    """What the store holds of a poller's liveness, as the monitor read it."""

    tenant: str
    poller_id: str
    state: PollerState
    last_seen: datetime | None
    state_changed_at: datetime


@dataclass(frozen=True, slots=True)
class LivenessChange:
    """A transition the monitor decided, with the snapshot it decided from."""

    snapshot: PollerSnapshot
    target: PollerState
    transition: Transition


@dataclass(frozen=True, slots=True)
class TransitionRecord:
    """One recorded transition with who recorded it, under which leadership."""

    transition: Transition
    replica: str
    fencing_token: int


def silence(snapshot: PollerSnapshot, now: datetime) -> float:
    """Seconds since the poller's last heartbeat (since registration when it sent none)."""
    seen = snapshot.last_seen or snapshot.state_changed_at
    return max(0.0, (now - seen).total_seconds())


def assess(snapshot: PollerSnapshot, live: bool, now: datetime, policy: LivenessPolicy) -> Cause | None:
    """What the server clock says about a poller, given whether it is live in the registry.

    A poller without a registry entry cannot heartbeat (its session is gone, it must register
    again), so once it is silent past `suspect_after` it has timed out; with an entry it is
    only late. The transition table decides what each cause does in the poller's state.
    """
    if snapshot.state is PollerState.OFFLINE:
        offline_for = (now - snapshot.state_changed_at).total_seconds()
        return Cause.INACTIVITY_TIMEOUT if offline_for >= policy.inactive_after else None
    quiet = silence(snapshot, now)
    if not live and quiet >= policy.suspect_after:
        return Cause.HEARTBEAT_TIMEOUT
    if quiet >= policy.late_after:
        return Cause.HEARTBEAT_LATE
    return None


def decide(
    snapshot: PollerSnapshot, live: bool, now: datetime, policy: LivenessPolicy
) -> LivenessChange | None:
    """The transition the monitor makes for a poller now, or None (nothing due, or held)."""
    cause = assess(snapshot, live, now, policy)
    if cause is None:
        return None
    target = states.next_state(EntityKind.POLLER, snapshot.state, cause)
    if target is None:
        return None
    assert isinstance(target, PollerState)
    detail = (
        f"offline since {snapshot.state_changed_at.isoformat()}"
        if cause is Cause.INACTIVITY_TIMEOUT
        else f"last heartbeat {silence(snapshot, now):.1f}s ago"
    )
    transition = states.transition(
        EntityKind.POLLER, snapshot.state, target, cause,
        tenant=snapshot.tenant, entity_id=snapshot.poller_id, at=now, detail=detail,
    )  # fmt: skip
    return LivenessChange(snapshot, target, transition)


def offline_agents(
    tenant: str, poller_id: str, agents: Sequence[tuple[str, AgentState]], at: datetime
) -> list[Transition]:
    """The agents of a poller gone offline become unavailable: nothing is known of them."""
    out = []
    for agent_id, current in agents:
        target = states.next_state(EntityKind.AGENT, current, Cause.POLLER_OFFLINE)
        if target is not None:
            out.append(
                states.transition(
                    EntityKind.AGENT,
                    current,
                    target,
                    Cause.POLLER_OFFLINE,
                    tenant=tenant,
                    entity_id=f"{poller_id}/{agent_id}",
                    at=at,
                )
            )
    return out


def maintenance_transition(
    poller: Poller, enabled: bool, live: bool, at: datetime, reason: str = ""
) -> Transition:
    """The transition of an operator's maintenance on/off, or FailedPrecondition naming the state.

    Ending maintenance leads to recovering when the poller is live (its next clean heartbeat
    makes it healthy) and to offline when it is not.
    """
    if enabled:
        cause, target = Cause.MAINTENANCE_ON, PollerState.MAINTENANCE
    else:
        if poller.state is not PollerState.MAINTENANCE:
            raise FailedPrecondition(
                f"poller {poller.poller_id!r} is not under maintenance: it is {poller.state}"
            )
        cause = Cause.MAINTENANCE_OFF
        target = PollerState.RECOVERING if live else PollerState.OFFLINE
    try:
        transition = states.transition(
            EntityKind.POLLER, poller.state, target, cause,
            tenant=poller.tenant, entity_id=poller.poller_id, at=at, detail=reason,
        )  # fmt: skip
    except FailedPrecondition as exc:
        raise FailedPrecondition(f"poller {poller.poller_id!r}: {exc}") from exc
    return transition


class LivenessStore(Protocol):
    """Persistence of the monitor and of operator state changes (store/liveness.py)."""

    async def liveness_candidates(
        self, silent_before: datetime, offline_before: datetime
    ) -> list[PollerSnapshot]:
        """Watched pollers last seen before `silent_before`, and offline ones since before
        `offline_before`, ordered by (tenant, poller_id)."""

    async def apply_liveness(
        self, changes: Sequence[LivenessChange], leader: LeaderInfo, now: datetime
    ) -> list[LivenessChange]:
        """In one fenced transaction, make each change whose poller still is as snapshotted
        (offline ones with their agents); returns those made. Raises Fenced."""

    async def get_poller(self, tenant: str, poller_id: str, with_agents: bool = False) -> Poller | None:
        """One poller, or None."""

    async def change_state(self, transition: Transition, replica_id: str, fencing_token: int) -> bool:
        """Move the poller from `transition.from_state` to `to_state` and record it; False
        when it no longer is in `from_state`."""

    async def history(self, tenant: str, poller_id: str, limit: int) -> list[TransitionRecord]:
        """The poller's latest transitions, newest first."""


# Candidates looked at between two yields to the event loop (about a millisecond's work).
_YIELD_EVERY = 200


class LivenessMonitor:
    """The leader-only job that moves silent pollers to degraded, offline and inactive.

    It looks every `check_interval` seconds, and at once when the registry reports an entry
    gone (a lease expired), so offline detection takes the heartbeat timeout plus the lease
    refresh batching, not an extra monitor period.
    """

    def __init__(
        self,
        store: LivenessStore,
        registry: PollerRegistry,
        clock: Callable[[], datetime],
        policy: LivenessPolicy,
        check_interval: float,
    ) -> None:
        self._store = store
        self._registry = registry
        self._clock = clock
        self._policy = policy
        self._interval = check_interval

    async def run(self, leadership: Leadership) -> None:
        """Check liveness until leadership ends (the job the runner starts)."""
        watcher = asyncio.get_running_loop().create_task(self._watch(leadership), name="liveness-watch")
        try:
            while not leadership.stopping:
                await self.check(leadership.info)
                if not await leadership.sleep(self._interval):
                    return
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _watch(self, leadership: Leadership) -> None:
        while True:
            subscription = self._registry.changes()
            try:
                async for event in subscription:
                    if event.change is RegistryChange.DELETED:
                        leadership.wake()
                return
            except RegistryLagged:
                # Missed some: a full check finds whatever they were about.
                leadership.wake()
            finally:
                subscription.close()

    async def check(self, leader: LeaderInfo) -> list[LivenessChange]:
        """One round: decide from the store and the registry, write what is due under `leader`."""
        policy = self._policy
        started = self._clock()
        candidates = await self._store.liveness_candidates(
            started - _seconds(policy.suspect_after), started - _seconds(policy.inactive_after)
        )
        # Decide (and record) at the time the registry is looked at, after the store answered.
        now = self._clock()
        changes = []
        for n, snapshot in enumerate(candidates, 1):
            if n % _YIELD_EVERY == 0:
                # A fleet that registered but has not reported yet is thousands of candidates:
                # let heartbeats in between instead of holding the loop for all of them.
                await asyncio.sleep(0)
            live = await self._registry.get(snapshot.tenant, snapshot.poller_id) is not None
            change = decide(snapshot, live, now, policy)
            if change is not None:
                changes.append(change)
        if not changes:
            return []
        applied = await self._store.apply_liveness(changes, leader, now)
        for change in applied:
            t = change.transition
            log.info("poller %s/%s: %s -> %s (%s)", t.tenant, t.entity_id, t.from_state, t.to_state, t.reason)
        return applied


class MaintenanceService:
    """Operator requests on a poller's state: maintenance on and off."""

    def __init__(
        self,
        store: LivenessStore,
        registry: PollerRegistry,
        clock: Callable[[], datetime],
        replica_id: str,
        fencing_token: Callable[[], int],
    ) -> None:
        self._store = store
        self._registry = registry
        self._clock = clock
        self._replica_id = replica_id
        self._fencing_token = fencing_token

    async def set_maintenance(self, tenant: str, poller_id: str, enabled: bool, reason: str = "") -> Poller:
        """Put the poller under maintenance or end it; returns the poller as it is now.

        Raises NotFound, FailedPrecondition (an illegal transition, naming the current state)
        or Aborted when the poller's state changed under the request (retry).
        """
        poller = await self._store.get_poller(tenant, poller_id)
        if poller is None:
            raise NotFound(f"poller {poller_id!r} not found")
        live = await self._registry.get(tenant, poller_id) is not None
        transition = maintenance_transition(poller, enabled, live, self._clock(), reason)
        if not await self._store.change_state(transition, self._replica_id, self._fencing_token()):
            raise Aborted(f"poller {poller_id!r} changed state meanwhile: try again")
        changed = await self._store.get_poller(tenant, poller_id, with_agents=True)
        if changed is None:
            raise NotFound(f"poller {poller_id!r} not found")
        return changed


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)
