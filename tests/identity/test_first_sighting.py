"""Hosts seen for the first time, on SQLite and PostgreSQL: a new device and its identifiers are
stored as the upsert would store them, though PostgreSQL COPYs them straight into their tables,
and a device row that exists after all (its id taken, its identifiers unknown) is upserted."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from serviceradar.edge.v1 import results_pb2 as rpb
from srcore.domain.identity import MAC, canonical_id
from srcore.store.device_tables import device_identifiers, devices
from tests.helpers.core import RunningCore
from tests.identity.support import device_update, list_devices, push

T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)


def host(n: int, at: datetime) -> rpb.SweepHostResult:
    """Host `n`, reachable, with a universal MAC."""
    mac = f"00:1c:07:00:00:{n:02x}"
    result = rpb.SweepHostResult(ip=f"10.7.0.{n}", mac=mac, hostname=f"n{n}", available=True)
    result.observed_at.FromDatetime(at)
    return result


async def json_types(core: RunningCore) -> set[tuple[str, str]]:
    """The JSON type of every device's sources and external ids, as the store sees them."""
    postgres = core.app.db.is_postgres
    typeof = "jsonb_typeof" if postgres else "json_type"
    async with core.app.db.begin() as conn:
        rows = await conn.execute(sa.text(f"SELECT {typeof}(sources), {typeof}(external_ids) FROM devices"))
        return {(sources, external) for sources, external in rows}


async def test_a_first_sweep_stores_devices_and_identifiers_as_json_and_links(core: RunningCore) -> None:
    await push(core, "dc1", sweep=[host(n, T0) for n in range(1, 31)])

    listed = {d.ip: d for d in await list_devices(core)}
    assert len(listed) == 30
    assert {tuple(d.sources) for d in listed.values()} == {("sweep",)}
    # Real JSON, not JSON text quoted as a string: the store's JSON operators work on it.
    assert await json_types(core) == {("array", "object")}
    async with core.app.db.begin() as conn:
        selected = sa.select(device_identifiers.c.kind, device_identifiers.c.device_id)
        links = (await conn.execute(selected)).all()
    assert len(links) == 60
    by_device: dict[str, set[str]] = {}
    for kind, device_id in links:
        by_device.setdefault(device_id, set()).add(kind)
    assert by_device == {d.device_id: {"ip", "mac"} for d in listed.values()}

    # An integration then names one of them by MAC with an external id: it lands on that device.
    await push(core, "dc1", updates=[device_update("armis", mac="00:1c:07:00:00:05", armis="A-5")])
    after = {d.ip: d for d in await list_devices(core)}
    assert len(after) == 30
    assert dict(after["10.7.0.5"].external_ids) == {"armis": "A-5"}
    assert list(after["10.7.0.5"].sources) == ["armis", "sweep"]


async def test_a_new_hosts_device_row_that_exists_already_is_upserted(
    core: RunningCore, caplog: pytest.LogCaptureFixture
) -> None:
    await push(core, "dc1", sweep=[host(1, T0)])
    async with core.app.db.begin() as conn:
        tenant = (await conn.execute(sa.select(devices.c.tenant))).scalar_one()
        # A row under the id host 2 will get, with none of its identifiers: restored from a
        # backup, say. Host 2 is still new to identity.
        taken = canonical_id(tenant, (MAC, "00:1c:07:00:00:02", ""))
        await conn.execute(
            sa.insert(devices).values(
                tenant=tenant, device_id=taken, partition="dc1", ip="10.7.0.2", mac="00:1c:07:00:00:02",
                hostname="restored", available=False, first_seen=T0 - timedelta(days=3),
                last_seen=T0 - timedelta(days=2), merged_into=None, external_ids={}, sources=["sweep"],
            )
        )  # fmt: skip

    with caplog.at_level(logging.WARNING, logger="srcore.store.devices"):
        await push(core, "dc1", sweep=[host(n, T0 + timedelta(minutes=1)) for n in range(2, 6)])

    listed = {d.ip: d for d in await list_devices(core)}
    assert sorted(listed) == ["10.7.0.1", "10.7.0.2", "10.7.0.3", "10.7.0.4", "10.7.0.5"]
    restored = listed["10.7.0.2"]
    assert restored.device_id == taken
    # The later observation wins the attributes; first_seen stays the earlier one.
    assert (restored.hostname, restored.available) == ("n2", True)
    assert restored.first_seen.ToDatetime(UTC) == T0 - timedelta(days=3)
    assert restored.last_seen.ToDatetime(UTC) == T0 + timedelta(minutes=1)
    async with core.app.db.begin() as conn:
        count = sa.select(sa.func.count()).select_from(device_identifiers)
        assert (await conn.execute(count)).scalar_one() == 10
    if core.app.db.is_postgres:
        # The COPY met the row, rolled back to its savepoint, and the round upserted instead.
        assert any("upserts it instead" in r.getMessage() for r in caplog.records)
