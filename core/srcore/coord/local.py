"""In-process coordination for the embedded default: one replica, always the leader.

It also holds the in-process building blocks both adapters share: the fan-out of registry
changes (`ChangeFeed`) and the ordered delivery of leadership changes (`LeadershipNotifier`).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections import deque
from dataclasses import dataclass

from srcore.domain.coordination import (
    LeaderInfo,
    LeadershipCallback,
    RegistryChange,
    RegistryEntry,
    RegistryEvent,
    RegistryLagged,
    ReplicaInfo,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_BACKLOG = 65_536


class ChangeSubscription:
    """One consumer's queue of registry events (see `PollerRegistry.changes`)."""

    def __init__(self, feed: ChangeFeed, max_backlog: int) -> None:
        self._feed = feed
        self._max_backlog = max_backlog
        self._events: deque[RegistryEvent] = deque()
        self._wakeup = asyncio.Event()
        self._lagged = False
        self._closed = False

    def _push(self, event: RegistryEvent) -> None:
        if self._closed:
            return
        if len(self._events) >= self._max_backlog:
            # Dropping silently would leave the consumer with a wrong picture; failing loudly
            # lets it re-list, and the bound keeps a stuck consumer from eating the heap.
            self._lagged = True
            self._events.clear()
            self._feed._unsubscribe(self)
        else:
            self._events.append(event)
        self._wakeup.set()

    def _end(self) -> None:
        self._closed = True
        self._wakeup.set()

    def __aiter__(self) -> ChangeSubscription:
        """The subscription is its own iterator."""
        return self

    async def __anext__(self) -> RegistryEvent:
        """The next change; RegistryLagged after an overflow, StopAsyncIteration once closed."""
        while True:
            if self._events:
                return self._events.popleft()
            if self._lagged:
                self._lagged = False
                self._closed = True
                raise RegistryLagged(f"more than {self._max_backlog} registry changes behind")
            if self._closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()

    def close(self) -> None:
        """Stop receiving changes; events already queued are still delivered."""
        self._feed._unsubscribe(self)
        self._end()


class ChangeFeed:
    """Fans registry events out to subscriptions, each bounded to `max_backlog` events."""

    def __init__(self, max_backlog: int = DEFAULT_MAX_BACKLOG) -> None:
        self._max_backlog = max_backlog
        self._subscriptions: set[ChangeSubscription] = set()

    def subscribe(self) -> ChangeSubscription:
        """A new subscription that sees every event published from now on."""
        subscription = ChangeSubscription(self, self._max_backlog)
        self._subscriptions.add(subscription)
        return subscription

    def publish(self, change: RegistryChange, entry: RegistryEntry) -> None:
        """Queue the event for every subscription; never blocks."""
        if not self._subscriptions:
            return
        event = RegistryEvent(change, entry)
        for subscription in list(self._subscriptions):
            subscription._push(event)

    def close(self) -> None:
        """End every subscription."""
        for subscription in self._subscriptions:
            subscription._end()
        self._subscriptions.clear()

    def _unsubscribe(self, subscription: ChangeSubscription) -> None:
        self._subscriptions.discard(subscription)


class LeadershipNotifier:
    """Delivers leadership changes to callbacks one at a time, in order (see the port)."""

    def __init__(self) -> None:
        self._callbacks: list[LeadershipCallback] = []
        self._queue: asyncio.Queue[tuple[tuple[LeadershipCallback, ...], LeaderInfo | None]] = asyncio.Queue()
        self._current: LeaderInfo | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def current(self) -> LeaderInfo | None:
        """The leadership last announced (None when not leading)."""
        return self._current

    def add(self, callback: LeadershipCallback) -> None:
        """Register a callback; it is told of a leadership already held."""
        self._callbacks.append(callback)
        if self._current is not None:
            self._enqueue((callback,), self._current)

    def announce(self, info: LeaderInfo | None) -> None:
        """Announce that this replica leads as `info` (None: it does not); repeats are ignored."""
        if info == self._current:
            return
        if info is not None and self._current is not None:
            # A new leadership without an observed loss in between: still report the loss,
            # so a job runner restarts its jobs under the new fencing token.
            self._enqueue(tuple(self._callbacks), None)
        self._current = info
        self._enqueue(tuple(self._callbacks), info)

    async def drain(self, timeout: float) -> bool:
        """Wait until every announcement was delivered; False when `timeout` ran out first."""
        if self._task is None:
            return True
        try:
            async with asyncio.timeout(timeout):
                await self._queue.join()
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Stop delivering."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _enqueue(self, callbacks: tuple[LeadershipCallback, ...], info: LeaderInfo | None) -> None:
        if not callbacks:
            return
        self._queue.put_nowait((callbacks, info))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._deliver(), name="leadership-callbacks")

    async def _deliver(self) -> None:
        while True:
            callbacks, info = await self._queue.get()
            try:
                for callback in callbacks:
                    try:
                        await callback(info)
                    except Exception:
                        log.exception("leadership callback failed for %s", info)
            finally:
                self._queue.task_done()


@dataclass(slots=True)
class _Slot:
    entry: RegistryEntry
    ttl: float
    deadline: float


