"""`srctl results hosts|checks|sweeps` and a check's history against a real core (SQLite).

main() makes blocking gRPC calls, so it runs in a worker thread while the core serves from
this event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from srctl.main import main
from tests.helpers.core import RunningCore, running_core
from tests.processing.conftest import check_result, report_checks, sweep, sweep_host


@pytest.fixture
async def cli_core(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RunningCore]:
    """A SQLite core with one processed sweep and one failing check."""
    for name in os.environ:
        if name.startswith("SRCTL_"):
            monkeypatch.delenv(name)
    async with running_core(tmp_path / "data", check_failing_after=2) as core:
        await sweep(
            core, [sweep_host("10.9.0.1", rtt_us=1200, open_ports={22: 800})], execution_id="exec-cli"
        )
        await report_checks(core, [check_result("web", False, 1), check_result("web", False, 2)])
        yield core


async def srctl(core: RunningCore, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run srctl against the core; returns the exit code, stdout and stderr."""
    capsys.readouterr()
    connection = ["--server", core.address, "--data-dir", str(core.data_dir)]
    code = await asyncio.to_thread(main, [*connection, *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def test_srctl_shows_processed_state(cli_core: RunningCore, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = await srctl(cli_core, capsys, "results", "hosts", "-o", "json")
    assert code == 0, err
    (host,) = json.loads(out)["hosts"]
    assert (host["ip"], host["available"], host["open_ports"]) == ("10.9.0.1", True, [22])

    code, out, err = await srctl(cli_core, capsys, "results", "checks", "--state", "failing")
    assert code == 0, err
    assert "web" in out and "failing" in out

    code, out, err = await srctl(cli_core, capsys, "results", "sweeps")
    assert code == 0, err
    assert "completed" in out and "1/1" in out

    code, out, err = await srctl(
        cli_core, capsys, "results", "list", "--type", "service-checks", "--check", "web", "-o", "json"
    )
    assert code == 0, err
    assert [r["service_check"]["name"] for r in json.loads(out)["results"]] == ["web", "web"]

    code, _, err = await srctl(cli_core, capsys, "results", "list", "--type", "sweep-hosts", "--check", "web")
    assert code != 0 and "check_name" in err
