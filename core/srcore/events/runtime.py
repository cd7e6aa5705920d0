"""The events subsystem of one replica, as the app wires it.

Every replica writes events (through `store.transitions.record_transitions`) and serves
ListEvents/WatchEvents from the outbox. The leader also runs, as jobs of the leader-job runner
(coord/jobs.py), the relay (when NATS is configured) and the outbox housekeeping: retention
and the backlog gauges.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from srcore.domain.coordination import Coordinator
from srcore.domain.leadership import LeaderJob, Leadership
from srcore.events.bus import NatsBus
from srcore.events.config import EventConfig
from srcore.events.metrics import OUTBOX_BACKLOG, OUTBOX_OLDEST_AGE
from srcore.events.outbox import Backlog, Outbox, OutboxSignal
from srcore.events.relay import Relay
from srcore.store.database import Database

log = logging.getLogger(__name__)

GAUGE_INTERVAL = 5.0
PRUNE_INTERVAL = 60.0


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
    """Outbox, signal, NATS connection and the leader-only jobs of one replica."""

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
        # The relay of the leadership this replica holds, for the health probe.
        self.relay: Relay | None = None
        self._coordinator = coordinator
        self._clock = clock

    def start(self) -> None:
        """Connect to NATS in the background."""
        if self.bus is not None:
            self.bus.start()

    def leader_jobs(self) -> dict[str, LeaderJob]:
        """The jobs the leader runs: the relay (with NATS) and the outbox housekeeping."""
        jobs: dict[str, LeaderJob] = {"event-outbox-housekeeping": self._housekeeping}
        if self.bus is not None:
            jobs["event-relay"] = self._relay
        return jobs

    def _leading(self, leadership: Leadership) -> bool:
        # The runner's stop signal, and the coordinator's word that this leadership (not a
        # later one of this replica) still holds.
        leader = self._coordinator.leader()
        return (
            not leadership.stopping
            and self._coordinator.is_leader()
            and leader is not None
            and leader.fencing_token == leadership.info.fencing_token
        )

    async def _relay(self, leadership: Leadership) -> None:
        assert self.bus is not None
        relay = Relay(self.outbox, self.bus, self.config, lambda: self._leading(leadership), self.signal)
        self.relay = relay
        try:
            await relay.run()
        finally:
            if self.relay is relay:
                self.relay = None

    async def _housekeeping(self, leadership: Leadership) -> None:
        next_prune = 0.0
        loop = asyncio.get_running_loop()
        while self._leading(leadership):
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
            if not await leadership.sleep(GAUGE_INTERVAL):
                return

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
        """Close the NATS connection and the signal (the leader jobs are stopped by then)."""
        if self.bus is not None:
            await self.bus.close()
        self.signal.close()
