"""Conditions on a list of values: one array parameter on PostgreSQL, an IN list on SQLite.

An IN list of a thousand values is a thousand bind parameters, and on PostgreSQL the driver
parses and converts each of them in Python: more work than reading the rows they select.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

# Values per IN list on SQLite, well below its bound-parameter limit.
SQLITE_CHUNK = 500


def one_of(
    conn: AsyncConnection, column: sa.ColumnElement[Any], values: Sequence[str]
) -> sa.ColumnElement[bool]:
    """`column` equals one of `values` (strings)."""
    if conn.dialect.name == "postgresql":
        return column == sa.any_(sa.bindparam(None, list(values), type_=ARRAY(sa.String())))
    return column.in_(list(values))


def chunks(conn: AsyncConnection, values: Sequence[str]) -> Iterator[Sequence[str]]:
    """The whole list on PostgreSQL (one array parameter), bounded IN lists on SQLite."""
    if conn.dialect.name == "postgresql":
        yield values
        return
    for start in range(0, len(values), SQLITE_CHUNK):
        yield values[start : start + SQLITE_CHUNK]
