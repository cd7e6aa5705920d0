"""Alerts: the rules that raise them, their state machine, deduplication and notification.

Rules turn facts the store reads in a few set-based queries (pollers offline, agents down,
checks failing, the last two executions of each sweep, ingest totals of a window) into
firing `Condition`s. `plan()` compares the conditions with the open alerts and decides what
to open, what resolves (its condition cleared) and what escalates (unacknowledged for longer
than the escalation delay). One alert is open at a time per (tenant, rule, subject).

States follow a transition table in the style of domain/states.py:

    (opened) -> pending -> acknowledged -> resolved
                pending -> escalated -> acknowledged | resolved
                pending -> resolved

Notifications are decided here too: an alert's opening is paged unless the same key was paged
within the cooldown (`cooldown_active`), so a flapping subject pages once. The cooldown is
consumed by a *successful* send only (the store records `notified_at` after the receiver
accepted it), so a failed page never silences the next one.

Pure: no clock, no I/O. Callers pass the time.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from srcore.domain.errors import FailedPrecondition
from srcore.domain.model import Transition

ENTITY_TYPE = "alert"
"""The `entity_type` of alert transitions and events."""

CORE_ACTOR = "core"
"""Who resolves an alert whose condition cleared."""


class AlertState(enum.StrEnum):
    """Where an alert is in its life."""

    PENDING = "pending"
    ACKNOWLEDGED = "acknowledged"
    ESCALATED = "escalated"
    RESOLVED = "resolved"

    @property
    def open(self) -> bool:
        """Whether the alert still counts as the open alert of its key."""
        return self != AlertState.RESOLVED


OPENED_FROM = ""
"""The from_state recorded when an alert is raised (it was in no state before)."""


class AlertCause(enum.StrEnum):
    """Why an alert changes state; the value is the reason recorded with the transition."""

    RAISED = "raised"
    CLEARED = "condition_cleared"
    ESCALATION_TIMEOUT = "escalation_timeout"
    ACKNOWLEDGE = "acknowledge"
    RESOLVE = "resolve"


class Rule(enum.StrEnum):
    """What raised an alert."""

    POLLER_OFFLINE = "poller_offline"
    AGENT_DISCONNECTED = "agent_disconnected"
    CHECK_FAILING = "check_failing"
    SWEEP_AVAILABILITY_DROP = "sweep_availability_drop"
    INGEST_REJECTS = "ingest_rejects"


class Severity(enum.StrEnum):
    """How urgent an alert is."""

    WARNING = "warning"
    CRITICAL = "critical"


SEVERITY: Mapping[Rule, Severity] = {
    Rule.POLLER_OFFLINE: Severity.CRITICAL,
    Rule.AGENT_DISCONNECTED: Severity.WARNING,
    Rule.CHECK_FAILING: Severity.WARNING,
    Rule.SWEEP_AVAILABILITY_DROP: Severity.WARNING,
    Rule.INGEST_REJECTS: Severity.WARNING,
}

_S = AlertState
_C = AlertCause
ALERT_TRANSITIONS: Mapping[tuple[AlertState, AlertState], frozenset[AlertCause]] = {
    (_S.PENDING, _S.ACKNOWLEDGED): frozenset({_C.ACKNOWLEDGE}),
    (_S.PENDING, _S.ESCALATED): frozenset({_C.ESCALATION_TIMEOUT}),
    (_S.PENDING, _S.RESOLVED): frozenset({_C.CLEARED, _C.RESOLVE}),
    (_S.ESCALATED, _S.ACKNOWLEDGED): frozenset({_C.ACKNOWLEDGE}),
    (_S.ESCALATED, _S.RESOLVED): frozenset({_C.CLEARED, _C.RESOLVE}),
    (_S.ACKNOWLEDGED, _S.RESOLVED): frozenset({_C.CLEARED, _C.RESOLVE}),
}


def opened(tenant: str, alert_id: str, at: datetime, detail: str = "") -> Transition:
    """The Transition recording that an alert was raised (from no state to pending)."""
    reason = f"{AlertCause.RAISED}: {detail}" if detail else str(AlertCause.RAISED)
    return Transition(tenant, ENTITY_TYPE, alert_id, OPENED_FROM, str(AlertState.PENDING), reason[:255], at)


def transition(
    current: AlertState,
    target: AlertState,
    cause: AlertCause,
    *,
    tenant: str,
    alert_id: str,
    at: datetime,
    detail: str = "",
) -> Transition:
    """The Transition for moving an alert from `current` to `target` because of `cause`.

    FailedPrecondition naming the current state when the table has no such edge, or the edge
    exists but not for this cause ("alert is already resolved").
    """
    if current == target:
        raise FailedPrecondition(f"alert {alert_id} is already {current}")
    causes = ALERT_TRANSITIONS.get((current, target))
    if causes is None or cause not in causes:
        raise FailedPrecondition(f"cannot move alert {alert_id} from {current} to {target}")
    reason = f"{cause}: {detail}" if detail else str(cause)
    return Transition(tenant, ENTITY_TYPE, alert_id, str(current), str(target), reason[:255], at)


# ---- rules ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The settings the rules compare against (docs/alerts.md)."""

    sweep_drop: float = 0.2
    """Fraction of the previous execution's available hosts that may vanish before alerting."""
    sweep_min_hosts: int = 5
    """Below this many available hosts in the previous execution, drops are not judged."""
    reject_ratio: float = 0.05
    """Rejected / (accepted + rejected) over the window above which ingest alerts."""
    reject_min_results: int = 100
    """Results (accepted + rejected) a window needs before its ratio is judged."""


