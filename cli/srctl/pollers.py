"""`srctl pollers`: list, inspect and steer the pollers of a tenant."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import datetime

from rich.console import RenderableType
from rich.text import Text

from serviceradar.admin.v1 import poller_service_pb2 as pb
from serviceradar.admin.v1 import poller_service_pb2_grpc as pb_grpc
from srctl.argtypes import int_between
from srctl.command import Context, add_verb, collect_pages, hint_next_page
from srctl.errors import ExitCode
from srctl.output import NONE, Column, enum_choices, key_values, parse_enum, table


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
    Column("WORK", "assigned_work"),
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
    Column("Assigned work", "assigned_work"),
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


HISTORY_COLUMNS: list[Column[pb.PollerTransition]] = [
    Column("AT", "at"),
    Column("FROM", "from_state"),
    Column("TO", "to_state"),
    Column("REASON", "reason"),
    Column("REPLICA", "replica"),
    Column("TOKEN", lambda t: str(t.fencing_token)),
]


def poller_view(
    poller: pb.Poller, now: datetime, history: Sequence[pb.PollerTransition] | None = None
) -> Sequence[RenderableType]:
    """The table view of one poller: its fields, its agents, then its transition history."""
    agents: RenderableType = table(poller.agents, AGENT_COLUMNS, now) if poller.agents else NONE
    heading = Text(f"Agents ({poller.agent_count}):", style="bold")
    view: list[RenderableType] = [key_values(poller, DETAIL_COLUMNS, now), Text(), heading, agents]
    if history is not None:
        view += [
            Text(),
            Text("History (newest first):", style="bold"),
            table(history, HISTORY_COLUMNS, now) if history else NONE,
        ]
    return view


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
    hint_next_page(ctx, response, "pollers")
    return ExitCode.OK


def _get(args: argparse.Namespace, ctx: Context) -> int:
    request = pb.GetPollerRequest(poller_id=args.poller_id, tenant=args.tenant, history_limit=args.history)
    with ctx.connect() as client:
        stub = pb_grpc.PollerServiceStub(client.channel)
        response = client.call(stub.GetPoller, request)
    ctx.printer.show(response, lambda now: poller_view(response.poller, now, response.history))
    return ExitCode.OK


def _drain(args: argparse.Namespace, ctx: Context) -> int:
    with ctx.connect() as client:
        stub = pb_grpc.PollerServiceStub(client.channel)
        if args.verb == "drain":
            request = pb.DrainPollerRequest(poller_id=args.poller_id, tenant=args.tenant, reason=args.reason)
            poller = client.call(stub.DrainPoller, request).poller
        else:
            resume = pb.ResumePollerRequest(poller_id=args.poller_id, tenant=args.tenant, reason=args.reason)
            poller = client.call(stub.ResumePoller, resume).poller
    ctx.printer.show(poller, lambda now: poller_view(poller, now))
    return ExitCode.OK


def _maintenance(args: argparse.Namespace, ctx: Context) -> int:
    request = pb.SetMaintenanceRequest(
        poller_id=args.poller_id, tenant=args.tenant, enabled=args.switch == "on", reason=args.reason
    )
    with ctx.connect() as client:
        stub = pb_grpc.PollerServiceStub(client.channel)
        response = client.call(stub.SetMaintenance, request)
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
        description="List, inspect and steer pollers.",
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
        summary="show one poller, its agents and its state history",
        description=(
            "Show one poller: its state, when it was last seen, the replica serving it, its\n"
            "configuration versions, the agents behind it and its latest state transitions\n"
            "(with the replica and fencing token each was recorded under)."
        ),
        examples=(
            "  srctl pollers get demo\n"
            "  srctl pollers get edge-7 --tenant acme -o yaml\n"
            "  srctl pollers get edge-7 --history 100"
        ),
        handler=_get,
        common=common,
    )
    get_parser.add_argument("poller_id", metavar="POLLER_ID", help="poller id")
    get_parser.add_argument("--tenant", default="", help="tenant of the poller (default: yours)")
    get_parser.add_argument(
        "--history",
        metavar="N",
        type=int_between(0, 1000),
        default=0,
        help="transitions to show, 0-1000 (default: the server's, 20)",
    )

    maintenance_parser = add_verb(
        verbs,
        "maintenance",
        summary="put a poller under maintenance, or end it",
        description=(
            "'on' puts the poller under maintenance: missed heartbeats no longer take it\n"
            "offline. 'off' ends it: the poller is recovering when it is live (healthy after\n"
            "its next clean heartbeat) and offline otherwise. Needs the operator role. Exits\n"
            "with the failed-precondition code when the poller is already in (or, for 'off',\n"
            "not in) maintenance."
        ),
        examples=(
            '  srctl pollers maintenance on edge-7 --reason "replacing the uplink"\n'
            "  srctl pollers maintenance off edge-7"
        ),
        handler=_maintenance,
        common=common,
    )
    maintenance_parser.add_argument("switch", choices=["on", "off"], help="start or end maintenance")
    maintenance_parser.add_argument("poller_id", metavar="POLLER_ID", help="poller id")
    maintenance_parser.add_argument("--tenant", default="", help="tenant of the poller (default: yours)")
    maintenance_parser.add_argument(
        "--reason", default="", help="why, for the history (up to 200 characters)"
    )

    for verb, summary, description, example in (
        (
            "drain",
            "move all work off a poller",
            "Drain the poller: the leader moves its checks, sweeps and sources to the other\n"
            "pollers of its partition (or leaves them pending when none can take them), and it\n"
            "gets no work until resumed. It keeps its session; its heartbeats are answered\n"
            "with the drain action. 'srctl checks list --poller ID' shows what is left.",
            '  srctl pollers drain edge-7 --reason "hardware swap"',
        ),
        (
            "resume",
            "make a drained poller eligible for work again",
            "End the poller's drain: it is healthy and takes work again; work moves back to it\n"
            "only when the partition's load spread is past the rebalance threshold.",
            "  srctl pollers resume edge-7",
        ),
    ):
        drain_parser = add_verb(
            verbs,
            verb,
            summary=summary,
            description=description,
            examples=example,
            handler=_drain,
            common=common,
        )
        drain_parser.add_argument("poller_id", metavar="POLLER_ID", help="poller id")
        drain_parser.add_argument("--tenant", default="", help="tenant of the poller (default: yours)")
        drain_parser.add_argument("--reason", default="", help="why, for the history (up to 200 characters)")
