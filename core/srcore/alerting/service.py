"""The alerting service: evaluation and delivery (leader jobs), operators' acknowledge and
resolve, notifiers, and the core's own start and stop notices.

Evaluation and delivery are separate leader jobs: the evaluator writes what changed (with
the notice to send queued on the alert) and wakes the deliverer, so a slow or failing
receiver, retried with backoff, never delays the next evaluation.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from srcore.alerting.delivery import Attempt, Sender
from srcore.domain import alerts as rules
from srcore.domain import validation
from srcore.domain.alerts import AlertCause, AlertState, Message, Notice, NotifierKind, Plan, Thresholds
from srcore.domain.coordination import LeaderInfo
from srcore.domain.errors import DomainError, InvalidArgument
from srcore.domain.leadership import LeaderJob, Leadership, every
from srcore.domain.work import http_url
from srcore.security.credentials import CredentialVault
from srcore.store.alerts import AlertRecord, AlertRepository, DeliveryRecord, NotifierRecord

log = logging.getLogger(__name__)

# Notices sent per delivery round; the rest wait for the next one (it follows at once).
DELIVERY_BATCH = 100
# The tenant whose notifiers hear of replicas starting and stopping: the platform operators'.
CORE_NOTICE_TENANT = "default"
MAX_HEADERS = 16
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}")
_URL_KEY = "url"
_HEADER_PREFIX = "header:"


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """The alerting settings (docs/alerts.md)."""

    evaluation_interval: float = 10.0
    escalate_after: timedelta = timedelta(minutes=15)
    cooldown: timedelta = timedelta(minutes=5)
    reject_window: timedelta = timedelta(minutes=5)
    delivery_interval: float = 5.0
    delivery_rounds: int = 8
    redelivery_delay: timedelta = timedelta(seconds=30)
    thresholds: Thresholds = field(default_factory=Thresholds)
    core_notices: bool = True

    def next_round(self, rounds_done: int, now: datetime) -> datetime | None:
        """When a notice that no receiver accepted is tried again; None to give up."""
        return rules.redelivery_at(rounds_done, now, self.redelivery_delay, self.delivery_rounds)


@dataclass(frozen=True, slots=True)
class NotifierChange:
    """An operator's change of a notifier; None keeps the value."""

    kind: NotifierKind | None = None
    url: str | None = None
    headers: Mapping[str, str] | None = None
    enabled: bool | None = None


def check_url(value: str) -> str:
    """An http(s) URL with a host, checked as work items' URLs are; INVALID_ARGUMENT naming `url`."""
    return http_url("url", value)


def check_headers(values: Mapping[str, str]) -> dict[str, str]:
    """Extra headers: at most 16, token names, single-line values."""
    if len(values) > MAX_HEADERS:
        raise InvalidArgument("headers", f"at most {MAX_HEADERS}")
    for name, value in values.items():
        if not _HEADER_NAME.fullmatch(name):
            raise InvalidArgument(f"headers[{name[:64]}]", "not a valid header name")
        if len(value) > 4096 or "\r" in value or "\n" in value:
            raise InvalidArgument(f"headers[{name}]", "must be one line of at most 4096 characters")
    return dict(values)


def _headers_of(config: Mapping[str, str]) -> dict[str, str]:
    return {k.removeprefix(_HEADER_PREFIX): v for k, v in config.items() if k != _URL_KEY}


def _message(alert: AlertRecord, notice: Notice, at: datetime) -> Message:
    return Message(
        notice=notice,
        tenant=alert.tenant,
        title=alert.title,
        detail=alert.detail,
        at=at,
        alert_id=alert.alert_id,
        rule=alert.rule,
        subject=alert.subject,
        severity=alert.severity,
        state=alert.state.value,
    )


