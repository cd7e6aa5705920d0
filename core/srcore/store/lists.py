"""Conditions on a list of values: one array parameter on PostgreSQL, an IN list on SQLite.

An IN list of a thousand values is a thousand bind parameters, and on PostgreSQL the driver
parses and converts each of them in Python: more work than reading the rows they select.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

# Values per IN list on SQLite, well below its bound-parameter limit.
SQLITE_CHUNK = 500


class _TextArray:
    """A text[] parameter already written as its literal (`text_array`)."""

    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal


class _TextArrayDumper(psycopg.adapt.Dumper):
    """Sends a `_TextArray` as a varchar[] parameter: the server still plans with its values."""

    oid = psycopg.adapters.types["varchar"].array_oid

    def dump(self, obj: _TextArray) -> bytes:
        """The literal, as the server parses it."""
        return obj.literal.encode()


psycopg.adapters.register_dumper(_TextArray, _TextArrayDumper)


def one_of(
    conn: AsyncConnection, column: sa.ColumnElement[Any], values: Sequence[str]
) -> sa.ColumnElement[bool]:
    """`column` equals one of `values` (strings)."""
    if conn.dialect.name == "postgresql":
        array = sa.bindparam(None, _TextArray(text_array(values)), type_=sa.types.NullType())
        return column == sa.any_(array)
    return column.in_(list(values))


def text_array(values: Sequence[str]) -> str:
    """`values` as the text of a PostgreSQL array literal.

    The driver would dump a list parameter element by element in Python (1.7 µs each,
    measured); plain values, the usual case, are quoted with one join instead (0.1 µs).
    """
    if not values:
        return "{}"
    if '"' in (plain := "".join(values)) or "\\" in plain:
        values = [v.replace("\\", "\\\\").replace('"', '\\"') for v in values]
    return '{"' + '","'.join(values) + '"}'


def chunks(conn: AsyncConnection, values: Sequence[str]) -> Iterator[Sequence[str]]:
    """The whole list on PostgreSQL (one array parameter), bounded IN lists on SQLite."""
    if conn.dialect.name == "postgresql":
        yield values
        return
    for start in range(0, len(values), SQLITE_CHUNK):
        yield values[start : start + SQLITE_CHUNK]
