"""The leader-only dispatcher: places every work item on a poller of its partition, and
keeps each poller's desired configuration version in step with its work.

It is a job of the leader job runner (coord/jobs.py): on each leadership it places all work
once (a full pass), then follows what can change a placement and places the partitions
concerned again (level-triggered: every round re-reads the partition and converges, so a
missed or repeated hint costs a round, never a wrong placement):

- the registry: a poller registering (joining: with a rebalance) or expiring (offline);
  changes arriving within `registry_settle` seconds (or twice that round's duration, if
  longer) of the last registry-driven round share the next one, so a fleet re-registering at
  once costs a few rounds per partition, not one per poller, and at most a third of the
  leader's time (a lone join or expiry is still placed at once);
- `DispatchWanted` signals: an operator created, changed or deleted an item, drained or
  resumed a poller (any replica);
- a full pass every `resync_interval`, for what sends no hint (e.g. maintenance).

Every write passes the store's fence in its transaction; after it commits, the pollers whose
version changed are announced (`ConfigChanged`) so the replicas serving their SyncConfig
streams push at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client import Counter, Histogram

from srcore.domain import dispatch
from srcore.domain.coordination import LeaderInfo, PollerRegistry, RegistryChange, RegistryLagged
from srcore.domain.dispatch import Candidate, Placeable
from srcore.domain.errors import DomainError
from srcore.domain.leadership import Leadership
from srcore.domain.model import PollerState, Transition
from srcore.domain.signals import ConfigChanged, DispatchWanted, Resync, SignalBus
from srcore.domain.work import AssignmentState
from srcore.store.work import DispatchView, PlacementWrite, WorkRepository

log = logging.getLogger(__name__)

DISPATCH_ROUNDS = Counter("srcore_dispatch_partitions_total", "Partitions the leader placed work in.")
DISPATCH_SECONDS = Histogram(
    "srcore_dispatch_partition_seconds",
    "Time to place one partition's work (read, plan, fenced write).",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
)
DISPATCH_MOVES = Counter(
    "srcore_dispatch_placements_total", "Placements written, by resulting state.", ["state"]
)

# Poller states that take no work, and how a moved item's reason names them.
_INELIGIBLE = {
    PollerState.DRAINING: "draining",
    PollerState.MAINTENANCE: "in maintenance",
    PollerState.OFFLINE: "offline",
    PollerState.INACTIVE: "inactive",
}


@dataclass(slots=True)
class Outcome:
    """What one partition's round wrote."""

    placements: int = 0
    pending: int = 0
    versions: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Dirty:
    """Partitions waiting for a round; `everything` asks for a full pass."""

    partitions: dict[tuple[str, str], bool] = field(default_factory=dict)
    everything: bool = False

    def add(self, tenant: str, partition: str, rebalance: bool = False) -> None:
        key = (tenant, partition)
        self.partitions[key] = self.partitions.get(key, False) or rebalance

    def merge(self, other: _Dirty) -> None:
        partitions, everything = other.take()
        for (tenant, partition), rebalance in partitions.items():
            self.add(tenant, partition, rebalance)
        self.everything = self.everything or everything

    def take(self) -> tuple[dict[tuple[str, str], bool], bool]:
        taken = (self.partitions, self.everything)
        self.partitions, self.everything = {}, False
        return taken

    def __bool__(self) -> bool:
        return self.everything or bool(self.partitions)


def registry_pause(settle: float, took: float) -> float:
    """Seconds registry changes wait after a registry-driven round that took `took` seconds.

    At least twice the round's own time: when a large fleet registers at once, placing it
    takes at most a third of the leader's loop, whatever `settle` says.
    """
    return max(settle, 2 * took)


