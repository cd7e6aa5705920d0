"""`srctl alerts`: alerts raised from the fleet's state, acknowledged and resolved by operators."""

from __future__ import annotations

import argparse

from serviceradar.admin.v1 import alert_service_pb2 as pb
from serviceradar.admin.v1 import alert_service_pb2_grpc as pb_grpc
from srctl.command import Context, add_verb, collect_pages
from srctl.listing import add_list_flags
from srctl.output import Column, enum_choices, key_values, parse_enum, table

STATES = enum_choices(pb.AlertState)
RULES = enum_choices(pb.AlertRule)

LIST_COLUMNS: list[Column[pb.Alert]] = [
    Column("TENANT", "tenant"),
    Column("ALERT", "alert_id"),
    Column("RULE", "rule"),
    Column("SEVERITY", "severity"),
    Column("STATE", "state"),
    Column("SUBJECT", "subject"),
    Column("TITLE", "title"),
    Column("RAISED", "created_at"),
]

DETAIL_COLUMNS: list[Column[pb.Alert]] = [
    Column("Tenant", "tenant"),
    Column("Alert", "alert_id"),
    Column("Rule", "rule"),
    Column("Severity", "severity"),
    Column("State", "state"),
    Column("Subject", "subject"),
    Column("Title", "title"),
    Column("Detail", "detail"),
    Column("Raised", "created_at"),
    Column("Updated", "updated_at"),
    Column("Acknowledged", "acknowledged_at"),
    Column("Acknowledged by", "acknowledged_by"),
    Column("Escalated", "escalated_at"),
    Column("Resolved", "resolved_at"),
    Column("Resolved by", "resolved_by"),
    Column("Notified", "notified_at"),
    Column("Suppressed (cooldown)", "suppressed"),
]

DELIVERY_COLUMNS: list[Column[pb.AlertDelivery]] = [
    Column("NOTIFIER", "notifier"),
    Column("NOTICE", "kind"),
    Column("ATTEMPT", "attempt"),
    Column("OK", "success"),
    Column("STATUS", lambda d: str(d.status_code or "<none>")),
    Column("ERROR", "error"),
    Column("AT", "at"),
]


def _list(args: argparse.Namespace, ctx: Context) -> int:
    request = pb.ListAlertsRequest(
        tenant=args.tenant,
        state=parse_enum(pb.AlertState, args.state) if args.state else pb.ALERT_STATE_UNSPECIFIED,
        rule=parse_enum(pb.AlertRule, args.rule) if args.rule else pb.ALERT_RULE_UNSPECIFIED,
        open_only=args.open,
        page_size=args.page_size,
        page_token=args.page_token,
    )
    with ctx.connect() as client:
        stub = pb_grpc.AlertServiceStub(client.channel)
        response = collect_pages(ctx, client, stub.ListAlerts, request, "alerts", all_pages=args.all)
    ctx.printer.show(response, lambda now: [table(response.alerts, LIST_COLUMNS, now)])
    return 0


def _get(args: argparse.Namespace, ctx: Context) -> int:
    with ctx.connect() as client:
        stub = pb_grpc.AlertServiceStub(client.channel)
        response = client.call(stub.GetAlert, pb.GetAlertRequest(tenant=args.tenant, alert_id=args.alert_id))
    ctx.printer.show(
        response,
        lambda now: [
            key_values(response.alert, DETAIL_COLUMNS, now),
            table(response.deliveries, DELIVERY_COLUMNS, now),
        ],
    )
    return 0


def _ack(args: argparse.Namespace, ctx: Context) -> int:
    request = pb.AcknowledgeAlertRequest(tenant=args.tenant, alert_id=args.alert_id, note=args.note)
    with ctx.connect() as client:
        response = client.call(pb_grpc.AlertServiceStub(client.channel).AcknowledgeAlert, request)
    ctx.printer.show(response, lambda now: [key_values(response.alert, DETAIL_COLUMNS, now)])
    return 0


def _resolve(args: argparse.Namespace, ctx: Context) -> int:
    request = pb.ResolveAlertRequest(tenant=args.tenant, alert_id=args.alert_id, note=args.note)
    with ctx.connect() as client:
        response = client.call(pb_grpc.AlertServiceStub(client.channel).ResolveAlert, request)
    ctx.printer.show(response, lambda now: [key_values(response.alert, DETAIL_COLUMNS, now)])
    return 0


def register(
    nouns: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add `alerts` and its verbs."""
    noun = nouns.add_parser(
        "alerts",
        aliases=["alert"],
        help="alerts: list, show, acknowledge, resolve",
        description=(
            "Alerts the leader raises from the fleet's state: pollers offline, agents\n"
            "disconnected, checks failing, sweep availability drops, ingest rejects. One alert\n"
            "is open per tenant, rule and subject; it resolves when its condition clears, and\n"
            "escalates when nobody acknowledges it in time (docs/alerts.md)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    verbs = noun.add_subparsers(dest="verb", required=True, metavar="VERB")

    def tenant_flag(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--tenant", default="", help="tenant (default: yours; 'default' for a platform admin)"
        )

    listing = add_verb(
        verbs,
        "list",
        summary="list alerts, newest first",
        description="List alerts, newest first, filtered by state and rule.",
        examples=(
            "  srctl alerts list --open\n  srctl alerts list --state escalated --rule poller_offline -o json"
        ),
        handler=_list,
        common=common,
    )
    listing.add_argument(
        "--tenant", default="", help="only this tenant (default: yours; all for a platform admin)"
    )
    listing.add_argument("--state", choices=STATES, help="only alerts in this state")
    listing.add_argument("--rule", choices=RULES, help="only alerts raised by this rule")
    listing.add_argument("--open", action="store_true", help="only alerts that are not resolved")
    add_list_flags(listing, "alerts")

    get = add_verb(
        verbs,
        "get",
        summary="show one alert and its notification attempts",
        description="Show one alert, with every notification attempt made for it.",
        examples="  srctl alerts get 4f0c1d2e3a4b5c6d7e8f90a1b2c3d4e5",
        handler=_get,
        common=common,
    )
    get.add_argument("alert_id", metavar="ALERT_ID")
    tenant_flag(get)

    for name, handler, summary, description in (
        ("ack", _ack, "acknowledge an alert (it stops escalating)",
         "Acknowledge a pending or escalated alert."),
        ("resolve", _resolve, "resolve an alert by hand", "Resolve an open alert; if its condition still "
         "holds, the next evaluation raises a new one."),
    ):  # fmt: skip
        verb = add_verb(
            verbs,
            name,
            summary=summary,
            description=description,
            examples=f"  srctl alerts {name} 4f0c1d2e3a4b5c6d7e8f90a1b2c3d4e5 --note 'on it'",
            handler=handler,
            common=common,
        )
        verb.add_argument("alert_id", metavar="ALERT_ID")
        verb.add_argument("--note", default="", help="why, for the state history (up to 200 characters)")
        tenant_flag(verb)
