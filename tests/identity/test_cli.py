"""`srctl devices` against a real core: lookups, list, get and history in every output format.

main() makes blocking gRPC calls, so it runs in a worker thread while the core serves from
this event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from srctl.main import main
from tests.helpers.core import RunningCore, running_core
from tests.identity.support import device_update, push, sweep_host

MAC = "00:1a:2b:00:00:0a"


@pytest.fixture
async def cli_core(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RunningCore]:
    """A SQLite core holding a device seen by a sweep and by Armis, merged from two."""
    for name in os.environ:
        if name.startswith("SRCTL_"):
            monkeypatch.delenv(name)
    async with running_core(tmp_path / "data") as core:
        await push(core, "dc1", sweep=[sweep_host("10.0.0.1", MAC, "gw")])
        await push(core, "dc1", updates=[device_update("armis", ip="10.8.0.1", armis="A-1")])
        await push(core, "dc1", updates=[device_update("armis", mac=MAC, armis="A-1")])
        yield core


async def srctl(core: RunningCore, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run srctl against the core; returns the exit code, stdout and stderr."""
    capsys.readouterr()
    connection = ["--server", core.address, "--data-dir", str(core.data_dir)]
    code = await asyncio.to_thread(main, [*connection, *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def test_srctl_devices(cli_core: RunningCore, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = await srctl(cli_core, capsys, "devices", "list", "-o", "json")
    assert code == 0, err
    (device,) = json.loads(out)["devices"]
    assert (device["mac"], device["external_ids"]) == (MAC, {"armis": "A-1"})
    device_id = device["device_id"]

    code, out, _ = await srctl(cli_core, capsys, "devices", "list")
    assert code == 0 and device_id in out and "armis,sweep" in out

    for flags in (
        ["--mac", MAC.upper()],
        ["--ip", "10.8.0.1", "--partition", "dc1"],
        ["--external-id", "armis=A-1"],
    ):
        code, out, err = await srctl(cli_core, capsys, "devices", "lookup", *flags, "-o", "json")
        assert code == 0, err
        assert [d["device_id"] for d in json.loads(out)["devices"]] == [device_id], flags

    code, out, _ = await srctl(
        cli_core, capsys, "devices", "lookup", "--ip", "10.8.0.1", "--partition", "dc2"
    )
    assert code == 4  # not found
    code, _, err = await srctl(cli_core, capsys, "devices", "lookup", "--ip", "10.8.0.1")
    assert code == 2 and "--partition" in err

    code, out, err = await srctl(cli_core, capsys, "devices", "get", device_id, "-o", "yaml")
    assert code == 0, err
    shown: dict[str, Any] = yaml.safe_load(out)
    assert {(i["kind"], i["value"]) for i in shown["identifiers"]} >= {
        ("mac", MAC),
        ("external", "armis:A-1"),
    }

    code, out, err = await srctl(cli_core, capsys, "devices", "history", device_id, "-o", "json")
    assert code == 0, err
    history = json.loads(out)
    (merge,) = history["merges"]
    assert merge["survivor_id"] == device_id and merge["source"] == "armis"
    assert len(history["observations"]) == 3

    code, out, err = await srctl(cli_core, capsys, "devices", "history", device_id)
    assert code == 0, err
    assert "armis" in out and "10.0.0.1" in out
