"""Direct reads of the store, for tests that must prove what is (not) stored."""

from __future__ import annotations

import sqlalchemy as sa

from srcore.store.database import Database


async def count_rows(db: Database, table: str, where: str = "") -> int:
    """Rows in a table (optionally filtered by a SQL condition)."""
    async with db.connect() as conn:
        return int((await conn.execute(sa.text(f"SELECT count(*) FROM {table} {where}"))).scalar_one())


async def count_distinct_results(db: Database, table: str) -> int:
    """Distinct (tenant, poller, batch, chunk, seq) keys: equals count_rows when nothing is stored twice."""
    keys = "tenant, poller_id, batch_id, chunk_index, seq"
    query = f"SELECT count(*) FROM (SELECT DISTINCT {keys} FROM {table}) AS k"
    async with db.connect() as conn:
        return int((await conn.execute(sa.text(query))).scalar_one())
