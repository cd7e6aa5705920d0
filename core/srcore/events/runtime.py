"""The events subsystem of one replica, as the app wires it.

Every replica writes events (through `store.transitions.record_transitions`) and serves
ListEvents/WatchEvents from the outbox. The leader also runs the relay (when NATS is
configured) and the outbox housekeeping: retention and the backlog gauges.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from srcore.domain.coordination import Coordinator, LeaderInfo
from srcore.events.bus import NatsBus
from srcore.events.config import EventConfig
from srcore.events.metrics import OUTBOX_BACKLOG, OUTBOX_OLDEST_AGE
from srcore.events.outbox import Backlog, Outbox, OutboxSignal
from srcore.events.relay import Relay
from srcore.store.database import Database

log = logging.getLogger(__name__)

GAUGE_INTERVAL = 5.0
PRUNE_INTERVAL = 60.0
# How long a leader job that failed unexpectedly waits before it starts again.
RESTART_DELAY = 5.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class EventsHealth:
    """What cluster status shows for the event bus."""

    backend: str
    healthy: bool
    detail: str


def _backlog_text(backlog: Backlog, now: datetime) -> str:
    if not backlog.unpublished or backlog.oldest is None:
        return "outbox backlog 0"
    age = max(0.0, (now - backlog.oldest).total_seconds())
    return f"outbox backlog {backlog.unpublished} unpublished, oldest {age:.1f}s old"


class EventsRuntime:
    """Outbox, signal, NATS connection and leader-only jobs of one replica."""

    def __init__(
        self,
        db: Database,
        coordinator: Coordinator,
        config: EventConfig,
        replica_id: str,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.config = config
        self.outbox = Outbox(db)
        self.signal = OutboxSignal(db)
        self.bus = (
            NatsBus(config.nats_url, f"srcore {replica_id}", config.max_in_flight)
            if config.nats_url
            else None
        )
        self.relay: Relay | None = None
        self._coordinator = coordinator
        self._clock = clock
        self._leader_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Connect to NATS in the background and follow leadership."""
        if self.bus is not None:
            self.bus.start()
        self._coordinator.on_leadership_change(self._on_leadership)

    async def _on_leadership(self, leader: LeaderInfo | None) -> None:
        await self._stop_leader_jobs()
        if leader is not None:
            self._leader_task = asyncio.get_running_loop().create_task(
                self._leader_jobs(leader.fencing_token), name="events-leader-jobs"
            )

    def _leading(self, token: int) -> bool:
        leader = self._coordinator.leader()
        return self._coordinator.is_leader() and leader is not None and leader.fencing_token == token

    async def _leader_jobs(self, token: int) -> None:
        jobs: list[Callable[[], Awaitable[None]]] = [lambda: self._housekeeping(token)]
        if self.bus is not None:
            self.relay = Relay(self.outbox, self.bus, self.config, lambda: self._leading(token), self.signal)
            jobs.append(self.relay.run)
        async with asyncio.TaskGroup() as group:
            for job in jobs:
                group.create_task(self._keep_running(job, token))

    async def _keep_running(self, job: Callable[[], Awaitable[None]], token: int) -> None:
        # A job returns when leadership ends; one that fails for an unexpected reason is
        # logged and started again, so a bug in one batch cannot stop events for good.
        while self._leading(token):
            try:
                await job()
            except Exception:
                log.exception("events leader job failed; restarting in %.0fs", RESTART_DELAY)
                await asyncio.sleep(RESTART_DELAY)

    async def _housekeeping(self, token: int) -> None:
        next_prune = 0.0
        loop = asyncio.get_running_loop()
        while self._leading(token):
            try:
                if self.bus is not None:
                    backlog = await self.outbox.backlog()
                    OUTBOX_BACKLOG.set(backlog.unpublished)
                    age = (self._clock() - backlog.oldest).total_seconds() if backlog.oldest else 0.0
                    OUTBOX_OLDEST_AGE.set(max(0.0, age))
                if self.config.outbox_retention and loop.time() >= next_prune:
                    before = self._clock() - timedelta(seconds=self.config.outbox_retention)
                    pruned = await self.outbox.prune(before, keep_unpublished=self.bus is not None)
                    if pruned:
                        log.info("pruned %d events older than the outbox retention", pruned)
                    next_prune = loop.time() + PRUNE_INTERVAL
            except Exception as exc:
                # The store is down: the relay reports it too; try again next round.
                log.warning("outbox housekeeping failed, will retry: %s", exc)
            await asyncio.sleep(GAUGE_INTERVAL)

    async def _stop_leader_jobs(self) -> None:
        task, self._leader_task = self._leader_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.relay = None

    async def health(self) -> EventsHealth:
        """The event bus as cluster status reports it: NATS, the relay and the backlog."""
        now = self._clock()
        try:
            backlog = await self.outbox.backlog()
        except Exception as exc:
            return EventsHealth(
                "nats" if self.bus else "outbox", False, f"outbox unreadable: {type(exc).__name__}"
            )
        if self.bus is None:
            return EventsHealth(
                "outbox",
                True,
                f"no NATS configured: {backlog.unpublished} events kept in the outbox (srctl events list)",
            )
        parts = [f"{self.bus.url} " + ("connected" if self.bus.connected else "unreachable")]
        if self.bus.last_error:
            parts.append(self.bus.last_error)
        parts.append(f"stream {self.config.stream}")
        relay = self.relay
        if relay is not None and relay.last_error:
            parts.append(f"relay: {relay.last_error}")
        parts.append(_backlog_text(backlog, now))
        healthy = self.bus.connected and not (relay is not None and relay.last_error)
        return EventsHealth("nats", healthy, "; ".join(parts))

    async def stop(self) -> None:
        """Stop the leader jobs, close the NATS connection and the signal."""
        await self._stop_leader_jobs()
        if self.bus is not None:
            await self.bus.close()
        self.signal.close()
