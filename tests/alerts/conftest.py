"""Fixtures of the alert tests: a real core with short liveness and alert timings, its
platform operator, edge pollers, srctl, and real HTTP receivers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from serviceradar.admin.v1 import alert_service_pb2 as alert_pb
from serviceradar.admin.v1 import alert_service_pb2_grpc as alert_grpc
from serviceradar.admin.v1 import notifier_service_pb2 as notifier_pb
from serviceradar.admin.v1 import notifier_service_pb2_grpc as notifier_grpc
from srctl.main import main
from tests.alerts.receiver import Receiver
from tests.dispatch.support import EdgePoller, edge_channel
from tests.helpers.core import running_core
from tests.tenancy.support import Site

# A poller silent for HEARTBEAT_TIMEOUT goes offline; evaluation and delivery are quick and
# retries short, so a test waits seconds, not minutes.
SETTINGS: dict[str, object] = {
    "admin_listen": "127.0.0.1:0",
    "heartbeat_interval": 1.0,
    "heartbeat_timeout": 2.5,
    "heartbeat_flush_interval": 0.05,
    "liveness_check_interval": 0.2,
    "alert_evaluation_interval": 0.2,
    "alert_delivery_attempts": 3,
    "alert_delivery_backoff": 0.05,
    "alert_delivery_timeout": 5.0,
    "alert_cooldown": 600.0,
    "alert_escalation_delay": 3600.0,
}


@dataclass
class World:
    """A running core, the platform admin's stubs, and the pollers a test made."""

    site: Site
    channel: grpc.aio.Channel
    pollers: list[EdgePoller] = field(default_factory=list)

    @property
    def alerts(self) -> alert_grpc.AlertServiceAsyncStub:
        """AlertService as the platform admin."""
        return alert_grpc.AlertServiceStub(self.channel)

    @property
    def notifiers(self) -> notifier_grpc.NotifierServiceAsyncStub:
        """NotifierService as the platform admin."""
        return notifier_grpc.NotifierServiceStub(self.channel)

    async def notifier(self, name: str, kind: int, url: str, **extra: Any) -> notifier_pb.Notifier:
        """Create a notifier in the default tenant."""
        answer = await self.notifiers.CreateNotifier(
            notifier_pb.CreateNotifierRequest(name=name, kind=kind, url=url, **extra)  # type: ignore[arg-type]
        )
        return answer.notifier

    async def silent_poller(self, poller_id: str, tenant: str = "default") -> EdgePoller:
        """A poller that registers and then says nothing (it goes offline)."""
        issued = self.site.edge_cert(tenant, poller_id)
        poller = EdgePoller(poller_id, "dc1", edge_channel(self.site.core.address, self.site.ca_pem, issued))
        self.pollers.append(poller)
        await poller.register()
        return poller

    async def alerts_of(self, subject: str, tenant: str = "") -> list[alert_pb.Alert]:
        """Every alert about `subject`, newest first."""
        answer = await self.alerts.ListAlerts(alert_pb.ListAlertsRequest(tenant=tenant, page_size=1000))
        return [a for a in answer.alerts if a.subject == subject]

    async def wait_alert(
        self, subject: str, state: int, count: int = 1, timeout: float = 20.0
    ) -> list[alert_pb.Alert]:
        """Wait until `count` alerts about `subject` are in `state`; those alerts."""
        async with asyncio.timeout(timeout):
            while True:
                found = [a for a in await self.alerts_of(subject) if a.state == state]
                if len(found) >= count:
                    return found
                await asyncio.sleep(0.1)

    async def recorded(
        self, alert_id: str, attempts: int, timeout: float = 20.0
    ) -> alert_pb.GetAlertResponse:
        """The alert once `attempts` delivery attempts are recorded (the receiver sees a POST
        just before the core writes down how it went)."""
        async with asyncio.timeout(timeout):
            while True:
                got = await self.alerts.GetAlert(alert_pb.GetAlertRequest(alert_id=alert_id))
                if len(got.deliveries) >= attempts:
                    return got
                await asyncio.sleep(0.1)


async def open_world(data_dir: Path, **overrides: object) -> AsyncIterator[World]:
    """A core with the alerting test settings (plus `overrides`) and a platform admin channel."""
    async with running_core(data_dir, **{**SETTINGS, **overrides}) as core:
        site = Site(core)
        async with site.platform() as channel:
            world = World(site, channel)
            try:
                yield world
            finally:
                for poller in world.pollers:
                    await poller.close()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    """A core on SQLite."""
    async for made in open_world(tmp_path / "data"):
        yield made


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def any_world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    """A core on SQLite, and one on a fresh PostgreSQL database."""
    overrides: dict[str, object] = {}
    if request.param == "postgres":
        overrides["database_url"] = request.getfixturevalue("fresh_database")
    async for made in open_world(tmp_path / "data", **overrides):
        yield made


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real HTTP receiver on 127.0.0.1."""
    made = Receiver()
    yield made
    made.close()


class Srctl:
    """Runs srctl in a worker thread (the core serves on this event loop) as the platform admin."""

    def __init__(self, site: Site, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys
        self._connection = ["--data-dir", str(site.core.data_dir), "--server", site.core.address]

    async def __call__(self, *argv: str) -> tuple[int, str, str]:
        """Exit code, stdout and stderr of `srctl ARGV`."""
        self._capsys.readouterr()
        code = await asyncio.to_thread(main, [*argv, *self._connection])
        out, err = self._capsys.readouterr()
        return code, out, err


@pytest.fixture
def srctl(world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Srctl:
    """srctl against the SQLite world's core, with the developer's SRCTL_* settings kept out."""
    for name in [n for n in os.environ if n.startswith("SRCTL_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SRCTL_CONFIG", str(world.site.core.data_dir / "srctl.yaml"))
    return Srctl(world.site, capsys)
