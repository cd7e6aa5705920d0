"""Repeat sweeps end to end, on SQLite and PostgreSQL: a sweep of known hosts resolves without
looking identifiers up in the store, rewrites a device only when something about it changed or
its last_seen moved by `identity_last_seen_resolution`, and never lets an older observation
overwrite a newer one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from serviceradar.admin.v1 import device_service_pb2 as dpb
from serviceradar.edge.v1 import results_pb2 as rpb
from srcore.store.device_tables import devices
from tests.helpers.core import RunningCore, running_core
from tests.identity.support import device_update, devices_stub, list_devices, push

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def host(n: int, at: datetime, available: bool = True, mac: str | None = None) -> rpb.SweepHostResult:
    """Host `n` (a universal MAC unless given) probed at `at`."""
    result = rpb.SweepHostResult(
        ip=f"10.4.0.{n}",
        mac=f"00:1c:00:00:00:{n:02x}" if mac is None else mac,
        hostname=f"h{n}",
        available=available,
    )
    result.observed_at.FromDatetime(at)
    return result


def sweep(at: datetime, down: frozenset[int] = frozenset()) -> list[rpb.SweepHostResult]:
    """Hosts 1..20 probed at `at`, the ones in `down` unreachable."""
    return [host(n, at, n not in down) for n in range(1, 21)]


def by_ip(devices: list[dpb.Device]) -> dict[str, dpb.Device]:
    """Devices by IP address."""
    return {d.ip: d for d in devices}


async def test_an_unchanged_repeat_sweep_writes_no_device_rows(core: RunningCore) -> None:
    stage = core.app.identity
    assert stage is not None
    await push(core, "dc1", sweep=sweep(T0))
    first = by_ip(await list_devices(core))
    assert len(first) == 20
    writes, misses = stage.device_writes, stage.misses

    # Ten seconds later, nothing changed: no device row is rewritten, no identifier is read
    # from the store (the fast path answers from the cache).
    await push(core, "dc1", sweep=sweep(T0 + timedelta(seconds=10)))
    assert (stage.device_writes, stage.misses) == (writes, misses)
    again = by_ip(await list_devices(core))
    assert again == first

    # One host went down: that device, and only it, is rewritten, with its new last_seen.
    await push(core, "dc1", sweep=sweep(T0 + timedelta(seconds=20), down=frozenset({3})))
    assert stage.device_writes == writes + 1
    changed = by_ip(await list_devices(core))
    assert not changed["10.4.0.3"].available
    assert changed["10.4.0.3"].last_seen.ToDatetime(UTC) == T0 + timedelta(seconds=20)
    assert changed["10.4.0.4"] == first["10.4.0.4"]

    # Past the resolution (60 s by default) every device's last_seen moves, and nothing else.
    writes = stage.device_writes
    await push(core, "dc1", sweep=sweep(T0 + timedelta(seconds=90), down=frozenset({3})))
    assert stage.device_writes == writes + 20
    later = by_ip(await list_devices(core))
    assert {d.last_seen.ToDatetime(UTC) for d in later.values()} == {T0 + timedelta(seconds=90)}
    for ip, device in later.items():
        device.last_seen.CopyFrom(changed[ip].last_seen)
    assert later == changed


async def test_a_last_seen_moved_further_elsewhere_is_never_moved_back(core: RunningCore) -> None:
    await push(core, "dc1", sweep=sweep(T0))
    first = by_ip(await list_devices(core))
    # Another replica resolved a later probe of host 1 meanwhile; this one's cache does not know.
    elsewhere = T0 + timedelta(minutes=10)
    async with core.app.db.begin() as conn:
        await conn.execute(
            sa.update(devices)
            .where(devices.c.device_id == first["10.4.0.1"].device_id)
            .values(last_seen=elsewhere)
        )
    await push(core, "dc1", sweep=sweep(T0 + timedelta(seconds=90)))
    later = by_ip(await list_devices(core))
    assert later["10.4.0.1"].last_seen.ToDatetime(UTC) == elsewhere
    assert later["10.4.0.2"].last_seen.ToDatetime(UTC) == T0 + timedelta(seconds=90)


async def test_an_older_observation_never_overwrites_a_newer_one(core: RunningCore) -> None:
    await push(core, "dc1", sweep=[host(1, T0 + timedelta(minutes=5))])
    # A poller that buffered results delivers an older probe late.
    await push(core, "dc1", sweep=[host(1, T0, available=False)])
    (device,) = await list_devices(core)
    assert device.available
    assert device.last_seen.ToDatetime(UTC) == T0 + timedelta(minutes=5)
    assert device.first_seen.ToDatetime(UTC) == T0


async def test_a_host_that_flaps_within_one_batch_ends_as_last_probed(core: RunningCore) -> None:
    # Host 1 is quiet by its third sweep: a repeat with its attributes changes nothing. One
    # batch then holds a probe that finds it down and a later one that finds it up again.
    for seconds in (0, 5, 6):
        await push(core, "dc1", sweep=[host(1, T0 + timedelta(seconds=seconds))])
    device = await _one_batch(core, (12, True), (10, False))
    assert device.available
    # And the other way round: up first, down last.
    device = await _one_batch(core, (14, True), (16, False))
    assert (device.available, device.last_seen.ToDatetime(UTC)) == (False, T0 + timedelta(seconds=16))
    # Past the resolution, a probe as the device is moves only its last_seen: up, then that.
    device = await _one_batch(core, (100, True), (102, False))
    assert (device.available, device.last_seen.ToDatetime(UTC)) == (False, T0 + timedelta(seconds=102))


async def _one_batch(core: RunningCore, *probes: tuple[int, bool]) -> dpb.Device:
    """Push probes of host 1 (seconds after T0, reachable) in one batch; returns its device."""
    await push(core, "dc1", sweep=[host(1, T0 + timedelta(seconds=at), up) for at, up in probes])
    (device,) = await list_devices(core)
    return device


async def test_a_quiet_repeat_after_another_source_changed_the_device_puts_the_sweep_back(
    core: RunningCore,
) -> None:
    # Once quiet, a repeat is compared with the device as it is, not as it was: after an
    # integration renamed the device and saw it down, a later probe is the latest word again.
    for seconds in (0, 5, 6):
        await push(core, "dc1", sweep=[host(2, T0 + timedelta(seconds=seconds))])
    update = device_update("netbox", ip="10.4.0.2", mac="00:1c:00:00:00:02")
    update.hostname, update.available = "renamed", False
    update.observed_at.FromDatetime(T0 + timedelta(seconds=7))
    await push(core, "dc1", updates=[update])
    (device,) = await list_devices(core)
    assert (device.hostname, device.available) == ("renamed", False)
    await push(core, "dc1", sweep=[host(2, T0 + timedelta(seconds=8))])
    (device,) = await list_devices(core)
    assert (device.hostname, device.available) == ("h2", True)


async def test_a_repeat_sweep_with_a_new_identifier_follows_the_rules(core: RunningCore) -> None:
    # First seen without a MAC, then with one: the same device gains it.
    await push(core, "dc1", sweep=[host(7, T0, mac="")])
    (anonymous,) = await list_devices(core)
    await push(core, "dc1", sweep=[host(7, T0 + timedelta(seconds=5))])
    (known,) = await list_devices(core)
    assert known.device_id == anonymous.device_id
    assert known.mac == "00:1c:00:00:00:07"
    # The same IP with another MAC is another machine: a new device, and the IP moves to it.
    await push(core, "dc1", sweep=[host(7, T0 + timedelta(seconds=10), mac="00:1c:00:00:00:77")])
    devices = await list_devices(core)
    assert len(devices) == 2
    async with core.channel(core.creds.operator()) as channel:
        found = await devices_stub(channel).LookupDevice(
            dpb.LookupDeviceRequest(ip="10.4.0.7", partition="dc1")
        )
    assert [d.mac for d in found.devices] == ["00:1c:00:00:00:77"]
    # Both keep being resolved on later sweeps without mixing up.
    await push(
        core,
        "dc1",
        sweep=[
            host(7, T0 + timedelta(minutes=3), mac="00:1c:00:00:00:77"),
            host(8, T0, mac="00:1c:00:00:00:07"),
        ],
    )
    macs = {d.mac: d for d in await list_devices(core)}
    assert set(macs) == {"00:1c:00:00:00:07", "00:1c:00:00:00:77"}
    assert macs["00:1c:00:00:00:07"].device_id == anonymous.device_id


async def test_moving_last_seen_keeps_each_device_row_in_its_page_on_postgres(
    tmp_path: Path, fresh_database: str
) -> None:
    # A row updated where it is (HOT) adds no index entry: the write a repeat sweep makes of
    # every device it sees stays cheap. A full page would send each new row version elsewhere.
    hosts = [host(n, T0, mac=f"00:1c:00:00:{n >> 8:02x}:{n & 255:02x}") for n in range(1, 401)]
    for n, result in enumerate(hosts, start=1):
        result.ip = f"10.5.{n >> 8}.{n & 255}"
    async with running_core(tmp_path / "data", database_url=fresh_database) as core:
        await push(core, "dc1", sweep=hosts)
        pages = await _device_pages(core)
        assert len(pages) == 400
        for result in hosts:
            result.observed_at.FromDatetime(T0 + timedelta(minutes=5))
        await push(core, "dc1", sweep=hosts)
        assert {d.last_seen.ToDatetime(UTC) for d in await list_devices(core)} == {T0 + timedelta(minutes=5)}
        assert await _device_pages(core) == pages


async def _device_pages(core: RunningCore) -> dict[str, int]:
    """The heap page holding each device's current row, by device id."""
    async with core.app.db.begin() as conn:
        rows = await conn.execute(sa.text("SELECT device_id, (ctid::text::point)[0]::int FROM devices"))
        return {device_id: page for device_id, page in rows}