@dataclass(frozen=True, slots=True)
class Key:
    """What deduplicates alerts: one open alert per key."""

    tenant: str
    rule: Rule
    subject: str


@dataclass(frozen=True, slots=True)
class Condition:
    """A rule that fires now for one subject."""

    key: Key
    title: str
    detail: str = ""

    @property
    def severity(self) -> Severity:
        """The rule's severity."""
        return SEVERITY[self.key.rule]


@dataclass(frozen=True, slots=True)
class SweepPair:
    """The last two completed executions of one sweep of one poller."""

    tenant: str
    poller_id: str
    sweep_id: str
    previous_total: int
    previous_available: int
    latest_total: int
    latest_available: int


@dataclass(frozen=True, slots=True)
class IngestWindow:
    """Results a tenant's batches accepted and rejected over the evaluation window."""

    tenant: str
    accepted: int
    rejected: int


@dataclass(frozen=True, slots=True)
class Facts:
    """What the store observed in one evaluation round."""

    offline_pollers: Sequence[tuple[str, str]] = ()
    """(tenant, poller id)"""
    down_agents: Sequence[tuple[str, str, str, str]] = ()
    """(tenant, poller id, agent id, state)"""
    failing_checks: Sequence[tuple[str, str, str, str, int]] = ()
    """(tenant, poller id, agent id, check name, consecutive failures)"""
    sweeps: Sequence[SweepPair] = ()
    ingest: Sequence[IngestWindow] = ()


def sweep_drop(pair: SweepPair, thresholds: Thresholds) -> Condition | None:
    """A condition when the sweep's available hosts fell by more than the threshold.

    Judged on available hosts, not on the ratio to the total: a sweep whose target shrank
    reports fewer hosts available without anything being down, so a drop in total hosts
    scanned lowers the baseline by the same amount.
    """
    before = pair.previous_available
    if before < max(1, thresholds.sweep_min_hosts):
        return None
    shrink = max(0, pair.previous_total - pair.latest_total)
    lost = before - pair.latest_available - shrink
    if lost <= 0 or lost / before <= thresholds.sweep_drop:
        return None
    key = Key(pair.tenant, Rule.SWEEP_AVAILABILITY_DROP, f"{pair.poller_id}/{pair.sweep_id}")
    return Condition(
        key,
        f"sweep {pair.sweep_id} of poller {pair.poller_id}: {lost} of {before} available hosts gone",
        f"available hosts {before}/{pair.previous_total} -> {pair.latest_available}/{pair.latest_total} "
        f"(drop {lost / before:.0%}, threshold {thresholds.sweep_drop:.0%})",
    )


