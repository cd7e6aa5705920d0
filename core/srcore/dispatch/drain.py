"""Drain and resume: an operator takes a poller out of dispatch and back in.

A drained poller keeps its session and heartbeats (answered with the DRAIN action) but gets
no work: the leader moves its items to the other pollers of its partition (or leaves them
pending) at the next round, which the change asks for at once. Resume makes it healthy and
eligible again, with a rebalance so it takes a share of the work back when the spread is
past the threshold.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from srcore.dispatch.work import request_dispatch
from srcore.domain import states
from srcore.domain.errors import Aborted, FailedPrecondition, NotFound
from srcore.domain.liveness import LivenessStore
from srcore.domain.model import Poller, PollerState
from srcore.domain.signals import SignalBus
from srcore.domain.states import Cause, EntityKind


class DrainService:
    """Operator requests that take a poller out of dispatch (drain) and back in (resume)."""

    def __init__(
        self,
        store: LivenessStore,
        signals: SignalBus,
        clock: Callable[[], datetime],
        replica_id: str,
        fencing_token: Callable[[], int],
    ) -> None:
        self._store = store
        self._signals = signals
        self._clock = clock
        self._replica_id = replica_id
        self._fencing_token = fencing_token

    async def drain(self, tenant: str, poller_id: str, reason: str = "") -> Poller:
        """Drain a live poller; FailedPrecondition (naming its state) from any other state."""
        return await self._change(tenant, poller_id, PollerState.DRAINING, Cause.DRAIN, reason)

    async def resume(self, tenant: str, poller_id: str, reason: str = "") -> Poller:
        """End a drain; FailedPrecondition unless the poller is draining."""
        return await self._change(tenant, poller_id, PollerState.HEALTHY, Cause.RESUME, reason)

    async def _change(
        self, tenant: str, poller_id: str, target: PollerState, cause: Cause, reason: str
    ) -> Poller:
        poller = await self._store.get_poller(tenant, poller_id)
        if poller is None:
            raise NotFound(f"poller {poller_id!r} not found")
        try:
            transition = states.transition(
                EntityKind.POLLER, poller.state, target, cause,
                tenant=tenant, entity_id=poller_id, at=self._clock(), detail=reason,
            )  # fmt: skip
        except FailedPrecondition as exc:
            raise FailedPrecondition(f"poller {poller_id!r}: {exc}") from exc
        if not await self._store.change_state(transition, self._replica_id, self._fencing_token()):
            raise Aborted(f"poller {poller_id!r} changed state meanwhile: try again")
        await self.redispatch(tenant, poller.partition, rebalance=target is PollerState.HEALTHY)
        changed = await self._store.get_poller(tenant, poller_id, with_agents=True)
        if changed is None:
            raise NotFound(f"poller {poller_id!r} not found")
        return changed

    async def redispatch(self, tenant: str, partition: str, *, rebalance: bool = False) -> None:
        """Ask the leader to place the partition's work again after a poller's state changed
        (drain, resume, maintenance); a failure is logged, the leader's full pass catches up."""
        await request_dispatch(self._signals, tenant, {partition}, rebalance=rebalance)
