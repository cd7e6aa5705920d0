"""Fixtures of the tenancy and access-control tests: a real core on SQLite and on a fresh
PostgreSQL database (`fresh_database`, tests/conftest.py), with the token-only admin listener
enabled."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.helpers.core import running_core
from tests.tenancy.support import Site


async def _site(data_dir: Path, **overrides: object) -> AsyncIterator[Site]:
    async with running_core(data_dir, admin_listen="127.0.0.1:0", **overrides) as core:
        yield Site(core)


# The PostgreSQL variant asks for `fresh_database` at run time, which the automatic marking in
# tests/conftest.py cannot see, so it carries the `postgres` marker itself.
@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def site(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Site]:
    """A core on the embedded SQLite store, and one on a fresh PostgreSQL database."""
    overrides: dict[str, object] = {}
    if request.param == "postgres":
        overrides["database_url"] = request.getfixturevalue("fresh_database")
    async for running in _site(tmp_path / "data", **overrides):
        yield running


@pytest.fixture
async def pg_site(tmp_path: Path, fresh_database: str) -> AsyncIterator[Site]:
    """A core on a fresh PostgreSQL database only."""
    async for running in _site(tmp_path / "data", database_url=fresh_database):
        yield running


@pytest.fixture
async def sqlite_site(tmp_path: Path) -> AsyncIterator[Site]:
    """A core on SQLite only, for behaviour that does not depend on the store."""
    async for running in _site(tmp_path / "data"):
        yield running
