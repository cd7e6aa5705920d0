"""Repository of onboarding packages, which doubles as the certificate revocation list.

Every state change writes its transition in the same transaction. Changes are conditional
updates on the state read (or expected), so two replicas racing on one package cannot both win.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from srcore.domain.coordination import LeaderInfo
from srcore.domain.errors import FailedPrecondition, NotFound
from srcore.domain.model import Transition
from srcore.domain.packages import PENDING, Package, PackageState, check_transition
from srcore.store.database import Database
from srcore.store.fence import hold_fence
from srcore.store.pollers import utc
from srcore.store.tables import onboarding_packages as packages
from srcore.store.tenancy import require_tenant
from srcore.store.transitions import record_transitions

# Bounds one expiry sweep's transaction; the next sweep picks up the rest.
EXPIRY_BATCH = 500


@dataclass(frozen=True, slots=True)
class NewPackage:
    """A package to store, with its certificate and sealed private key."""

    package: Package
    cert_pem: bytes
    sealed_key: bytes
    download_id: str
    download_digest: str


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a successful download hands out: the package (now delivered), its certificate and
    its private key."""

    package: Package
    cert_pem: bytes
    key_pem: bytes


def _utc(value: datetime) -> datetime:
    return utc(value) or value


def _package(row: sa.Row[Any]) -> Package:
    return Package(
        package_id=row.package_id,
        tenant=row.tenant,
        partition=row.partition,
        poller_id=row.poller_id,
        state=PackageState(row.state),
        spiffe_id=row.spiffe_id,
        cert_serial=row.cert_serial,
        cert_not_after=_utc(row.cert_not_after),
        created_by=row.created_by,
        created_at=_utc(row.created_at),
        expires_at=_utc(row.expires_at),
        updated_at=_utc(row.updated_at),
        delivered_at=utc(row.delivered_at),
        activated_at=utc(row.activated_at),
        revoked_at=utc(row.revoked_at),
        revoke_reason=row.revoke_reason,
    )


# Columns a listing reads: everything but the certificate and the secrets.
_PUBLIC = [c for c in packages.c if c.name not in ("cert_pem", "sealed_key", "download_digest")]


