"""`srctl audit`: the audit log of mutations and denials."""

from __future__ import annotations

import argparse

from serviceradar.admin.v1 import audit_service_pb2 as pb
from serviceradar.admin.v1 import audit_service_pb2_grpc as pb_grpc
from srctl.command import Context, add_verb, collect_pages
from srctl.listing import add_list_flags, moment
from srctl.output import Column, table

LIST_COLUMNS: list[Column[pb.AuditEvent]] = [
    Column("TIME", "time"),
    Column("ACTOR", "actor"),
    Column("TENANT", "tenant"),
    Column("METHOD", lambda e: e.method.rsplit(".", 1)[-1]),
    Column("TARGET", "target"),
    Column("OUTCOME", "outcome"),
    Column("MESSAGE", "message"),
]


def _list(args: argparse.Namespace, ctx: Context) -> int:
    request = pb.ListAuditEventsRequest(
        tenant=args.tenant,
        actor=args.actor,
        method=args.method,
        outcome=args.outcome,
        page_size=args.page_size,
        page_token=args.page_token,
    )
    if args.since is not None:
        request.since.FromDatetime(args.since)
    if args.until is not None:
        request.until.FromDatetime(args.until)
    with ctx.connect() as client:
        stub = pb_grpc.AuditServiceStub(client.channel)
        response = collect_pages(ctx, client, stub.ListAuditEvents, request, "events", all_pages=args.all)
    ctx.printer.show(response, lambda now: [table(response.events, LIST_COLUMNS, now)])
    return 0


def register(
    nouns: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add `audit` and its verbs."""
    noun = nouns.add_parser(
        "audit",
        help="the audit log of mutations and denials (admins)",
        description="Every admin mutation and every denied call, with who, tenant, RPC, target and outcome.",
        parents=[common],
    )
    verbs = noun.add_subparsers(dest="verb", required=True, metavar="VERB")
    listing = add_verb(
        verbs,
        "list",
        summary="list audit events, newest first",
        description="List audit events matching every filter given, newest first.",
        examples=(
            "  srctl audit list --outcome denied --since 1h\n"
            "  srctl audit list --actor token:abcd2345efgh --method RevokeToken\n"
            "  srctl audit list --tenant acme --since 2025-06-01T00:00:00Z -o json"
        ),
        handler=_list,
        common=common,
    )
    listing.add_argument(
        "--tenant", default="", help="only this tenant (default: yours; all for a platform admin)"
    )
    listing.add_argument("--actor", default="", help="only this actor, e.g. token:ID or cert:spiffe://...")
    listing.add_argument("--method", default="", help="only methods containing this text, e.g. TokenService")
    listing.add_argument(
        "--outcome",
        default="",
        help="only this outcome: OK, PERMISSION_DENIED, ... or 'denied' for both denials",
    )
    listing.add_argument(
        "--since", type=moment, default=None, metavar="TIME", help="RFC 3339 time or age (1h)"
    )
    listing.add_argument("--until", type=moment, default=None, metavar="TIME", help="RFC 3339 time or age")
    add_list_flags(listing, "events")
