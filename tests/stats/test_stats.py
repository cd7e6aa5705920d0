"""Fleet stats: the leader's refresh counts a hand-counted fleet exactly, GetStats serves it per
partition with totals, one tenant never sees another's, and `srctl stats` prints it."""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa

from serviceradar.admin.v1 import stats_service_pb2 as pb
from serviceradar.admin.v1 import stats_service_pb2_grpc as pb_grpc
from srcore.domain.stats import DeviceRow, IngestRow, StateRow, assemble, totals
from srcore.security.rbac import Role
from srcore.store.ingest_tables import check_latest, ingest_batches
from srcore.store.tables import Json, agents, pollers
from srctl.main import main
from tests.tenancy.support import Site

REFRESH_DEADLINE = 20.0
WINDOW = 300  # the default stats_window

devices = sa.table(
    "devices",
    sa.column("tenant", sa.String),
    sa.column("device_id", sa.String),
    sa.column("partition", sa.String),
    sa.column("ip", sa.String),
    sa.column("mac", sa.String),
    sa.column("hostname", sa.String),
    sa.column("available", sa.Boolean),
    sa.column("first_seen", sa.DateTime(timezone=True)),
    sa.column("last_seen", sa.DateTime(timezone=True)),
    sa.column("merged_into", sa.String),
    sa.column("external_ids", Json),
    sa.column("sources", Json),
)
check_state = sa.table("check_latest", sa.column("tenant"), sa.column("poller_id"), sa.column("name"),
                       sa.column("state"))  # fmt: skip

# The hand-counted fleet: tenant -> rows. (poller, partition, state)
POLLERS = {
    "default": [("p1", "dc1", "healthy"), ("p2", "dc1", "healthy"), ("p3", "dc1", "degraded"),
                ("p4", "dc2", "offline")],
    "alpha": [("x1", "dc1", "healthy")],
}  # fmt: skip
# (poller, agent, state)
AGENTS = {
    "default": [("p1", "a1", "connected"), ("p1", "a2", "connected"), ("p2", "a3", "disconnected"),
                ("p4", "a4", "unavailable")],
    "alpha": [("x1", "xa", "connected")],
}  # fmt: skip
# (poller, agent, check, state)
CHECKS = {
    "default": [("p1", "a1", "c1", "active"), ("p1", "a1", "c2", "failing"), ("p2", "a3", "c3", "paused"),
                ("p4", "a4", "c4", "disabled"), ("p4", "a4", "c5", "active")],
    "alpha": [("x1", "xa", "xc", "failing")],
}  # fmt: skip
# (device, partition, available, merged_into)
DEVICES: dict[str, list[tuple[str, str, bool, str | None]]] = {
    "default": [("d1", "dc1", True, None), ("d2", "dc1", False, None), ("d3", "dc1", True, "d1"),
                ("d4", "dc2", True, None)],
    "alpha": [("e1", "dc1", True, None), ("e2", "dc1", True, None)],
}  # fmt: skip
# (poller, batch, partition, state, accepted, rejected, seconds since the last chunk)
BATCHES: dict[str, list[tuple[str, str, str, str, int, int, int]]] = {
    "default": [("p1", "b1", "dc1", "committed", 600, 3, 5), ("p1", "b2", "dc1", "open", 1000, 7, 7200),
                ("p4", "b3", "dc2", "open", 30, 0, 10)],
    "alpha": [("x1", "b9", "dc1", "committed", 5000, 50, 5)],
}  # fmt: skip

EXPECTED_DEFAULT = {
    "dc1": {
        "devices_total": 2, "devices_available": 1,
        "pollers": {"degraded": 1, "healthy": 2},
        "agents": {"connected": 2, "disconnected": 1},
        "checks": {"active": 1, "failing": 1, "paused": 1},
        "accepted_recent": 600, "rejected_recent": 3, "ingest_rate": 600 / WINDOW,
    },
    "dc2": {
        "devices_total": 1, "devices_available": 1,
        "pollers": {"offline": 1},
        "agents": {"unavailable": 1},
        "checks": {"active": 1, "disabled": 1},
        "accepted_recent": 30, "rejected_recent": 0, "ingest_rate": 30 / WINDOW,
    },
    "": {
        "devices_total": 3, "devices_available": 2,
        "pollers": {"degraded": 1, "healthy": 2, "offline": 1},
        "agents": {"connected": 2, "disconnected": 1, "unavailable": 1},
        "checks": {"active": 2, "disabled": 1, "failing": 1, "paused": 1},
        "accepted_recent": 630, "rejected_recent": 3, "ingest_rate": 630 / WINDOW,
    },
}  # fmt: skip