class PackageRepository:
    """SQL access for onboarding packages."""

    def __init__(self, db: Database, replica_id: str, fencing_token: Callable[[], int]) -> None:
        self._db = db
        self._replica_id = replica_id
        self._fencing_token = fencing_token

    async def _record(
        self, conn: AsyncConnection, transitions: list[Transition], fencing: int | None
    ) -> None:
        token = self._fencing_token() if fencing is None else fencing
        await record_transitions(conn, transitions, self._replica_id, token)

    async def insert(self, new: NewPackage) -> None:
        """Store a freshly issued package; NotFound for an unknown tenant."""
        p = new.package
        async with self._db.begin() as conn:
            await require_tenant(conn, p.tenant)
            await conn.execute(
                packages.insert().values(
                    package_id=p.package_id,
                    tenant=p.tenant,
                    partition=p.partition,
                    poller_id=p.poller_id,
                    state=p.state.value,
                    spiffe_id=p.spiffe_id,
                    cert_serial=p.cert_serial,
                    cert_pem=new.cert_pem.decode(),
                    cert_not_after=p.cert_not_after,
                    sealed_key=new.sealed_key,
                    download_id=new.download_id,
                    download_digest=new.download_digest,
                    created_by=p.created_by,
                    created_at=p.created_at,
                    expires_at=p.expires_at,
                    updated_at=p.updated_at,
                )
            )

    async def get(self, package_id: str) -> Package | None:
        """One package, or None."""
        return await self._one(packages.c.package_id == package_id)

    async def by_serial(self, serial: str) -> Package | None:
        """The package whose certificate has this serial, or None (not a package certificate)."""
        return await self._one(packages.c.cert_serial == serial)

    async def changed_since(self, since: datetime | None) -> list[Package]:
        """Packages updated at or after `since` (all of them when None), for the edge gate's index."""
        query = sa.select(*_PUBLIC)
        if since is not None:
            query = query.where(packages.c.updated_at >= since)
        async with self._db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_package(row) for row in rows]

    async def download_digest(self, download_id: str) -> tuple[Package, str] | None:
        """The package of a download token id and the digest its token must match.

        None when there is no such package or its download token is spent.
        """
        async with self._db.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(*_PUBLIC, packages.c.download_digest).where(
                        packages.c.download_id == download_id
                    )
                )
            ).first()
        if row is None or row.download_digest is None:
            return None
        return _package(row), row.download_digest

    async def _one(self, condition: sa.ColumnElement[bool]) -> Package | None:
        async with self._db.connect() as conn:
            row = (await conn.execute(sa.select(*_PUBLIC).where(condition))).first()
        return None if row is None else _package(row)

    async def list_packages(
        self,
        tenant: str | None,
        partition: str | None,
        state: PackageState | None,
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> list[Package]:
        """Packages newest first; deleted ones only when `state` asks for them."""
        query = (
            sa.select(*_PUBLIC)
            .order_by(packages.c.created_at.desc(), packages.c.package_id.desc())
            .limit(limit)
        )
        if tenant is not None:
            query = query.where(packages.c.tenant == tenant)
        if partition is not None:
            query = query.where(packages.c.partition == partition)
        if state is not None:
            query = query.where(packages.c.state == state.value)
        else:
            query = query.where(packages.c.state != PackageState.DELETED.value)
        if after is not None:
            query = query.where(sa.tuple_(packages.c.created_at, packages.c.package_id) < sa.tuple_(*after))
        async with self._db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_package(row) for row in rows]

    async def deliver(self, package_id: str, now: datetime, unseal: Callable[[bytes], bytes]) -> Delivery:
        """Hand out a package once: issued -> delivered, erasing the key and the download digest.

        The state change comes first and is conditional, so of two concurrent downloads exactly
        one reads the key; the other finds the package delivered. The key is unsealed inside the
        transaction: if that fails (its secret key is not configured), nothing is erased.
        """
        key = packages.c.package_id == package_id
        async with self._db.begin() as conn:
            claimed = await conn.execute(
                packages.update()
                .where(
                    key,
                    packages.c.state == PackageState.ISSUED.value,
                    packages.c.download_digest.is_not(None),
                    packages.c.expires_at > now,
                )
                .values(state=PackageState.DELIVERED.value, delivered_at=now, updated_at=now)
            )
            if claimed.rowcount != 1:
                raise FailedPrecondition(
                    f"package {package_id} cannot be downloaded: it was downloaded already, "
                    "or it expired, was revoked or deleted"
                )
            row = (await conn.execute(sa.select(packages).where(key))).one()
            key_pem = unseal(bytes(row.sealed_key))
            await conn.execute(packages.update().where(key).values(sealed_key=None, download_digest=None))
            package = _package(row)
            await self._record(
                conn,
                [Transition(package.tenant, "package", package_id, "issued", "delivered", "downloaded", now)],
                None,
            )
        return Delivery(package, row.cert_pem.encode(), key_pem)

    async def activate(self, serial: str, now: datetime) -> Package | None:
        """delivered -> activated for the package of this certificate; None when it was not due."""
        key = packages.c.cert_serial == serial
        async with self._db.begin() as conn:
            changed = await conn.execute(
                packages.update()
                .where(key, packages.c.state == PackageState.DELIVERED.value, packages.c.expires_at > now)
                .values(state=PackageState.ACTIVATED.value, activated_at=now, updated_at=now)
            )
            if changed.rowcount != 1:
                return None
            package = _package((await conn.execute(sa.select(*_PUBLIC).where(key))).one())
            await self._record(
                conn,
                [
                    Transition(
                        package.tenant,
                        "package",
                        package.package_id,
                        "delivered",
                        "activated",
                        "first RegisterPoller",
                        now,
                    )
                ],
                None,
            )
        return package

    async def change_state(
        self, package_id: str, target: PackageState, reason: str, now: datetime, tenant: str | None
    ) -> Package:
        """Revoke or delete a package of `tenant` (None: any), checking the state machine."""
        condition = packages.c.package_id == package_id
        if tenant is not None:
            condition = condition & (packages.c.tenant == tenant)
        async with self._db.begin() as conn:
            row = (await conn.execute(sa.select(*_PUBLIC).where(condition))).first()
            if row is None:
                raise NotFound(f"package {package_id!r} not found")
            package = _package(row)
            check_transition(package, target, now)
            # A pending package past its TTL is expired even if the sweep has not run yet.
            current = package.effective_state(now)
            values: dict[str, Any] = {"state": target.value, "updated_at": now}
            if target is PackageState.REVOKED:
                values.update(revoked_at=now, revoke_reason=reason)
            if target in (PackageState.REVOKED, PackageState.DELETED):
                values.update(sealed_key=None, download_digest=None)
            changed = await conn.execute(
                packages.update().where(condition, packages.c.state == package.state.value).values(**values)
            )
            if changed.rowcount != 1:
                raise FailedPrecondition(f"package {package_id} changed concurrently; retry")
            transitions = []
            if current is not package.state:
                transitions.append(
                    Transition(
                        package.tenant,
                        "package",
                        package_id,
                        package.state.value,
                        current.value,
                        "package TTL passed",
                        now,
                    )
                )
            transitions.append(
                Transition(
                    package.tenant,
                    "package",
                    package_id,
                    current.value,
                    target.value,
                    reason or target.value,
                    now,
                )
            )
            await self._record(conn, transitions, None)
        return (await self.get(package_id)) or package

    async def expire_due(self, now: datetime, leader: LeaderInfo) -> list[Package]:
        """Expire pending packages past their TTL (the leader's sweep); returns those expired.

        Each update repeats the conditions it selected on, so a package downloaded, activated or
        revoked meanwhile is left alone, and the transaction passes the leadership fence, so a
        deposed leader waking up late expires nothing (Fenced).
        """
        pending = [s.value for s in PENDING]
        expired: list[Package] = []
        async with self._db.begin() as conn:
            rows = (
                await conn.execute(
                    sa.select(*_PUBLIC)
                    .where(packages.c.state.in_(pending), packages.c.expires_at <= now)
                    .order_by(packages.c.expires_at)
                    .limit(EXPIRY_BATCH)
                )
            ).all()
            transitions = []
            for row in rows:
                changed = await conn.execute(
                    packages.update()
                    .where(packages.c.package_id == row.package_id, packages.c.state == row.state)
                    .values(
                        state=PackageState.EXPIRED.value,
                        updated_at=now,
                        sealed_key=None,
                        download_digest=None,
                    )
                )
                if changed.rowcount == 1:
                    expired.append(_package(row))
                    transitions.append(
                        Transition(
                            row.tenant,
                            "package",
                            row.package_id,
                            row.state,
                            "expired",
                            "package TTL passed",
                            now,
                        )
                    )
            await hold_fence(conn, leader, now)
            await self._record(conn, transitions, leader.fencing_token)
        return expired
