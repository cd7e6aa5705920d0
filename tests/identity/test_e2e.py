"""Device identity end to end over mutual TLS: results streamed with ReportResults become
canonical devices that operators read through DeviceService, on SQLite and PostgreSQL."""

from __future__ import annotations

import grpc
import pytest

from serviceradar.admin.v1 import device_service_pb2 as dpb
from serviceradar.admin.v1 import event_service_pb2 as epb
from serviceradar.admin.v1 import event_service_pb2_grpc as egrpc
from tests.helpers.core import RunningCore
from tests.identity.support import device_update, devices_stub, list_devices, push, sweep_host

MAC_A = "00:1a:2b:00:00:0a"
MAC_B = "00:1a:2b:00:00:0b"


async def test_a_late_strong_identifier_merges_two_devices(core: RunningCore) -> None:
    await push(core, "dc1", sweep=[sweep_host("10.0.0.1", MAC_A, "gw"), sweep_host("10.0.0.2", MAC_B)])
    await push(core, "dc1", updates=[device_update("armis", ip="10.9.9.9", armis="A-1")])
    before = await list_devices(core)
    assert len(before) == 3
    by_mac = next(d for d in before if d.mac == MAC_A)
    by_armis = next(d for d in before if d.external_ids.get("armis") == "A-1")

    # Armis learns the MAC of its device: the one the sweep found at 10.0.0.1.
    await push(core, "dc1", updates=[device_update("armis", mac=MAC_A.upper(), armis="A-1")])

    after = await list_devices(core)
    assert len(after) == 2
    survivor = next(d for d in after if d.mac == MAC_A)
    assert survivor.device_id == by_mac.device_id  # the first seen survives
    assert survivor.external_ids["armis"] == "A-1"
    assert list(survivor.sources) == ["armis", "sweep"]
    async with core.channel(core.creds.operator()) as channel:
        stub = devices_stub(channel)
        merged = await stub.GetDevice(dpb.GetDeviceRequest(device_id=by_armis.device_id))
        assert merged.device.merged_into == survivor.device_id
        history = await stub.GetDeviceHistory(dpb.GetDeviceHistoryRequest(device_id=survivor.device_id))
        (merge,) = history.merges
        assert (merge.survivor_id, merge.merged_id, merge.source) == (
            survivor.device_id,
            by_armis.device_id,
            "armis",
        )
        assert {(e.kind, e.value) for e in merge.evidence} == {("external", "armis:A-1"), ("mac", MAC_A)}
        # Observations of both former devices now belong to the survivor's history.
        assert {o.ip for o in history.observations} >= {"10.0.0.1"}
        assert {o.kind for o in history.observations} == {"sweep", "device_update"}
        events = await egrpc.EventServiceStub(channel).ListEvents(
            epb.ListEventsRequest(entity_type="device", event_type="merged")
        )
        (event,) = events.events
        assert event.event.entity_id == by_armis.device_id
        assert survivor.device_id in event.event.reason and "armis:A-1" in event.event.reason
        # Every identifier of either device finds the survivor.
        for request in (
            dpb.LookupDeviceRequest(mac=MAC_A),
            dpb.LookupDeviceRequest(external_system="armis", external_id="A-1"),
            dpb.LookupDeviceRequest(ip="10.9.9.9", partition="dc1"),
        ):
            found = await stub.LookupDevice(request)
            assert [d.device_id for d in found.devices] == [survivor.device_id], request


async def test_the_same_ip_in_two_partitions_is_two_devices(core: RunningCore) -> None:
    await push(core, "dc1", sweep=[sweep_host("192.168.1.10", hostname="printer")])
    await push(core, "dc2", sweep=[sweep_host("192.168.1.10", hostname="camera")])
    devices = await list_devices(core)
    assert sorted((d.partition, d.hostname) for d in devices) == [("dc1", "printer"), ("dc2", "camera")]
    assert [d.hostname for d in await list_devices(core, partition="dc2")] == ["camera"]
    async with core.channel(core.creds.operator()) as channel:
        stub = devices_stub(channel)
        one = await stub.LookupDevice(dpb.LookupDeviceRequest(ip="192.168.1.10", partition="dc1"))
        two = await stub.LookupDevice(dpb.LookupDeviceRequest(ip="192.168.1.10", partition="dc2"))
        assert [d.hostname for d in one.devices] == ["printer"]
        assert [d.hostname for d in two.devices] == ["camera"]
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.LookupDevice(dpb.LookupDeviceRequest(ip="192.168.1.10", partition="dc3"))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_sweeping_again_keeps_the_same_devices(core: RunningCore) -> None:
    hosts = [sweep_host(f"10.1.0.{i}", f"00:1b:00:00:00:{i:02x}") for i in range(1, 40)]
    await push(core, "dc1", sweep=hosts)
    first = {d.device_id for d in await list_devices(core)}
    assert core.app.identity is not None
    misses = core.app.identity.misses
    await push(core, "dc1", sweep=hosts)
    assert {d.device_id for d in await list_devices(core)} == first
    assert len(first) == 39
    # The second sweep read no identifier from the store: the fast path resolved it from the cache.
    assert core.app.identity.misses == misses
    assert core.app.identity.known >= 39


async def test_random_macs_do_not_merge_devices(core: RunningCore) -> None:
    await push(
        core,
        "dc1",
        sweep=[sweep_host("10.2.0.1", "02:00:00:00:00:01"), sweep_host("10.2.0.2", "02:00:00:00:00:01")],
    )
    assert len(await list_devices(core)) == 2
    async with core.channel(core.creds.operator()) as channel:
        found = await devices_stub(channel).LookupDevice(dpb.LookupDeviceRequest(mac="02:00:00:00:00:01"))
    # Recorded, so it can be looked up (it names the device that used it last), but it
    # merged nothing.
    assert [d.ip for d in found.devices] == ["10.2.0.2"]


async def test_history_is_paginated(core: RunningCore) -> None:
    for _ in range(3):
        await push(core, "dc1", sweep=[sweep_host("10.3.0.1", MAC_B)])
    (device,) = await list_devices(core)
    seen: list[dpb.DeviceObservation] = []
    token = ""
    async with core.channel(core.creds.operator()) as channel:
        stub = devices_stub(channel)
        while True:
            page = await stub.GetDeviceHistory(
                dpb.GetDeviceHistoryRequest(device_id=device.device_id, page_size=1, page_token=token)
            )
            seen.extend(page.observations)
            token = page.next_page_token
            if not token:
                break
    assert len(seen) == 3
    stamps = [o.observed_at.ToDatetime() for o in seen]
    assert stamps == sorted(stamps, reverse=True)


async def test_bad_lookups_name_the_field(core: RunningCore) -> None:
    async with core.channel(core.creds.operator()) as channel:
        stub = devices_stub(channel)
        cases = [
            (dpb.LookupDeviceRequest(), "mac"),
            (dpb.LookupDeviceRequest(mac="zz:zz"), "mac"),
            (dpb.LookupDeviceRequest(ip="10.0.0.1"), "partition"),
            (dpb.LookupDeviceRequest(ip="10.0.0.999", partition="dc1"), "ip"),
            (dpb.LookupDeviceRequest(mac=MAC_A, ip="10.0.0.1", partition="dc1"), "mac"),
            (dpb.LookupDeviceRequest(external_system="armis"), "external_id"),
        ]
        for request, field in cases:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.LookupDevice(request)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request
            assert (caught.value.details() or "").startswith(field), caught.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetDevice(dpb.GetDeviceRequest(device_id="nope"))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetDevice(dpb.GetDeviceRequest(device_id="0" * 32))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