class LocalRegistry:
    """A dict of live pollers with per-entry deadlines on the monotonic clock.

    Expiry is checked on every read and by a sweeper task, so changes() reports an expired
    entry close to its deadline even when nobody reads it.
    """

    def __init__(self, max_backlog: int = DEFAULT_MAX_BACKLOG) -> None:
        self._slots: dict[tuple[str, str], _Slot] = {}
        self._feed = ChangeFeed(max_backlog)
        self._deadlines: list[tuple[float, tuple[str, str]]] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._wake_sweeper = asyncio.Event()

    def _live(self, key: tuple[str, str], now: float) -> _Slot | None:
        slot = self._slots.get(key)
        if slot is not None and slot.deadline <= now:
            del self._slots[key]
            self._feed.publish(RegistryChange.DELETED, slot.entry)
            return None
        return slot

    async def put(self, entry: RegistryEntry, ttl: float) -> None:
        """Insert or replace the entry; it expires `ttl` seconds after its last touch."""
        deadline = time.monotonic() + ttl
        self._slots[(entry.tenant, entry.poller_id)] = _Slot(entry, ttl, deadline)
        self._feed.publish(RegistryChange.UPSERTED, entry)
        self._schedule(deadline, (entry.tenant, entry.poller_id))

    async def touch(self, tenant: str, poller_id: str, session_id: str) -> RegistryEntry | None:
        """Extend the entry's deadline when `session_id` matches; None otherwise."""
        now = time.monotonic()
        slot = self._live((tenant, poller_id), now)
        if slot is None or slot.entry.session_id != session_id:
            return None
        # The sweeper finds the later deadline when the old one comes due: no heap push here.
        slot.deadline = now + slot.ttl
        return slot.entry

    async def get(self, tenant: str, poller_id: str) -> RegistryEntry | None:
        """The live entry for a poller, or None."""
        slot = self._live((tenant, poller_id), time.monotonic())
        return slot.entry if slot else None

    async def list(self, tenant: str | None = None, partition: str | None = None) -> list[RegistryEntry]:
        """Live entries, optionally of one tenant and partition.

        Ordered by (tenant, partition, poller_id).
        """
        now = time.monotonic()
        out = []
        for key in list(self._slots):
            slot = self._live(key, now)
            if slot is None:
                continue
            entry = slot.entry
            if (tenant is None or entry.tenant == tenant) and (
                partition is None or entry.partition == partition
            ):
                out.append(entry)
        out.sort(key=lambda e: (e.tenant, e.partition, e.poller_id))
        return out

    async def remove(self, tenant: str, poller_id: str) -> None:
        """Delete the entry now."""
        slot = self._slots.pop((tenant, poller_id), None)
        if slot is not None:
            self._feed.publish(RegistryChange.DELETED, slot.entry)

    def changes(self) -> ChangeSubscription:
        """Subscribe to changes from now on (see `PollerRegistry.changes`)."""
        return self._feed.subscribe()

    async def close(self) -> None:
        """Stop the sweeper and end subscriptions."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        self._feed.close()

    def _schedule(self, deadline: float, key: tuple[str, str]) -> None:
        earliest = self._deadlines[0][0] if self._deadlines else None
        heapq.heappush(self._deadlines, (deadline, key))
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(
                self._sweep(), name="local-registry-sweeper"
            )
        elif earliest is None or deadline < earliest:
            self._wake_sweeper.set()

    async def _sweep(self) -> None:
        while True:
            self._wake_sweeper.clear()
            now = time.monotonic()
            while self._deadlines and self._deadlines[0][0] <= now:
                _, key = heapq.heappop(self._deadlines)
                slot = self._live(key, now)
                if slot is not None and slot.deadline > now:
                    heapq.heappush(self._deadlines, (slot.deadline, key))
            timeout = self._deadlines[0][0] - now if self._deadlines else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake_sweeper.wait()


class LocalCoordinator:
    """Single-replica coordination: this process is the cluster and its leader."""

    def __init__(self) -> None:
        self._registry = LocalRegistry()
        self._notifier = LeadershipNotifier()
        self._me: ReplicaInfo | None = None
        self._leader: LeaderInfo | None = None

    @property
    def backend(self) -> str:
        """Backend name."""
        return "local"

    @property
    def registry(self) -> LocalRegistry:
        """The in-process poller registry."""
        return self._registry

    async def start(self, me: ReplicaInfo) -> None:
        """Become the only replica and its leader.

        The fencing token is the start time in milliseconds, so a restarted embedded core
        always fences out writes made under its previous life.
        """
        self._me = me
        self._leader = LeaderInfo(me.replica_id, int(time.time() * 1000), "local")
        self._notifier.announce(self._leader)

    async def close(self) -> None:
        """Give up leadership, waiting for the leadership callbacks to hear of it."""
        self._leader = None
        self._notifier.announce(None)
        await self._notifier.drain(timeout=10.0)
        await self._notifier.close()
        await self._registry.close()

    async def replicas(self) -> list[ReplicaInfo]:
        """Just this replica."""
        return [self._me] if self._me and self._leader else []

    def leader(self) -> LeaderInfo | None:
        """This replica while started."""
        return self._leader

    def is_leader(self) -> bool:
        """True while started."""
        return self._leader is not None

    def on_leadership_change(self, callback: LeadershipCallback) -> None:
        """Tell `callback` of leadership gained (at start) and lost (at close)."""
        self._notifier.add(callback)

    async def healthy(self) -> bool:
        """In-process coordination is always reachable."""
        return True
