"""Fixtures for identity tests: real cores on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.helpers.core import RunningCore, running_core


@pytest.fixture(params=["sqlite", "postgres"])
async def core(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunningCore]:
    """A core on SQLite and one on a fresh PostgreSQL database."""
    overrides: dict[str, object] = {}
    if request.param == "postgres":
        overrides["database_url"] = request.getfixturevalue("fresh_database")
    async with running_core(tmp_path / "data", **overrides) as running:
        yield running
