"""Liveness state machines of pollers, agents and checkers: one transition table each.

A table maps (from, to) to the causes that may move an entity along that edge. Causes are
either automatic (the server clock, a heartbeat, a check result) or an operator's request;
the difference matters where an operator holds a state: a poller in maintenance ignores
missed heartbeats, a paused checker ignores results.

- `next_state(kind, current, cause)` answers "what does this event do?" for automatic
  causes: the one target the table allows, or None (nothing changes, or the state is held).
- `transition(kind, current, target, cause, ...)` checks a requested move against the table
  and returns the Transition to record, or raises FailedPrecondition naming the current state.

Pure: no clock, no I/O. Callers pass the time and record the Transition with the fencing
token of the leadership they act under.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime
from typing import TypeAlias

from srcore.domain.errors import FailedPrecondition
from srcore.domain.model import AgentState, CheckerState, ComponentStatus, PollerState, Transition

State: TypeAlias = PollerState | AgentState | CheckerState


class EntityKind(enum.StrEnum):
    """What a state machine is about; the value is the `entity_type` of its transitions."""

    POLLER = "poller"
    AGENT = "agent"
    CHECKER = "checker"


class Cause(enum.StrEnum):
    """Why a state changes; the value is the reason recorded with the transition."""

    # Automatic: decided by the server clock or by what the edge reports.
    REGISTERED = "registered"
    """The poller registered (again), announcing its agents."""
    HEARTBEAT_OK = "heartbeat_ok"
    """A heartbeat arrived and reports no problem."""
    HEARTBEAT_DEGRADED = "heartbeat_degraded"
    """A heartbeat arrived and reports problems (degraded or down)."""
    HEARTBEAT_LATE = "heartbeat_late"
    """A heartbeat interval (plus grace) passed without one."""
    HEARTBEAT_TIMEOUT = "heartbeat_timeout"
    """The heartbeat timeout passed without one: the registry lease expired."""
    INACTIVITY_TIMEOUT = "inactivity_timeout"
    """Offline for longer than the inactivity period."""
    AGENT_OK = "agent_ok"
    """The poller reports the agent healthy."""
    AGENT_DEGRADED = "agent_degraded"
    """The poller reports the agent with problems."""
    AGENT_DOWN = "agent_down"
    """The poller reports the agent down."""
    POLLER_OFFLINE = "poller_offline"
    """The agent's poller went offline, so nothing is known of the agent."""
    CHECK_PASSED = "check_passed"
    """A check result passed."""
    CHECK_FAILED = "check_failed"
    """Check results failed `failing_after` times in a row."""

    # Requested by an operator.
    MAINTENANCE_ON = "maintenance_on"
    """Put a poller under maintenance: offline transitions are suppressed."""
    MAINTENANCE_OFF = "maintenance_off"
    """End a poller's maintenance."""
    DRAIN = "drain"
    """Drain a poller: it keeps its session but gets no work."""
    RESUME = "resume"
    """End a drain, or resume a paused checker."""
    PAUSE = "pause"
    """Pause a checker: its results are ignored."""
    DISABLE = "disable"
    """Disable a checker."""
    ENABLE = "enable"
    """Enable a disabled checker."""

    @property
    def by_operator(self) -> bool:
        """Whether only an operator's request carries this cause."""
        return self in OPERATOR_CAUSES


OPERATOR_CAUSES = frozenset(
    {
        Cause.MAINTENANCE_ON,
        Cause.MAINTENANCE_OFF,
        Cause.DRAIN,
        Cause.RESUME,
        Cause.PAUSE,
        Cause.DISABLE,
        Cause.ENABLE,
    }
)

DEFAULT_FAILING_AFTER = 3
"""Consecutive failed results that make an active checker failing."""

_P = PollerState
_A = AgentState
_C = CheckerState
_HEARTBEAT = frozenset({Cause.HEARTBEAT_OK, Cause.HEARTBEAT_DEGRADED, Cause.REGISTERED})

