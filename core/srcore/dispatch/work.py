"""Operators' changes of work items: validated specs in, stored items out, and a hint to the
leader to place the partitions concerned (any replica may serve the change; only the leader
places work)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from srcore.domain.errors import DomainError
from srcore.domain.signals import DispatchWanted, SignalBus
from srcore.domain.work import Assignment, AssignmentState, Spec, WorkItem, WorkKind
from srcore.security.credentials import CredentialVault
from srcore.store.work import Modification, WorkRepository

log = logging.getLogger(__name__)

WAITING = Assignment(AssignmentState.UNASSIGNED, reason="waiting for dispatch")


class WorkService:
    """Create, change and delete work items; every change asks the leader to dispatch."""

    def __init__(
        self,
        repository: WorkRepository,
        signals: SignalBus,
        vault: CredentialVault,
        clock: Callable[[], datetime],
    ) -> None:
        self.repository = repository
        self._signals = signals
        self._vault = vault
        self._clock = clock

    async def create(
        self,
        tenant: str,
        kind: WorkKind,
        name: str,
        partition: str,
        spec: Spec,
        enabled: bool,
        credentials: Mapping[str, str] | None = None,
    ) -> WorkItem:
        """Store a new item (with its credentials sealed) and ask for its placement."""
        now = self._clock()
        item_id = uuid.uuid4().hex
        sealed = self._vault.seal(tenant, item_id, credentials) if credentials else None
        item = WorkItem(
            tenant=tenant,
            kind=kind,
            name=name,
            item_id=item_id,
            partition=partition,
            enabled=enabled,
            spec=spec,
            assignment=WAITING if enabled else Assignment(AssignmentState.DISABLED, reason="disabled"),
            credentials_version=1 if sealed else 0,
            credentials_updated_at=now if sealed else None,
            created_at=now,
            updated_at=now,
        )
        created = await self.repository.create(item, sealed)
        await self._dispatch(tenant, {partition})
        return created

    async def modify(
        self,
        tenant: str,
        kind: WorkKind,
        name: str,
        change: Callable[[WorkItem], Modification],
    ) -> WorkItem:
        """Apply `change` to the stored item and ask for the placement of what it affects."""
        before, after = await self.repository.modify(tenant, kind, name, change, self._clock())
        if after is not before:
            await self._dispatch(tenant, {before.partition, after.partition})
        return after

    async def set_enabled(self, tenant: str, kind: WorkKind, name: str, enabled: bool) -> WorkItem:
        """Enable or disable an item (a no-op when it already is)."""

        def change(item: WorkItem) -> Modification:
            return Modification(item.partition, enabled, item.spec)

        return await self.modify(tenant, kind, name, change)

    async def delete(self, tenant: str, kind: WorkKind, name: str) -> WorkItem:
        """Delete an item; its poller's configuration loses it at the next placement."""
        deleted = await self.repository.delete(tenant, kind, name)
        await self._dispatch(tenant, {deleted.partition})
        return deleted

    @property
    def vault(self) -> CredentialVault:
        """The credential sealer (for changes that carry new credentials)."""
        return self._vault

    async def _dispatch(self, tenant: str, partitions: set[str]) -> None:
        await request_dispatch(self._signals, tenant, partitions)


async def request_dispatch(
    signals: SignalBus, tenant: str, partitions: set[str], *, rebalance: bool = False
) -> None:
    """Ask the leader to place the partitions' work again after a committed change; a failure
    is logged, as the leader's periodic full pass places it anyway."""
    try:
        await signals.publish([DispatchWanted(tenant, p, rebalance=rebalance) for p in sorted(partitions)])
    except DomainError as exc:
        log.warning("dispatch of %s %s not requested now: %s", tenant, sorted(partitions), exc)


@dataclass(frozen=True, slots=True)
class Rotation:
    """What `rotate_credentials` did: items re-sealed, and items it could not open."""

    key_id: str
    resealed: int
    failed: dict[str, str]


async def rotate_credentials(repository: WorkRepository, vault: CredentialVault) -> Rotation:
    """Re-seal every source's credentials that another key sealed with the newest key.

    A value rewritten meanwhile (by an operator, under the newest key already) is left alone;
    one sealed with a key no longer configured is reported by item id and key id, never by
    value. Running it again is harmless.
    """
    newest = vault.newest_key
    resealed = 0
    failed: dict[str, str] = {}
    for tenant, item_id, sealed in await repository.sealed_credentials(except_key=newest):
        try:
            fresh = vault.reseal(tenant, item_id, sealed)
        except DomainError as exc:
            failed[item_id] = str(exc)
            continue
        if await repository.reseal(item_id, sealed, fresh):
            resealed += 1
    return Rotation(newest, resealed, failed)
