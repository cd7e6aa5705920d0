"""In-process signals (the embedded default), and the fan-out both signal adapters share."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence

from srcore.domain.signals import Resync, Signal

DEFAULT_MAX_BACKLOG = 65_536


class Subscription:
    """One consumer's queue of signals. When it overflows, its backlog is replaced by one
    `Resync`: the consumer re-reads the store, which is what every missed signal asked for."""

    def __init__(self, fanout: Fanout, max_backlog: int) -> None:
        self._fanout = fanout
        self._max_backlog = max_backlog
        self._signals: deque[Signal] = deque()
        self._wakeup = asyncio.Event()
        self._closed = False

    def push(self, signal: Signal) -> None:
        """Queue a signal; never blocks."""
        if self._closed:
            return
        if len(self._signals) >= self._max_backlog:
            self._signals.clear()
            signal = Resync()
        self._signals.append(signal)
        self._wakeup.set()

    def end(self) -> None:
        """Deliver what is queued, then stop."""
        self._closed = True
        self._wakeup.set()

    def __aiter__(self) -> Subscription:
        """The subscription is its own iterator."""
        return self

    async def __anext__(self) -> Signal:
        """The next signal; StopAsyncIteration once ended and drained."""
        while True:
            if self._signals:
                return self._signals.popleft()
            if self._closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()

    def close(self) -> None:
        """Stop receiving signals."""
        self._fanout.discard(self)
        self.end()


class Fanout:
    """Delivers each signal to every subscription."""

    def __init__(self, max_backlog: int = DEFAULT_MAX_BACKLOG) -> None:
        self._max_backlog = max_backlog
        self._subscriptions: set[Subscription] = set()

    def subscribe(self) -> Subscription:
        """A subscription that sees every signal delivered from now on."""
        subscription = Subscription(self, self._max_backlog)
        self._subscriptions.add(subscription)
        return subscription

    def deliver(self, signals: Sequence[Signal]) -> None:
        """Queue `signals` for every subscription."""
        for subscription in list(self._subscriptions):
            for signal in signals:
                subscription.push(signal)

    def discard(self, subscription: Subscription) -> None:
        """Forget a subscription."""
        self._subscriptions.discard(subscription)

    def close(self) -> None:
        """End every subscription."""
        for subscription in self._subscriptions:
            subscription.end()
        self._subscriptions.clear()


class LocalSignalBus:
    """One replica: a published signal is delivered to this process's subscribers at once."""

    def __init__(self) -> None:
        self._fanout = Fanout()

    @property
    def backend(self) -> str:
        """Adapter name."""
        return "local"

    async def start(self) -> None:
        """Nothing to connect."""

    async def publish(self, signals: Sequence[Signal]) -> None:
        """Deliver to every subscription of this process."""
        self._fanout.deliver(signals)

    def subscribe(self) -> Subscription:
        """A subscription from now on."""
        return self._fanout.subscribe()

    async def close(self) -> None:
        """End every subscription."""
        self._fanout.close()
