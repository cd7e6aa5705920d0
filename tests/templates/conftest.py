"""Fixtures of the template tests: a real core on SQLite and on a fresh PostgreSQL database, with
the token-only admin port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.helpers.core import running_core
from tests.tenancy.support import Site


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def site(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Site]:
    """A core on SQLite and on PostgreSQL."""
    overrides: dict[str, object] = {"admin_listen": "127.0.0.1:0"}
    if request.param == "postgres":
        overrides["database_url"] = request.getfixturevalue("fresh_database")
    async with running_core(tmp_path / "data", **overrides) as core:
        yield Site(core)