@pytest.mark.parametrize("cache_size", [200_000, 2])
async def test_a_result_seen_again_after_its_ip_moved_follows_the_rules(
    tmp_path: Path, cache_size: int
) -> None:
    # Repeats of a result resolve from what the caches found the first time; once its IP moved
    # to another device, that must no longer hold, also when the cache had to forget the IP's
    # link in between (two entries: another host evicts it) and so cannot see it move.
    first_mac, second_mac = "00:1c:00:00:09:01", "00:1c:00:00:09:02"
    async with running_core(tmp_path / "data", identity_cache_size=cache_size) as core:
        for seconds in (0, 5, 6):
            await push(core, "dc1", sweep=[host(9, T0 + timedelta(seconds=seconds), mac=first_mac)])
        await push(core, "dc1", sweep=[host(10, T0 + timedelta(seconds=8))])
        await push(core, "dc1", sweep=[host(9, T0 + timedelta(seconds=10), mac=second_mac)])
        assert [d.mac for d in await _devices_at(core, "10.4.0.9")] == [second_mac]
        await push(core, "dc1", sweep=[host(9, T0 + timedelta(seconds=20), mac=first_mac)])
        assert [d.mac for d in await _devices_at(core, "10.4.0.9")] == [first_mac]
        assert len(await list_devices(core)) == 3


async def _devices_at(core: RunningCore, ip: str) -> list[dpb.Device]:
    """The devices LookupDevice names for `ip` in dc1."""
    async with core.channel(core.creds.operator()) as channel:
        found = await devices_stub(channel).LookupDevice(dpb.LookupDeviceRequest(ip=ip, partition="dc1"))
    return list(found.devices)