class Alerting:
    """Alerts and notifiers of every tenant."""

    def __init__(
        self,
        repository: AlertRepository,
        vault: CredentialVault,
        sender: Sender,
        clock: Callable[[], datetime],
        replica_id: str,
        fencing_token: Callable[[], int],
        policy: AlertPolicy,
    ) -> None:
        self.repository = repository
        self._vault = vault
        self._sender = sender
        self._clock = clock
        self._replica_id = replica_id
        self._fencing_token = fencing_token
        self.policy = policy
        self._delivery: Leadership | None = None

    # ---- leader jobs -----------------------------------------------------------------------

    def jobs(self) -> dict[str, LeaderJob]:
        """The leader jobs: evaluation every interval, and delivery."""
        return {
            "alerts": every(self.policy.evaluation_interval, self.evaluate),
            "alert-delivery": self._deliver_job,
        }

    async def evaluate(self, leader: LeaderInfo) -> Plan:
        """One evaluation round: read the facts, plan, write (fenced); returns the plan."""
        now = self._clock()
        facts = await self.repository.facts(now - self.policy.reject_window)
        firing = rules.conditions(facts, self.policy.thresholds)
        open_alerts = await self.repository.open_alerts()
        plan = rules.plan(open_alerts, firing, now, self.policy.escalate_after)
        if plan.empty:
            return plan
        await self.repository.apply(plan, now, leader, self._replica_id)
        log.info(
            "alerts: %d raised, %d escalated, %d resolved",
            len(plan.opens), len(plan.escalations), len(plan.resolves),
        )  # fmt: skip
        self._wake_delivery()
        return plan

    def _wake_delivery(self) -> None:
        if self._delivery is not None:
            self._delivery.wake()

    async def _deliver_job(self, leadership: Leadership) -> None:
        self._delivery = leadership
        try:
            while True:
                while await self.deliver_pending(leadership.info) >= DELIVERY_BATCH:
                    if leadership.stopping:
                        return
                if not await leadership.sleep(self.policy.delivery_interval):
                    return
        finally:
            if self._delivery is leadership:
                self._delivery = None

    async def deliver_pending(self, leader: LeaderInfo) -> int:
        """Send the queued notices (a leader job's round); returns how many were handled."""
        pending = await self.repository.pending_notifications(DELIVERY_BATCH, self._clock())
        # A round's alerts are mostly of a few tenants: their notifiers are read once per round.
        targets: dict[str, list[NotifierRecord]] = {}
        for alert in pending:
            if alert.tenant not in targets:
                targets[alert.tenant] = await self._enabled_notifiers(alert.tenant)
            await self._deliver(alert, Notice(alert.notify_pending), targets[alert.tenant], leader)
        return len(pending)

    async def _enabled_notifiers(self, tenant: str) -> list[NotifierRecord]:
        return await self.repository.list_notifiers(tenant, 1000, None, enabled_only=True)

    async def _deliver(
        self, alert: AlertRecord, notice: Notice, targets: list[NotifierRecord], leader: LeaderInfo
    ) -> None:
        now = self._clock()
        if notice == Notice.OPENED:
            last = await self.repository.last_notified(alert.key, alert.alert_id)
            if rules.cooldown_active(last, now, self.policy.cooldown):
                await self.repository.finish_notification(
                    alert.alert_id, notice, [], delivered=False, suppressed=True, now=now, leader=leader
                )
                return
        message = _message(alert, notice, now)
        outcomes = await asyncio.gather(*(self._send(n, message) for n in targets))
        records = [
            DeliveryRecord(
                alert.tenant,
                alert.alert_id,
                n.name,
                notice.value,
                a.attempt,
                a.success,
                a.status_code,
                a.error,
                a.at,
            )
            for n, attempts in zip(targets, outcomes, strict=True)
            for a in attempts
        ]
        delivered = any(attempts and attempts[-1].success for attempts in outcomes)
        finished = self._clock()
        retry_at = None
        if targets and not delivered:
            retry_at = self.policy.next_round(alert.notify_rounds, finished)
            if retry_at is None:
                log.warning(
                    "alert %s: no notifier accepted the %s notice in %d rounds; giving up",
                    alert.alert_id, notice, alert.notify_rounds + 1,
                )  # fmt: skip
            else:
                log.warning(
                    "alert %s: no notifier accepted the %s notice; next round at %s",
                    alert.alert_id, notice, retry_at.isoformat(),
                )  # fmt: skip
        await self.repository.finish_notification(
            alert.alert_id,
            notice,
            records,
            delivered=delivered,
            suppressed=False,
            now=finished,
            leader=leader,
            retry_at=retry_at,
        )

    async def _send(self, notifier: NotifierRecord, message: Message) -> list[Attempt]:
        try:
            config = self._vault.open(notifier.tenant, notifier.notifier_id, notifier.sealed)
        except DomainError as exc:
            return [Attempt(1, False, 0, f"cannot open the notifier's sealed URL: {exc}", self._clock())]
        return await self._sender.send(
            config[_URL_KEY], _headers_of(config), rules.payload(notifier.kind, message)
        )

    # ---- operators -------------------------------------------------------------------------

    async def acknowledge(self, tenant: str, alert_id: str, actor: str, note: str) -> AlertRecord:
        """Acknowledge a pending or escalated alert (it stops escalating)."""
        return await self.repository.change_state(
            tenant, alert_id, AlertState.ACKNOWLEDGED, AlertCause.ACKNOWLEDGE, actor, note,
            self._clock(), self._replica_id, self._fencing_token(),
        )  # fmt: skip

    async def resolve(self, tenant: str, alert_id: str, actor: str, note: str) -> AlertRecord:
        """Resolve an open alert by hand; a condition still firing raises a new one next round."""
        record = await self.repository.change_state(
            tenant, alert_id, AlertState.RESOLVED, AlertCause.RESOLVE, actor, note,
            self._clock(), self._replica_id, self._fencing_token(),
        )  # fmt: skip
        self._wake_delivery()
        return record

    # ---- notifiers -------------------------------------------------------------------------

    def _seal(self, tenant: str, notifier_id: str, url: str, headers: Mapping[str, str]) -> NotifierRecord:
        config = {_URL_KEY: url, **{_HEADER_PREFIX + k: v for k, v in headers.items()}}
        now = self._clock()
        return NotifierRecord(
            tenant=tenant,
            name="",
            notifier_id=notifier_id,
            kind=NotifierKind.WEBHOOK,
            enabled=True,
            endpoint=rules.endpoint_of(url)[:255],
            header_names=tuple(sorted(headers)),
            sealed=self._vault.seal(tenant, notifier_id, config),
            created_at=now,
            updated_at=now,
        )

    async def create_notifier(
        self,
        tenant: str,
        name: str,
        kind: NotifierKind,
        url: str,
        headers: Mapping[str, str],
        enabled: bool,
    ) -> NotifierRecord:
        """Store a notifier with its URL and headers sealed."""
        sealed = self._seal(tenant, uuid.uuid4().hex, check_url(url), check_headers(headers))
        record = replace(sealed, name=validation.slug("name", name), kind=kind, enabled=enabled)
        return await self.repository.create_notifier(record)

    async def update_notifier(self, tenant: str, name: str, change: NotifierChange) -> NotifierRecord:
        """Apply `change`; the URL and headers are re-sealed only when either changes."""
        current = await self.repository.get_notifier(tenant, name)
        updated = current
        if change.url is not None or change.headers is not None:
            config = self._vault.open(tenant, current.notifier_id, current.sealed)
            url = check_url(change.url) if change.url is not None else config[_URL_KEY]
            headers = check_headers(change.headers) if change.headers is not None else _headers_of(config)
            sealed = self._seal(tenant, current.notifier_id, url, headers)
            updated = replace(
                updated, endpoint=sealed.endpoint, header_names=sealed.header_names, sealed=sealed.sealed
            )
        if change.kind is not None:
            updated = replace(updated, kind=change.kind)
        if change.enabled is not None:
            updated = replace(updated, enabled=change.enabled)
        return await self.repository.update_notifier(replace(updated, updated_at=self._clock()))

    async def test_notifier(self, tenant: str, name: str) -> list[Attempt]:
        """Send a sample alert to one notifier now; every attempt made."""
        notifier = await self.repository.get_notifier(tenant, name)
        sample = Message(
            notice=Notice.TEST,
            tenant=tenant,
            title=f"test notification from ServiceRadar to {name}",
            detail="This is a sample alert sent by `srctl notifiers test`; nothing is wrong.",
            at=self._clock(),
            alert_id="0" * 32,
            rule=rules.Rule.POLLER_OFFLINE.value,
            subject="sample-poller",
            severity=rules.Severity.WARNING.value,
            state=AlertState.PENDING.value,
        )
        return await self._send(notifier, sample)

    # ---- the core's own notices ------------------------------------------------------------

    async def core_notice(self, notice: Notice, detail: str) -> int:
        """Tell the platform tenant's notifiers that this replica started or stops; returns
        how many accepted. Not an alert: nothing is stored but the log line."""
        if not self.policy.core_notices:
            return 0
        targets = await self._enabled_notifiers(CORE_NOTICE_TENANT)
        verb = "started" if notice == Notice.CORE_STARTED else "is stopping"
        message = Message(
            notice=notice,
            tenant=CORE_NOTICE_TENANT,
            title=f"core replica {self._replica_id} {verb}",
            detail=detail,
            at=self._clock(),
        )
        outcomes = await asyncio.gather(*(self._send(n, message) for n in targets))
        accepted = sum(1 for attempts in outcomes if attempts and attempts[-1].success)
        if targets:
            log.info("%s notice accepted by %d of %d notifiers", notice, accepted, len(targets))
        return accepted

    async def close(self) -> None:
        """Release the HTTP connections."""
        await self._sender.close()
