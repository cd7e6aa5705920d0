"""A real core per test, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.helpers.core import RunningCore, running_core


@pytest.fixture(params=["sqlite", "postgres"])
async def core(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunningCore]:
    """A core on the embedded SQLite store, and one on a fresh PostgreSQL database."""
    overrides: dict[str, object] = {"heartbeat_flush_interval": 0.05}
    if request.param == "postgres":
        overrides["database_url"] = request.getfixturevalue("fresh_database")
    async with running_core(tmp_path / "data", **overrides) as running:
        yield running


@pytest.fixture
async def sqlite_core(tmp_path: Path) -> AsyncIterator[RunningCore]:
    """A core on SQLite only, for behaviour that does not depend on the store."""
    async with running_core(tmp_path / "data", heartbeat_flush_interval=0.05) as running:
        yield running
