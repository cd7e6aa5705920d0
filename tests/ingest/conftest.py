"""Fixtures for ingest tests: real cores on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from serviceradar.edge.v1 import edge_service_pb2_grpc as pb_grpc
from tests.helpers.core import RunningCore, running_core


@pytest.fixture(params=["sqlite", "postgres"])
async def core(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunningCore]:
    """A core on SQLite and one on a fresh PostgreSQL database."""
    overrides: dict[str, object] = {}
    if request.param == "postgres":
        overrides["database_url"] = request.getfixturevalue("fresh_database")
    async with running_core(tmp_path / "data", **overrides) as running:
        yield running


@pytest.fixture
async def sqlite_core(tmp_path: Path) -> AsyncIterator[RunningCore]:
    """A core on SQLite only."""
    async with running_core(tmp_path / "data") as running:
        yield running


@pytest.fixture
async def edge(sqlite_core: RunningCore) -> AsyncIterator[pb_grpc.EdgeServiceAsyncStub]:
    """An edge stub (demo poller) on the SQLite core."""
    async with sqlite_core.channel(sqlite_core.creds.edge()) as channel:
        yield pb_grpc.EdgeServiceStub(channel)
