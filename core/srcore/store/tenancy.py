"""Repository of tenants and partitions."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from srcore.domain.errors import AlreadyExists, FailedPrecondition, NotFound
from srcore.domain.model import Transition
from srcore.domain.tenancy import Partition, Tenant, TenantState, check_tenant_change
from srcore.store.database import Database
from srcore.store.pollers import utc
from srcore.store.tables import partitions, pollers, tenants
from srcore.store.transitions import record_transitions


async def tenant_known(conn: AsyncConnection, tenant: str) -> bool:
    """Whether `tenant` exists, read in the caller's transaction."""
    return await conn.scalar(sa.select(tenants.c.name).where(tenants.c.name == tenant)) is not None


async def require_tenant(conn: AsyncConnection, tenant: str) -> None:
    """NotFound unless `tenant` exists, read in the caller's transaction (before writing for it)."""
    if not await tenant_known(conn, tenant):
        raise NotFound(f"tenant {tenant!r} not found")


def _tenant(row: sa.Row[Any]) -> Tenant:
    return Tenant(
        name=row.name,
        display_name=row.display_name,
        state=TenantState(row.state),
        created_at=utc(row.created_at) or row.created_at,
        suspended_at=utc(row.suspended_at),
        suspend_reason=row.suspend_reason,
    )


def _partition(row: sa.Row[Any]) -> Partition:
    return Partition(
        tenant=row.tenant,
        name=row.name,
        description=row.description,
        cidrs=tuple(row.cidrs),
        created_at=utc(row.created_at) or row.created_at,
        updated_at=utc(row.updated_at),
    )


