"""Dispatch rules: which poller of a partition runs each work item. Pure: no clock, no I/O.

`plan` places the items of ONE partition of ONE tenant on that partition's available pollers,
so work can never cross a partition or a tenant: the caller hands it nothing else.

- Sticky: an item stays on its poller while that poller is available and can run it.
- Otherwise (new, enabled again, its poller offline, draining, in maintenance, gone from the
  partition, or without the capability now) it goes to the least loaded poller that can run
  it (load = items assigned; ties by poller id, so every replica would decide alike).
- Nothing can run it: pending, with the reason, until a poller can.
- Rebalance (asked for when a poller joins or resumes): items move from the most to the least
  loaded poller while the spread exceeds the threshold, and only then, so a fleet where
  pollers come and go does not churn.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from srcore.domain.config import poller_config_version
from srcore.domain.model import Transition
from srcore.domain.work import AssignmentState

DEFAULT_REBALANCE_THRESHOLD = 0.25


@dataclass(frozen=True, slots=True)
class Candidate:
    """An available poller: live, in the partition, not draining or in maintenance.

    `capabilities` is the union of the poller's own and its agents'; `agents` maps each
    connected agent to its capabilities (for items pinned to an agent).
    """

    poller_id: str
    capabilities: frozenset[str]
    agents: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def can_run(self, item: Placeable) -> bool:
        """Whether this poller can run `item` (its pinned agent, when it has one)."""
        if item.agent_id:
            return item.capability in self.agents.get(item.agent_id, frozenset())
        return item.capability in self.capabilities


@dataclass(frozen=True, slots=True)
class Placeable:
    """A work item as dispatch sees it. `kind` and `digest` only feed configuration versions."""

    item_id: str
    kind: str
    capability: str
    enabled: bool
    poller_id: str | None
    state: AssignmentState
    agent_id: str = ""
    digest: str = ""


@dataclass(frozen=True, slots=True)
class Placement:
    """Where an item goes, and why (shown to operators and recorded with the event)."""

    poller_id: str | None
    state: AssignmentState
    reason: str


@dataclass(slots=True)
class Plan:
    """The placements that differ from the current ones, and the resulting loads."""

    changes: dict[str, Placement]
    loads: dict[str, int]

    def owner(self, item: Placeable) -> str | None:
        """The poller `item` runs on once the plan is applied."""
        change = self.changes.get(item.item_id)
        return item.poller_id if change is None else change.poller_id


class _LeastLoaded:
    """Least loaded candidate per capability: one lazily corrected heap per capability.

    During placement loads only grow, so an entry whose load is stale is too small; it is
    corrected when it reaches the top (amortised O(log n) per placement).
    """

    def __init__(self, candidates: Sequence[Candidate], loads: dict[str, int]) -> None:
        self._candidates = candidates
        self._loads = loads
        self._heaps: dict[str, list[tuple[int, str]]] = {}

    def take(self, capability: str) -> str | None:
        heap = self._heaps.get(capability)
        if heap is None:
            heap = [
                (self._loads[c.poller_id], c.poller_id)
                for c in self._candidates
                if capability in c.capabilities
            ]
            heapq.heapify(heap)
            self._heaps[capability] = heap
        while heap:
            load, poller = heap[0]
            actual = self._loads[poller]
            if load != actual:
                heapq.heapreplace(heap, (actual, poller))
                continue
            self._loads[poller] = actual + 1
            heapq.heapreplace(heap, (actual + 1, poller))
            return poller
        return None


def _pending_reason(item: Placeable, partition: str, candidates: Sequence[Candidate]) -> str:
    if not candidates:
        return f"no available poller in partition {partition}"
    if item.agent_id:
        return (
            f"agent {item.agent_id} with capability {item.capability} is on no available poller "
            f"of partition {partition}"
        )
    return f"no available poller in partition {partition} with capability {item.capability}"


def plan(
    partition: str,
    items: Iterable[Placeable],
    candidates: Sequence[Candidate],
    *,
    unavailable: Mapping[str, str] | None = None,
    rebalance: bool = False,
    threshold: float = DEFAULT_REBALANCE_THRESHOLD,
) -> Plan:
    """Place the items of `partition` on its `candidates`.

    `unavailable` says why known pollers are not candidates (e.g. {"p1": "offline"}), for the
    reasons recorded when their work moves.
    """
    ordered = sorted(items, key=lambda i: i.item_id)
    why = unavailable or {}
    by_id = {c.poller_id: c for c in candidates}
    loads = {c.poller_id: 0 for c in candidates}
    changes: dict[str, Placement] = {}
    waiting: list[tuple[Placeable, str]] = []
    for item in ordered:
        if not item.enabled:
            if item.poller_id is not None or item.state is not AssignmentState.DISABLED:
                changes[item.item_id] = Placement(None, AssignmentState.DISABLED, "disabled")
            continue
        owner = by_id.get(item.poller_id) if item.poller_id else None
        if owner is not None and owner.can_run(item):
            loads[owner.poller_id] += 1
            if item.state is not AssignmentState.ASSIGNED:
                changes[item.item_id] = Placement(owner.poller_id, AssignmentState.ASSIGNED, "assigned")
            continue
        if item.poller_id is None:
            waiting.append((item, ""))
        elif owner is None:
            waiting.append((item, f"poller {item.poller_id} {why.get(item.poller_id, 'not available')}"))
        else:
            lacks = f"agent {item.agent_id} with {item.capability}" if item.agent_id else item.capability
            waiting.append((item, f"poller {item.poller_id} lacks {lacks}"))

    least = _LeastLoaded(candidates, loads)
    for item, left_because in waiting:
        if item.agent_id:
            able = [c.poller_id for c in candidates if c.can_run(item)]
            target = min(able, key=lambda p: (loads[p], p)) if able else None
            if target is not None:
                loads[target] += 1
        else:
            target = least.take(item.capability)
        if target is None:
            reason = _pending_reason(item, partition, candidates)
            if left_because:
                reason = f"{left_because}; {reason}"
            if item.poller_id is not None or item.state is not AssignmentState.PENDING:
                changes[item.item_id] = Placement(None, AssignmentState.PENDING, reason)
            continue
        reason = f"moved from {left_because}" if left_because else "assigned"
        changes[item.item_id] = Placement(target, AssignmentState.ASSIGNED, reason)

    result = Plan(changes, loads)
    if rebalance and len(candidates) > 1:
        _rebalance(result, ordered, by_id, threshold)
    return result


def _rebalance(
    result: Plan, items: Sequence[Placeable], by_id: Mapping[str, Candidate], threshold: float
) -> None:
    """Move items from the most to the least loaded poller while the spread is too large."""
    loads = result.loads
    mean = sum(loads.values()) / len(loads)
    limit = max(1.0, threshold * mean)
    owned: dict[str, list[Placeable]] = {p: [] for p in loads}
    for item in items:
        owner = result.owner(item)
        # Pinned items cannot move: their agent is behind one poller.
        if owner in owned and item.enabled and not item.agent_id:
            owned[owner].append(item)
    while True:
        high = max(loads, key=lambda p: (loads[p], p))
        moved = False
        for index, item in enumerate(owned[high]):
            able = [p for p, c in by_id.items() if p != high and c.can_run(item)]
            if not able:
                continue
            low = min(able, key=lambda p: (loads[p], p))
            if loads[high] - loads[low] <= limit:
                continue
            del owned[high][index]
            owned[low].append(item)
            loads[high] -= 1
            loads[low] += 1
            result.changes[item.item_id] = Placement(
                low, AssignmentState.ASSIGNED, f"rebalanced from poller {high}"
            )
            moved = True
            break
        if not moved:
            return


def versions(
    heartbeat_interval: float,
    items: Iterable[Placeable],
    owner: Callable[[Placeable], str | None],
    pollers: Iterable[str],
) -> dict[str, str]:
    """The configuration version of each of `pollers`, from the items `owner` gives them.

    `items` must hold every item of those pollers (of any partition), or a version would
    miss part of a poller's work.
    """
    work: dict[str, list[tuple[str, str, str]]] = {p: [] for p in pollers}
    for item in items:
        poller = owner(item)
        if poller in work:
            work[poller].append((item.kind, item.item_id, item.digest))
    return {poller: poller_config_version(heartbeat_interval, entries) for poller, entries in work.items()}


ASSIGNMENT_ENTITY = "assignment"


def assignment_transition(
    tenant: str,
    kind: str,
    name: str,
    before: Placeable,
    placement: Placement,
    at: datetime,
) -> Transition | None:
    """The state change to record (and publish as an event) for a placement, if any.

    Recorded: an item becoming pending, a pending item placed, an item moving between
    pollers. Not recorded: an item's first placement after it was created or changed (the
    operator's change is audited already) and disabling (likewise).
    """
    target = placement.state
    moved = (
        target is AssignmentState.ASSIGNED
        and before.state is AssignmentState.ASSIGNED
        and before.poller_id != placement.poller_id
    )
    placed = target is AssignmentState.ASSIGNED and before.state is AssignmentState.PENDING
    stuck = target is AssignmentState.PENDING and before.state is not AssignmentState.PENDING
    if not (moved or placed or stuck):
        return None
    reason = placement.reason
    if target is AssignmentState.ASSIGNED:
        reason = (
            f"on poller {placement.poller_id}"
            if reason == "assigned"
            else f"{reason}; on poller {placement.poller_id}"
        )
    return Transition(
        tenant, ASSIGNMENT_ENTITY, f"{kind}/{name}", before.state.value, target.value, reason[:255], at
    )
