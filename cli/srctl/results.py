"""`srctl results`: stored results (sweep hosts, service checks, device updates), newest first."""

from __future__ import annotations

import argparse
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp
from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.text import Text

from serviceradar.admin.v1 import result_service_pb2 as pb
from serviceradar.admin.v1 import result_service_pb2_grpc as pb_grpc
from serviceradar.edge.v1 import results_pb2 as results_pb
from srctl.argtypes import int_between
from srctl.command import Context, add_verb
from srctl.errors import ExitCode
from srctl.listing import moment
from srctl.output import NONE, Column, Format, format_duration, format_timestamp, table
from srctl.result_sources import parse_type, type_names

# The server's largest page.
MAX_PAGE_SIZE = 1000


def _timestamp(text: str) -> Timestamp:
    """An argparse type: an RFC 3339 time or an age (15m, 2h, 7d), as a Timestamp."""
    stamp = Timestamp()
    stamp.FromDatetime(moment(text))
    return stamp


def _flag(value: bool) -> str:
    return "yes" if value else "no"


def _open_ports(host: results_pb.SweepHostResult) -> str:
    return ",".join(str(p.port) for p in host.ports if p.open) or NONE


def result_columns(
    result_type: results_pb.ResultType.ValueType, now: datetime
) -> list[Column[pb.StoredResult]]:
    """Table columns for results of `result_type`: where they came from, then what they say."""
    observed: Column[pb.StoredResult]
    specific: list[Column[pb.StoredResult]]
    if result_type == results_pb.RESULT_TYPE_SWEEP_HOSTS:
        observed = Column("OBSERVED", lambda r: format_timestamp(r.sweep_host.observed_at, now))
        specific = [
            Column("IP", lambda r: r.sweep_host.ip),
            Column("AVAILABLE", lambda r: _flag(r.sweep_host.available)),
            Column(
                "RTT",
                lambda r: (
                    format_duration(r.sweep_host.icmp_rtt) if r.sweep_host.HasField("icmp_rtt") else NONE
                ),
            ),
            Column("OPEN-PORTS", lambda r: _open_ports(r.sweep_host)),
            Column("HOSTNAME", lambda r: r.sweep_host.hostname or NONE),
        ]
    elif result_type == results_pb.RESULT_TYPE_SERVICE_CHECKS:
        observed = Column("OBSERVED", lambda r: format_timestamp(r.service_check.observed_at, now))
        specific = [
            Column("CHECK", lambda r: r.service_check.name),
            Column("TYPE", lambda r: r.service_check.check_type or NONE),
            Column("AVAILABLE", lambda r: _flag(r.service_check.available)),
            Column(
                "RESPONSE-TIME",
                lambda r: (
                    format_duration(r.service_check.response_time)
                    if r.service_check.HasField("response_time")
                    else NONE
                ),
            ),
            Column("MESSAGE", lambda r: r.service_check.message or NONE),
        ]
    else:
        observed = Column("OBSERVED", lambda r: format_timestamp(r.device_update.observed_at, now))
        specific = [
            Column("IP", lambda r: r.device_update.ip or NONE),
            Column("MAC", lambda r: r.device_update.mac or NONE),
            Column("HOSTNAME", lambda r: r.device_update.hostname or NONE),
            Column("SOURCE", lambda r: r.device_update.source or NONE),
            Column("AVAILABLE", lambda r: _flag(r.device_update.available)),
        ]
    origin: list[Column[pb.StoredResult]] = [
        Column("POLLER", "poller_id"),
        Column("PARTITION", "partition"),
        Column("AGENT", "agent_id"),
        # The first block of the UUID, as git shortens hashes; -o json has the whole id.
        Column("BATCH", lambda r: f"{r.batch_id[:8]}#{r.chunk_index}"),
    ]
    return [observed, *specific, *origin]


def _list(args: argparse.Namespace, ctx: Context) -> int:
    result_type = parse_type(args.type)
    request = pb.ListResultsRequest(
        result_type=result_type,
        tenant=args.tenant,
        partition=args.partition,
        poller_id=args.poller,
        since=args.since,
        until=args.until,
        page_token=args.page_token,
    )
    # --limit 0 means every result; each page asks only for what is still missing, so the
    # token printed at the end continues exactly after the last result shown.
    with (
        ctx.connect() as client,
        Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            console=ctx.err,
            transient=True,
            disable=not ctx.err.is_terminal,
        ) as progress,
    ):
        stub = pb_grpc.ResultServiceStub(client.channel)
        task = progress.add_task("fetching results")
        merged = pb.ListResultsResponse(next_page_token=args.page_token)
        while (missing := args.limit - len(merged.results) if args.limit else MAX_PAGE_SIZE) > 0:
            request.page_size = min(MAX_PAGE_SIZE, missing)
            request.page_token = merged.next_page_token
            page = client.call(stub.ListResults, request)
            merged.results.extend(page.results)
            merged.next_page_token = page.next_page_token
            progress.update(task, description=f"fetching results: {len(merged.results)}")
            if not page.next_page_token:
                break
    ctx.printer.show(merged, lambda now: [table(merged.results, result_columns(result_type, now), now)])
    if merged.next_page_token and ctx.printer.fmt is Format.TABLE:
        hint = f"more results: continue with --page-token {merged.next_page_token} (or raise --limit)"
        ctx.err.print(Text(hint), soft_wrap=True)
    return ExitCode.OK


def register(
    nouns: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add `results` and its verbs."""
    noun = nouns.add_parser(
        "results",
        aliases=["result"],
        help="stored sweep, service check and device results",
        description="Read the results edges streamed with ReportResults.",
        parents=[common],
    )
    verbs = noun.add_subparsers(dest="verb", required=True, metavar="VERB")
    list_parser = add_verb(
        verbs,
        "list",
        summary="list stored results of one type, newest first",
        description=(
            "List stored results of one type, newest first, filtered by tenant, partition,\n"
            "poller and observation time. --since and --until take an RFC 3339 time or an age\n"
            "(90s, 15m, 1h30m, 7d ago). At most --limit results are fetched (0: all of them);\n"
            "with -o json the next_page_token says where to continue."
        ),
        examples=(
            "  srctl results list --type sweep-hosts --since 15m\n"
            "  srctl results list --type service-checks --poller demo --limit 20\n"
            "  srctl results list --type device-updates --since 2025-01-02T00:00:00Z --limit 0 -o json"
        ),
        handler=_list,
        common=common,
    )
    list_parser.add_argument("--type", required=True, choices=type_names(), help="result type")
    list_parser.add_argument("--tenant", default="", help="only this tenant (default: yours)")
    list_parser.add_argument("--partition", default="", help="only results observed in this partition")
    list_parser.add_argument("--poller", metavar="ID", default="", help="only results from this poller")
    list_parser.add_argument(
        "--since", metavar="TIME", type=_timestamp, help="only results observed at or after TIME"
    )
    list_parser.add_argument(
        "--until", metavar="TIME", type=_timestamp, help="only results observed before TIME"
    )
    list_parser.add_argument(
        "--limit",
        metavar="N",
        type=int_between(0),
        default=100,
        help="fetch at most N results (default 100; 0: all)",
    )
    list_parser.add_argument(
        "--page-token", metavar="TOKEN", default="", help="continue after an earlier listing"
    )