async def seed(site: Site) -> datetime:
    """Write the fleet above straight into the store; returns when it was committed."""
    await site.create_tenant("alpha")
    now = datetime.now(UTC)
    async with site.app.db.begin() as conn:
        for tenant, rows in POLLERS.items():
            await conn.execute(
                pollers.insert(),
                [
                    {"tenant": tenant, "poller_id": p, "partition": part, "state": state, "capabilities": [],
                     "labels": {}, "registered_at": now, "state_changed_at": now}
                    for p, part, state in rows
                ],
            )  # fmt: skip
            await conn.execute(
                agents.insert(),
                [
                    {"tenant": tenant, "poller_id": p, "agent_id": a, "state": state, "capabilities": [],
                     "labels": {}}
                    for p, a, state in AGENTS[tenant]
                ],
            )  # fmt: skip
            for p, a, check, state in CHECKS[tenant]:
                await conn.execute(
                    check_latest.insert().values(
                        tenant=tenant, poller_id=p, agent_id=a, name=check, check_id=check, check_type="icmp",
                        available=state == "active", message="", observed_at=now,
                    )
                )  # fmt: skip
                await conn.execute(
                    check_state.update()
                    .where(check_state.c.tenant == tenant, check_state.c.poller_id == p,
                           check_state.c.name == check)
                    .values(state=state)
                )  # fmt: skip
            await conn.execute(
                devices.insert(),
                [
                    {"tenant": tenant, "device_id": d, "partition": part, "ip": f"10.0.0.{i}", "mac": "",
                     "hostname": d, "available": up, "first_seen": now, "last_seen": now,
                     "merged_into": merged, "external_ids": {}, "sources": []}
                    for i, (d, part, up, merged) in enumerate(DEVICES[tenant])
                ],
            )  # fmt: skip
            await conn.execute(
                ingest_batches.insert(),
                [
                    {"tenant": tenant, "poller_id": p, "batch_id": b, "result_type": "sweep_hosts",
                     "partition": part, "state": state, "accepted": acc, "rejected": rej,
                     "opened_at": now - timedelta(seconds=age + 1),
                     "updated_at": now - timedelta(seconds=age)}
                    for p, b, part, state, acc, rej, age in BATCHES[tenant]
                ],
            )  # fmt: skip
    return datetime.now(UTC)


async def stats_after(channel: grpc.aio.Channel, after: datetime, **request: Any) -> pb.GetStatsResponse:
    """GetStats once the leader has refreshed from a state committed at `after`."""
    stub = pb_grpc.StatsServiceStub(channel)
    deadline = time.monotonic() + REFRESH_DEADLINE
    while True:
        answer = await stub.GetStats(pb.GetStatsRequest(**request))
        if answer.HasField("refreshed_at") and answer.refreshed_at.ToDatetime(tzinfo=UTC) > after:
            return answer
        assert time.monotonic() < deadline, "the leader did not refresh the stats"
        await asyncio.sleep(0.2)


def figures(row: pb.PartitionStats) -> dict[str, Any]:
    """Every number of a row."""
    return {
        "devices_total": row.devices_total,
        "devices_available": row.devices_available,
        "pollers": {c.state: c.count for c in row.pollers},
        "agents": {c.state: c.count for c in row.agents},
        "checks": {c.state: c.count for c in row.checks},
        "accepted_recent": row.accepted_recent,
        "rejected_recent": row.rejected_recent,
        "ingest_rate": pytest.approx(row.ingest_rate),
    }


