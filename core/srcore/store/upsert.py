"""INSERT ... ON CONFLICT for both dialects, so concurrent writers never race on existence."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection


def _insert(conn: AsyncConnection, table: sa.Table) -> Any:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


async def insert_ignore(conn: AsyncConnection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert rows, skipping any whose key already exists."""
    if rows:
        await conn.execute(_insert(conn, table).on_conflict_do_nothing(), list(rows))


async def upsert(
    conn: AsyncConnection,
    table: sa.Table,
    row: dict[str, Any],
    keys: Sequence[str],
    update: Sequence[str],
) -> None:
    """Insert the row, or update the `update` columns of the row with the same `keys`."""
    statement = _insert(conn, table).values(row)
    statement = statement.on_conflict_do_update(
        index_elements=list(keys), set_={name: statement.excluded[name] for name in update}
    )
    await conn.execute(statement)
