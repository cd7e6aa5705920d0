"""Conditions on a list of values: one array parameter on PostgreSQL, an IN list on SQLite.

An IN list of a thousand values is a thousand bind parameters, and on PostgreSQL the driver
parses and converts each of them in Python: more work than reading the rows they select. So is
a list parameter, dumped element by element: the array goes as its literal, written with one
join, in a parameter of the array's type.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

# Values per IN list on SQLite, well below its bound-parameter limit.
SQLITE_CHUNK = 500


class _ArrayLiteral:
    """An array parameter already written as its literal; the subclass names the array's type."""

    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal


class _VarcharArray(_ArrayLiteral):
    __slots__ = ()


class _BigintArray(_ArrayLiteral):
    __slots__ = ()


class _ArrayLiteralDumper(psycopg.adapt.Dumper):
    """Sends an array literal as a typed array parameter: the server still plans with its values."""

    def dump(self, obj: _ArrayLiteral) -> bytes:
        """The literal, as the server parses it."""
        return obj.literal.encode()


class _VarcharArrayDumper(_ArrayLiteralDumper):
    oid = psycopg.adapters.types["varchar"].array_oid


class _BigintArrayDumper(_ArrayLiteralDumper):
    oid = psycopg.adapters.types["int8"].array_oid


psycopg.adapters.register_dumper(_VarcharArray, _VarcharArrayDumper)
psycopg.adapters.register_dumper(_BigintArray, _BigintArrayDumper)


def one_of(
    conn: AsyncConnection, column: sa.ColumnElement[Any], values: Sequence[str]
) -> sa.ColumnElement[bool]:
    """`column` equals one of `values` (strings)."""
    if conn.dialect.name == "postgresql":
        return _equals_any(column, _VarcharArray(text_array(values)))
    return column.in_(list(values))


def one_of_ints(
    conn: AsyncConnection, column: sa.ColumnElement[Any], values: Sequence[int]
) -> sa.ColumnElement[bool]:
    """`column` equals one of `values` (integers)."""
    if conn.dialect.name == "postgresql":
        return _equals_any(column, _BigintArray("{" + ",".join(map(str, values)) + "}"))
    return column.in_(list(values))


def _equals_any(column: sa.ColumnElement[Any], array: _ArrayLiteral) -> sa.ColumnElement[bool]:
    # No SQLAlchemy type: the dumper gives the parameter its array type.
    return column == sa.any_(sa.bindparam(None, array, type_=sa.types.NullType()))


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
