"""The pure alert rules: state machine, deduplication, escalation timing, cooldown and
flapping, the rules' thresholds, and the notification payloads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from srcore.domain import alerts as rules
from srcore.domain.alerts import (
    AlertCause,
    AlertState,
    Condition,
    Facts,
    Key,
    Message,
    Notice,
    OpenAlert,
    Rule,
    SweepPair,
    Thresholds,
)
from srcore.domain.errors import FailedPrecondition

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
DELAY = timedelta(minutes=15)
KEY = Key("acme", Rule.POLLER_OFFLINE, "p1")
FIRING = Condition(KEY, "poller p1 is offline")


def test_operators_move_alerts_along_the_table_only() -> None:
    ack = rules.transition(
        AlertState.PENDING,
        AlertState.ACKNOWLEDGED,
        AlertCause.ACKNOWLEDGE,
        tenant="acme",
        alert_id="a",
        at=T0,
    )
    assert (ack.entity_type, ack.from_state, ack.to_state) == ("alert", "pending", "acknowledged")
    rules.transition(
        AlertState.ESCALATED,
        AlertState.ACKNOWLEDGED,
        AlertCause.ACKNOWLEDGE,
        tenant="acme",
        alert_id="a",
        at=T0,
    )
    with pytest.raises(FailedPrecondition, match="already resolved"):
        rules.transition(
            AlertState.RESOLVED, AlertState.RESOLVED, AlertCause.RESOLVE, tenant="acme", alert_id="a", at=T0
        )
    with pytest.raises(FailedPrecondition, match="from resolved to acknowledged"):
        rules.transition(
            AlertState.RESOLVED,
            AlertState.ACKNOWLEDGED,
            AlertCause.ACKNOWLEDGE,
            tenant="acme",
            alert_id="a",
            at=T0,
        )
    # Escalation is the clock's, never an operator's; an acknowledged alert never escalates.
    with pytest.raises(FailedPrecondition):
        rules.transition(
            AlertState.PENDING,
            AlertState.ESCALATED,
            AlertCause.ACKNOWLEDGE,
            tenant="acme",
            alert_id="a",
            at=T0,
        )
    assert (AlertState.ACKNOWLEDGED, AlertState.ESCALATED) not in rules.ALERT_TRANSITIONS
    assert rules.opened("acme", "a", T0).from_state == ""


def test_one_open_alert_per_key() -> None:
    first = rules.plan([], [FIRING, FIRING], T0, DELAY)
    assert first.opens == [FIRING] and not first.resolves
    open_alert = OpenAlert("a1", KEY, AlertState.PENDING, T0)
    again = rules.plan([open_alert], [FIRING], T0 + timedelta(seconds=10), DELAY)
    assert again.empty


def test_an_alert_resolves_when_its_condition_clears() -> None:
    open_alert = OpenAlert("a1", KEY, AlertState.ACKNOWLEDGED, T0)
    cleared = rules.plan([open_alert], [], T0 + timedelta(seconds=10), DELAY)
    assert cleared.resolves == [open_alert] and not cleared.opens


def test_escalation_after_the_delay_unacknowledged_only() -> None:
    pending = OpenAlert("a1", KEY, AlertState.PENDING, T0)
    acked = OpenAlert("a2", Key("acme", Rule.POLLER_OFFLINE, "p2"), AlertState.ACKNOWLEDGED, T0)
    firing = [FIRING, Condition(acked.key, "poller p2 is offline")]
    early = rules.plan([pending, acked], firing, T0 + DELAY - timedelta(seconds=1), DELAY)
    assert early.empty
    due = rules.plan([pending, acked], firing, T0 + DELAY, DELAY)
    assert due.escalations == [pending]
    escalated = OpenAlert("a1", KEY, AlertState.ESCALATED, T0)
    assert rules.plan([escalated, acked], firing, T0 + 2 * DELAY, DELAY).empty


def test_a_flapping_subject_pages_once_within_the_cooldown() -> None:
    cooldown = timedelta(minutes=5)
    opened = rules.plan([], [FIRING], T0, DELAY).opens
    assert opened == [FIRING]
    notified = T0 + timedelta(seconds=1)  # the receiver accepted the page
    first = OpenAlert("a1", KEY, AlertState.PENDING, T0)
    assert rules.plan([first], [], T0 + timedelta(seconds=30), DELAY).resolves == [first]
    reopened = rules.plan([], [FIRING], T0 + timedelta(seconds=60), DELAY).opens
    assert reopened == [FIRING]
    assert rules.cooldown_active(notified, T0 + timedelta(seconds=60), cooldown)
    assert not rules.cooldown_active(notified, notified + cooldown, cooldown)
    # A page that failed recorded nothing, so it consumed no cooldown.
    assert not rules.cooldown_active(None, T0 + timedelta(seconds=60), cooldown)


def test_sweep_availability_drop_beyond_the_threshold() -> None:
    t = Thresholds(sweep_drop=0.2, sweep_min_hosts=5)
    dropped = rules.sweep_drop(SweepPair("acme", "p1", "lan", 100, 100, 100, 70), t)
    assert dropped is not None and dropped.key == Key("acme", Rule.SWEEP_AVAILABILITY_DROP, "p1/lan")
    assert "30 of 100" in dropped.title
    assert rules.sweep_drop(SweepPair("acme", "p1", "lan", 100, 100, 100, 85), t) is None
    # A smaller target is not an outage: 40 fewer hosts scanned, 40 fewer available.
    assert rules.sweep_drop(SweepPair("acme", "p1", "lan", 100, 100, 60, 60), t) is None
    # Too few hosts to judge.
    assert rules.sweep_drop(SweepPair("acme", "p1", "lan", 4, 4, 4, 0), t) is None


def test_ingest_rejects_above_the_ratio_with_enough_results() -> None:
    t = Thresholds(reject_ratio=0.05, reject_min_results=100)
    assert rules.ingest_rejects(rules.IngestWindow("acme", 900, 100), t) is not None
    assert rules.ingest_rejects(rules.IngestWindow("acme", 960, 40), t) is None
    assert rules.ingest_rejects(rules.IngestWindow("acme", 10, 20), t) is None


def test_conditions_name_their_subjects() -> None:
    facts = Facts(
        offline_pollers=[("acme", "p1")],
        down_agents=[("acme", "p2", "a1", "disconnected")],
        failing_checks=[("acme", "p2", "a1", "web", 3)],
    )
    keys = {c.key for c in rules.conditions(facts, Thresholds())}
    assert keys == {
        Key("acme", Rule.POLLER_OFFLINE, "p1"),
        Key("acme", Rule.AGENT_DISCONNECTED, "p2/a1"),
        Key("acme", Rule.CHECK_FAILING, "p2/a1/web"),
    }


def test_payload_formats() -> None:
    message = Message(
        Notice.OPENED, "acme", "poller p1 is offline", "no heartbeat", T0, "a" * 32, "poller_offline", "p1",
        "critical", "pending",
    )  # fmt: skip
    hook = rules.webhook_payload(message)
    assert hook["event"] == "opened" and hook["alert"] == {
        "id": "a" * 32, "rule": "poller_offline", "subject": "p1", "severity": "critical", "state": "pending",
    }  # fmt: skip
    embed = rules.discord_payload(message)["embeds"][0]  # type: ignore[index]
    assert set(embed) == {"title", "description", "color", "fields", "timestamp"}
    assert embed["title"] == "poller p1 is offline" and embed["color"] == 0xE74C3C
    assert {"name": "Subject", "value": "p1", "inline": False} in embed["fields"]
    assert rules.endpoint_of("https://user:pw@discord.com/api/webhooks/1/secret?x=1") == "https://discord.com"


def test_a_notice_nobody_accepted_is_tried_again_later_then_given_up() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    delay = timedelta(seconds=30)
    assert rules.redelivery_at(0, now, delay, max_rounds=4) == now + timedelta(seconds=30)
    assert rules.redelivery_at(2, now, delay, max_rounds=4) == now + timedelta(seconds=120)
    assert rules.redelivery_at(3, now, delay, max_rounds=4) is None
    # However many rounds, a receiver is tried again at least hourly.
    assert rules.redelivery_at(20, now, delay, max_rounds=100) == now + rules.MAX_REDELIVERY_DELAY
