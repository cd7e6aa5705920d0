"""Fixtures of the event tests, on top of the shared service fixtures in tests/conftest.py
(`fresh_database`, `nats_url`: real PostgreSQL and NATS JetStream, failing when unreachable)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.errors import NotFoundError

from srcore.events.bus import NatsBus
from srcore.events.config import EventConfig
from srcore.store.database import Database, sqlite_url
from tests.events.support import event_config, wait_for


@pytest.fixture
async def db(fresh_database: str) -> AsyncIterator[Database]:
    """A migrated store on a fresh PostgreSQL database."""
    database = Database(fresh_database)
    await database.migrate()
    yield database
    await database.dispose()


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated store on a fresh SQLite file (the embedded default)."""
    database = Database(sqlite_url(tmp_path))
    await database.migrate()
    yield database
    await database.dispose()


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NatsClient]:
    """A NATS connection for the test's own reads of the stream."""
    client = await nats.connect(nats_url)
    yield client
    await client.close()


@pytest.fixture
async def config(nats_url: str, nc: NatsClient) -> AsyncIterator[EventConfig]:
    """Event settings with a stream and subject prefix of this test alone; the stream is
    deleted afterwards."""
    cfg = event_config(nats_url)
    yield cfg
    with contextlib.suppress(NotFoundError):
        await nc.jetstream().delete_stream(cfg.stream)


@pytest.fixture
async def bus(config: EventConfig) -> AsyncIterator[NatsBus]:
    """A connected NatsBus, as a replica holds one."""
    nats_bus = NatsBus(config.nats_url, "srtest", config.max_in_flight)
    nats_bus.start()
    await wait_for(lambda: nats_bus.connected, timeout=10, what="the NATS connection")
    yield nats_bus
    await nats_bus.close()
