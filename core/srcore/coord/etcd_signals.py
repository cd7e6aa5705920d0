"""Signals between replicas through etcd: a put per signal, one prefix watch per replica.

Keys under `<prefix>signals/`:

    config/<tenant>/<poller>      the poller's desired configuration version
    dispatch/<tenant>/<partition> written to ask the leader to place a partition's work
                                  ("rebalance" when it should rebalance it too)

Each key holds the latest value only, so the keyspace stays one key per poller and partition;
every put is still a watch event of its own. A watch that breaks resumes from the revision
after the last one it delivered, so nothing is missed; after a compaction, or after etcd was
unreachable (publishers may have dropped signals meanwhile), subscribers get `Resync`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from aetcd import rpc

from srcore.coord.etcd_client import EtcdClient, EtcdError, WatchCompacted, put_op
from srcore.coord.signals import Fanout, Subscription
from srcore.domain.errors import Unavailable
from srcore.domain.signals import ConfigChanged, DispatchWanted, Resync, Signal

log = logging.getLogger(__name__)

SIGNALS = b"signals/"
# etcd refuses transactions of more than 128 operations by default (--max-txn-ops).
MAX_TXN_OPS = 128


def signal_key(prefix: bytes, signal: Signal) -> tuple[bytes, bytes] | None:
    """The key and value a signal is written as (None for Resync, which is never sent)."""
    base = prefix + SIGNALS
    if isinstance(signal, ConfigChanged):
        return base + f"config/{signal.tenant}/{signal.poller_id}".encode(), signal.version.encode()
    if isinstance(signal, DispatchWanted):
        value = b"rebalance" if signal.rebalance else b""
        return base + f"dispatch/{signal.tenant}/{signal.partition}".encode(), value
    return None


def decode_signal(prefix: bytes, key: bytes, value: bytes) -> Signal | None:
    """Inverse of `signal_key`; None for a key this build does not know."""
    parts = key[len(prefix + SIGNALS) :].decode(errors="replace").split("/")
    if len(parts) != 3:
        return None
    kind, tenant, name = parts
    text = value.decode(errors="replace")
    if kind == "config":
        return ConfigChanged(tenant, name, text)
    if kind == "dispatch":
        return DispatchWanted(tenant, name, rebalance=text == "rebalance")
    return None


class EtcdSignalBus:
    """Signals through etcd (see the module docstring)."""

    def __init__(self, endpoints: list[str], prefix: str, *, op_timeout: float = 2.0) -> None:
        if not prefix.endswith("/"):
            prefix += "/"
        self._prefix = prefix.encode()
        self._etcd = EtcdClient(endpoints, op_timeout=op_timeout)
        self._fanout = Fanout()
        self._watching = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def backend(self) -> str:
        """Adapter name."""
        return "etcd"

    async def start(self) -> None:
        """Open the watch; waits for it (up to the operation timeout) so that a subscriber
        that reads the store after this misses no later change."""
        self._task = asyncio.get_running_loop().create_task(self._watch_loop(), name="etcd-signals")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._etcd.op_timeout):
                await self._watching.wait()
        if not self._watching.is_set():
            log.warning("etcd signal watch not open yet: changes reach streams by polling meanwhile")

    async def publish(self, signals: Sequence[Signal]) -> None:
        """Write the signals (the latest value per key), up to 128 per transaction."""
        latest: dict[bytes, bytes] = {}
        for signal in signals:
            encoded = signal_key(self._prefix, signal)
            if encoded is not None:
                latest[encoded[0]] = encoded[1]
        operations = [put_op(key, value) for key, value in latest.items()]
        try:
            for start in range(0, len(operations), MAX_TXN_OPS):
                await self._etcd.txn(operations[start : start + MAX_TXN_OPS])
        except EtcdError as exc:
            raise Unavailable(f"coordination (etcd) unavailable: {exc}") from exc

    def subscribe(self) -> Subscription:
        """A subscription from now on."""
        return self._fanout.subscribe()

    async def close(self) -> None:
        """Stop the watch and end every subscription."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._fanout.close()
        await self._etcd.close()

    async def _watch_loop(self) -> None:
        prefix = self._prefix + SIGNALS
        revision = 0
        cluster_id = 0
        delay = 0.1
        interrupted = False
        while True:
            try:
                async for response in self._etcd.watch(prefix, revision + 1 if revision else 0, cluster_id):
                    if response.created:
                        cluster_id = cluster_id or int(response.header.cluster_id)
                        if not revision:
                            # "From now": later events carry larger revisions.
                            revision = int(response.header.revision)
                        self._watching.set()
                        if interrupted:
                            self._fanout.deliver([Resync()])
                            interrupted = False
                        delay = 0.1
                        continue
                    if response.events:
                        revision = max(revision, self._deliver(response))
                    else:
                        # A progress notification: nothing changed up to its revision.
                        revision = max(revision, int(response.header.revision))
            except WatchCompacted as exc:
                log.warning("signal watch restarts from now (%s): subscribers re-read the store", exc)
                revision, cluster_id = 0, 0
                interrupted = True
                continue
            except EtcdError as exc:
                log.info("signal watch interrupted: %s", exc)
                interrupted = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _deliver(self, response: Any) -> int:
        signals: list[Signal] = []
        revision = 0
        for event in response.events:
            kv = event.kv
            revision = max(revision, int(kv.mod_revision))
            if event.type == rpc.Event.DELETE:
                continue
            signal = decode_signal(self._prefix, bytes(kv.key), bytes(kv.value))
            if signal is not None:
                signals.append(signal)
        if signals:
            self._fanout.deliver(signals)
        return revision
