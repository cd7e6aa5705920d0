"""`srctl batches`: the result batches edges streamed, with their progress and rejects."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import datetime

from rich.console import RenderableType

from serviceradar.admin.v1 import batch_service_pb2 as pb
from serviceradar.admin.v1 import batch_service_pb2_grpc as pb_grpc
from serviceradar.edge.v1 import results_pb2 as results_pb
from srctl.command import Context, add_verb, collect_pages, hint_next_page
from srctl.errors import ExitCode
from srctl.listing import add_list_flags
from srctl.output import Column, enum_choices, key_values, parse_enum, short_enum, table
from srctl.result_sources import parse_type, type_names


def progress(batch: pb.Batch) -> str:
    """Chunks committed out of those expected: "52/130", or "52/?" when the edge did not say."""
    expected = str(batch.expected_chunks) if batch.expected_chunks else "?"
    return f"{batch.committed_index + 1}/{expected}"


def result_type(batch: pb.Batch) -> str:
    """The result type as srctl spells it on the command line (sweep-hosts)."""
    return short_enum(results_pb.ResultType.DESCRIPTOR, batch.result_type).replace("_", "-")


LIST_COLUMNS: list[Column[pb.Batch]] = [
    Column("TENANT", "tenant"),
    Column("POLLER", "poller_id"),
    Column("BATCH", "batch_id"),
    Column("TYPE", result_type),
    Column("STATE", "state"),
    Column("CHUNKS", progress),
    Column("ACCEPTED", "accepted"),
    Column("REJECTED", "rejected"),
    Column("UPDATED", "updated_at"),
]

DETAIL_COLUMNS: list[Column[pb.Batch]] = [
    Column("Tenant", "tenant"),
    Column("Poller", "poller_id"),
    Column("Batch", "batch_id"),
    Column("Type", result_type),
    Column("Agent", "agent_id"),
    Column("Partition", "partition"),
    Column("State", "state"),
    Column("Chunks committed", progress),
    Column("Accepted", "accepted"),
    Column("Rejected", "rejected"),
    Column("First reject", "first_reject"),
    Column("Opened", "opened_at"),
    Column("Updated", "updated_at"),
    Column("Completed", "completed_at"),
    Column("Sweep execution", "execution_id"),
    Column("Completion", "completion"),
]


def batch_view(batch: pb.Batch, now: datetime) -> Sequence[RenderableType]:
    """The table view of one batch."""
    return [key_values(batch, DETAIL_COLUMNS, now)]


def _list(args: argparse.Namespace, ctx: Context) -> int:
    request = pb.ListBatchesRequest(
        tenant=args.tenant,
        poller_id=args.poller,
        state=parse_enum(results_pb.BatchState, args.state)
        if args.state
        else results_pb.BATCH_STATE_UNSPECIFIED,
        result_type=parse_type(args.type) if args.type else results_pb.RESULT_TYPE_UNSPECIFIED,
        page_size=args.page_size,
        page_token=args.page_token,
    )
    with ctx.connect() as client:
        stub = pb_grpc.BatchServiceStub(client.channel)
        response = collect_pages(ctx, client, stub.ListBatches, request, "batches", all_pages=args.all)
    ctx.printer.show(response, lambda now: [table(response.batches, LIST_COLUMNS, now)])
    hint_next_page(ctx, response, "batches")
    return ExitCode.OK


def _get(args: argparse.Namespace, ctx: Context) -> int:
    request = pb.GetBatchRequest(poller_id=args.poller_id, batch_id=args.batch_id, tenant=args.tenant)
    with ctx.connect() as client:
        stub = pb_grpc.BatchServiceStub(client.channel)
        response = client.call(stub.GetBatch, request)
    ctx.printer.show(response, lambda now: batch_view(response.batch, now))
    return ExitCode.OK


def register(
    nouns: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add `batches` and its verbs."""
    noun = nouns.add_parser(
        "batches",
        aliases=["batch"],
        help="result batches streamed by edges and their progress",
        description="List and inspect the result batches edges stream with ReportResults.",
        parents=[common],
    )
    verbs = noun.add_subparsers(dest="verb", required=True, metavar="VERB")

    list_parser = add_verb(
        verbs,
        "list",
        summary="list batches, newest first, with chunks committed and rejects",
        description=(
            "List result batches, newest first. CHUNKS is committed/expected ('?' when the\n"
            "edge did not say how many it would send). An open batch that stays half-open\n"
            "past the resume window becomes expired. Every page is fetched unless --no-all."
        ),
        examples=(
            "  srctl batches list --state open\n"
            "  srctl batches list --poller demo --type sweep-hosts -o json\n"
            "  srctl batches list -o json | jq -r '.batches[] | select(.rejected != \"0\") | .batch_id'"
        ),
        handler=_list,
        common=common,
    )
    list_parser.add_argument("--tenant", default="", help="only this tenant (default: yours)")
    list_parser.add_argument("--poller", metavar="ID", default="", help="only batches from this poller")
    list_parser.add_argument(
        "--state", choices=enum_choices(results_pb.BatchState), help="only batches in this state"
    )
    list_parser.add_argument("--type", choices=type_names(), help="only batches of this result type")
    add_list_flags(list_parser, "batches")

    get_parser = add_verb(
        verbs,
        "get",
        summary="show one batch: progress, state, accepted and rejected results",
        description=(
            "Show one batch: chunks committed out of those expected, its state, how many\n"
            "results were stored and rejected (with the first reason), and for sweeps the\n"
            "execution and how it ended."
        ),
        examples=(
            "  srctl batches get demo 5f2c1a2b-0000-4000-8000-000000000001\n"
            "  srctl batches get edge-7 5f2c... --tenant acme -o yaml"
        ),
        handler=_get,
        common=common,
    )
    get_parser.add_argument("poller_id", metavar="POLLER_ID", help="poller that sent the batch")
    get_parser.add_argument("batch_id", metavar="BATCH_ID", help="batch id")
    get_parser.add_argument("--tenant", default="", help="tenant of the poller (default: yours)")