class TenantRepository:
    """SQL access for tenants and partitions. State changes record their transition."""

    def __init__(self, db: Database, replica_id: str, fencing_token: Callable[[], int]) -> None:
        self._db = db
        self._replica_id = replica_id
        self._fencing_token = fencing_token

    async def create_tenant(self, name: str, display_name: str, now: datetime) -> Tenant:
        """Insert an active tenant; AlreadyExists when the name is taken."""
        try:
            async with self._db.begin() as conn:
                await conn.execute(
                    tenants.insert().values(
                        name=name, display_name=display_name, state=TenantState.ACTIVE.value, created_at=now
                    )
                )
        except IntegrityError:
            raise AlreadyExists(f"tenant {name!r} already exists") from None
        return Tenant(name, display_name, TenantState.ACTIVE, now)

    async def get_tenant(self, name: str) -> Tenant | None:
        """One tenant, or None."""
        async with self._db.connect() as conn:
            row = (await conn.execute(sa.select(tenants).where(tenants.c.name == name))).first()
        return None if row is None else _tenant(row)

    async def tenant_state(self, name: str) -> TenantState | None:
        """The tenant's state, or None when it does not exist."""
        async with self._db.connect() as conn:
            state = await conn.scalar(sa.select(tenants.c.state).where(tenants.c.name == name))
        return None if state is None else TenantState(state)

    async def list_tenants(self, only: str | None, limit: int, after: str | None) -> list[Tenant]:
        """Tenants ordered by name (just `only` when given), starting after `after`."""
        query = sa.select(tenants).order_by(tenants.c.name).limit(limit)
        if only is not None:
            query = query.where(tenants.c.name == only)
        if after is not None:
            query = query.where(tenants.c.name > after)
        async with self._db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_tenant(row) for row in rows]

    async def set_tenant_state(self, name: str, target: TenantState, reason: str, now: datetime) -> Tenant:
        """Suspend or resume a tenant, recording the transition; FailedPrecondition if already so."""
        async with self._db.begin() as conn:
            row = (await conn.execute(sa.select(tenants).where(tenants.c.name == name))).first()
            if row is None:
                raise NotFound(f"tenant {name!r} not found")
            tenant = _tenant(row)
            check_tenant_change(tenant, target)
            suspended = target is TenantState.SUSPENDED
            values = {
                "state": target.value,
                "suspended_at": now if suspended else None,
                "suspend_reason": reason if suspended else "",
            }
            changed = await conn.execute(
                tenants.update()
                .where(tenants.c.name == name, tenants.c.state == tenant.state.value)
                .values(**values)
            )
            if changed.rowcount != 1:
                raise FailedPrecondition(f"tenant {name!r} changed concurrently; retry")
            await record_transitions(
                conn,
                [
                    Transition(
                        name, "tenant", name, tenant.state.value, target.value, reason or target.value, now
                    )
                ],
                self._replica_id,
                self._fencing_token(),
            )
        return Tenant(
            name=name,
            display_name=tenant.display_name,
            state=target,
            created_at=tenant.created_at,
            suspended_at=now if suspended else None,
            suspend_reason=reason if suspended else "",
        )

    async def create_partition(self, partition: Partition) -> Partition:
        """Insert a partition; NotFound for an unknown tenant, AlreadyExists for a taken name."""
        async with self._db.begin() as conn:
            await require_tenant(conn, partition.tenant)
            exists = await conn.scalar(
                sa.select(partitions.c.name).where(
                    partitions.c.tenant == partition.tenant, partitions.c.name == partition.name
                )
            )
            if exists is not None:
                raise AlreadyExists(f"partition {partition.name!r} already exists")
            try:
                await conn.execute(
                    partitions.insert().values(
                        tenant=partition.tenant,
                        name=partition.name,
                        description=partition.description,
                        cidrs=list(partition.cidrs),
                        created_at=partition.created_at,
                    )
                )
            except IntegrityError:
                raise AlreadyExists(f"partition {partition.name!r} already exists") from None
        return partition

    async def get_partition(self, tenant: str, name: str) -> Partition | None:
        """One partition, or None."""
        async with self._db.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(partitions).where(partitions.c.tenant == tenant, partitions.c.name == name)
                )
            ).first()
        return None if row is None else _partition(row)

    async def list_partitions(
        self, tenant: str | None, limit: int, after: tuple[str, str] | None
    ) -> list[Partition]:
        """Partitions ordered by (tenant, name), of one tenant or all (None)."""
        query = sa.select(partitions).order_by(partitions.c.tenant, partitions.c.name).limit(limit)
        if tenant is not None:
            query = query.where(partitions.c.tenant == tenant)
        if after is not None:
            query = query.where(sa.tuple_(partitions.c.tenant, partitions.c.name) > sa.tuple_(*after))
        async with self._db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_partition(row) for row in rows]

    async def update_partition(
        self, tenant: str, name: str, description: str, cidrs: tuple[str, ...], now: datetime
    ) -> Partition:
        """Replace a partition's description and CIDR ranges; NotFound when it does not exist."""
        key = (partitions.c.tenant == tenant) & (partitions.c.name == name)
        async with self._db.begin() as conn:
            changed = await conn.execute(
                partitions.update()
                .where(key)
                .values(description=description, cidrs=list(cidrs), updated_at=now)
            )
            if changed.rowcount != 1:
                raise NotFound(f"partition {name!r} not found")
            row = (await conn.execute(sa.select(partitions).where(key))).one()
        return _partition(row)

    async def delete_partition(self, tenant: str, name: str) -> None:
        """Delete a partition no poller belongs to."""
        key = (partitions.c.tenant == tenant) & (partitions.c.name == name)
        async with self._db.begin() as conn:
            in_use = await conn.scalar(
                sa.select(sa.func.count()).where(pollers.c.tenant == tenant, pollers.c.partition == name)
            )
            if in_use:
                raise FailedPrecondition(
                    f"partition {name!r} has {in_use} pollers; move or remove them first"
                )
            deleted = await conn.execute(partitions.delete().where(key))
            if deleted.rowcount != 1:
                raise NotFound(f"partition {name!r} not found")
