"""DeviceService: canonical devices, their identifiers and history, scoped to the caller's tenant."""

from __future__ import annotations

import re

from serviceradar.admin.v1 import device_service_pb2 as pb
from serviceradar.admin.v1 import device_service_pb2_grpc as pb_grpc
from srcore.api.context import Context
from srcore.api.convert import timestamp
from srcore.api.paging import decode_time, decode_token, encode_token, page_size, text_key
from srcore.domain import identity, validation
from srcore.domain.errors import InvalidArgument, NotFound
from srcore.security.principal import caller
from srcore.store.devices import DeviceRepository, IdentifierRow, MergeRow, ObservationRow

_DEVICE_ID = re.compile(r"[0-9a-f]{32}")


def device_message(device: identity.Device) -> pb.Device:
    """The admin view of a device."""
    return pb.Device(
        tenant=device.tenant,
        device_id=device.device_id,
        partition=device.partition,
        ip=device.ip,
        mac=device.mac,
        hostname=device.hostname,
        available=device.available,
        first_seen=timestamp(device.first_seen),
        last_seen=timestamp(device.last_seen),
        merged_into=device.merged_into or "",
        external_ids=device.external_ids,
        sources=device.sources,
    )


def _identifier(row: IdentifierRow) -> pb.DeviceIdentifier:
    return pb.DeviceIdentifier(
        kind=row.kind, value=row.value, partition=row.partition, updated_at=timestamp(row.updated_at)
    )


def _merge(row: MergeRow) -> pb.DeviceMerge:
    return pb.DeviceMerge(
        survivor_id=row.survivor_id,
        merged_id=row.merged_id,
        evidence=[pb.DeviceIdentifier(kind=k, value=v, partition=p) for k, v, p in row.evidence],
        source=row.source,
        partition=row.partition,
        observed_at=timestamp(row.observed_at),
        merged_at=timestamp(row.merged_at),
    )


def _observation(row: ObservationRow) -> pb.DeviceObservation:
    return pb.DeviceObservation(
        kind=row.kind,
        observed_at=timestamp(row.observed_at),
        partition=row.partition,
        poller_id=row.poller_id,
        source=row.source,
        ip=row.ip,
        mac=row.mac,
        hostname=row.hostname,
        available=row.available,
        external_ids=row.external_ids,
    )


def device_id_of(value: str) -> str:
    """A device id as the core issues them; INVALID_ARGUMENT otherwise."""
    if not _DEVICE_ID.fullmatch(value):
        raise InvalidArgument("device_id", "required: 32 lower-case hex digits")
    return value


class DeviceServicer(pb_grpc.DeviceServiceServicer):
    """Reads the identity tables."""

    def __init__(self, repository: DeviceRepository) -> None:
        self._repository = repository

    async def LookupDevice(
        self, request: pb.LookupDeviceRequest, context: Context
    ) -> pb.LookupDeviceResponse:
        """The devices one identifier names."""
        given = [bool(request.mac), bool(request.ip), bool(request.external_system or request.external_id)]
        if sum(given) != 1:
            raise InvalidArgument("mac", "give exactly one of mac, ip (with partition) or external id")
        tenant = caller().tenant_for(request.tenant)
        if request.mac:
            mac = identity.normalize_mac(request.mac)
            kind = identity.mac_class(mac)
            if not kind:
                raise InvalidArgument("mac", "broadcast, multicast and all-zero MACs name no device")
            found = await self._repository.lookup(tenant, kind, mac, None)
            what = f"mac {mac}"
        elif request.ip:
            ip = identity.normalize_ip(request.ip)
            if not request.partition:
                raise InvalidArgument("partition", "required with ip: IP space overlaps between partitions")
            partition = validation.slug("partition", request.partition)
            found = await self._repository.lookup(tenant, identity.IP, ip, partition)
            what = f"ip {ip} in partition {partition}"
        else:
            system = identity.normalize_system(request.external_system)
            if not request.external_id or len(request.external_id) > identity.MAX_EXTERNAL_ID:
                raise InvalidArgument(
                    "external_id", f"required, at most {identity.MAX_EXTERNAL_ID} characters"
                )
            value = identity.external_value(system, request.external_id)
            found = await self._repository.lookup(tenant, identity.EXTERNAL, value, "")
            what = f"external id {value}"
        devices: dict[str, pb.Device] = {}
        for device_id in found:
            device = await self._repository.get_device(tenant, device_id)
            if device is not None and device.merged_into:
                device = await self._repository.get_device(tenant, device.merged_into)
            if device is not None:
                devices[device.device_id] = device_message(device)
        if not devices:
            raise NotFound(f"no device with {what}")
        return pb.LookupDeviceResponse(devices=[devices[k] for k in sorted(devices)])

    async def ListDevices(self, request: pb.ListDevicesRequest, context: Context) -> pb.ListDevicesResponse:
        """One page of devices."""
        tenant = caller().tenant_for(request.tenant)
        partition = validation.slug("partition", request.partition) if request.partition else None
        size = page_size(request.page_size)
        key = text_key(request.page_token, 1)
        after = key[0] if key else None
        found = await self._repository.list_devices(
            tenant, partition, request.include_merged, size + 1, after
        )
        more = len(found) > size
        found = found[:size]
        return pb.ListDevicesResponse(
            devices=[device_message(d) for d in found],
            next_page_token=encode_token([found[-1].device_id]) if more else "",
        )

    async def GetDevice(self, request: pb.GetDeviceRequest, context: Context) -> pb.GetDeviceResponse:
        """One device with its identifiers."""
        device_id = device_id_of(request.device_id)
        tenant = caller().tenant_for(request.tenant)
        device = await self._repository.get_device(tenant, device_id)
        if device is None:
            raise NotFound(f"device {device_id!r} not found")
        identifiers = await self._repository.identifiers(tenant, device_id)
        return pb.GetDeviceResponse(
            device=device_message(device), identifiers=[_identifier(i) for i in identifiers]
        )

    async def GetDeviceHistory(
        self, request: pb.GetDeviceHistoryRequest, context: Context
    ) -> pb.GetDeviceHistoryResponse:
        """A device's merges and one page of its observations."""
        device_id = device_id_of(request.device_id)
        tenant = caller().tenant_for(request.tenant)
        size = page_size(request.page_size)
        after = None
        if request.page_token:
            at, kind, poller, batch, chunk, seq = decode_token(request.page_token, 6)
            if not isinstance(kind, str) or not isinstance(poller, str) or not isinstance(batch, str):
                raise InvalidArgument("page_token", "not a token this server issued")
            after = (decode_time(str(at)), kind, poller, batch, int(chunk), int(seq))
        device = await self._repository.get_device(tenant, device_id)
        if device is None:
            raise NotFound(f"device {device_id!r} not found")
        identifiers = await self._repository.identifiers(tenant, device_id)
        merges = await self._repository.merges(tenant, device_id) if after is None else []
        rows = await self._repository.observations(tenant, identifiers, size + 1, after)
        more = len(rows) > size
        rows = rows[:size]
        token = ""
        if more:
            last = rows[-1]
            token = encode_token(
                [last.observed_at.isoformat(), last.kind, last.poller_id, last.batch_id, last.chunk_index,
                 last.seq]
            )  # fmt: skip
        return pb.GetDeviceHistoryResponse(
            merges=[_merge(m) for m in merges],
            observations=[_observation(r) for r in rows],
            next_page_token=token,
        )
