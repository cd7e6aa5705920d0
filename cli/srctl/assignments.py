"""`srctl assignments`: where every check, sweep group and source runs, and the pending work."""

from __future__ import annotations

import argparse

from serviceradar.admin.v1 import assignment_service_pb2 as pb
from serviceradar.admin.v1 import assignment_service_pb2_grpc as pb_grpc
from srctl.command import Context, add_verb, collect_pages, hint_next_page
from srctl.listing import add_list_flags
from srctl.output import Column, enum_choices, parse_enum, table
from srctl.work import STATES, assignment_poller, assignment_reason, assignment_state

KINDS = enum_choices(pb.WorkKind)

LIST_COLUMNS: list[Column[pb.WorkAssignment]] = [
    Column("TENANT", "tenant"),
    Column("KIND", "kind"),
    Column("NAME", "name"),
    Column("PARTITION", "partition"),
    Column("NEEDS", lambda a: a.assignment.capability),
    Column("STATE", assignment_state),
    Column("POLLER", assignment_poller),
    Column("REASON", assignment_reason),
]


def _list(args: argparse.Namespace, ctx: Context) -> int:
    request = pb.ListAssignmentsRequest(
        tenant=args.tenant,
        partition=args.partition,
        poller_id=args.poller,
        state=parse_enum(pb.AssignmentState, args.state) if args.state else pb.ASSIGNMENT_STATE_UNSPECIFIED,
        kind=parse_enum(pb.WorkKind, args.kind) if args.kind else pb.WORK_KIND_UNSPECIFIED,
        page_size=args.page_size,
        page_token=args.page_token,
    )
    with ctx.connect() as client:
        stub = pb_grpc.AssignmentServiceStub(client.channel)
        response = collect_pages(
            ctx, client, stub.ListAssignments, request, "assignments", all_pages=args.all
        )
    ctx.printer.show(response, lambda now: [table(response.assignments, LIST_COLUMNS, now)])
    hint_next_page(ctx, response, "assignments")
    return 0


def register(
    nouns: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add `assignments` and its verbs."""
    noun = nouns.add_parser(
        "assignments",
        aliases=["assignment"],
        help="where every check, sweep group and source runs; pending work",
        description=(
            "The leader places every enabled item on one available poller of its partition\n"
            "with the capability it NEEDS. 'pending' items wait for such a poller; REASON says\n"
            "what is missing."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    verbs = noun.add_subparsers(dest="verb", required=True, metavar="VERB")
    listing = add_verb(
        verbs,
        "list",
        summary="list assignments",
        description="List every item's assignment, by tenant, kind and name.",
        examples=(
            "  srctl assignments list --state pending\n"
            "  srctl assignments list --poller edge-7\n"
            "  srctl assignments list --partition dc1 --kind check -o json"
        ),
        handler=_list,
        common=common,
    )
    listing.add_argument(
        "--tenant", default="", help="only this tenant (default: yours; all for a platform admin)"
    )
    listing.add_argument("--partition", default="", help="only this partition")
    listing.add_argument("--poller", default="", help="only items assigned to this poller")
    listing.add_argument("--state", choices=STATES, help="only this state")
    listing.add_argument("--kind", choices=KINDS, help="only this kind")
    add_list_flags(listing, "assignments")
