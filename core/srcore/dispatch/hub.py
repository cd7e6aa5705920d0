"""This replica's listener for configuration changes: it wakes the SyncConfig streams it
serves when the leader (on any replica) changes their poller's configuration version, and
tells the registry, so heartbeats answer with the new version at once.

The hub holds one signal subscription for the whole replica; a stream registers a `Watch`
for its poller and waits on it. Signals are hints: a woken stream reads the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict

from srcore.domain.registry import RegistryService
from srcore.domain.signals import ConfigChanged, Resync, SignalBus, SignalSubscription

log = logging.getLogger(__name__)


class Watch:
    """One stream's interest in one poller's configuration."""

    def __init__(self, hub: ConfigHub, key: tuple[str, str]) -> None:
        self._hub = hub
        self.key = key
        self._event = asyncio.Event()

    def notify(self) -> None:
        """Something changed (or the hub is closing): wake the stream."""
        self._event.set()

    async def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds; True when woken (or the hub is closing), False when
        the time ran out."""
        if self._hub.closing:
            return True
        try:
            async with asyncio.timeout(timeout):
                await self._event.wait()
        except TimeoutError:
            return False
        finally:
            self._event.clear()
        return True

    @property
    def closing(self) -> bool:
        """Whether the replica is shutting down (the stream must end)."""
        return self._hub.closing

    def close(self) -> None:
        """Stop watching."""
        self._hub.unwatch(self)

    def __enter__(self) -> Watch:
        """Watch for the duration of a `with` block."""
        return self

    def __exit__(self, *_: object) -> None:
        """Stop watching."""
        self.close()


class ConfigHub:
    """Fans configuration change signals out to the streams and the registry of a replica."""

    def __init__(self, signals: SignalBus, registry: RegistryService) -> None:
        self._signals = signals
        self._registry = registry
        self._watches: dict[tuple[str, str], set[Watch]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self.closing = False

    def start(self) -> None:
        """Subscribe; call after the signal bus started and before serving streams."""
        subscription = self._signals.subscribe()
        self._task = asyncio.get_running_loop().create_task(self._follow(subscription), name="config-hub")

    def watch(self, tenant: str, poller_id: str) -> Watch:
        """Register interest in a poller's configuration; call before reading it, so that a
        change committed in between still wakes the stream."""
        watch = Watch(self, (tenant, poller_id))
        self._watches[watch.key].add(watch)
        return watch

    def unwatch(self, watch: Watch) -> None:
        """Forget a watch."""
        watches = self._watches.get(watch.key)
        if watches is not None:
            watches.discard(watch)
            if not watches:
                del self._watches[watch.key]

    async def close(self) -> None:
        """Wake every stream to end it (the replica is shutting down), then unsubscribe."""
        self.closing = True
        for watches in list(self._watches.values()):
            for watch in list(watches):
                watch.notify()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _follow(self, subscription: SignalSubscription) -> None:
        async for signal in subscription:
            if isinstance(signal, ConfigChanged):
                self._registry.config_changed(signal.tenant, signal.poller_id, signal.version)
                for watch in list(self._watches.get((signal.tenant, signal.poller_id), ())):
                    watch.notify()
            elif isinstance(signal, Resync):
                # Changes may have been missed: everything cached is suspect.
                log.info("configuration signals resynchronising: streams re-read the store")
                try:
                    await self._registry.refresh()
                except Exception as exc:  # the store is down: keep answering from memory
                    log.warning("could not re-read the pollers' configuration versions: %s", exc)
                for watches in list(self._watches.values()):
                    for watch in list(watches):
                        watch.notify()