POLLER_TRANSITIONS: Mapping[tuple[PollerState, PollerState], frozenset[Cause]] = {
    # Heartbeats: late or troubled degrades, a clean one heals, none at all is offline.
    (_P.HEALTHY, _P.DEGRADED): frozenset({Cause.HEARTBEAT_LATE, Cause.HEARTBEAT_DEGRADED}),
    (_P.HEALTHY, _P.OFFLINE): frozenset({Cause.HEARTBEAT_TIMEOUT}),
    (_P.DEGRADED, _P.HEALTHY): frozenset({Cause.HEARTBEAT_OK}),
    (_P.DEGRADED, _P.OFFLINE): frozenset({Cause.HEARTBEAT_TIMEOUT}),
    # A returning poller recovers first and is healthy after a clean heartbeat.
    (_P.OFFLINE, _P.RECOVERING): _HEARTBEAT,
    (_P.OFFLINE, _P.INACTIVE): frozenset({Cause.INACTIVITY_TIMEOUT}),
    (_P.INACTIVE, _P.RECOVERING): _HEARTBEAT,
    (_P.RECOVERING, _P.HEALTHY): frozenset({Cause.HEARTBEAT_OK}),
    (_P.RECOVERING, _P.DEGRADED): frozenset({Cause.HEARTBEAT_LATE, Cause.HEARTBEAT_DEGRADED}),
    (_P.RECOVERING, _P.OFFLINE): frozenset({Cause.HEARTBEAT_TIMEOUT}),
    # Maintenance: from anywhere; it holds until the operator ends it, heartbeats or not.
    (_P.HEALTHY, _P.MAINTENANCE): frozenset({Cause.MAINTENANCE_ON}),
    (_P.DEGRADED, _P.MAINTENANCE): frozenset({Cause.MAINTENANCE_ON}),
    (_P.OFFLINE, _P.MAINTENANCE): frozenset({Cause.MAINTENANCE_ON}),
    (_P.RECOVERING, _P.MAINTENANCE): frozenset({Cause.MAINTENANCE_ON}),
    (_P.DRAINING, _P.MAINTENANCE): frozenset({Cause.MAINTENANCE_ON}),
    (_P.INACTIVE, _P.MAINTENANCE): frozenset({Cause.MAINTENANCE_ON}),
    # Ending it: recovering when the poller is live (a clean heartbeat makes it healthy),
    # offline when it is not; the caller knows which from the registry.
    (_P.MAINTENANCE, _P.RECOVERING): frozenset({Cause.MAINTENANCE_OFF}),
    (_P.MAINTENANCE, _P.OFFLINE): frozenset({Cause.MAINTENANCE_OFF}),
    # Draining needs a live poller. It holds against heartbeats, but a drained poller that
    # stops answering is offline: its work is reassigned either way.
    (_P.HEALTHY, _P.DRAINING): frozenset({Cause.DRAIN}),
    (_P.DEGRADED, _P.DRAINING): frozenset({Cause.DRAIN}),
    (_P.RECOVERING, _P.DRAINING): frozenset({Cause.DRAIN}),
    (_P.DRAINING, _P.HEALTHY): frozenset({Cause.RESUME}),
    (_P.DRAINING, _P.OFFLINE): frozenset({Cause.HEARTBEAT_TIMEOUT}),
}

_REPORTED = {
    _A.CONNECTED: Cause.AGENT_OK,
    _A.DEGRADED: Cause.AGENT_DEGRADED,
    _A.DISCONNECTED: Cause.AGENT_DOWN,
}


def _agent_table() -> dict[tuple[AgentState, AgentState], frozenset[Cause]]:
    table: dict[tuple[AgentState, AgentState], frozenset[Cause]] = {}
    for current in AgentState:
        # Whatever it was, the state follows what its poller reports...
        for target, cause in _REPORTED.items():
            if target != current:
                table[(current, target)] = frozenset({cause})
        # ...nothing is known while its poller is offline...
        if current != _A.UNAVAILABLE:
            table[(current, _A.UNAVAILABLE)] = frozenset({Cause.POLLER_OFFLINE})
        # ...and an agent announced again at registration waits for its first report.
        if current != _A.CONNECTING:
            table[(current, _A.CONNECTING)] = frozenset({Cause.REGISTERED})
    return table


AGENT_TRANSITIONS: Mapping[tuple[AgentState, AgentState], frozenset[Cause]] = _agent_table()

CHECKER_TRANSITIONS: Mapping[tuple[CheckerState, CheckerState], frozenset[Cause]] = {
    (_C.ACTIVE, _C.FAILING): frozenset({Cause.CHECK_FAILED}),
    (_C.FAILING, _C.ACTIVE): frozenset({Cause.CHECK_PASSED}),
    # Paused and disabled checkers ignore results; only the operator moves them.
    (_C.ACTIVE, _C.PAUSED): frozenset({Cause.PAUSE}),
    (_C.FAILING, _C.PAUSED): frozenset({Cause.PAUSE}),
    (_C.PAUSED, _C.ACTIVE): frozenset({Cause.RESUME}),
    (_C.ACTIVE, _C.DISABLED): frozenset({Cause.DISABLE}),
    (_C.FAILING, _C.DISABLED): frozenset({Cause.DISABLE}),
    (_C.PAUSED, _C.DISABLED): frozenset({Cause.DISABLE}),
    (_C.DISABLED, _C.ACTIVE): frozenset({Cause.ENABLE}),
}

