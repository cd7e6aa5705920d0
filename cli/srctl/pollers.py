"""`srctl pollers`: list and inspect the pollers of a tenant."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import datetime

from rich.console import RenderableType
from rich.text import Text

from serviceradar.admin.v1 import poller_service_pb2 as pb
from serviceradar.admin.v1 import poller_service_pb2_grpc as pb_grpc
from srctl.argtypes import int_between
from srctl.command import Context, add_verb, collect_pages
from srctl.errors import ExitCode
from srctl.output import NONE, Column, Format, enum_choices, key_values, parse_enum, table


def config_status(poller: pb.Poller) -> str:
    """Whether the poller runs the configuration the core wants: "ok", else "drift"."""
    return "ok" if poller.desired_config_version == poller.applied_config_version else "drift"


LIST_COLUMNS: list[Column[pb.Poller]] = [
    Column("TENANT", "tenant"),
    Column("PARTITION", "partition"),
    Column("POLLER", "poller_id"),
    Column("STATE", "state"),
    Column("VERSION", "version"),
    Column("AGENTS", "agent_count"),
    Column("LAST-SEEN", "last_seen"),
    Column("CONFIG", config_status),
]

DETAIL_COLUMNS: list[Column[pb.Poller]] = [
    Column("Tenant", "tenant"),
    Column("Partition", "partition"),
    Column("Poller", "poller_id"),
    Column("State", "state"),
    Column("Version", "version"),
    Column("Hostname", "hostname"),
    Column("Capabilities", "capabilities"),
    Column("Labels", "labels"),
    Column("Registered", "registered_at"),
    Column("Last seen", "last_seen"),
    Column("Serving replica", "serving_replica"),
    Column("Desired config", "desired_config_version"),
    Column("Applied config", "applied_config_version"),
    Column("Config", config_status),
    Column("Clock skew", "clock_skew"),
    Column("Message", "message"),
]

AGENT_COLUMNS: list[Column[pb.Agent]] = [
    Column("AGENT", "agent_id"),
    Column("STATE", "state"),
    Column("VERSION", "version"),
    Column("CAPABILITIES", "capabilities"),
    Column("ADDRESS", "address"),
    Column("LAST-SEEN", "last_seen"),
    Column("MESSAGE", "message"),
]


def poller_view(poller: pb.Poller, now: datetime) -> Sequence[RenderableType]:
    """The table view of one poller: its fields, then its agents."""
    agents: RenderableType = table(poller.agents, AGENT_COLUMNS, now) if poller.agents else NONE
    heading = Text(f"Agents ({poller.agent_count}):", style="bold")
    return [key_values(poller, DETAIL_COLUMNS, now), Text(), heading, agents]


def _list(args: argparse.Namespace, ctx: Context) -> int:
    request = pb.ListPollersRequest(
        tenant=args.tenant,
        partition=args.partition,
        state=parse_enum(pb.PollerState, args.state) if args.state else pb.POLLER_STATE_UNSPECIFIED,
        page_size=args.page_size,
        page_token=args.page_token,
    )
    with ctx.connect() as client:
        stub = pb_grpc.PollerServiceStub(client.channel)
        response = collect_pages(ctx, client, stub.ListPollers, request, "pollers", all_pages=args.all)
    ctx.printer.show(response, lambda now: [table(response.pollers, LIST_COLUMNS, now)])
    if response.next_page_token and ctx.printer.fmt is Format.TABLE:
        hint = f"more pollers: continue with --no-all --page-token {response.next_page_token}"
        ctx.err.print(Text(hint), soft_wrap=True)
    return ExitCode.OK


def _get(args: argparse.Namespace, ctx: Context) -> int:
    request = pb.GetPollerRequest(poller_id=args.poller_id, tenant=args.tenant)
    with ctx.connect() as client:
        stub = pb_grpc.PollerServiceStub(client.channel)
        response = client.call(stub.GetPoller, request)
    ctx.printer.show(response, lambda now: poller_view(response.poller, now))
    return ExitCode.OK


def register(
    nouns: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add `pollers` and its verbs."""
    noun = nouns.add_parser(
        "pollers",
        aliases=["poller"],
        help="pollers and their agents",
        description="List and inspect pollers.",
        parents=[common],
    )
    verbs = noun.add_subparsers(dest="verb", required=True, metavar="VERB")

    list_parser = add_verb(
        verbs,
        "list",
        summary="list pollers with their state and configuration drift",
        description=(
            "List pollers ordered by tenant, partition and id. CONFIG is 'ok' when the poller\n"
            "runs the configuration the core wants and 'drift' otherwise. Every page is\n"
            "fetched unless --no-all is given."
        ),
        examples=(
            "  srctl pollers list\n"
            "  srctl pollers list --partition dc1 --state degraded\n"
            "  srctl pollers list -o json | jq -r '.pollers[] | select(.state != "
            '"POLLER_STATE_HEALTHY") | .poller_id\'\n'
            "  srctl pollers list --no-all --page-size 50 --page-token TOKEN"
        ),
        handler=_list,
        common=common,
    )
    list_parser.add_argument("--tenant", default="", help="only this tenant (default: yours)")
    list_parser.add_argument("--partition", default="", help="only this partition")
    list_parser.add_argument("--state", choices=enum_choices(pb.PollerState), help="only this state")
    list_parser.add_argument(
        "--page-size",
        metavar="N",
        type=int_between(1, 1000),
        default=0,
        help="pollers per request, 1-1000 (default: the server's, 100)",
    )
    list_parser.add_argument(
        "--all",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="follow next_page_token through every page (default); --no-all stops after one",
    )
    list_parser.add_argument(
        "--page-token", metavar="TOKEN", default="", help="start at this page (from --no-all)"
    )

    get_parser = add_verb(
        verbs,
        "get",
        summary="show one poller and its agents",
        description="Show one poller, its configuration versions and the agents behind it.",
        examples=("  srctl pollers get demo\n  srctl pollers get edge-7 --tenant acme -o yaml"),
        handler=_get,
        common=common,
    )
    get_parser.add_argument("poller_id", metavar="POLLER_ID", help="poller id")
    get_parser.add_argument("--tenant", default="", help="tenant of the poller (default: yours)")
