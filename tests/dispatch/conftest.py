"""Fixtures of the dispatch tests: a real core with short liveness timings, and a factory of
edge pollers that cleans up after the test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from serviceradar.edge.v1 import edge_service_pb2 as pb
from tests.dispatch.support import EdgePoller, Operator, edge_channel
from tests.helpers.core import running_core
from tests.tenancy.support import Site

# A poller silent for HEARTBEAT_TIMEOUT leaves the registry (it was "killed"); live pollers
# heartbeat four times as often as asked, so a loaded test machine does not expire them.
# SyncConfig keepalives (and the store poll behind them) come only every KEEPALIVE seconds,
# so anything a stream receives sooner was pushed.
HEARTBEAT_INTERVAL = 1.0
HEARTBEAT_TIMEOUT = 4.0
KEEPALIVE = 60.0
SETTINGS: dict[str, object] = {
    "admin_listen": "127.0.0.1:0",
    "heartbeat_interval": HEARTBEAT_INTERVAL,
    "heartbeat_timeout": HEARTBEAT_TIMEOUT,
    "heartbeat_flush_interval": 0.05,
    "sync_keepalive_interval": KEEPALIVE,
}


@dataclass
class World:
    """A running core, its platform operator, and the pollers a test made."""

    site: Site
    operator: Operator
    pollers: list[EdgePoller] = field(default_factory=list)

    async def poller(
        self,
        poller_id: str,
        partition: str,
        capabilities: Sequence[str] = ("icmp",),
        *,
        tenant: str = "default",
        agents: Sequence[pb.AgentInfo] = (),
        heartbeats: bool = True,
    ) -> EdgePoller:
        """A registered poller with its own certificate, heartbeating unless told not to."""
        issued = self.site.edge_cert(tenant, poller_id)
        poller = EdgePoller(
            poller_id,
            partition,
            edge_channel(self.site.core.address, self.site.ca_pem, issued),
            capabilities,
            agents,
        )
        self.pollers.append(poller)
        await poller.register()
        if heartbeats:
            poller.start_heartbeats(HEARTBEAT_INTERVAL / 4)
        return poller


async def _world(data_dir: Path, **overrides: object) -> AsyncIterator[World]:
    async with running_core(data_dir, **{**SETTINGS, **overrides}) as core:
        site = Site(core)
        async with site.platform() as channel:
            world = World(site, Operator(channel))
            try:
                yield world
            finally:
                for poller in world.pollers:
                    await poller.close()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    """A core on SQLite."""
    async for made in _world(tmp_path / "data"):
        yield made


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def any_world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    """A core on SQLite, and one on a fresh PostgreSQL database."""
    overrides: dict[str, object] = {}
    if request.param == "postgres":
        overrides["database_url"] = request.getfixturevalue("fresh_database")
    async for made in _world(tmp_path / "data", **overrides):
        yield made