def ingest_rejects(window: IngestWindow, thresholds: Thresholds) -> Condition | None:
    """A condition when the window's reject ratio is above the threshold (and the window
    saw enough results for a ratio to mean something)."""
    total = window.accepted + window.rejected
    if total < max(1, thresholds.reject_min_results):
        return None
    ratio = window.rejected / total
    if ratio <= thresholds.reject_ratio:
        return None
    return Condition(
        Key(window.tenant, Rule.INGEST_REJECTS, "ingest"),
        f"ingest rejected {ratio:.1%} of results",
        f"{window.rejected} rejected, {window.accepted} accepted (threshold {thresholds.reject_ratio:.1%})",
    )


def conditions(facts: Facts, thresholds: Thresholds) -> list[Condition]:
    """Every condition firing given `facts`."""
    found: list[Condition] = [
        Condition(Key(t, Rule.POLLER_OFFLINE, p), f"poller {p} is offline", "no heartbeat within the timeout")
        for t, p in facts.offline_pollers
    ]
    found.extend(
        Condition(Key(t, Rule.AGENT_DISCONNECTED, f"{p}/{a}"), f"agent {a} of poller {p} is {state}")
        for t, p, a, state in facts.down_agents
    )
    found.extend(
        Condition(
            Key(t, Rule.CHECK_FAILING, f"{p}/{a}/{name}" if a else f"{p}/{name}"),
            f"check {name} on poller {p} is failing",
            f"{failures} failed results in a row",
        )
        for t, p, a, name, failures in facts.failing_checks
    )
    for pair in facts.sweeps:
        drop = sweep_drop(pair, thresholds)
        if drop is not None:
            found.append(drop)
    for window in facts.ingest:
        rejects = ingest_rejects(window, thresholds)
        if rejects is not None:
            found.append(rejects)
    return found


# ---- planning ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenAlert:
    """An open alert as the evaluator needs it."""

    alert_id: str
    key: Key
    state: AlertState
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Plan:
    """What one evaluation round changes."""

    opens: list[Condition]
    resolves: list[OpenAlert]
    escalations: list[OpenAlert]

    @property
    def empty(self) -> bool:
        """Whether nothing changes."""
        return not (self.opens or self.resolves or self.escalations)


def plan(
    open_alerts: Iterable[OpenAlert],
    firing: Iterable[Condition],
    now: datetime,
    escalate_after: timedelta,
) -> Plan:
    """Open an alert for every firing key without one, resolve the open alerts whose condition
    cleared, and escalate the pending ones raised more than `escalate_after` ago.

    A key firing twice in one round (it cannot, but a rule could be written so) opens once.
    """
    by_key = {alert.key: alert for alert in open_alerts}
    wanted: dict[Key, Condition] = {}
    for condition in firing:
        wanted.setdefault(condition.key, condition)
    opens = [c for k, c in wanted.items() if k not in by_key]
    resolves = [a for k, a in by_key.items() if k not in wanted]
    escalations = [
        a
        for k, a in by_key.items()
        if k in wanted and a.state == AlertState.PENDING and now - a.created_at >= escalate_after
    ]
    return Plan(opens, resolves, escalations)


class Notice(enum.StrEnum):
    """What a notification says about an alert (or the core)."""

    OPENED = "opened"
    ESCALATED = "escalated"
    RESOLVED = "resolved"
    TEST = "test"
    CORE_STARTED = "core_started"
    CORE_STOPPED = "core_stopped"


