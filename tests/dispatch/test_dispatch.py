"""Dispatch over the real server: recovery when a poller dies, pending work, drain and resume,
capabilities and pins, and work that never crosses a partition or a tenant."""

from __future__ import annotations

from serviceradar.admin.v1 import event_service_pb2 as event_pb
from serviceradar.admin.v1 import event_service_pb2_grpc as event_grpc
from serviceradar.admin.v1 import poller_service_pb2 as poller_pb
from serviceradar.admin.v1 import poller_service_pb2_grpc as poller_grpc
from serviceradar.admin.v1 import sweep_service_pb2 as sweep_pb
from serviceradar.admin.v1 import sweep_service_pb2_grpc as sweep_grpc
from serviceradar.edge.v1 import config_pb2
from serviceradar.edge.v1 import edge_service_pb2 as pb
from tests.dispatch.conftest import HEARTBEAT_TIMEOUT, World
from tests.dispatch.support import DEADLINE, eventually, names

# Long enough for a silent poller to leave the registry, then for its work to move.
RECOVERY = HEARTBEAT_TIMEOUT + DEADLINE


async def assignment_events(world: World) -> list[tuple[str, str, str]]:
    """(entity, old state, new state) of every assignment event, oldest first."""
    events = event_grpc.EventServiceStub(world.operator.channel)
    answer = await events.ListEvents(event_pb.ListEventsRequest(entity_type="assignment", page_size=1000))
    return [(r.event.entity_id, r.event.old_state, r.event.new_state) for r in answer.events]


async def test_work_of_a_killed_poller_moves_within_its_partition_and_is_pushed(world: World) -> None:
    operator = world.operator
    for partition in ("dc1", "dc2"):
        await operator.partition(partition)
    p1 = await world.poller("p1", "dc1")
    p2 = await world.poller("p2", "dc1")
    await world.poller("p3", "dc2")
    for n in range(4):
        await operator.check(f"c{n}", "dc1")
    await operator.check("d0", "dc2")
    placed = await operator.placement_where(
        lambda p: len(p) == 5 and all(s == "assigned" for s, _ in p.values())
    )
    on = {name: poller for name, (_, poller) in placed.items()}
    assert sorted(on[f"c{n}"] for n in range(4)) == ["p1", "p1", "p2", "p2"], "least loaded first"
    assert on["d0"] == "p3"
    survivor = p2.sync()
    await survivor.next()

    await p1.stop_heartbeats()
    pushed = await survivor.config_where(lambda c: names(c) == {"c0", "c1", "c2", "c3"}, timeout=RECOVERY)
    assert pushed.WhichOneof("body") == "config"
    after = await operator.placement()
    assert {name: poller for name, (_, poller) in after.items()} == {
        "c0": "p2",
        "c1": "p2",
        "c2": "p2",
        "c3": "p2",
        "d0": "p3",
    }, "moved within dc1 only"
    moved = [e for e in await assignment_events(world) if e[1:] == ("assigned", "assigned")]
    assert sorted(e[0] for e in moved) == sorted(f"check/{n}" for n, p in on.items() if p == "p1")


async def test_no_poller_left_means_pending_until_one_registers(world: World) -> None:
    operator = world.operator
    await operator.partition("dc1")
    p1 = await world.poller("p1", "dc1")
    await operator.check("gw", "dc1")
    await operator.placement_where(lambda p: p.get("gw") == ("assigned", "p1"))

    await p1.stop_heartbeats()
    pending = await eventually(
        operator.assignments_of, lambda a: a[0].assignment.poller_id == "", timeout=RECOVERY
    )
    assert pending[0].assignment.reason.startswith("poller p1 offline")
    assert "no available poller in partition dc1" in pending[0].assignment.reason
    assert ("check/gw", "assigned", "pending") in await assignment_events(world)

    p2 = await world.poller("p2", "dc1")
    config = await p2.sync().config_where(lambda c: names(c) == {"gw"})
    assert config.config.checks[0].target == "10.0.0.1"
    assert (await operator.placement())["gw"] == ("assigned", "p2")
    assert ("check/gw", "pending", "assigned") in await assignment_events(world)


async def test_drain_leaves_a_poller_without_work_and_resume_makes_it_eligible(world: World) -> None:
    operator = world.operator
    pollers = poller_grpc.PollerServiceStub(operator.channel)
    await operator.partition("dc1")
    p1 = await world.poller("p1", "dc1")
    await world.poller("p2", "dc1")
    for n in range(6):
        await operator.check(f"c{n}", "dc1")
    await operator.placement_where(lambda p: len(p) == 6 and {q for _, q in p.values()} == {"p1", "p2"})
    stream = p1.sync()
    await stream.next()

    drained = await pollers.DrainPoller(poller_pb.DrainPollerRequest(poller_id="p1", reason="swap"))
    assert drained.poller.state == poller_pb.POLLER_STATE_DRAINING
    await stream.config_where(lambda c: names(c) == set())
    assert await operator.assignments_of(poller_id="p1") == []
    placed = await operator.placement()
    assert {poller for _, poller in placed.values()} == {"p2"}
    answer = await eventually(p1.heartbeat, lambda a: a.pending_action == pb.OPERATOR_ACTION_DRAIN)
    assert answer.pending_action == pb.OPERATOR_ACTION_DRAIN

    resumed = await pollers.ResumePoller(poller_pb.ResumePollerRequest(poller_id="p1"))
    assert resumed.poller.state == poller_pb.POLLER_STATE_HEALTHY
    back = await stream.config_where(lambda c: len(names(c)) == 3)
    assert len(back.config.checks) == 3, "resume rebalances: p1 takes half the work back"


