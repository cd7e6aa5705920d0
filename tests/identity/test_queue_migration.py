"""Migration 0013_identity_queue keeps every unidentified flush queued, both ways, on both stores."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from srcore.store.database import Database, alembic_config, sqlite_url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """An empty store on SQLite and on a fresh PostgreSQL database."""
    postgres = request.param == "postgres"
    database = Database(request.getfixturevalue("fresh_database") if postgres else sqlite_url(tmp_path))
    yield database
    await database.dispose()


async def migrate(db: Database, revision: str, down: bool = False) -> None:
    """Upgrade (or downgrade) the store to `revision`."""

    def run(connection: sa.Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)

    async with db.engine.begin() as conn:
        await conn.run_sync(run)


async def rows(db: Database, query: str) -> list[tuple[int, ...]]:
    """The rows of `query`, as tuples."""
    async with db.engine.connect() as conn:
        return [tuple(row) for row in await conn.exec_driver_sql(query)]


async def test_unidentified_flushes_stay_queued_through_the_migration_and_back(db: Database) -> None:
    await migrate(db, "0007_identity")
    async with db.engine.begin() as conn:
        await conn.exec_driver_sql(
            "INSERT INTO ingest_flushes (id, created_at, projected, identified) VALUES"
            " (1, CURRENT_TIMESTAMP, true, true), (2, CURRENT_TIMESTAMP, false, false),"
            " (3, CURRENT_TIMESTAMP, true, false)"
        )
    await migrate(db, "0013_identity_queue")
    assert await rows(db, "SELECT flush_id FROM identity_pending ORDER BY flush_id") == [(2,), (3,)]
    await migrate(db, "0007_identity", down=True)
    flags = await rows(db, "SELECT id, identified FROM ingest_flushes ORDER BY id")
    assert [(i, bool(identified)) for i, identified in flags] == [(1, True), (2, False), (3, False)]
