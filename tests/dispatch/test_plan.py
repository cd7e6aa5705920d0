"""The dispatch rules on their own: placement, stickiness, capabilities, pins, rebalance,
versions, and the transitions recorded. Pure functions, no services."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import cast

from srcore.dispatch.dispatcher import registry_pause, resting
from srcore.domain.config import poller_config_version
from srcore.domain.dispatch import (
    Candidate,
    Placeable,
    Placement,
    assignment_transition,
    plan,
    versions,
)
from srcore.domain.leadership import Leadership
from srcore.domain.work import AssignmentState

A = AssignmentState
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def item(
    item_id: str,
    poller: str | None = None,
    capability: str = "icmp",
    *,
    agent: str = "",
    enabled: bool = True,
    state: AssignmentState | None = None,
) -> Placeable:
    """An item, assigned to `poller` when given."""
    if state is None:
        state = A.ASSIGNED if poller else A.UNASSIGNED
    return Placeable(item_id, "check", capability, enabled, poller, state, agent, f"digest-{item_id}")


def poller(poller_id: str, *capabilities: str, agents: dict[str, frozenset[str]] | None = None) -> Candidate:
    """An available poller; like the dispatcher, its capabilities include its agents'."""
    agents = agents or {}
    return Candidate(poller_id, frozenset(capabilities or ("icmp",)).union(*agents.values()), agents)


def owners(items: list[Placeable], candidates: list[Candidate]) -> dict[str, str | None]:
    """item id -> poller after planning."""
    result = plan("dc1", items, candidates)
    return {i.item_id: result.owner(i) for i in items}


def test_new_items_go_to_the_least_loaded_poller() -> None:
    items = [item("a", "p1"), item("b", "p1"), item("c"), item("d"), item("e")]
    placed = owners(items, [poller("p1"), poller("p2"), poller("p3")])
    loads = {p: list(placed.values()).count(p) for p in ("p1", "p2", "p3")}
    assert loads == {"p1": 2, "p2": 2, "p3": 1}
    assert placed["a"] == placed["b"] == "p1", "assigned items stay where they are"


def test_placement_is_sticky_even_when_unbalanced() -> None:
    items = [item(f"i{n}", "p1") for n in range(10)]
    result = plan("dc1", items, [poller("p1"), poller("p2")])
    assert result.changes == {}, "nothing moves without a reason"


def test_work_of_an_unavailable_poller_moves_with_the_reason() -> None:
    items = [item("a", "gone"), item("b", "p1")]
    result = plan("dc1", items, [poller("p1"), poller("p2")], unavailable={"gone": "offline"})
    assert result.changes == {"a": Placement("p2", A.ASSIGNED, "moved from poller gone offline")}


def test_nothing_able_leaves_work_pending_with_what_is_missing() -> None:
    result = plan("dc1", [item("a", capability="snmp"), item("b", "gone")], [poller("p1", "icmp")])
    assert result.changes["a"] == Placement(
        None, A.PENDING, "no available poller in partition dc1 with capability snmp"
    )
    assert result.changes["b"].poller_id == "p1"
    empty = plan("dc1", [item("a", "gone")], [], unavailable={"gone": "draining"})
    assert empty.changes["a"] == Placement(
        None, A.PENDING, "poller gone draining; no available poller in partition dc1"
    )


def test_a_pending_item_is_not_rewritten_while_it_stays_pending() -> None:
    result = plan("dc1", [item("a", state=A.PENDING)], [])
    assert result.changes == {}


def test_capabilities_of_agents_count_and_pins_follow_their_agent() -> None:
    agents = {"rack-3": frozenset({"tcp"})}
    candidates = [poller("p1", "icmp", agents=agents), poller("p2", "tcp")]
    items = [item("pinned", capability="tcp", agent="rack-3"), item("free", capability="tcp")]
    for n in range(3):
        items.append(item(f"load{n}", "p2", capability="tcp"))
    placed = owners(items, candidates)
    assert placed["pinned"] == "p1", "a pinned item goes to its agent's poller"
    assert placed["free"] == "p1", "the agent's capability makes p1 able, and it is less loaded"
    wrong_agent = plan("dc1", [item("x", capability="snmp", agent="rack-3")], candidates)
    assert wrong_agent.changes["x"].state is A.PENDING
    assert "agent rack-3 with capability snmp" in wrong_agent.changes["x"].reason


def test_an_owner_that_lost_the_capability_gives_the_item_up() -> None:
    result = plan("dc1", [item("a", "p1", capability="snmp")], [poller("p1", "icmp"), poller("p2", "snmp")])
    assert result.changes["a"] == Placement("p2", A.ASSIGNED, "moved from poller p1 lacks snmp")


def test_disabled_items_run_nowhere() -> None:
    result = plan("dc1", [item("a", "p1", enabled=False)], [poller("p1")])
    assert result.changes == {"a": Placement(None, A.DISABLED, "disabled")}


