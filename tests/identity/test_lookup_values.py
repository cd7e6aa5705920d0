"""Identifier values that PostgreSQL's array syntax treats specially (quotes, backslashes,
commas, braces, spaces, the word NULL) are looked up as they are: on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from serviceradar.admin.v1 import device_service_pb2 as dpb
from srcore.store.lists import text_array
from tests.helpers.core import RunningCore
from tests.identity.support import device_update, devices_stub, list_devices, push

AWKWARD = ['a"b', "back\\slash", "x,y", "{braced}", " spaced ", "NULL", "", "ünï", '\\"both']


async def test_text_arrays_hold_exactly_the_values_given(fresh_database: str) -> None:
    engine = create_async_engine(fresh_database)
    try:
        async with engine.connect() as conn:
            for values in (AWKWARD, ["00:1c:00:00:00:01", "10.0.0.1"], []):
                rows = await conn.execute(
                    sa.text("SELECT unnest(CAST(:values AS text[]))"), {"values": text_array(values)}
                )
                assert [value for (value,) in rows] == values
    finally:
        await engine.dispose()


@pytest.mark.parametrize("external_id", [v for v in AWKWARD if v])
async def test_an_awkward_external_id_finds_its_device_in_the_store(
    core: RunningCore, external_id: str
) -> None:
    await push(core, "dc1", updates=[device_update("armis", ip="10.8.0.1", armis=external_id)])
    stage = core.app.identity
    assert stage is not None
    # Cold caches: the second update's identifier can only be found by looking it up in the store.
    stage.links.clear()
    stage.devices.clear()
    stage.sweep_index.clear()
    await push(core, "dc1", updates=[device_update("armis", ip="10.8.0.2", armis=external_id)])

    (device,) = await list_devices(core)
    assert dict(device.external_ids) == {"armis": external_id}
    assert device.ip == "10.8.0.2"
    async with core.channel(core.creds.operator()) as channel:
        found = await devices_stub(channel).LookupDevice(
            dpb.LookupDeviceRequest(external_system="armis", external_id=external_id)
        )
    assert [d.device_id for d in found.devices] == [device.device_id]
