"""Result processing rules: the checker state machine driven by results, and sweep scope.

Pure: the store reads a check's results in order and hands them here; what to write back
(state, failures in a row, the transitions to record) is decided here. Likewise for a
completed sweep: which of the partition's hosts it vouches for is a question of its target.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from srcore.domain.model import CheckerState, Transition
from srcore.domain.states import (
    DEFAULT_FAILING_AFTER,
    Cause,
    EntityKind,
    check_result_cause,
    next_state,
    transition,
)

DEFAULT_MAX_OPEN_PORTS = 256
"""Open ports kept per host in its latest state; more are truncated (and flagged)."""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class ProcessingPolicy:
    """The knobs of result processing (settings `max_open_ports_per_host`, `check_failing_after`)."""

    max_open_ports_per_host: int = DEFAULT_MAX_OPEN_PORTS
    failing_after: int = DEFAULT_FAILING_AFTER

    def __post_init__(self) -> None:
        if self.max_open_ports_per_host < 1:
            raise ValueError("max_open_ports_per_host must be at least 1")
        if self.failing_after < 1:
            raise ValueError("failing_after must be at least 1")


# Paused and disabled checkers ignore results: only an operator moves them.
_HELD = frozenset({CheckerState.PAUSED, CheckerState.DISABLED})


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    """One result of a check, as the state machine needs it."""

    passed: bool
    at: datetime


@dataclass(slots=True)
class CheckerFold:
    """A checker after folding results into it: what to store and what to record."""

    state: CheckerState
    consecutive_failures: int
    state_changed_at: datetime | None
    transitions: list[Transition] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Whether the state moved at least once."""
        return bool(self.transitions)


@functools.cache
def _next_checker_state(state: CheckerState, cause: Cause) -> CheckerState | None:
    # The table walk is memoised: this runs once per check result.
    target = next_state(EntityKind.CHECKER, state, cause)
    return None if target is None else CheckerState(target)


def checker_entity_id(poller_id: str, agent_id: str, name: str) -> str:
    """The checker's path within its tenant, as transitions and events name it."""
    return f"{poller_id}/{agent_id}/{name}"


def fold_check_results(
    state: CheckerState,
    consecutive_failures: int,
    state_changed_at: datetime | None,
    results: Iterable[CheckOutcome],
    *,
    tenant: str,
    entity_id: str,
    failing_after: int = DEFAULT_FAILING_AFTER,
) -> CheckerFold:
    """Apply a check's results, oldest first, to its stored state.

    A failure extends the run of failures and, at `failing_after` in a row, moves an active
    checker to failing; a pass ends the run and moves a failing checker back to active. Every
    move is a Transition, in order, so a flapping check records each flap. A paused or
    disabled checker keeps its state and its count: results do not move it.
    """
    fold = CheckerFold(state, consecutive_failures, state_changed_at)
    if state in _HELD:
        return fold
    for result in results:
        fold.consecutive_failures = 0 if result.passed else fold.consecutive_failures + 1
        cause = check_result_cause(result.passed, fold.consecutive_failures, failing_after)
        if cause is None:
            continue
        target = _next_checker_state(fold.state, cause)
        if target is None:
            continue
        detail = (
            f"{fold.consecutive_failures} failed results in a row" if not result.passed else "result passed"
        )
        fold.transitions.append(
            transition(
                EntityKind.CHECKER,
                fold.state,
                target,
                cause,
                tenant=tenant,
                entity_id=entity_id,
                at=result.at,
                detail=detail,
            )
        )
        fold.state = target
        fold.state_changed_at = result.at
    return fold


def sweep_network(target: str) -> Network | None:
    """The network a sweep covers when its target is a CIDR (or one address); None otherwise."""
    if not target:
        return None
    try:
        return ipaddress.ip_network(target.strip(), strict=False)
    except ValueError:
        return None


def addresses_within(addresses: Iterable[str], network: Network) -> list[str]:
    """The addresses (canonical text, as stored) that lie inside `network`, in input order."""
    inside: list[str] = []
    for text in addresses:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            continue
        if address.version == network.version and address in network:
            inside.append(text)
    return inside