async def test_refresh_counts_the_hand_counted_fleet(site: Site) -> None:
    seeded = await seed(site)
    async with site.platform() as channel:
        answer = await stats_after(channel, seeded)
        assert answer.tenant == "default"
        assert answer.window_seconds == WINDOW
        assert [p.partition for p in answer.partitions] == ["dc1", "dc2"]
        for row in answer.partitions:
            assert figures(row) == EXPECTED_DEFAULT[row.partition], row.partition
        assert figures(answer.totals) == EXPECTED_DEFAULT[""]
        # State lists come sorted, so output is stable.
        assert [c.state for c in answer.totals.checks] == ["active", "disabled", "failing", "paused"]

        one = await pb_grpc.StatsServiceStub(channel).GetStats(pb.GetStatsRequest(partition="dc2"))
        assert [p.partition for p in one.partitions] == ["dc2"]
        assert figures(one.totals) == EXPECTED_DEFAULT["dc2"]

        alpha = await pb_grpc.StatsServiceStub(channel).GetStats(pb.GetStatsRequest(tenant="alpha"))
        assert figures(alpha.totals) == {
            "devices_total": 2, "devices_available": 2, "pollers": {"healthy": 1},
            "agents": {"connected": 1}, "checks": {"failing": 1}, "accepted_recent": 5000,
            "rejected_recent": 50, "ingest_rate": 5000 / WINDOW,
        }  # fmt: skip


async def test_bad_requests_get_clear_statuses(site: Site) -> None:
    async with site.platform() as channel:
        stub = pb_grpc.StatsServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stub.GetStats(pb.GetStatsRequest(partition="Not A Slug"))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "partition" in (bad.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.GetStats(pb.GetStatsRequest(tenant="nobody"))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_tenant_sees_only_its_own_figures(site: Site) -> None:
    seeded = await seed(site)
    viewer = await site.create_token("alpha", Role.VIEWER)
    async with site.admin_port(viewer.secret) as channel:
        answer = await stats_after(channel, seeded)
        assert answer.tenant == "alpha"
        assert [p.partition for p in answer.partitions] == ["dc1"]
        assert answer.totals.devices_total == 2
        assert answer.totals.accepted_recent == 5000
        with pytest.raises(grpc.aio.AioRpcError) as other:
            await pb_grpc.StatsServiceStub(channel).GetStats(pb.GetStatsRequest(tenant="default"))
        assert other.value.code() == grpc.StatusCode.NOT_FOUND


async def test_srctl_stats_prints_a_table_and_json(
    site: Site, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("SRCTL_")]:
        monkeypatch.delenv(name)
    seeded = await seed(site)
    async with site.platform() as channel:
        await stats_after(channel, seeded)
    connection = ["--server", site.core.address, "--data-dir", str(Path(site.core.data_dir))]

    capsys.readouterr()
    assert await asyncio.to_thread(main, [*connection, "stats"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("tenant default, computed ")
    assert lines[1].split() == ["PARTITION", "DEVICES", "UP", "POLLERS", "AGENTS", "CHECKS", "RESULTS/S",
                                "ACCEPTED", "REJECTED"]  # fmt: skip
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert rows["dc1"] == ["dc1", "1/2", "degraded=1", "healthy=2", "connected=2", "disconnected=1",
                           "active=1", "failing=1", "paused=1", "2.00", "600", "3"]  # fmt: skip
    assert rows["TOTAL"][1] == "2/3"
    assert rows["TOTAL"][-3:] == ["2.10", "630", "3"]

    assert await asyncio.to_thread(main, [*connection, "stats", "--partition", "dc2", "-o", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert [p["partition"] for p in document["partitions"]] == ["dc2"]
    assert document["totals"]["devices_total"] == "1"  # uint64 is a string in proto3 JSON
    assert document["totals"]["checks"] == [
        {"state": "active", "count": "1"},
        {"state": "disabled", "count": "1"},
    ]

    assert await asyncio.to_thread(main, [*connection, "stats", "--tenant", "nobody"]) != 0


def test_assemble_and_totals_sum_what_the_queries_grouped() -> None:
    rows = assemble(
        pollers=[StateRow("t", "b", "healthy", 2), StateRow("t", "a", "healthy", 1)],
        agents=[StateRow("t", "a", "connected", 4)],
        checks=[StateRow("t", "c", "failing", 1)],
        devices=[DeviceRow("t", "a", 10, 7)],
        ingest=[IngestRow("u", "a", 300, 2)],
    )
    assert [(r.tenant, r.partition) for r in rows] == [("t", "a"), ("t", "b"), ("t", "c"), ("u", "a")]
    total = totals("t", [r for r in rows if r.tenant == "t"])
    assert (total.devices_total, total.devices_available) == (10, 7)
    assert total.pollers == {"healthy": 3}
    assert total.checks == {"failing": 1}
    assert rows[3].ingest_rate(300) == 1.0