_TABLES: Mapping[EntityKind, Mapping[tuple[State, State], frozenset[Cause]]] = {
    EntityKind.POLLER: POLLER_TRANSITIONS,  # type: ignore[dict-item]
    EntityKind.AGENT: AGENT_TRANSITIONS,  # type: ignore[dict-item]
    EntityKind.CHECKER: CHECKER_TRANSITIONS,  # type: ignore[dict-item]
}
_STATES: Mapping[EntityKind, type[State]] = {
    EntityKind.POLLER: PollerState,
    EntityKind.AGENT: AgentState,
    EntityKind.CHECKER: CheckerState,
}


def table(kind: EntityKind) -> Mapping[tuple[State, State], frozenset[Cause]]:
    """The transition table of `kind`."""
    return _TABLES[kind]


def _check_state(kind: EntityKind, state: State) -> None:
    if not isinstance(state, _STATES[kind]):
        raise TypeError(f"{state!r} is not a {kind} state")


def targets(kind: EntityKind, current: State, cause: Cause) -> frozenset[State]:
    """Every state `cause` may move `kind` to from `current`."""
    _check_state(kind, current)
    return frozenset(to for (frm, to), causes in _TABLES[kind].items() if frm == current and cause in causes)


def next_state(kind: EntityKind, current: State, cause: Cause) -> State | None:
    """Where an automatic `cause` moves `kind` from `current`; None when it stays.

    Staying covers both "nothing to do" (a clean heartbeat of a healthy poller) and "held"
    (a missed heartbeat of a poller in maintenance).
    """
    if cause.by_operator:
        raise ValueError(f"{cause} is an operator request: use transition() with a target")
    found = targets(kind, current, cause)
    if not found:
        return None
    # Automatic causes lead to one place; a test walks the tables to keep it that way.
    (target,) = found
    return target


def transition(
    kind: EntityKind,
    current: State,
    target: State,
    cause: Cause,
    *,
    tenant: str,
    entity_id: str,
    at: datetime,
    detail: str = "",
) -> Transition:
    """The Transition to record for moving `kind` from `current` to `target` because of `cause`.

    Raises FailedPrecondition naming the current state when the table has no such edge
    ("cannot move poller from offline to draining"), when the edge exists but not for this
    cause (e.g. an operator asking for a move only heartbeats make), or when the entity
    already is in `target`.
    """
    _check_state(kind, current)
    _check_state(kind, target)
    if current == target:
        raise FailedPrecondition(f"{kind} is already in state {current}")
    causes = _TABLES[kind].get((current, target))
    if causes is None:
        raise FailedPrecondition(f"cannot move {kind} from {current} to {target}")
    if cause not in causes:
        raise FailedPrecondition(
            f"cannot move {kind} from {current} to {target}: only {', '.join(sorted(causes))} can"
        )
    reason = f"{cause}: {detail}" if detail else str(cause)
    return Transition(tenant, str(kind), entity_id, str(current), str(target), reason, at)


def heartbeat_cause(status: ComponentStatus) -> Cause:
    """The cause of a heartbeat reporting `status`: degraded or down is a problem."""
    if status in (ComponentStatus.DEGRADED, ComponentStatus.DOWN):
        return Cause.HEARTBEAT_DEGRADED
    return Cause.HEARTBEAT_OK


def agent_cause(status: ComponentStatus) -> Cause | None:
    """The cause of an agent reported with `status`; None when the poller does not know."""
    return {
        ComponentStatus.OK: Cause.AGENT_OK,
        ComponentStatus.DEGRADED: Cause.AGENT_DEGRADED,
        ComponentStatus.DOWN: Cause.AGENT_DOWN,
    }.get(status)


def check_result_cause(
    passed: bool, consecutive_failures: int, failing_after: int = DEFAULT_FAILING_AFTER
) -> Cause | None:
    """The cause a check result carries, given the failures in a row including this one.

    A pass is CHECK_PASSED; a failure is CHECK_FAILED once `failing_after` results in a row
    failed, and no cause before that.
    """
    if failing_after < 1:
        raise ValueError("failing_after must be at least 1")
    if passed:
        return Cause.CHECK_PASSED
    return Cause.CHECK_FAILED if consecutive_failures >= failing_after else None
