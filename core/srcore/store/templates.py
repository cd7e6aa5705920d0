"""Checker templates: every version is a row; the latest is the highest version of a name."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from srcore.domain.errors import Aborted, NotFound
from srcore.domain.templates import (
    Outcome,
    Registered,
    TemplateFormat,
    TemplateSource,
    TemplateSpec,
    TemplateVersion,
    decide,
)
from srcore.store.database import Database
from srcore.store.pollers import utc
from srcore.store.stats_tables import checker_templates as t
from srcore.store.tenancy import require_tenant

# Two replicas registering the same name at once race for the next version number; the loser
# reads again and decides again (usually: unchanged).
_ATTEMPTS = 3


def _version(row: sa.Row[Any]) -> TemplateVersion:
    created_at = utc(row.created_at)
    assert created_at is not None
    return TemplateVersion(
        tenant=row.tenant,
        name=row.name,
        checker_type=row.checker_type,
        format=TemplateFormat(row.format),
        body=row.body,
        version=row.version,
        digest=row.digest,
        source=TemplateSource(row.source),
        registered_by=row.registered_by,
        created_at=created_at,
    )


async def _latest(conn: AsyncConnection, tenant: str, name: str) -> TemplateVersion | None:
    query = sa.select(t).where(t.c.tenant == tenant, t.c.name == name).order_by(t.c.version.desc()).limit(1)
    row = (await conn.execute(query)).first()
    return _version(row) if row else None


async def _latest_of(conn: AsyncConnection, tenant: str, names: set[str]) -> dict[str, TemplateVersion]:
    newest = (
        sa.select(t.c.name, sa.func.max(t.c.version).label("version"))
        .where(t.c.tenant == tenant, t.c.name.in_(names))
        .group_by(t.c.name)
        .subquery()
    )
    query = (
        sa.select(t)
        .join(newest, (t.c.name == newest.c.name) & (t.c.version == newest.c.version))
        .where(t.c.tenant == tenant)
    )
    return {row.name: _version(row) for row in await conn.execute(query)}


class TemplateRepository:
    """Stores and reads checker template versions."""

    def __init__(self, db: Database, clock: Callable[[], datetime]) -> None:
        self._db = db
        self._clock = clock

    async def register(
        self, tenant: str, specs: Sequence[TemplateSpec], source: TemplateSource, registered_by: str
    ) -> list[Registered]:
        """Register bodies in one transaction (all or nothing); one result per spec, in order."""
        for attempt in range(_ATTEMPTS):
            try:
                return await self._register(tenant, specs, source, registered_by)
            except IntegrityError:
                if attempt == _ATTEMPTS - 1:
                    raise Aborted("templates changed concurrently; retry") from None
        raise AssertionError("unreachable")

    async def _register(
        self, tenant: str, specs: Sequence[TemplateSpec], source: TemplateSource, registered_by: str
    ) -> list[Registered]:
        now = self._clock()
        results = []
        async with self._db.begin() as conn:
            await require_tenant(conn, tenant)
            # One read for every name (an edge registers up to MAX_EDGE_TEMPLATES at once).
            newest = await _latest_of(conn, tenant, {spec.name for spec in specs})
            for spec in specs:
                latest = newest.get(spec.name)
                outcome = decide(latest, spec, source)
                if outcome is not Outcome.CREATED:
                    assert latest is not None
                    results.append(Registered(latest, outcome))
                    continue
                created = TemplateVersion(
                    tenant=tenant,
                    name=spec.name,
                    checker_type=spec.checker_type,
                    format=spec.format,
                    body=spec.body,
                    version=(latest.version if latest else 0) + 1,
                    digest=spec.digest,
                    source=source,
                    registered_by=registered_by,
                    created_at=now,
                )
                await conn.execute(
                    t.insert().values(
                        tenant=tenant,
                        name=created.name,
                        version=created.version,
                        checker_type=created.checker_type,
                        format=created.format.value,
                        body=created.body,
                        digest=created.digest,
                        source=created.source.value,
                        registered_by=created.registered_by,
                        created_at=now,
                    )
                )
                newest[spec.name] = created
                results.append(Registered(created, outcome))
        return results

    async def get(self, tenant: str, name: str, version: int | None) -> TemplateVersion:
        """The latest version of a template, or the one asked for; NOT_FOUND otherwise."""
        async with self._db.connect() as conn:
            if version is None:
                found = await _latest(conn, tenant, name)
            else:
                query = sa.select(t).where(t.c.tenant == tenant, t.c.name == name, t.c.version == version)
                row = (await conn.execute(query)).first()
                found = _version(row) if row else None
        if found is None:
            suffix = f" version {version}" if version is not None else ""
            raise NotFound(f"template {name!r}{suffix} not found")
        return found

    async def list_latest(
        self, tenant: str, prefix: str, limit: int, after: str | None
    ) -> list[TemplateVersion]:
        """The latest version of each template whose name starts with `prefix`, by name."""
        newest = sa.select(t.c.name, sa.func.max(t.c.version).label("version")).where(t.c.tenant == tenant)
        if prefix:
            newest = newest.where(t.c.name.startswith(prefix, autoescape=True))
        if after is not None:
            newest = newest.where(t.c.name > after)
        latest = newest.group_by(t.c.name).order_by(t.c.name).limit(limit).subquery()
        query = (
            sa.select(t)
            .join(latest, (t.c.name == latest.c.name) & (t.c.version == latest.c.version))
            .where(t.c.tenant == tenant)
            .order_by(t.c.name)
        )
        async with self._db.connect() as conn:
            return [_version(row) for row in await conn.execute(query)]

    async def delete(self, tenant: str, name: str) -> int:
        """Delete every version of a template; NOT_FOUND when there is none."""
        async with self._db.begin() as conn:
            result = await conn.execute(t.delete().where(t.c.tenant == tenant, t.c.name == name))
        if result.rowcount == 0:
            raise NotFound(f"template {name!r} not found")
        return int(result.rowcount)