def test_rebalance_moves_work_only_past_the_threshold() -> None:
    items = [item(f"i{n:02}", "p1") for n in range(6)] + [item(f"j{n:02}", "p2") for n in range(6)]
    candidates = [poller("p1"), poller("p2"), poller("p3")]
    assert plan("dc1", items, candidates).changes == {}, "no rebalance unless asked (a join)"
    result = plan("dc1", items, candidates, rebalance=True, threshold=0.25)
    assert result.loads == {"p1": 4, "p2": 4, "p3": 4}
    assert all(c.reason.startswith("rebalanced from poller") for c in result.changes.values())
    # A spread within the threshold moves nothing: 4/4/3 with mean 3.67 and a limit of 1.
    near = [item(f"i{n}", "p1") for n in range(4)] + [item(f"j{n}", "p2") for n in range(4)]
    near += [item(f"k{n}", "p3") for n in range(3)]
    assert plan("dc1", near, candidates, rebalance=True, threshold=0.25).changes == {}


def test_rebalance_leaves_pinned_items_alone() -> None:
    agents = {"a1": frozenset({"icmp"})}
    items = [item(f"i{n}", "p1", agent="a1") for n in range(6)]
    result = plan("dc1", items, [poller("p1", agents=agents), poller("p2")], rebalance=True)
    assert result.changes == {}


def test_versions_follow_the_items_a_poller_runs() -> None:
    items = [item("a", "p1"), item("b", "p1"), item("c", "p2")]
    before = versions(10.0, items, lambda i: i.poller_id, ["p1", "p2", "p3"])
    assert before["p3"] == poller_config_version(10.0, [])
    assert before["p1"] == poller_config_version(
        10.0, [("check", "a", "digest-a"), ("check", "b", "digest-b")]
    )
    moved = versions(10.0, items, lambda i: "p2" if i.item_id == "b" else i.poller_id, ["p1", "p2", "p3"])
    assert moved["p1"] != before["p1"] and moved["p2"] != before["p2"] and moved["p3"] == before["p3"]
    changed = [item("a", "p1"), Placeable("b", "check", "icmp", True, "p1", A.ASSIGNED, "", "new-digest")]
    assert versions(10.0, changed, lambda i: i.poller_id, ["p1"])["p1"] != before["p1"]
    assert versions(20.0, items, lambda i: i.poller_id, ["p1"])["p1"] != before["p1"]


def test_transitions_record_pending_placed_and_moved_only() -> None:
    def recorded(before: Placeable, placement: Placement) -> str | None:
        found = assignment_transition("acme", "check", "web", before, placement, NOW)
        return None if found is None else f"{found.from_state}->{found.to_state}: {found.reason}"

    placed = Placement("p2", A.ASSIGNED, "assigned")
    assert recorded(item("a"), placed) is None, "a first placement is not an event"
    assert recorded(item("a", state=A.PENDING), placed) == "pending->assigned: on poller p2"
    moved = Placement("p2", A.ASSIGNED, "moved from poller p1 offline")
    assert (
        recorded(item("a", "p1"), moved) == "assigned->assigned: moved from poller p1 offline; on poller p2"
    )
    stuck = Placement(None, A.PENDING, "no available poller in partition dc1")
    assert recorded(item("a", "p1"), stuck) == "assigned->pending: no available poller in partition dc1"
    found = assignment_transition("acme", "check", "web", item("a", "p1"), stuck, NOW)
    assert found is not None and (found.entity_type, found.entity_id) == ("assignment", "check/web")
    assert recorded(item("a", "p1"), Placement(None, A.DISABLED, "disabled")) is None


def test_a_slow_registry_round_pushes_the_next_one_back_by_twice_its_time() -> None:
    # A quick round keeps the configured settle; a round of a large fleet (0.8 s) makes
    # registry changes wait 1.6 s, so placement takes at most a third of the leader's loop.
    assert registry_pause(1.0, 0.01) == 1.0
    assert registry_pause(1.0, 0.8) == 1.6
    assert registry_pause(0.0, 0.25) == 0.5


class WokenEarly:
    """A leadership whose every sleep is cut short by a hint after 10 ms."""

    def __init__(self, stopping_after: int | None = None) -> None:
        self.asked: list[float] = []
        self.stopping = False
        self._stopping_after = stopping_after

    async def sleep(self, seconds: float) -> bool:
        self.asked.append(seconds)
        await asyncio.sleep(0.01)
        if self._stopping_after is not None and len(self.asked) >= self._stopping_after:
            self.stopping = True
        return not self.stopping


async def test_a_full_pass_rests_its_whole_pause_though_hints_wake_the_leader() -> None:
    leadership = WokenEarly()
    assert await resting(cast(Leadership, leadership))(0.05)
    # Woken early, it went back to sleep for what was left of the pause, each time less.
    assert len(leadership.asked) >= 2
    assert leadership.asked == sorted(leadership.asked, reverse=True)
    assert leadership.asked[0] <= 0.05


async def test_a_full_pass_stops_resting_when_leadership_ends() -> None:
    leadership = WokenEarly(stopping_after=1)
    assert not await resting(cast(Leadership, leadership))(60.0)
    assert len(leadership.asked) == 1