def cooldown_active(last_notified: datetime | None, now: datetime, cooldown: timedelta) -> bool:
    """Whether a page of the same key went out less than `cooldown` ago, so this opening
    is not paged again (the flapping case)."""
    return last_notified is not None and now - last_notified < cooldown


# A receiver down for long is tried again at most this far apart.
MAX_REDELIVERY_DELAY = timedelta(hours=1)


def redelivery_at(rounds_done: int, now: datetime, delay: timedelta, max_rounds: int) -> datetime | None:
    """When to try again a notice no receiver accepted in its `rounds_done + 1`-th round:
    `delay` doubling per round (capped), or None once `max_rounds` rounds failed."""
    if rounds_done + 1 >= max_rounds:
        return None
    return now + min(delay * (1 << min(rounds_done, 30)), MAX_REDELIVERY_DELAY)


# ---- notification payloads -----------------------------------------------------------------


class NotifierKind(enum.StrEnum):
    """The payload format a notifier sends."""

    WEBHOOK = "webhook"
    DISCORD = "discord"


@dataclass(frozen=True, slots=True)
class Message:
    """One notification, whatever the receiver's format."""

    notice: Notice
    tenant: str
    title: str
    detail: str
    at: datetime
    alert_id: str = ""
    rule: str = ""
    subject: str = ""
    severity: str = ""
    state: str = ""


# Discord embed colours: red for critical, amber for warning, green once over, blue for info.
_COLOURS = {"critical": 0xE74C3C, "warning": 0xF39C12}
_RESOLVED_COLOUR = 0x2ECC71
_INFO_COLOUR = 0x3498DB


def webhook_payload(message: Message) -> dict[str, object]:
    """The generic webhook's JSON document (docs/alerts.md)."""
    payload: dict[str, object] = {
        "event": str(message.notice),
        "tenant": message.tenant,
        "title": message.title,
        "detail": message.detail,
        "timestamp": message.at.isoformat(),
    }
    if message.alert_id:
        payload["alert"] = {
            "id": message.alert_id,
            "rule": message.rule,
            "subject": message.subject,
            "severity": message.severity,
            "state": message.state,
        }
    return payload


def discord_payload(message: Message) -> dict[str, object]:
    """A Discord webhook message with one embed: {"embeds": [{title, description, color,
    fields, timestamp}]}."""
    if message.notice == Notice.RESOLVED:
        colour = _RESOLVED_COLOUR
    else:
        colour = _COLOURS.get(message.severity, _INFO_COLOUR)
    fields = [{"name": "Tenant", "value": message.tenant, "inline": True}]
    if message.alert_id:
        fields += [
            {"name": "Rule", "value": message.rule, "inline": True},
            {"name": "Severity", "value": message.severity, "inline": True},
            {"name": "Subject", "value": message.subject, "inline": False},
            {"name": "State", "value": message.state, "inline": True},
            {"name": "Alert", "value": message.alert_id, "inline": True},
        ]
    prefix = {Notice.OPENED: "", Notice.TEST: "[test] "}.get(message.notice, f"[{message.notice}] ")
    embed = {
        # Discord caps titles at 256 and descriptions at 4096 characters.
        "title": (prefix + message.title)[:256],
        "description": (message.detail or message.title)[:4096],
        "color": colour,
        "fields": fields,
        "timestamp": message.at.isoformat(),
    }
    return {"embeds": [embed]}


def payload(kind: NotifierKind, message: Message) -> dict[str, object]:
    """The JSON body a notifier of `kind` sends for `message`."""
    return discord_payload(message) if kind == NotifierKind.DISCORD else webhook_payload(message)


def endpoint_of(url: str) -> str:
    """The part of a webhook URL that is safe to show: scheme and host (and port)."""
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1]
    return f"{scheme}://{host}"