async def test_capabilities_and_agent_pins_choose_the_poller(world: World) -> None:
    operator = world.operator
    await operator.partition("dc1")
    await world.poller("p1", "dc1", ["icmp"], agents=[pb.AgentInfo(agent_id="rack-3", capabilities=["tcp"])])
    await world.poller("p2", "dc1", ["http", "tcp"])
    await operator.check("web", "dc1", check_type=config_pb2.CHECK_TYPE_HTTP, target="https://intra.example/")
    await operator.check(
        "db", "dc1", check_type=config_pb2.CHECK_TYPE_TCP, target="db1", port=5432, agent_id="rack-3"
    )
    await operator.check("mib", "dc1", check_type=config_pb2.CHECK_TYPE_SNMP, target="10.0.0.9")
    sweeps = sweep_grpc.SweepServiceStub(operator.channel)
    spec = sweep_pb.SweepSpec(partition="dc1", cidrs=["10.0.0.0/24"])
    spec.icmp_interval.FromSeconds(300)
    await sweeps.CreateSweep(sweep_pb.CreateSweepRequest(name="lan", spec=spec))
    placed = await operator.placement_where(
        lambda p: len(p) == 4 and all(s != "unassigned" for s, _ in p.values())
    )
    assert placed == {
        "web": ("assigned", "p2"),
        "db": ("assigned", "p1"),
        "mib": ("pending", ""),
        "lan": ("pending", ""),
    }
    reasons = {a.name: a.assignment.reason for a in await operator.assignments_of()}
    assert reasons["lan"] == "no available poller in partition dc1 with capability sweep"


async def test_work_never_crosses_a_tenant(world: World) -> None:
    operator = world.operator
    await world.site.create_tenant("acme")
    await operator.partition("dc1", tenant="acme")
    await operator.partition("dc1")
    await world.poller("acme-p1", "dc1", tenant="acme")
    await operator.check("gw", "dc1")
    await operator.check("gw", "dc1", tenant="acme")
    theirs = await operator.placement_where(lambda p: p.get("gw", ("",))[0] == "assigned", tenant="acme")
    assert theirs == {"gw": ("assigned", "acme-p1")}
    ours = await operator.placement_where(lambda p: p.get("gw", ("",))[0] == "pending", tenant="default")
    assert ours == {"gw": ("pending", "")}, "the default tenant's dc1 has no poller; acme's is not its"


async def test_maintenance_takes_work_off_a_poller_until_it_ends(world: World) -> None:
    operator = world.operator
    pollers = poller_grpc.PollerServiceStub(operator.channel)
    await operator.partition("dc1")
    await world.poller("p1", "dc1")
    await world.poller("p2", "dc1")
    for n in range(4):
        await operator.check(f"c{n}", "dc1")
    await operator.placement_where(lambda p: len(p) == 4 and {q for _, q in p.values()} == {"p1", "p2"})

    await pollers.SetMaintenance(poller_pb.SetMaintenanceRequest(poller_id="p1", enabled=True))
    away = await operator.placement_where(lambda p: {q for _, q in p.values()} == {"p2"})
    assert {q for _, q in away.values()} == {"p2"}
    await pollers.SetMaintenance(poller_pb.SetMaintenanceRequest(poller_id="p1", enabled=False))
    back = await operator.placement_where(lambda p: [q for _, q in p.values()].count("p1") == 2)
    assert sorted(q for _, q in back.values()) == ["p1", "p1", "p2", "p2"], "its share comes back"


async def test_a_full_round_pauses_between_partitions_and_stops_when_leadership_ends(world: World) -> None:
    for partition in ("dc1", "dc2", "dc3"):
        await world.operator.partition(partition)
        await world.poller(f"p-{partition}", partition)
    app = world.site.app
    leader = app.leader_jobs.running
    assert leader is not None
    asked: list[float] = []

    async def leading(seconds: float) -> bool:
        asked.append(seconds)
        return True

    outcomes = await app.dispatcher.dispatch({}, True, leader, pause=leading)
    assert {("default", p) for p in ("dc1", "dc2", "dc3")} <= set(outcomes)
    # Twice what the partition before took, between partitions only.
    assert len(asked) == len(outcomes) - 1
    assert all(seconds > 0 for seconds in asked)

    async def deposed(seconds: float) -> bool:
        return False

    assert len(await app.dispatcher.dispatch({}, True, leader, pause=deposed)) == 1
