"""Service check results drive the checker state machine, recorded as transitions and events."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
import sqlalchemy as sa

from serviceradar.admin.v1 import result_service_pb2 as pb
from serviceradar.admin.v1 import result_service_pb2_grpc as pb_grpc
from serviceradar.edge.v1 import edge_service_pb2 as epb
from serviceradar.edge.v1 import edge_service_pb2_grpc as egrpc
from serviceradar.edge.v1 import results_pb2 as rpb
from serviceradar.events.v1 import event_pb2
from srcore.store.tables import event_outbox, state_transitions
from tests.helpers.core import RunningCore
from tests.processing.conftest import FAILING_AFTER, T0, check_result, check_states, report_checks


async def checker_history(core: RunningCore) -> list[tuple[str, str, str]]:
    """Recorded checker transitions (entity, from, to), oldest first."""
    t = state_transitions.c
    async with core.app.db.connect() as conn:
        rows = await conn.execute(
            sa.select(t.entity_id, t.from_state, t.to_state)
            .where(t.entity_type == "checker")
            .order_by(t.at, t.id)
        )
        return [(r.entity_id, r.from_state, r.to_state) for r in rows]


async def checker_events(core: RunningCore) -> list[tuple[Any, ...]]:
    """Outbox events about checkers (entity key, event type, subject), in order."""
    o = event_outbox.c
    async with core.app.db.connect() as conn:
        rows = await conn.execute(
            sa.select(o.entity_key, o.event_type, o.subject).where(o.entity_type == "checker").order_by(o.seq)
        )
        return [tuple(r) for r in rows]


async def checker_event_partitions(core: RunningCore) -> set[str]:
    """The partitions checker events name."""
    o = event_outbox.c
    async with core.app.db.connect() as conn:
        payloads = (await conn.execute(sa.select(o.payload).where(o.entity_type == "checker"))).scalars()
        return {event_pb2.Event.FromString(p).partition for p in payloads}


async def test_a_check_fails_after_n_failures_in_a_row_and_recovers_on_a_pass(core: RunningCore) -> None:
    async with core.channel(core.creds.edge()) as channel:
        await egrpc.EdgeServiceStub(channel).RegisterPoller(
            epb.RegisterPollerRequest(poller_id="demo", partition="dc1")
        )
    for second in range(FAILING_AFTER - 1):
        await report_checks(core, [check_result("web", False, second)])
    web = (await check_states(core))["web"]
    assert (web.state, web.consecutive_failures) == ("active", FAILING_AFTER - 1), "N-1 failures stay active"
    assert not web.available and web.message == "refused"
    assert await checker_history(core) == []

    await report_checks(core, [check_result("web", False, 10)])
    web = (await check_states(core))["web"]
    assert (web.state, web.consecutive_failures) == ("failing", FAILING_AFTER)
    assert web.state_changed_at.ToDatetime(T0.tzinfo) == T0.replace(second=10)
    assert await checker_history(core) == [("demo/a1/web", "active", "failing")]
    assert await checker_events(core) == [("checker:demo/a1/web", "failing", "default.checker.failing")]
    # Subscribers filter events by partition: a checker's event names its poller's.
    assert await checker_event_partitions(core) == {"dc1"}

    # Still failing: counted, no new transition.
    await report_checks(core, [check_result("web", False, 11)])
    assert (await check_states(core))["web"].consecutive_failures == FAILING_AFTER + 1
    assert len(await checker_history(core)) == 1

    await report_checks(core, [check_result("web", True, 12)])
    web = (await check_states(core))["web"]
    assert (web.state, web.consecutive_failures, web.available) == ("active", 0, True)
    assert web.response_time.ToMicroseconds() == 2500
    assert await checker_history(core) == [
        ("demo/a1/web", "active", "failing"),
        ("demo/a1/web", "failing", "active"),
    ]
    assert [e[1] for e in await checker_events(core)] == ["failing", "active"]


async def test_several_results_of_one_check_in_one_chunk_count_in_observation_order(
    core: RunningCore,
) -> None:
    # Sent newest first; in observation order they are three failures, then a pass.
    await report_checks(
        core,
        [
            check_result("db", True, 4),
            check_result("db", False, 3),
            check_result("db", False, 1),
            check_result("db", False, 2),
            # Without their own time, results share the chunk's and count in the order sent.
            check_result("dns", False),
            check_result("dns", False),
            check_result("dns", False),
            check_result("mail", False),
            check_result("mail", False),
            check_result("mail", True),
        ],
    )
    states = await check_states(core)
    assert (states["db"].state, states["db"].consecutive_failures, states["db"].available) == (
        "active",
        0,
        True,
    )
    assert (states["dns"].state, states["dns"].consecutive_failures) == ("failing", 3)
    assert (states["mail"].state, states["mail"].consecutive_failures) == ("active", 0)
    history = await checker_history(core)
    assert [h for h in history if h[0] == "demo/a1/db"] == [
        ("demo/a1/db", "active", "failing"),
        ("demo/a1/db", "failing", "active"),
    ]
    assert [h for h in history if h[0] == "demo/a1/dns"] == [("demo/a1/dns", "active", "failing")]
    assert not [h for h in history if h[0] == "demo/a1/mail"]

    # The check's history, newest first, through the admin API.
    async with core.channel(core.creds.operator()) as channel:
        stub = pb_grpc.ResultServiceStub(channel)
        answer = await stub.ListResults(
            pb.ListResultsRequest(result_type=rpb.RESULT_TYPE_SERVICE_CHECKS, check_name="db")
        )
        failing = await stub.ListCheckStates(pb.ListCheckStatesRequest(state="failing"))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListCheckStates(pb.ListCheckStatesRequest(state="broken"))
    assert [r.service_check.available for r in answer.results] == [True, False, False, False]
    assert {r.service_check.name for r in answer.results} == {"db"}
    assert [c.name for c in failing.checks] == ["dns"]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "state" in (
        caught.value.details() or ""
    )


async def test_a_late_result_older_than_the_latest_does_not_move_the_state(core: RunningCore) -> None:
    await report_checks(core, [check_result("api", True, 100)])
    await report_checks(core, [check_result("api", False, second) for second in (1, 2, 3)])
    api = (await check_states(core))["api"]
    assert (api.state, api.consecutive_failures, api.available) == ("active", 0, True)
