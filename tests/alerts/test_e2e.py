"""Alerts end to end: a real core raises alerts from real pollers going silent, and real HTTP
receivers on 127.0.0.1 get the notifications (generic JSON webhook and Discord embed)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf import text_format

from serviceradar.admin.v1 import alert_service_pb2 as alert_pb
from serviceradar.admin.v1 import alert_service_pb2_grpc as alert_grpc
from serviceradar.admin.v1 import notifier_service_pb2 as notifier_pb
from serviceradar.admin.v1 import notifier_service_pb2_grpc as notifier_grpc
from srcore.security.rbac import Role
from tests.alerts.conftest import Srctl, World, open_world
from tests.alerts.receiver import Received, Receiver
from tests.helpers.core import running_core
from tests.tenancy.support import Site

PENDING = alert_pb.ALERT_STATE_PENDING
ESCALATED, RESOLVED = alert_pb.ALERT_STATE_ESCALATED, alert_pb.ALERT_STATE_RESOLVED
WEBHOOK, DISCORD = notifier_pb.NOTIFIER_KIND_WEBHOOK, notifier_pb.NOTIFIER_KIND_DISCORD


def notice(path: str, event: str, subject: str) -> Callable[[Received], bool]:
    """Selects a webhook notification of `event` about `subject` sent to `path`."""

    def match(r: Received) -> bool:
        body = r.body
        return (
            r.path == path
            and isinstance(body, dict)
            and body.get("event") == event
            and body.get("alert", {}).get("subject") == subject
        )

    return match


def embed_about(subject: str) -> Callable[[Received], bool]:
    """Selects a Discord message whose embed names `subject`."""

    def match(r: Received) -> bool:
        if r.path != "/discord":
            return False
        fields = r.body["embeds"][0]["fields"]
        return any(f["name"] == "Subject" and f["value"] == subject for f in fields)

    return match


async def test_a_silent_poller_pages_webhook_and_discord_and_resolves_when_it_returns(
    any_world: World, receiver: Receiver
) -> None:
    world = any_world
    await world.notifier("hook", WEBHOOK, receiver.url("/hook"), headers={"X-Token": "s3cret-value"})
    await world.notifier("chat", DISCORD, receiver.url("/discord"))
    shown = await world.notifiers.GetNotifier(notifier_pb.GetNotifierRequest(name="hook"))
    # The URL's path and the header value are secrets: never returned.
    assert shown.notifier.endpoint == receiver.url("")
    assert "s3cret" not in text_format.MessageToString(shown) and "/hook" not in shown.notifier.endpoint
    assert list(shown.notifier.header_names) == ["X-Token"]

    poller = await world.silent_poller("edge-7")
    [hook] = await receiver.wait_for(notice("/hook", "opened", "edge-7"))
    assert hook.body["alert"]["rule"] == "poller_offline" and hook.body["alert"]["severity"] == "critical"
    assert hook.body["tenant"] == "default" and hook.body["title"] == "poller edge-7 is offline"
    assert hook.headers["X-Token"] == "s3cret-value"
    [chat] = await receiver.wait_for(embed_about("edge-7"))
    [embed] = chat.body["embeds"]
    assert set(embed) == {"title", "description", "color", "fields", "timestamp"}
    assert embed["title"] == "poller edge-7 is offline" and embed["color"] == 0xE74C3C

    [alert] = await world.wait_alert("edge-7", PENDING)
    got = await world.recorded(alert.alert_id, 2)
    assert got.alert.HasField("notified_at") and not got.alert.suppressed
    assert sorted((d.notifier, d.kind, d.attempt, d.success, d.status_code) for d in got.deliveries) == [
        ("chat", "opened", 1, True, 200),
        ("hook", "opened", 1, True, 200),
    ]

    # Back: the condition clears, the alert resolves by itself and the receivers hear of it.
    await poller.register()
    [resolved] = await world.wait_alert("edge-7", RESOLVED)
    assert resolved.resolved_by == "core"
    await receiver.wait_for(notice("/hook", "resolved", "edge-7"))
    events = [r for r in await world.site.rows("event_outbox") if r["entity_type"] == "alert"]
    assert [e["event_type"] for e in events] == ["pending", "resolved"]
    assert {e["entity_key"] for e in events} == {f"alert:{alert.alert_id}"}


async def test_escalation_then_ack_and_resolve_with_srctl(
    world: World, receiver: Receiver, srctl: Srctl
) -> None:
    await world.notifier("hook", WEBHOOK, receiver.url("/hook"))
    # Escalation after one second (the policy is what the alert_escalation_delay setting builds).
    alerting = world.site.app.alerting
    alerting.policy = replace(alerting.policy, escalate_after=timedelta(seconds=1))
    await world.silent_poller("edge-9")
    await receiver.wait_for(notice("/hook", "opened", "edge-9"))
    [escalated] = await world.wait_alert("edge-9", ESCALATED)
    assert escalated.HasField("escalated_at")
    await receiver.wait_for(notice("/hook", "escalated", "edge-9"))

    code, out, err = await srctl("alerts", "list", "--open", "-o", "json")
    assert code == 0, err
    assert [a["alert_id"] for a in json.loads(out)["alerts"]] == [escalated.alert_id]
    code, out, err = await srctl("alerts", "ack", escalated.alert_id, "--note", "on it", "-o", "json")
    assert code == 0, err
    acked = json.loads(out)["alert"]
    assert acked["state"] == "ALERT_STATE_ACKNOWLEDGED" and acked["acknowledged_by"].startswith("cert:")
    # Twice is an illegal transition: FAILED_PRECONDITION, which srctl reports as a server error.
    code, _, err = await srctl("alerts", "ack", escalated.alert_id)
    assert code == 1 and "acknowledged" in err
    code, out, err = await srctl("alerts", "resolve", escalated.alert_id, "-o", "json")
    assert code == 0, err
    assert json.loads(out)["alert"]["state"] == "ALERT_STATE_RESOLVED"
    await receiver.wait_for(notice("/hook", "resolved", "edge-9"))
    code, out, err = await srctl("alerts", "get", escalated.alert_id)
    assert code == 0 and "escalated" in out and "opened" in out, err
    code, _, err = await srctl("alerts", "get", "0" * 32)
    assert code == 4, err


async def test_a_failing_receiver_is_retried_and_a_failed_page_consumes_no_cooldown(
    world: World, receiver: Receiver
) -> None:
    await world.notifier("hook", WEBHOOK, receiver.url("/hook"))
    # p1: 500 then 200. Every attempt is recorded, and the success starts the cooldown.
    receiver.script = [500]
    p1 = await world.silent_poller("p1")
    await receiver.wait_for(notice("/hook", "opened", "p1"), count=2)
    [first] = await world.wait_alert("p1", PENDING)
    got = await world.recorded(first.alert_id, 2)
    assert [(d.attempt, d.success, d.status_code) for d in got.deliveries] == [
        (1, False, 500),
        (2, True, 200),
    ]
    assert got.deliveries[0].error == "HTTP 500 Internal Server Error"
    assert got.alert.HasField("notified_at")

    # p2: every attempt fails. Nothing is recorded as notified, so no cooldown starts.
    receiver.script = [500, 500, 500]
    p2 = await world.silent_poller("p2")
    await receiver.wait_for(notice("/hook", "opened", "p2"), count=3)
    [second] = await world.wait_alert("p2", PENDING)
    got = await world.recorded(second.alert_id, 3)
    assert [(d.attempt, d.success) for d in got.deliveries] == [(1, False), (2, False), (3, False)]
    assert not got.alert.HasField("notified_at")

    # Both flap: back, then silent again, well within the cooldown.
    await p1.register()
    await p2.register()
    await world.wait_alert("p1", RESOLVED)
    await world.wait_alert("p2", RESOLVED)
    [again_p1] = [a for a in await world.wait_alert("p1", PENDING) if a.alert_id != first.alert_id]
    [again_p2] = [a for a in await world.wait_alert("p2", PENDING) if a.alert_id != second.alert_id]
    # p2's failed page consumed no cooldown: the new alert is paged (and accepted now).
    paged = await receiver.wait_for(notice("/hook", "opened", "p2"), count=4)
    assert paged[-1].status == 200 and paged[-1].body["alert"]["id"] == again_p2.alert_id
    # p1 was paged successfully a moment ago: its new alert is suppressed, not paged twice.
    async with asyncio.timeout(20):
        while not got.alert.suppressed:
            await asyncio.sleep(0.1)
            got = await world.alerts.GetAlert(alert_pb.GetAlertRequest(alert_id=again_p1.alert_id))
    assert not got.deliveries
    assert len(receiver.bodies(notice("/hook", "opened", "p1"))) == 2


async def test_a_page_no_receiver_accepted_is_sent_again_in_a_later_round(
    tmp_path: Path, receiver: Receiver
) -> None:
    async for world in open_world(tmp_path / "data", alert_redelivery_delay=1.0):
        await world.notifier("hook", WEBHOOK, receiver.url("/hook"))
        # The receiver is down for a whole round (three attempts), then back.
        receiver.script = [503, 503, 503]
        await world.silent_poller("p3")
        await receiver.wait_for(notice("/hook", "opened", "p3"), count=4)
        [alert] = await world.wait_alert("p3", PENDING)
        got = await world.recorded(alert.alert_id, 4)
        assert [(d.attempt, d.success, d.status_code) for d in got.deliveries] == [
            (1, False, 503),
            (2, False, 503),
            (3, False, 503),
            (1, True, 200),
        ]
        assert got.alert.HasField("notified_at")


async def test_srctl_notifiers_crud_and_test_sends_a_sample(
    world: World, receiver: Receiver, srctl: Srctl
) -> None:
    code, out, err = await srctl(
        "notifiers", "create", "ops", "--kind", "discord", "--url", receiver.url("/api/webhooks/1/t0ken"),
        "-o", "json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["notifier"]["endpoint"] == receiver.url("") and "t0ken" not in out
    code, out, err = await srctl("notifiers", "test", "ops", "-o", "json")
    assert code == 0, err
    assert json.loads(out)["success"] is True
    [sample] = await receiver.wait_for(lambda r: r.path == "/api/webhooks/1/t0ken")
    assert sample.body["embeds"][0]["title"].startswith("[test] ")

    code, out, err = await srctl("notifiers", "update", "ops", "--url", receiver.url("/moved"), "--disable")
    assert code == 0, err
    receiver.script = [404]
    code, out, err = await srctl("notifiers", "test", "ops", "-o", "json")
    # 404 is not retried: one attempt, reported, exit code 1.
    assert code == 1
    [attempt] = json.loads(out)["attempts"]
    assert attempt["status_code"] == 404 and attempt["success"] is False
    code, out, _ = await srctl("notifiers", "list")
    assert code == 0 and "ops" in out and "moved" not in out
    code, _, err = await srctl("notifiers", "create", "bad", "--kind", "webhook", "--url", "ftp://x")
    assert code == 1 and "url" in err
    code, _, err = await srctl("notifiers", "delete", "ops")
    assert code == 0, err
    code, _, _ = await srctl("notifiers", "get", "ops")
    assert code == 4


async def test_another_tenant_cannot_see_or_ack_the_alerts(world: World) -> None:
    site = world.site
    for tenant in ("alpha", "beta"):
        await site.create_tenant(tenant)
    await world.silent_poller("alpha-edge", tenant="alpha")
    [alert] = await world.wait_alert("alpha-edge", PENDING)
    assert alert.tenant == "alpha"
    beta = await site.create_token("beta", Role.ADMIN)
    async with site.admin_port(beta.secret) as channel:
        stub = alert_grpc.AlertServiceStub(channel)
        assert not (await stub.ListAlerts(alert_pb.ListAlertsRequest())).alerts
        for call in (
            stub.GetAlert(alert_pb.GetAlertRequest(alert_id=alert.alert_id)),
            stub.AcknowledgeAlert(alert_pb.AcknowledgeAlertRequest(alert_id=alert.alert_id)),
            stub.ResolveAlert(alert_pb.ResolveAlertRequest(tenant="alpha", alert_id=alert.alert_id)),
            stub.ListAlerts(alert_pb.ListAlertsRequest(tenant="alpha")),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    [still] = await world.alerts_of("alpha-edge")
    assert still.state == PENDING
    # A viewer of alpha sees it but may not acknowledge it.
    viewer = await site.create_token("alpha", Role.VIEWER)
    async with site.admin_port(viewer.secret) as channel:
        stub = alert_grpc.AlertServiceStub(channel)
        assert [a.alert_id for a in (await stub.ListAlerts(alert_pb.ListAlertsRequest())).alerts] == [
            alert.alert_id
        ]
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.AcknowledgeAlert(alert_pb.AcknowledgeAlertRequest(alert_id=alert.alert_id))
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_replicas_announce_start_and_stop_to_the_default_tenant(
    tmp_path: Path, receiver: Receiver
) -> None:
    data = tmp_path / "data"
    async with running_core(data) as core, Site(core).platform() as channel:
        await notifier_grpc.NotifierServiceStub(channel).CreateNotifier(
            notifier_pb.CreateNotifierRequest(name="ops", kind=WEBHOOK, url=receiver.url("/core"))
        )
    [stopped] = await receiver.wait_for(lambda r: r.body.get("event") == "core_stopped")
    async with running_core(data) as core:
        [started] = await receiver.wait_for(lambda r: r.body.get("event") == "core_started")
        assert core.app.replica_id in started.body["title"]
    assert "alert" not in stopped.body and stopped.body["tenant"] == "default"
