"""Flushes resolved from the rows the writer handed over (in memory, through the fast paths)
give the same devices as the same flushes read back from the store by another replica that
applies the full rules to every observation, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from serviceradar.admin.v1 import device_service_pb2 as dpb
from serviceradar.edge.v1 import edge_service_pb2_grpc as egrpc
from serviceradar.edge.v1 import results_pb2 as rpb
from srcore.app import utcnow
from srcore.domain.ingest import ResultKind
from srcore.ingest.identity import IdentityStage
from srcore.ingest.writer import CommittedFlush
from tests.helpers.core import RunningCore, running_core
from tests.identity.support import device_update, list_devices, stream

T0 = datetime(2026, 4, 1, 8, 0, tzinfo=UTC)
RANDOM = "02:00:00:00:00:20"


def host(
    n: int, at: datetime, mac: str | None = None, hostname: str = "", up: bool = True
) -> rpb.SweepHostResult:
    """Host `n` of 10.7.0.0/24 probed at `at`, with a universal MAC unless given."""
    result = rpb.SweepHostResult(
        ip=f"10.7.0.{n}",
        mac=f"00:1d:00:00:00:{n:02x}" if mac is None else mac,
        hostname=hostname,
        available=up,
    )
    result.observed_at.FromDatetime(at)
    return result


def update(at: datetime, ip: str = "", mac: str = "", **external: str) -> rpb.DeviceUpdate:
    """An Armis device update observed at `at`."""
    result = device_update("armis", ip=ip, mac=mac, **external)
    result.observed_at.FromDatetime(at)
    return result


def steps() -> list[tuple[list[rpb.SweepHostResult] | None, list[rpb.DeviceUpdate] | None]]:
    """New hosts, repeats, changes, an IP reused by another machine, random MACs, updates, a merge."""
    at = [T0 + timedelta(seconds=s) for s in (0, 10, 20, 30, 40, 200)]
    return [
        ([host(n, at[0], hostname=f"h{n}") for n in range(1, 11)] + [host(20, at[0], mac=RANDOM)], None),
        (None, [update(at[1], ip="10.7.0.1", A="1"), update(at[1], ip="10.7.0.9", B="9")]),
        (
            [host(n, at[2]) for n in range(1, 11) if n not in (3, 4)]
            + [host(3, at[2], mac="00:1d:00:00:00:33"), host(4, at[2], up=False)]
            + [host(3, at[2] - timedelta(seconds=1))]
            + [host(20, at[2], mac="02:00:00:00:00:21"), host(30, at[2], mac="")],
            None,
        ),
        (None, [update(at[3], mac="00:1d:00:00:00:02", A="1"), update(at[3], ip="10.7.0.9", B="9")]),
        ([host(30, at[4]), host(5, at[4], hostname="renamed")], None),
        ([host(n, at[5]) for n in range(1, 11)] + [host(3, at[5], mac="00:1d:00:00:00:33")], None),
    ]  # fmt: skip


def snapshot(devices: list[dpb.Device]) -> list[dpb.Device]:
    """Devices in a stable order for comparison."""
    return sorted(devices, key=lambda d: d.device_id)


@pytest.fixture(params=["sqlite", "postgres"])
async def two_cores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[RunningCore, RunningCore]]:
    """A core resolving identity itself, and one with identity off (its flushes resolved elsewhere)."""
    first: dict[str, object] = {}
    second: dict[str, object] = {"identity_enabled": False}
    if request.param == "postgres":
        factory = request.getfixturevalue("database_factory")
        first["database_url"] = factory()
        second["database_url"] = factory()
    async with (
        running_core(tmp_path / "memory", **first) as memory,
        running_core(tmp_path / "store", **second) as store,
    ):
        yield memory, store


async def test_resolving_from_memory_or_from_the_store_gives_the_same_devices(
    two_cores: tuple[RunningCore, RunningCore],
) -> None:
    memory, store = two_cores
    stage = memory.app.identity
    assert stage is not None and store.app.identity is None
    # Another replica of the store core's database: it never saw the flushes committed, and
    # with no cache every observation goes through the full rules.
    replica = IdentityStage(store.app.db, utcnow, "replica-2", cache_size=0)
    for sweep, updates in steps():
        for core in (memory, store):
            async with core.channel(core.creds.edge()) as channel:
                await stream(egrpc.EdgeServiceStub(channel), "dc1", sweep, updates)
        await stage.settle()
        await replica.settle()
        assert snapshot(await list_devices(memory, include_merged=True)) == snapshot(
            await list_devices(store, include_merged=True)
        )
    assert stage.from_memory > 0 and stage.known > 0
    assert replica.from_memory == 0 and replica.known == 0

    devices = await list_devices(memory, include_merged=True)
    by_ip = {d.ip: d for d in devices if not d.merged_into}
    # The IP reused by another machine names the new device; the merge happened; the rename held.
    assert by_ip["10.7.0.3"].mac == "00:1d:00:00:00:33"
    assert by_ip["10.7.0.5"].hostname == "renamed"
    assert by_ip["10.7.0.4"].available  # down in the third step, up again in the last
    assert by_ip["10.7.0.30"].mac == "00:1d:00:00:00:1e"
    assert sum(1 for d in devices if d.merged_into) == 1
    (armis,) = [d for d in devices if d.external_ids.get("a") == "1" and not d.merged_into]
    assert armis.mac == "00:1d:00:00:00:02" and list(armis.sources) == ["armis", "sweep"]


def test_rows_kept_in_memory_are_bounded() -> None:
    stage = IdentityStage(None, utcnow, memory_flushes=3)  # type: ignore[arg-type]
    row = (
        "default",
        "dc1",
        "p",
        "a",
        "b",
        0,
        0,
        1,
        "",
        "10.0.0.1",
        "",
        "",
        True,
        None,
        0.0,
        "",
        T0,
        T0,
        None,
    )
    for flush_id in range(1, 11):
        stage.notify(CommittedFlush(flush_id, {ResultKind.SWEEP_HOSTS: [row]}))
    # Past the bound, flushes are left in the store for the rounds to read back.
    assert stage.waiting_in_memory == 3
