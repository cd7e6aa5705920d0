"""SyncConfig over the real server: the first message, not_modified, pushes on change (never by
polling: keepalives are a minute apart here), drift in heartbeats and in the admin API, and
the end of a stream when its replica shuts down."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask

from serviceradar.admin.v1 import check_service_pb2 as check_pb
from serviceradar.admin.v1 import poller_service_pb2 as poller_pb
from serviceradar.admin.v1 import poller_service_pb2_grpc as poller_grpc
from serviceradar.edge.v1 import edge_service_pb2 as pb
from srcore.app import CoreApp
from srcore.domain.signals import Resync
from srcore.settings import Settings
from srcore.store.tables import pollers
from tests.dispatch.conftest import SETTINGS, World
from tests.dispatch.support import DEADLINE, EdgePoller, Operator, edge_channel, eventually, names
from tests.helpers.core import DevCredentials, RunningCore
from tests.tenancy.support import Site


async def test_first_message_is_the_config_and_a_held_version_is_not_modified(world: World) -> None:
    await world.operator.partition("dc1")
    p1 = await world.poller("p1", "dc1")
    await world.operator.check("gw", "dc1")
    await world.operator.placement_where(lambda p: p.get("gw") == ("assigned", "p1"))

    first = await p1.sync().next()
    assert first.WhichOneof("body") == "config"
    assert names(first.config) == {"gw"}
    assert first.config.heartbeat_interval.ToTimedelta().total_seconds() == SETTINGS["heartbeat_interval"]
    assert first.server_time.seconds > 0

    held = await p1.sync(known_version=first.version).next()
    assert (held.WhichOneof("body"), held.version) == ("not_modified", first.version)
    stale = await p1.sync(known_version="0" * 32).next()
    assert (stale.WhichOneof("body"), stale.version) == ("config", first.version)


async def test_a_change_is_pushed_to_the_subscribed_stream_without_polling(any_world: World) -> None:
    world, operator = any_world, any_world.operator
    await operator.partition("dc1")
    p1 = await world.poller("p1", "dc1")
    stream = p1.sync()
    empty = await stream.next()
    assert names(empty.config) == set()

    await operator.check("gw", "dc1", interval=Duration(seconds=30))
    pushed = await stream.next()
    assert names(pushed.config) == {"gw"} and pushed.version != empty.version
    assert pushed.config.checks[0].interval.seconds == 30

    await operator.checks.UpdateCheck(
        check_pb.UpdateCheckRequest(
            name="gw",
            spec=check_pb.CheckSpec(interval=Duration(seconds=15)),
            update_mask=FieldMask(paths=["interval"]),
        )
    )
    updated = await stream.next()
    assert updated.config.checks[0].interval.seconds == 15
    assert updated.config.checks[0].target == "10.0.0.1", "fields outside the mask are kept"

    await operator.checks.DisableCheck(check_pb.DisableCheckRequest(name="gw"))
    disabled = await stream.next()
    assert names(disabled.config) == set()
    assert disabled.version == empty.version, "equal content, equal version"

    await operator.checks.EnableCheck(check_pb.EnableCheckRequest(name="gw"))
    assert names((await stream.next()).config) == {"gw"}
    await operator.checks.DeleteCheck(check_pb.DeleteCheckRequest(name="gw"))
    assert names((await stream.next()).config) == set()
    # Every message above was a push: the only other kind, a keepalive, is a minute away.
    assert stream.messages.empty()


async def test_heartbeats_and_the_admin_api_show_desired_versus_applied(world: World) -> None:
    await world.operator.partition("dc1")
    p1 = await world.poller("p1", "dc1", heartbeats=False)
    await world.operator.check("gw", "dc1")
    config = await p1.sync().config_where(lambda c: names(c) == {"gw"})

    answer = await eventually(p1.heartbeat, lambda a: a.config_version == config.version)
    assert answer.config_version == config.version and answer.config_outdated
    pollers = poller_grpc.PollerServiceStub(world.operator.channel)

    async def shown() -> poller_pb.Poller:
        return (await pollers.GetPoller(poller_pb.GetPollerRequest(poller_id="p1"))).poller

    drifting = await eventually(shown, lambda p: p.desired_config_version == config.version)
    assert drifting.applied_config_version != drifting.desired_config_version
    assert drifting.assigned_work == 1

    p1.applied = config.version
    assert not (await p1.heartbeat()).config_outdated
    current = await eventually(shown, lambda p: p.applied_config_version == config.version)
    assert current.desired_config_version == current.applied_config_version == config.version
    listed = await pollers.ListPollers(poller_pb.ListPollersRequest())
    assert [(p.poller_id, p.assigned_work) for p in listed.pollers] == [("p1", 1)]


async def test_sync_config_refuses_bad_input_and_unregistered_pollers(world: World) -> None:
    await world.operator.partition("dc1")
    p1 = await world.poller("p1", "dc1", heartbeats=False)
    p9 = await world.poller("p9", "dc1", heartbeats=False)
    await world.site.execute("DELETE FROM pollers WHERE poller_id = 'p9'")
    for poller, request, code in (
        (p1, pb.SyncConfigRequest(poller_id="p1", known_version="v" * 81), grpc.StatusCode.INVALID_ARGUMENT),
        (p9, pb.SyncConfigRequest(poller_id="p9"), grpc.StatusCode.FAILED_PRECONDITION),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await poller.edge.SyncConfig(request).read()
        assert caught.value.code() == code


async def test_a_replica_shutting_down_ends_streams_with_unavailable(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    options: dict[str, Any] = {**SETTINGS, "listen": "127.0.0.1:0", "metrics_listen": ""}
    app = CoreApp(Settings(data_dir=data_dir, **options).validate())
    await app.start()
    try:
        site = Site(RunningCore(app, f"127.0.0.1:{app.port}", data_dir, DevCredentials(data_dir / "pki")))
        async with site.platform() as channel:
            await Operator(channel).partition("dc1")
        poller = EdgePoller(
            "p1", "dc1", edge_channel(site.core.address, site.ca_pem, site.edge_cert("default", "p1"))
        )
        await poller.register()
        stream = poller.sync()
        await stream.next()
    except BaseException:
        await app.stop()
        raise
    await app.stop()
    async with asyncio.timeout(DEADLINE):
        await stream.ended.wait()
    assert stream.error is not None and stream.error.code() == grpc.StatusCode.UNAVAILABLE
    assert "shutting down" in (stream.error.details() or "")
    await poller.close()


async def test_after_missed_signals_heartbeats_learn_the_stored_version_without_losing_memory(
    world: World,
) -> None:
    p1 = await world.poller("p1", "dc1", heartbeats=False)
    before = await p1.heartbeat()
    app = world.site.app
    # A configuration change whose ConfigChanged signal this replica missed.
    async with app.db.begin() as conn:
        await conn.execute(
            pollers.update().where(pollers.c.poller_id == "p1").values(desired_config_version="v-missed")
        )
    assert (await p1.heartbeat()).config_version == before.config_version
    # The signal bus says signals were lost: the registry re-reads every version in one read.
    await app.signals.publish([Resync()])
    answer = await eventually(p1.heartbeat, lambda a: a.config_version == "v-missed")
    assert answer.config_outdated
