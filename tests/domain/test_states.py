"""The liveness state machines: walk every table, then the stories the issue tells."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from srcore.domain.errors import FailedPrecondition
from srcore.domain.model import AgentState, CheckerState, ComponentStatus, PollerState
from srcore.domain.states import (
    DEFAULT_FAILING_AFTER,
    OPERATOR_CAUSES,
    POLLER_TRANSITIONS,
    Cause,
    EntityKind,
    State,
    agent_cause,
    check_result_cause,
    heartbeat_cause,
    next_state,
    table,
    targets,
    transition,
)

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
KINDS: dict[EntityKind, Sequence[State]] = {
    EntityKind.POLLER: list(PollerState),
    EntityKind.AGENT: list(AgentState),
    EntityKind.CHECKER: list(CheckerState),
}
AUTOMATIC = [c for c in Cause if c not in OPERATOR_CAUSES]


def move(kind: EntityKind, current: State, target: State, cause: Cause) -> State:
    """Apply a transition and return the state it lands in."""
    record = transition(kind, current, target, cause, tenant="acme", entity_id="p1", at=AT)
    return type(current)(record.to_state)


@pytest.mark.parametrize("kind", list(EntityKind))
def test_every_edge_of_the_table_is_a_legal_transition(kind: EntityKind) -> None:
    for (current, target), causes in table(kind).items():
        assert current != target
        assert causes, f"{kind} {current}->{target} has no cause"
        for cause in causes:
            record = transition(
                kind, current, target, cause, tenant="acme", entity_id="p1", at=AT, detail="why"
            )
            assert (record.entity_type, record.from_state, record.to_state) == (
                str(kind),
                str(current),
                str(target),
            )
            assert (record.tenant, record.entity_id, record.at) == ("acme", "p1", AT)
            assert record.reason == f"{cause}: why"


@pytest.mark.parametrize("kind", list(EntityKind))
def test_every_pair_outside_the_table_is_refused_naming_the_current_state(
    kind: EntityKind,
) -> None:
    states = list(KINDS[kind])
    for current, target in itertools.product(states, states):
        if current == target or (current, target) in table(kind):
            continue
        for cause in Cause:
            with pytest.raises(FailedPrecondition) as refused:
                transition(kind, current, target, cause, tenant="acme", entity_id="x", at=AT)
            assert str(refused.value) == f"cannot move {kind} from {current} to {target}"


@pytest.mark.parametrize("kind", list(EntityKind))
def test_an_edge_taken_for_the_wrong_cause_is_refused(kind: EntityKind) -> None:
    for (current, target), causes in table(kind).items():
        for cause in set(Cause) - causes:
            with pytest.raises(FailedPrecondition, match=f"cannot move {kind} from {current} to"):
                transition(kind, current, target, cause, tenant="acme", entity_id="x", at=AT)


@pytest.mark.parametrize("kind", list(EntityKind))
def test_staying_in_a_state_is_not_a_transition(kind: EntityKind) -> None:
    for state in KINDS[kind]:
        with pytest.raises(FailedPrecondition, match=f"{kind} is already in state {state}"):
            transition(kind, state, state, Cause.RESUME, tenant="acme", entity_id="x", at=AT)


@pytest.mark.parametrize("kind", list(EntityKind))
def test_every_automatic_cause_leads_to_at_most_one_state(kind: EntityKind) -> None:
    for current in KINDS[kind]:
        for cause in AUTOMATIC:
            assert len(targets(kind, current, cause)) <= 1, (kind, current, cause)


@pytest.mark.parametrize("kind", list(EntityKind))
def test_every_state_is_reachable_and_can_be_left(kind: EntityKind) -> None:
    edges = table(kind)
    for state in KINDS[kind]:
        assert any(to == state for _, to in edges), f"{kind} {state} cannot be reached"
        assert any(frm == state for frm, _ in edges), f"{kind} {state} is a dead end"


def test_states_of_another_kind_are_a_programming_error() -> None:
    with pytest.raises(TypeError):
        transition(
            EntityKind.POLLER,
            AgentState.CONNECTED,
            PollerState.HEALTHY,
            Cause.HEARTBEAT_OK,
            tenant="acme",
            entity_id="x",
            at=AT,
        )


def test_operator_causes_need_an_explicit_target() -> None:
    with pytest.raises(ValueError, match="operator request"):
        next_state(EntityKind.POLLER, PollerState.HEALTHY, Cause.DRAIN)
    assert all(c.by_operator for c in OPERATOR_CAUSES)
    assert not any(c.by_operator for c in AUTOMATIC)


def test_the_issue_example_message() -> None:
    with pytest.raises(FailedPrecondition, match=r"^cannot move poller from offline to draining$"):
        transition(
            EntityKind.POLLER,
            PollerState.OFFLINE,
            PollerState.DRAINING,
            Cause.DRAIN,
            tenant="acme",
            entity_id="p1",
            at=AT,
        )


def test_missed_heartbeats_degrade_then_take_a_poller_offline_and_it_recovers() -> None:
    poller = EntityKind.POLLER
    state: State = PollerState.HEALTHY
    for cause, expected in [
        (Cause.HEARTBEAT_LATE, PollerState.DEGRADED),
        (Cause.HEARTBEAT_LATE, None),
        (Cause.HEARTBEAT_TIMEOUT, PollerState.OFFLINE),
        (Cause.HEARTBEAT_TIMEOUT, None),
        (Cause.REGISTERED, PollerState.RECOVERING),
        (Cause.HEARTBEAT_OK, PollerState.HEALTHY),
        (Cause.HEARTBEAT_OK, None),
    ]:
        target = next_state(poller, state, cause)
        assert target == expected, (state, cause)
        if target is not None:
            state = move(poller, state, target, cause)
    assert state == PollerState.HEALTHY


def test_a_long_absence_makes_a_poller_inactive_until_it_returns() -> None:
    poller = EntityKind.POLLER
    assert next_state(poller, PollerState.OFFLINE, Cause.INACTIVITY_TIMEOUT) == PollerState.INACTIVE
    assert next_state(poller, PollerState.HEALTHY, Cause.INACTIVITY_TIMEOUT) is None
    assert next_state(poller, PollerState.INACTIVE, Cause.REGISTERED) == PollerState.RECOVERING
    assert next_state(poller, PollerState.INACTIVE, Cause.HEARTBEAT_OK) == PollerState.RECOVERING


def test_maintenance_suppresses_every_heartbeat_transition() -> None:
    for cause in AUTOMATIC:
        assert next_state(EntityKind.POLLER, PollerState.MAINTENANCE, cause) is None, cause
    with pytest.raises(FailedPrecondition, match="cannot move poller from maintenance to offline"):
        transition(
            EntityKind.POLLER,
            PollerState.MAINTENANCE,
            PollerState.OFFLINE,
            Cause.HEARTBEAT_TIMEOUT,
            tenant="acme",
            entity_id="p1",
            at=AT,
        )


def test_maintenance_is_entered_and_left_only_by_an_operator() -> None:
    for (current, target), causes in POLLER_TRANSITIONS.items():
        if PollerState.MAINTENANCE in (current, target):
            assert causes <= OPERATOR_CAUSES, (current, target)
    # Ending maintenance: recovering when the poller is live, offline when it is not.
    assert targets(EntityKind.POLLER, PollerState.MAINTENANCE, Cause.MAINTENANCE_OFF) == {
        PollerState.RECOVERING,
        PollerState.OFFLINE,
    }


def test_draining_holds_against_heartbeats_but_not_against_a_timeout() -> None:
    poller = EntityKind.POLLER
    for cause in (Cause.HEARTBEAT_OK, Cause.HEARTBEAT_DEGRADED, Cause.HEARTBEAT_LATE):
        assert next_state(poller, PollerState.DRAINING, cause) is None
    assert next_state(poller, PollerState.DRAINING, Cause.HEARTBEAT_TIMEOUT) == PollerState.OFFLINE
    assert move(poller, PollerState.DRAINING, PollerState.HEALTHY, Cause.RESUME) == PollerState.HEALTHY


def test_an_operator_cannot_request_what_only_heartbeats_do() -> None:
    with pytest.raises(FailedPrecondition, match="only heartbeat_degraded, heartbeat_ok, registered"):
        transition(
            EntityKind.POLLER,
            PollerState.OFFLINE,
            PollerState.RECOVERING,
            Cause.RESUME,
            tenant="acme",
            entity_id="p1",
            at=AT,
        )


@pytest.mark.parametrize(
    ("status", "cause"),
    [
        (ComponentStatus.OK, Cause.HEARTBEAT_OK),
        (ComponentStatus.UNKNOWN, Cause.HEARTBEAT_OK),
        (ComponentStatus.DEGRADED, Cause.HEARTBEAT_DEGRADED),
        (ComponentStatus.DOWN, Cause.HEARTBEAT_DEGRADED),
    ],
)
def test_heartbeat_status_gives_the_cause(status: ComponentStatus, cause: Cause) -> None:
    assert heartbeat_cause(status) == cause


def test_a_troubled_heartbeat_degrades_and_a_clean_one_heals() -> None:
    poller = EntityKind.POLLER
    problem = heartbeat_cause(ComponentStatus.DOWN)
    clean = heartbeat_cause(ComponentStatus.OK)
    assert next_state(poller, PollerState.HEALTHY, problem) == PollerState.DEGRADED
    assert next_state(poller, PollerState.DEGRADED, clean) == PollerState.HEALTHY
    assert next_state(poller, PollerState.RECOVERING, problem) == PollerState.DEGRADED
    assert next_state(poller, PollerState.OFFLINE, problem) == PollerState.RECOVERING


def test_agents_follow_what_their_poller_reports() -> None:
    agent = EntityKind.AGENT
    assert agent_cause(ComponentStatus.UNKNOWN) is None
    state: State = AgentState.CONNECTING
    for status, expected in [
        (ComponentStatus.OK, AgentState.CONNECTED),
        (ComponentStatus.DEGRADED, AgentState.DEGRADED),
        (ComponentStatus.DOWN, AgentState.DISCONNECTED),
        (ComponentStatus.OK, AgentState.CONNECTED),
    ]:
        cause = agent_cause(status)
        assert cause is not None
        target = next_state(agent, state, cause)
        assert target == expected
        state = move(agent, state, target, cause)
    assert next_state(agent, state, Cause.POLLER_OFFLINE) == AgentState.UNAVAILABLE
    assert next_state(agent, AgentState.UNAVAILABLE, Cause.POLLER_OFFLINE) is None
    assert next_state(agent, AgentState.UNAVAILABLE, Cause.REGISTERED) == AgentState.CONNECTING
    assert next_state(agent, AgentState.UNAVAILABLE, Cause.AGENT_OK) == AgentState.CONNECTED


def test_agents_have_no_operator_transitions() -> None:
    for causes in table(EntityKind.AGENT).values():
        assert not causes & OPERATOR_CAUSES


@pytest.mark.parametrize(
    ("passed", "failures", "expected"),
    [
        (True, 0, Cause.CHECK_PASSED),
        (False, 1, None),
        (False, DEFAULT_FAILING_AFTER - 1, None),
        (False, DEFAULT_FAILING_AFTER, Cause.CHECK_FAILED),
        (False, DEFAULT_FAILING_AFTER + 5, Cause.CHECK_FAILED),
    ],
)
def test_a_checker_fails_after_consecutive_failures(
    passed: bool, failures: int, expected: Cause | None
) -> None:
    assert check_result_cause(passed, failures) == expected


def test_the_failure_threshold_is_configurable() -> None:
    assert check_result_cause(False, 1, failing_after=1) == Cause.CHECK_FAILED
    assert check_result_cause(False, 4, failing_after=5) is None
    with pytest.raises(ValueError):
        check_result_cause(False, 1, failing_after=0)


def test_a_failing_checker_recovers_and_paused_or_disabled_ones_ignore_results() -> None:
    checker = EntityKind.CHECKER
    assert next_state(checker, CheckerState.ACTIVE, Cause.CHECK_FAILED) == CheckerState.FAILING
    assert next_state(checker, CheckerState.FAILING, Cause.CHECK_PASSED) == CheckerState.ACTIVE
    for held in (CheckerState.PAUSED, CheckerState.DISABLED):
        for cause in (Cause.CHECK_FAILED, Cause.CHECK_PASSED):
            assert next_state(checker, held, cause) is None
    state = move(checker, CheckerState.FAILING, CheckerState.PAUSED, Cause.PAUSE)
    state = move(checker, state, CheckerState.ACTIVE, Cause.RESUME)
    state = move(checker, state, CheckerState.DISABLED, Cause.DISABLE)
    with pytest.raises(FailedPrecondition, match="cannot move checker from disabled to paused"):
        move(checker, state, CheckerState.PAUSED, Cause.PAUSE)
    assert move(checker, state, CheckerState.ACTIVE, Cause.ENABLE) == CheckerState.ACTIVE
