"""Engine construction, migrations and health for SQLite (embedded) and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")


def async_url(url: str) -> str:
    """Normalise a database URL to the async driver this project uses for its dialect."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "postgresql":
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    if parsed.get_backend_name() == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}: use postgresql or sqlite")


def sqlite_url(data_dir: Path) -> str:
    """The embedded default: one SQLite file in the data dir."""
    return f"sqlite+aiosqlite:///{data_dir / 'srcore.db'}"


def alembic_config() -> Config:
    """The alembic configuration of the migrations shipped with this build.

    Set `attributes["connection"]` to run a command on an open connection, as `migrate` does
    and as tests do that move a store to one revision.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revisions() -> frozenset[str]:
    """The newest migration revision of each branch shipped with this build.

    Subsystems own independent migration branches off the base revision (alembic allows
    several heads), so the schema is current when every head is applied.
    """
    heads = frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())
    assert heads, "no migrations shipped"
    return heads


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers proceed during a write; busy_timeout rides out short write locks
    # instead of failing with "database is locked". synchronous=FULL syncs the WAL at every
    # commit: an acknowledged chunk or registration then survives an OS crash or power loss,
    # not only the core's own crash (NORMAL may lose the last commits). Writes are batched
    # (a flush, a slice of heartbeats per transaction), so it costs one fsync per batch.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Database:
    """An async engine plus the operations every store needs (migrate, health)."""

    def __init__(self, url: str, pool_size: int = 10) -> None:
        self.url = async_url(url)
        self.dialect = sa.engine.make_url(self.url).get_backend_name()
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if self.dialect == "postgresql":
            kwargs.update(pool_size=pool_size, max_overflow=pool_size)
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self._heads = head_revisions()
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None

    @property
    def is_postgres(self) -> bool:
        """True on PostgreSQL, where the COPY fast path exists."""
        return self.dialect == "postgresql"

    async def migrate(self) -> str:
        """Apply every pending migration; returns the revisions now current."""

        def upgrade(connection: sa.Connection) -> None:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "heads")

        async with self.engine.begin() as conn:
            await conn.run_sync(upgrade)
        revisions = ",".join(sorted(self._heads))
        log.info("database migrated to %s", revisions)
        return revisions

    async def current_revisions(self) -> frozenset[str]:
        """The revisions recorded in the database (empty before any migration)."""

        def read(connection: sa.Connection) -> frozenset[str]:
            return frozenset(MigrationContext.configure(connection).get_current_heads())

        async with self.engine.connect() as conn:
            return await conn.run_sync(read)

    async def healthy(self) -> tuple[bool, str]:
        """Whether the database answers and its schema is this build's head revision."""
        try:
            current = await self.current_revisions()
        except Exception as exc:  # any driver error means "not serving"
            return False, f"unreachable: {type(exc).__name__}"
        if current != self._heads:
            have = ",".join(sorted(current)) or "none"
            return False, f"schema at {have}, this build needs {','.join(sorted(self._heads))}"
        return True, f"{self.dialect} at {','.join(sorted(current))}"

    def connect(self) -> Any:
        """An async connection context (no transaction)."""
        return self.engine.connect()

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """An async connection inside one transaction.

        SQLite allows one writer at a time and its busy handler backs off by sleeping, so
        concurrent writers in this process queue on a lock instead of polling the file lock.
        """
        if self._write_lock is None:
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self._write_lock, self.engine.begin() as conn:
            yield conn

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


__all__ = ["AsyncConnection", "Database", "async_url", "head_revisions", "sqlite_url"]
