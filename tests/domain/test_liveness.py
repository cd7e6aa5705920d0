"""The liveness rules the leader's monitor applies, and maintenance: pure, no clock, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from srcore.domain.errors import FailedPrecondition
from srcore.domain.liveness import (
    LivenessPolicy,
    PollerSnapshot,
    assess,
    decide,
    maintenance_transition,
    offline_agents,
)
from srcore.domain.model import AgentState, Poller, PollerState
from srcore.domain.states import Cause

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
# Late after 1.5 * 10 + 1 = 16 s of silence; the registry lease is 30 s.
POLICY = LivenessPolicy(heartbeat_interval=10, heartbeat_timeout=30, flush_interval=1, inactive_after=3600)


def seen(state: PollerState, silent_for: float, changed_ago: float = 100.0) -> PollerSnapshot:
    """A poller in `state` whose last heartbeat was `silent_for` seconds ago."""
    return PollerSnapshot(
        "acme", "p1", state, NOW - timedelta(seconds=silent_for), NOW - timedelta(seconds=changed_ago)
    )


@pytest.mark.parametrize(
    ("silent_for", "live", "expected"),
    [
        (5, True, None),
        (15.9, True, None),
        (16, True, Cause.HEARTBEAT_LATE),
        # Still in the registry (its lease is fresh): late, never offline, however stale the store.
        (120, True, Cause.HEARTBEAT_LATE),
        # Gone from the registry: its session is over, so past the scan bound it timed out...
        (31, False, Cause.HEARTBEAT_TIMEOUT),
        (16, False, Cause.HEARTBEAT_TIMEOUT),
        # ...but a registration the registry has not shown yet is left alone.
        (1, False, None),
    ],
)
def test_silence_is_judged_by_the_server_clock_and_the_registry(
    silent_for: float, live: bool, expected: Cause | None
) -> None:
    assert assess(seen(PollerState.HEALTHY, silent_for), live, NOW, POLICY) == expected


def test_missed_heartbeats_degrade_then_take_the_poller_offline() -> None:
    late = decide(seen(PollerState.HEALTHY, 20), True, NOW, POLICY)
    assert late is not None and late.target is PollerState.DEGRADED
    assert late.transition.reason.startswith("heartbeat_late: last heartbeat 20.0s ago")
    gone = decide(seen(PollerState.DEGRADED, 31), False, NOW, POLICY)
    assert gone is not None and gone.target is PollerState.OFFLINE
    assert gone.transition.from_state == "degraded"
    # Degraded and still late: nothing more to do until the lease expires.
    assert decide(seen(PollerState.DEGRADED, 25), True, NOW, POLICY) is None


def test_a_recovering_poller_that_goes_quiet_again_is_degraded_or_offline() -> None:
    change = decide(seen(PollerState.RECOVERING, 20), True, NOW, POLICY)
    assert change is not None and change.target is PollerState.DEGRADED
    change = decide(seen(PollerState.RECOVERING, 40), False, NOW, POLICY)
    assert change is not None and change.target is PollerState.OFFLINE


def test_maintenance_suppresses_offline_and_draining_does_not() -> None:
    assert decide(seen(PollerState.MAINTENANCE, 3600 * 24), False, NOW, POLICY) is None
    # A drained poller that stops answering is offline (its work moves either way), never degraded.
    assert decide(seen(PollerState.DRAINING, 20), True, NOW, POLICY) is None
    change = decide(seen(PollerState.DRAINING, 40), False, NOW, POLICY)
    assert change is not None and change.target is PollerState.OFFLINE


def test_offline_past_the_inactivity_period_is_inactive() -> None:
    assert decide(seen(PollerState.OFFLINE, 7200, changed_ago=3599), False, NOW, POLICY) is None
    change = decide(seen(PollerState.OFFLINE, 7200, changed_ago=3600), False, NOW, POLICY)
    assert change is not None and change.target is PollerState.INACTIVE
    assert change.transition.reason.startswith("inactivity_timeout")
    assert decide(seen(PollerState.INACTIVE, 99_999, changed_ago=99_999), False, NOW, POLICY) is None


def test_the_scan_bound_covers_every_transition_the_rules_can_make() -> None:
    assert POLICY.suspect_after == POLICY.late_after == 16
    # A timeout shorter than the late bound: offline comes first, and the scan finds it.
    short = LivenessPolicy(heartbeat_interval=10, heartbeat_timeout=12, flush_interval=1)
    assert short.suspect_after == 12
    assert assess(seen(PollerState.HEALTHY, 12), False, NOW, short) is Cause.HEARTBEAT_TIMEOUT


def test_agents_of_an_offline_poller_become_unavailable() -> None:
    agents = [("a1", AgentState.CONNECTED), ("a2", AgentState.UNAVAILABLE), ("a3", AgentState.DEGRADED)]
    moved = offline_agents("acme", "p1", agents, NOW)
    assert [(t.entity_id, t.from_state, t.to_state) for t in moved] == [
        ("p1/a1", "connected", "unavailable"),
        ("p1/a3", "degraded", "unavailable"),
    ]
    assert {t.entity_type for t in moved} == {"agent"}
    assert {t.reason for t in moved} == {"poller_offline"}


def poller(state: PollerState) -> Poller:
    """A stored poller in `state`."""
    return Poller("acme", "p1", "dc1", state)


def test_maintenance_on_and_off() -> None:
    on = maintenance_transition(poller(PollerState.OFFLINE), True, False, NOW, "new uplink")
    assert (on.from_state, on.to_state, on.reason) == ("offline", "maintenance", "maintenance_on: new uplink")
    # Ending it: recovering when the poller is live, offline when it is not.
    live = maintenance_transition(poller(PollerState.MAINTENANCE), False, True, NOW)
    assert live.to_state == "recovering"
    gone = maintenance_transition(poller(PollerState.MAINTENANCE), False, False, NOW)
    assert gone.to_state == "offline"


@pytest.mark.parametrize(
    ("state", "enabled", "message"),
    [
        (PollerState.MAINTENANCE, True, "poller 'p1': poller is already in state maintenance"),
        (PollerState.HEALTHY, False, "poller 'p1' is not under maintenance: it is healthy"),
        (PollerState.OFFLINE, False, "poller 'p1' is not under maintenance: it is offline"),
    ],
)
def test_illegal_maintenance_requests_name_the_current_state(
    state: PollerState, enabled: bool, message: str
) -> None:
    with pytest.raises(FailedPrecondition) as caught:
        maintenance_transition(poller(state), enabled, True, NOW)
    assert str(caught.value) == message
