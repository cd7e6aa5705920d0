"""Signals between replicas: the port that carries "something changed, look again".

A signal is a hint, never the data: whoever receives one reads the store. Signals are
delivered to every replica (the publisher's included), in the order one replica published
them; a receiver that may have missed some gets `Resync` and re-reads what it watches. The
adapters are coord/signals.py (in-process, the embedded default) and coord/etcd_signals.py
(keys under `<prefix>signals/` and one watch per replica).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ConfigChanged:
    """The desired configuration version of a poller changed (the leader wrote it)."""

    tenant: str
    poller_id: str
    version: str


@dataclass(frozen=True, slots=True)
class DispatchWanted:
    """Work items or pollers of a partition changed: the leader should place its work again.

    `rebalance` asks for a rebalance too (a poller became eligible again: resume).
    """

    tenant: str
    partition: str
    rebalance: bool = False


@dataclass(frozen=True, slots=True)
class Resync:
    """Signals may have been missed (a backlog overflowed, a watch was compacted): read again."""


Signal = ConfigChanged | DispatchWanted | Resync


class SignalSubscription(Protocol):
    """Signals seen by this replica from subscription on, as an async iterator."""

    def __aiter__(self) -> SignalSubscription:
        """The subscription is its own iterator."""

    async def __anext__(self) -> Signal:
        """The next signal; StopAsyncIteration once the bus closed."""

    def close(self) -> None:
        """Stop receiving signals."""


class SignalBus(Protocol):
    """Publishes signals to every replica and delivers theirs."""

    @property
    def backend(self) -> str:
        """Name of the adapter, e.g. "etcd" or "local"."""

    async def start(self) -> None:
        """Start delivering; signals published by others before this are not delivered."""

    async def publish(self, signals: Sequence[Signal]) -> None:
        """Send signals to every replica. Raises Unavailable when the backend cannot take
        them: callers log it and rely on the periodic fallbacks (docs/dispatch.md)."""

    def subscribe(self) -> SignalSubscription:
        """A new subscription that sees every signal delivered from now on."""

    async def close(self) -> None:
        """Stop delivering and end every subscription."""
