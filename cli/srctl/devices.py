"""`srctl devices`: canonical devices reconciled from sweeps and integrations, and their history."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import datetime

from rich.console import RenderableType

from serviceradar.admin.v1 import device_service_pb2 as pb
from serviceradar.admin.v1 import device_service_pb2_grpc as pb_grpc
from srctl.command import Context, add_verb, collect_pages, hint_next_page
from srctl.errors import ExitCode, UsageError
from srctl.listing import add_list_flags
from srctl.output import Column, key_values, table


def _external(device: pb.Device) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(device.external_ids.items()))


def _sources(device: pb.Device) -> str:
    return ",".join(device.sources)


LIST_COLUMNS: list[Column[pb.Device]] = [
    Column("DEVICE", "device_id"),
    Column("PARTITION", "partition"),
    Column("IP", "ip"),
    Column("MAC", "mac"),
    Column("HOSTNAME", "hostname"),
    Column("AVAILABLE", "available"),
    Column("SOURCES", _sources),
    Column("LAST SEEN", "last_seen"),
]

DETAIL_COLUMNS: list[Column[pb.Device]] = [
    Column("Tenant", "tenant"),
    Column("Device", "device_id"),
    Column("Merged into", "merged_into"),
    Column("Partition", "partition"),
    Column("IP", "ip"),
    Column("MAC", "mac"),
    Column("Hostname", "hostname"),
    Column("Available", "available"),
    Column("External ids", _external),
    Column("Sources", _sources),
    Column("First seen", "first_seen"),
    Column("Last seen", "last_seen"),
]

IDENTIFIER_COLUMNS: list[Column[pb.DeviceIdentifier]] = [
    Column("KIND", "kind"),
    Column("VALUE", "value"),
    Column("PARTITION", "partition"),
    Column("UPDATED", "updated_at"),
]

MERGE_COLUMNS: list[Column[pb.DeviceMerge]] = [
    Column("MERGED", "merged_id"),
    Column("INTO", "survivor_id"),
    Column("SOURCE", "source"),
    Column("EVIDENCE", lambda m: ", ".join(f"{e.kind} {e.value}" for e in m.evidence)),
    Column("AT", "merged_at"),
]

OBSERVATION_COLUMNS: list[Column[pb.DeviceObservation]] = [
    Column("OBSERVED", "observed_at"),
    Column("KIND", "kind"),
    Column("SOURCE", "source"),
    Column("PARTITION", "partition"),
    Column("POLLER", "poller_id"),
    Column("IP", "ip"),
    Column("MAC", "mac"),
    Column("HOSTNAME", "hostname"),
    Column("AVAILABLE", "available"),
]


def external_id(text: str) -> tuple[str, str]:
    """An argparse type: KIND=VALUE."""
    kind, sep, value = text.partition("=")
    if not sep or not kind or not value:
        raise argparse.ArgumentTypeError(f"expected KIND=VALUE, e.g. armis=1234: {text!r}")
    return kind, value


def _lookup(args: argparse.Namespace, ctx: Context) -> int:
    given = [args.mac is not None, args.ip is not None, args.external_id is not None]
    if sum(given) != 1:
        raise UsageError("give exactly one of --mac, --ip (with --partition) or --external-id")
    if args.ip is not None and not args.partition:
        raise UsageError("--ip needs --partition: IP space overlaps between partitions")
    request = pb.LookupDeviceRequest(tenant=args.tenant)
    if args.mac is not None:
        request.mac = args.mac
    elif args.ip is not None:
        request.ip = args.ip
        request.partition = args.partition
    else:
        request.external_system, request.external_id = args.external_id
    with ctx.connect() as client:
        response = client.call(pb_grpc.DeviceServiceStub(client.channel).LookupDevice, request)
    ctx.printer.show(response, lambda now: [table(response.devices, LIST_COLUMNS, now)])
    return ExitCode.OK


def _list(args: argparse.Namespace, ctx: Context) -> int:
    request = pb.ListDevicesRequest(
        tenant=args.tenant,
        partition=args.partition,
        include_merged=args.include_merged,
        page_size=args.page_size,
        page_token=args.page_token,
    )
    with ctx.connect() as client:
        stub = pb_grpc.DeviceServiceStub(client.channel)
        response = collect_pages(ctx, client, stub.ListDevices, request, "devices", all_pages=args.all)
    ctx.printer.show(response, lambda now: [table(response.devices, LIST_COLUMNS, now)])
    hint_next_page(ctx, response, "devices")
    return ExitCode.OK


def device_view(response: pb.GetDeviceResponse, now: datetime) -> Sequence[RenderableType]:
    """The table view of one device and its identifiers."""
    return [
        key_values(response.device, DETAIL_COLUMNS, now),
        table(response.identifiers, IDENTIFIER_COLUMNS, now),
    ]


def _get(args: argparse.Namespace, ctx: Context) -> int:
    request = pb.GetDeviceRequest(tenant=args.tenant, device_id=args.device_id)
    with ctx.connect() as client:
        response = client.call(pb_grpc.DeviceServiceStub(client.channel).GetDevice, request)
    ctx.printer.show(response, lambda now: device_view(response, now))
    return ExitCode.OK


def _history(args: argparse.Namespace, ctx: Context) -> int:
    request = pb.GetDeviceHistoryRequest(
        tenant=args.tenant, device_id=args.device_id, page_size=args.page_size, page_token=args.page_token
    )
    with ctx.connect() as client:
        stub = pb_grpc.DeviceServiceStub(client.channel)
        response = client.call(stub.GetDeviceHistory, request)
        merges = list(response.merges)
        while args.all and response.next_page_token:
            request.page_token = response.next_page_token
            page = client.call(stub.GetDeviceHistory, request)
            response.observations.extend(page.observations)
            response.next_page_token = page.next_page_token
        del response.merges[:]
        response.merges.extend(merges)

    def view(now: datetime) -> Sequence[RenderableType]:
        parts: list[RenderableType] = []
        if response.merges:
            parts.append(table(response.merges, MERGE_COLUMNS, now))
        parts.append(table(response.observations, OBSERVATION_COLUMNS, now))
        return parts

    ctx.printer.show(response, view)
    hint_next_page(ctx, response, "observations")
    return ExitCode.OK


def register(
    nouns: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add `devices` and its verbs."""
    noun = nouns.add_parser(
        "devices",
        aliases=["device"],
        help="canonical devices reconciled from sweeps and integrations",
        description=(
            "Canonical devices: every sweep host and integration update resolved to one device\n"
            "per tenant by its strongest identifier (external id, then MAC; IP only within a\n"
            "partition). See docs/identity.md."
        ),
        parents=[common],
    )
    verbs = noun.add_subparsers(dest="verb", required=True, metavar="VERB")

    lookup = add_verb(
        verbs,
        "lookup",
        summary="find the device a MAC, an IP in a partition or an external id names",
        description=(
            "Find the canonical device one identifier names; a merged device is followed to the\n"
            "one it merged into. Exit code 4 (not found) when none does."
        ),
        examples=(
            "  srctl devices lookup --mac 00:1a:2b:3c:4d:5e\n"
            "  srctl devices lookup --ip 10.0.0.5 --partition dc1 -o json\n"
            "  srctl devices lookup --external-id armis=1234"
        ),
        handler=_lookup,
        common=common,
    )
    lookup.add_argument("--mac", help="MAC address, colon or dash separated")
    lookup.add_argument("--ip", help="IP address (needs --partition)")
    lookup.add_argument("--partition", default="", help="partition of the IP address")
    lookup.add_argument("--external-id", metavar="KIND=VALUE", type=external_id, help="e.g. armis=1234")
    lookup.add_argument("--tenant", default="", help="tenant to look in (default: yours)")

    list_parser = add_verb(
        verbs,
        "list",
        summary="list devices by id, optionally of one partition",
        description="List canonical devices ordered by id. Every page is fetched unless --no-all.",
        examples="  srctl devices list --partition dc1\n  srctl devices list --include-merged -o json",
        handler=_list,
        common=common,
    )
    list_parser.add_argument("--tenant", default="", help="only this tenant (default: yours)")
    list_parser.add_argument("--partition", default="", help="only devices last seen in this partition")
    list_parser.add_argument("--include-merged", action="store_true", help="also devices merged into others")
    add_list_flags(list_parser, "devices")

    get_parser = add_verb(
        verbs,
        "get",
        summary="show one device and the identifiers that name it",
        description="Show one device: its latest attributes, external ids, sources and identifiers.",
        examples="  srctl devices get 3f1c0e...\n  srctl devices get 3f1c0e... -o yaml",
        handler=_get,
        common=common,
    )
    get_parser.add_argument("device_id", metavar="DEVICE_ID", help="device id")
    get_parser.add_argument("--tenant", default="", help="tenant of the device (default: yours)")

    history = add_verb(
        verbs,
        "history",
        summary="show a device's merges and observations, newest first",
        description=(
            "Show the merges into or of a device, with the evidence that linked them, and the\n"
            "raw sweep results and integration updates that carried its identifiers."
        ),
        examples=(
            "  srctl devices history 3f1c0e...\n  srctl devices history 3f1c0e... --no-all --page-size 20"
        ),
        handler=_history,
        common=common,
    )
    history.add_argument("device_id", metavar="DEVICE_ID", help="device id")
    history.add_argument("--tenant", default="", help="tenant of the device (default: yours)")
    add_list_flags(history, "observations")
