"""srctl against a real core: the fixture `running_core` (from the shared test helpers) yields
an object with `.address` ("127.0.0.1:PORT") and `.data_dir` (the data dir with pki/ inside).

main() makes blocking gRPC calls, so it runs in a worker thread: the core may be serving from
this very event loop.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from srctl.main import main

pytestmark = pytest.mark.e2e

# Heartbeats reach the store in batches; a state read soon after may still be the old one.
STATE_DEADLINE = 10.0


class Core(Protocol):
    """What the tests need of the running core."""

    @property
    def address(self) -> str: ...

    @property
    def data_dir(self) -> Path: ...


@dataclass(frozen=True)
class Result:
    """The outcome of one srctl invocation."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        """stdout parsed as one JSON document."""
        return json.loads(self.out)


@dataclass(frozen=True)
class Srctl:
    """Runs srctl against one core, with its development PKI."""

    core: Core
    capsys: pytest.CaptureFixture[str]

    async def __call__(self, *argv: str) -> Result:
        """Run `srctl --server ... --data-dir ... ARGV` and capture what it printed."""
        self.capsys.readouterr()
        connection = ["--server", self.core.address, "--data-dir", str(self.core.data_dir)]
        code = await asyncio.to_thread(main, [*connection, *argv])
        captured = self.capsys.readouterr()
        return Result(code, captured.out, captured.err)


@pytest.fixture
def srctl(running_core: Core, capsys: pytest.CaptureFixture[str]) -> Srctl:
    """srctl bound to the running core."""
    return Srctl(running_core, capsys)


REGISTRATION = ["--poller", "demo", "--partition", "dc1", "--version", "1.2.3"]
REGISTRATION += ["--capability", "sweep", "--agent", "agent-1:icmp,tcp", "--label", "site=north"]


async def poller_state(srctl: Srctl, want: str) -> dict[str, Any]:
    """The demo poller from `pollers list -o json`, once it is in state `want`."""
    deadline = time.monotonic() + STATE_DEADLINE
    while True:
        listed = await srctl("pollers", "list", "-o", "json")
        assert listed.code == 0, listed.err
        found: dict[str, Any] = {p["poller_id"]: p for p in listed.json()["pollers"]}
        demo: dict[str, Any] = found.get("demo", {})
        if demo.get("state") == want or time.monotonic() > deadline:
            return demo
        await asyncio.sleep(0.1)


async def test_cluster_status(srctl: Srctl) -> None:
    table = await srctl("cluster", "status")
    assert table.code == 0, table.err
    assert "Leader:" in table.out
    status = (await srctl("cluster", "status", "-o", "json")).json()
    assert status["leader_id"]
    assert any(r["leader"] for r in status["replicas"])


async def test_register_heartbeat_list_and_get(srctl: Srctl) -> None:
    registered = await srctl("edge", "register", *REGISTRATION)
    assert registered.code == 0, registered.err
    assert "Session:" in registered.out

    beat = await srctl("edge", "health", "--register", *REGISTRATION, "-o", "json")
    assert beat.code == 0, beat.err
    assert "registered demo (tenant default)" in beat.err
    answer = beat.json()
    assert answer["config_outdated"] is True
    assert answer["next_interval"].endswith("s")

    demo = await poller_state(srctl, "POLLER_STATE_HEALTHY")
    assert demo["state"] == "POLLER_STATE_HEALTHY"
    assert (demo["tenant"], demo["partition"], demo["version"]) == ("default", "dc1", "1.2.3")

    table = await srctl("pollers", "list")
    row = next(line.split() for line in table.out.splitlines() if " demo " in line)
    assert row[:5] == ["default", "dc1", "demo", "healthy", "1.2.3"]
    assert row[-1] == "drift"

    got = await srctl("pollers", "get", "demo", "-o", "json")
    assert got.code == 0, got.err
    agents = got.json()["poller"]["agents"]
    assert [(a["agent_id"], a["capabilities"]) for a in agents] == [("agent-1", ["icmp", "tcp"])]

    shown = await srctl("pollers", "get", "demo")
    assert "Agents (1):" in shown.out
    assert any(line.startswith("agent-1") for line in shown.out.splitlines())


async def test_unknown_poller_exits_4(srctl: Srctl) -> None:
    result = await srctl("pollers", "get", "no-such-poller")
    assert result.code == 4
    assert result.err.startswith("Error: NOT_FOUND: ")


async def test_poller_id_that_disagrees_with_the_certificate_exits_5(srctl: Srctl) -> None:
    result = await srctl("edge", "register", "--poller", "not-demo", "--partition", "dc1")
    assert result.code == 5
    assert result.err.startswith("Error: PERMISSION_DENIED: ")


async def test_operator_certificate_cannot_act_as_an_edge(srctl: Srctl, running_core: Core) -> None:
    pki = running_core.data_dir / "pki"
    cert = ["--cert", str(pki / "operator.pem"), "--key", str(pki / "operator-key.pem")]
    result = await srctl("edge", "register", "--poller", "demo", "--partition", "dc1", *cert)
    assert result.code == 5
    assert result.err.startswith(("Error: PERMISSION_DENIED: ", "Error: UNAUTHENTICATED: "))


async def test_maintenance_on_and_off_and_the_history_shows_them(srctl: Srctl) -> None:
    assert (await srctl("edge", "register", *REGISTRATION)).code == 0
    on = await srctl("pollers", "maintenance", "on", "demo", "--reason", "new uplink")
    assert on.code == 0, on.err
    assert "maintenance" in next(line for line in on.out.splitlines() if line.startswith("State"))
    again = await srctl("pollers", "maintenance", "on", "demo")
    assert again.code == 1
    assert again.err.startswith("Error: FAILED_PRECONDITION: ")
    assert "already in state maintenance" in again.err
    off = await srctl("pollers", "maintenance", "off", "demo", "-o", "json")
    assert off.code == 0, off.err
    assert off.json()["poller"]["state"] == "POLLER_STATE_RECOVERING"

    shown = await srctl("pollers", "get", "demo")
    assert "History (newest first):" in shown.out
    assert "maintenance_on: new uplink" in shown.out
    history = (await srctl("pollers", "get", "demo", "--history", "2", "-o", "json")).json()["history"]
    assert [(h["from_state"], h["to_state"]) for h in history] == [
        ("POLLER_STATE_MAINTENANCE", "POLLER_STATE_RECOVERING"),
        ("POLLER_STATE_HEALTHY", "POLLER_STATE_MAINTENANCE"),
    ]