def resting(leadership: Leadership) -> Callable[[float], Awaitable[bool]]:
    """The pause between the partitions of a full pass: all of it, however often hints and
    registry changes wake the leader meanwhile (they wait for the pass to end in any case, and a
    pause cut short would hand the loop back to dispatch when it is busiest); False once
    leadership ends."""

    async def rest(seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if not await leadership.sleep(left):
                return False
        return not leadership.stopping

    return rest


def candidates(view: DispatchView, live: set[str]) -> tuple[list[Candidate], dict[str, str]]:
    """The pollers of the view's partition that may take work, and why the others may not."""
    available: list[Candidate] = []
    unavailable: dict[str, str] = {}
    for poller in view.pollers.values():
        if poller.partition != view.partition:
            unavailable[poller.poller_id] = f"moved to partition {poller.partition}"
        elif poller.state in _INELIGIBLE:
            unavailable[poller.poller_id] = _INELIGIBLE[poller.state]
        elif poller.poller_id not in live:
            unavailable[poller.poller_id] = "offline (registration expired)"
        else:
            capabilities = poller.capabilities.union(*poller.agents.values())
            available.append(Candidate(poller.poller_id, capabilities, poller.agents))
    return available, unavailable


class Dispatcher:
    """Places work items on pollers while this replica leads (see the module docstring)."""

    def __init__(
        self,
        work: WorkRepository,
        registry: PollerRegistry,
        signals: SignalBus,
        clock: Callable[[], datetime],
        replica_id: str,
        heartbeat_interval: float,
        *,
        rebalance_threshold: float = dispatch.DEFAULT_REBALANCE_THRESHOLD,
        resync_interval: float = 60.0,
        registry_settle: float = 1.0,
    ) -> None:
        self._work = work
        self._registry = registry
        self._signals = signals
        self._clock = clock
        self._replica_id = replica_id
        self._interval = heartbeat_interval
        self._threshold = rebalance_threshold
        self._resync = resync_interval
        self._settle = registry_settle

    async def run(self, leadership: Leadership) -> None:
        """Dispatch until leadership ends (the job the leader job runner starts)."""
        dirty = _Dirty(everything=True)
        joined = _Dirty()
        followers = [
            asyncio.get_running_loop().create_task(
                self._follow_signals(dirty, leadership), name="dispatch-signals"
            ),
            asyncio.get_running_loop().create_task(
                self._follow_registry(joined, leadership), name="dispatch-registry"
            ),
        ]
        next_full = time.monotonic() + self._resync
        registry_due = 0.0
        try:
            while not leadership.stopping:
                now = time.monotonic()
                if now >= next_full:
                    dirty.everything = True
                registry_round = bool(joined) and now >= registry_due
                if registry_round:
                    dirty.merge(joined)
                if dirty:
                    partitions, everything = dirty.take()
                    if everything:
                        next_full = time.monotonic() + self._resync
                    pause = resting(leadership) if everything else None
                    await self.dispatch(partitions, everything, leadership.info, pause=pause)
                    if registry_round:
                        done = time.monotonic()
                        registry_due = done + registry_pause(self._settle, done - now)
                    continue
                wake_at = min(next_full, registry_due) if joined else next_full
                if not await leadership.sleep(max(0.0, wake_at - now)):
                    return
        finally:
            for follower in followers:
                follower.cancel()
            for follower in followers:
                with contextlib.suppress(asyncio.CancelledError):
                    await follower

    async def dispatch(
        self,
        partitions: dict[tuple[str, str], bool],
        everything: bool,
        leader: LeaderInfo,
        *,
        pause: Callable[[float], Awaitable[bool]] | None = None,
    ) -> dict[tuple[str, str], Outcome]:
        """Place the work of `partitions` (of every partition when `everything`), the value
        saying whether to rebalance it. Raises Fenced when a later leadership wrote.

        With `pause` (`resting`: False once leadership ends), waits twice as long as each
        partition took before the next, and stops early when told to: the periodic full round
        then takes at most a third of the event loop that also answers heartbeats. Run back to
        back over a 10,000-poller fleet it kept the replica's CPU busy for most of a second, and
        every heartbeat of that second waited hundreds of milliseconds.
        """
        wanted = dict(partitions)
        if everything:
            for key in await self._work.partitions():
                wanted.setdefault(key, False)
        # The registry is read once for the round: listing it per partition walks the whole
        # fleet each time (a 10,000-poller resync read it ten times over).
        live: dict[tuple[str, str], set[str]] = defaultdict(set)
        for entry in await self._registry.list():
            live[(entry.tenant, entry.partition)].add(entry.poller_id)
        outcomes = {}
        took: float | None = None
        for (tenant, partition), rebalance in sorted(wanted.items()):
            if took is not None and pause is not None and not await pause(2 * took):
                break
            started = time.perf_counter()
            outcomes[(tenant, partition)] = await self.place(
                tenant, partition, leader, rebalance=rebalance, live=live.get((tenant, partition), set())
            )
            took = time.perf_counter() - started
        return outcomes

    async def place(
        self,
        tenant: str,
        partition: str,
        leader: LeaderInfo,
        *,
        rebalance: bool = False,
        live: set[str] | None = None,
    ) -> Outcome:
        """One round for one partition: read, plan, write (fenced), announce.

        `live` is the partition's pollers in the registry, when the caller has read it.
        """
        started = time.perf_counter()
        view = await self._work.dispatch_view(tenant, partition)
        if live is None:
            live = {entry.poller_id for entry in await self._registry.list(tenant, partition)}
        available, unavailable = candidates(view, live)
        plan = dispatch.plan(
            partition,
            [item.placeable for item in view.items],
            available,
            unavailable=unavailable,
            rebalance=rebalance,
            threshold=self._threshold,
        )
        planned = {item.placeable.item_id: item for item in view.items}
        writes = [PlacementWrite(planned[item_id], placement) for item_id, placement in plan.changes.items()]
        everything = [item.placeable for item in (*view.items, *view.foreign)]

        def versions(written: Sequence[PlacementWrite]) -> dict[str, str]:
            placed = {w.item.placeable.item_id: w.placement.poller_id for w in written}

            def owner(item: Placeable) -> str | None:
                return placed.get(item.item_id, item.poller_id)

            return dispatch.versions(self._interval, everything, owner, view.pollers)

        now = self._clock()

        def transitions(written: Sequence[PlacementWrite]) -> list[Transition]:
            found = (
                dispatch.assignment_transition(
                    tenant, w.item.placeable.kind, w.item.name, w.item.placeable, w.placement, now
                )
                for w in written
            )
            return [t for t in found if t is not None]

        outcome = Outcome()
        planned_versions = versions(writes)

        def written_versions(written: Sequence[PlacementWrite]) -> dict[str, str]:
            # Every placement normally commits; recompute only when some did not.
            return planned_versions if len(written) == len(writes) else versions(written)

        stale = {p: v for p, v in planned_versions.items() if view.pollers[p].desired_version != v}
        if writes or stale:
            written, outcome.versions = await self._work.apply_plan(
                tenant, writes, written_versions, transitions, leader, self._replica_id, now
            )
            outcome.placements = len(written)
            for write in written:
                DISPATCH_MOVES.labels(write.placement.state.value).inc()
                if write.placement.state is AssignmentState.PENDING:
                    outcome.pending += 1
            await self._announce(tenant, outcome.versions)
            if written:
                log.info(
                    "dispatch %s/%s: %d placements written (%d pending), %d pollers' configurations changed",
                    tenant, partition, len(written), outcome.pending, len(outcome.versions),
                )  # fmt: skip
        DISPATCH_ROUNDS.inc()
        DISPATCH_SECONDS.observe(time.perf_counter() - started)
        return outcome

    async def _announce(self, tenant: str, versions: dict[str, str]) -> None:
        if not versions:
            return
        try:
            await self._signals.publish([ConfigChanged(tenant, p, v) for p, v in sorted(versions.items())])
        except DomainError as exc:
            # Committed all the same: streams find it at their next keepalive (docs/dispatch.md).
            log.warning("configuration change of %d pollers not announced: %s", len(versions), exc)

    async def _follow_signals(self, dirty: _Dirty, leadership: Leadership) -> None:
        subscription = self._signals.subscribe()
        try:
            async for signal in subscription:
                if isinstance(signal, DispatchWanted):
                    dirty.add(signal.tenant, signal.partition, signal.rebalance)
                elif isinstance(signal, Resync):
                    dirty.everything = True
                else:
                    continue
                leadership.wake()
        finally:
            subscription.close()

    async def _follow_registry(self, dirty: _Dirty, leadership: Leadership) -> None:
        while True:
            subscription = self._registry.changes()
            try:
                # Listed after subscribing, so no change falls in between.
                live = {(e.tenant, e.poller_id): e.partition for e in await self._registry.list()}
                async for event in subscription:
                    entry = event.entry
                    key = (entry.tenant, entry.poller_id)
                    before = live.get(key)
                    if event.change is RegistryChange.DELETED:
                        live.pop(key, None)
                        dirty.add(entry.tenant, entry.partition)
                    else:
                        live[key] = entry.partition
                        # A poller that was not live in this partition joins it: rebalance.
                        dirty.add(entry.tenant, entry.partition, rebalance=before != entry.partition)
                    if before is not None and before != entry.partition:
                        dirty.add(entry.tenant, before)
                    leadership.wake()
                return
            except RegistryLagged:
                dirty.everything = True
                leadership.wake()
            finally:
                subscription.close()
