"""srctl checks, sweeps, sources, assignments, pollers drain/resume and edge sync-config
against a real core (as the demo poller of the development PKI)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from serviceradar.admin.v1 import check_service_pb2 as check_pb
from serviceradar.admin.v1 import check_service_pb2_grpc as check_grpc
from serviceradar.edge.v1 import config_pb2
from tests.cli.test_cli_e2e import Core, Result, Srctl
from tests.helpers.core import RunningCore

pytestmark = pytest.mark.e2e

SECRET = "cli-secret-value-9f2c"


@pytest.fixture
def srctl(running_core: Core, capsys: pytest.CaptureFixture[str]) -> Srctl:
    """srctl bound to the running core."""
    return Srctl(running_core, capsys)


async def until(srctl: Srctl, argv: list[str], done: Any, timeout: float = 10.0) -> Any:
    """`srctl ARGV -o json` until `done(document)`; the last document after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = await srctl(*argv, "-o", "json")
        assert result.code == 0, result.err
        document = result.json()
        if done(document) or time.monotonic() > deadline:
            return document
        await asyncio.sleep(0.1)


def ok(result: Result) -> Result:
    """The result, after checking it succeeded."""
    assert result.code == 0, result.err
    return result


async def test_checks_sources_and_what_the_poller_receives(srctl: Srctl, tmp_path: Path) -> None:
    ok(await srctl("partitions", "create", "dc1"))
    ok(await srctl("edge", "register", "--poller", "demo", "--partition", "dc1", "--capability", "icmp",
                   "--capability", "armis"))  # fmt: skip
    created = ok(await srctl("checks", "create", "gw", "--partition", "dc1", "--type", "icmp",
                             "--target", "10.0.0.1", "--interval", "30s"))  # fmt: skip
    assert "Check:" in created.out and "10.0.0.1" in created.out
    got = await until(srctl, ["checks", "get", "gw"], lambda d: d["check"]["assignment"]["poller_id"])
    assert got["check"]["assignment"]["state"] == "ASSIGNMENT_STATE_ASSIGNED"
    row = next(line.split() for line in ok(await srctl("checks", "list")).out.splitlines() if " gw " in line)
    assert row[-2:] == ["assigned", "demo"] and "30s" in row

    updated = ok(await srctl("checks", "update", "gw", "--interval", "15s", "-o", "json")).json()
    assert updated["check"]["spec"]["interval"] == "15s" and updated["check"]["spec"]["target"] == "10.0.0.1"
    nothing = await srctl("checks", "update", "gw")
    assert nothing.code == 2 and "nothing to update" in nothing.err

    key_file = tmp_path / "armis.key"
    key_file.write_text(SECRET + "\n")
    endpoint, credential = "https://acme.armis.example", f"api_key=@{key_file}"
    source = ok(await srctl("sources", "create", "armis", "--partition", "dc1", "--kind", "armis",
                            "--endpoint", endpoint, "--credential", credential))  # fmt: skip
    assert "api_key" in source.out and SECRET not in source.out
    ok(
        await srctl(
            "sweeps", "create", "lan", "--partition", "dc1", "--cidr", "10.0.0.0/24", "--icmp-every", "5m"
        )
    )

    pending = await until(
        srctl, ["assignments", "list", "--state", "pending"], lambda d: len(d["assignments"]) == 1
    )
    assert [a["name"] for a in pending["assignments"]] == ["lan"], "no poller here can sweep"

    received = (await until(srctl, ["edge", "sync-config", "--poller", "demo"],
                            lambda d: len(d["config"]["sources"]) == 1))["config"]  # fmt: skip
    assert [c["name"] for c in received["checks"]] == ["gw"] and received["checks"][0]["interval"] == "15s"
    assert received["sources"][0]["credentials"] == {"api_key": "<redacted>"}
    shown = ok(
        await srctl("edge", "sync-config", "--poller", "demo", "--show-credentials", "-o", "json")
    ).json()
    assert shown["config"]["sources"][0]["credentials"] == {"api_key": SECRET}
    table = ok(await srctl("edge", "sync-config", "--poller", "demo")).out
    assert "Checks (1):" in table and "<redacted>" in table and SECRET not in table

    poller = ok(await srctl("pollers", "get", "demo", "-o", "json")).json()["poller"]
    assert poller["assigned_work"] == 2 and poller["desired_config_version"] == shown["version"]

    drained = ok(await srctl("pollers", "drain", "demo", "--reason", "swap"))
    assert "draining" in drained.out
    await until(srctl, ["checks", "list", "--poller", "demo"], lambda d: not d["checks"])
    ok(await srctl("pollers", "resume", "demo"))
    await until(srctl, ["checks", "get", "gw"], lambda d: d["check"]["assignment"]["poller_id"] == "demo")

    ok(await srctl("checks", "disable", "gw"))
    assert "disabled" in ok(await srctl("checks", "get", "gw")).out
    deleted = ok(await srctl("checks", "delete", "gw"))
    assert "check gw deleted" in deleted.out
    assert (await srctl("checks", "get", "gw")).code == 4


async def test_sync_config_watch_prints_each_push(srctl: Srctl, running_core: RunningCore) -> None:
    ok(await srctl("partitions", "create", "dc1"))
    ok(await srctl("edge", "register", "--poller", "demo", "--partition", "dc1", "--capability", "icmp"))
    watching = asyncio.create_task(srctl("edge", "sync-config", "--poller", "demo", "--watch", "--count", "2",
                                         "-o", "json"))  # fmt: skip
    await asyncio.sleep(1.0)
    async with running_core.channel(running_core.creds.operator()) as channel:
        spec = check_pb.CheckSpec(partition="dc1", check_type=config_pb2.CHECK_TYPE_ICMP, target="10.0.0.1")
        await check_grpc.CheckServiceStub(channel).CreateCheck(
            check_pb.CreateCheckRequest(name="gw", spec=spec)
        )
    async with asyncio.timeout(20):
        result = ok(await watching)
    documents = [d for d in result.out.split("\n}\n") if d.strip()]
    assert len(documents) == 2
    assert '"checks": []' in documents[0] and '"name": "gw"' in documents[1]


async def test_edge_sync_config_as_another_poller_is_refused(srctl: Srctl) -> None:
    result = await srctl("edge", "sync-config", "--poller", "not-demo")
    assert result.code == 5 and result.err.startswith("Error: PERMISSION_DENIED: ")
    assert grpc.StatusCode.PERMISSION_DENIED.name in result.err
