"""`srctl results`: stored results (sweep hosts, service checks, device updates), newest first,
and the state processed from them: hosts, checks and sweep executions."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import datetime
from typing import Any

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
        check_name=args.check,
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


def _pages(call: Callable[[Any], Any], request: Any, field: str, limit: int) -> list[Any]:
    """Every item of a paged list call, at most `limit` (0: all)."""
    items: list[Any] = []
    while True:
        request.page_size = min(MAX_PAGE_SIZE, limit - len(items)) if limit else MAX_PAGE_SIZE
        page = call(request)
        items.extend(getattr(page, field))
        request.page_token = page.next_page_token
        if not page.next_page_token or (limit and len(items) >= limit):
            return items


def _micros(value: Any, present: bool) -> str:
    return format_duration(value) if present else NONE


HOST_COLUMNS: list[Column[pb.HostState]] = [
    Column("PARTITION", "partition"),
    Column("IP", "ip"),
    Column("AVAILABLE", lambda h: _flag(h.available)),
    Column("RTT", lambda h: _micros(h.icmp_rtt, h.HasField("icmp_rtt"))),
    Column("LOSS", lambda h: f"{h.icmp_packet_loss:.0%}"),
    Column("RESPONSE", lambda h: _micros(h.response_time, h.HasField("response_time"))),
    Column(
        "OPEN-PORTS",
        lambda h: (",".join(map(str, h.open_ports)) + ("…" if h.ports_truncated else "")) or NONE,
    ),
    Column("HOSTNAME", lambda h: h.hostname or NONE),
    Column("POLLER", "poller_id"),
]

CHECK_COLUMNS: list[Column[pb.CheckState]] = [
    Column("POLLER", "poller_id"),
    Column("AGENT", lambda c: c.agent_id or NONE),
    Column("CHECK", "name"),
    Column("TYPE", lambda c: c.check_type or NONE),
    Column("STATE", "state"),
    Column("FAILURES", lambda c: str(c.consecutive_failures)),
    Column("AVAILABLE", lambda c: _flag(c.available)),
    Column("RESPONSE-TIME", lambda c: _micros(c.response_time, c.HasField("response_time"))),
    Column("MESSAGE", lambda c: c.message or NONE),
]


def _execution_columns(now: datetime) -> list[Column[pb.SweepExecution]]:
    def totals(e: pb.SweepExecution) -> str:
        if not e.HasField("closed_at"):
            return NONE
        return f"{e.hosts_available}/{e.hosts_total}"

    return [
        Column("STARTED", lambda e: format_timestamp(e.started_at, now)),
        Column("POLLER", "poller_id"),
        Column("PARTITION", "partition"),
        Column("SWEEP", lambda e: e.sweep_id or NONE),
        Column("TARGET", lambda e: e.target_network or NONE),
        Column("STATE", "state"),
        Column("AVAILABLE/TOTAL", totals),
        Column("MARKED-UNSEEN", lambda e: str(e.hosts_marked_unseen) if e.HasField("closed_at") else NONE),
    ]


def _hosts(args: argparse.Namespace, ctx: Context) -> int:
    availability = {
        "": pb.AVAILABILITY_FILTER_UNSPECIFIED,
        "up": pb.AVAILABILITY_FILTER_AVAILABLE,
        "down": pb.AVAILABILITY_FILTER_UNAVAILABLE,
    }[args.availability]
    request = pb.ListHostStatesRequest(
        tenant=args.tenant, partition=args.partition, availability=availability
    )
    with ctx.connect() as client:
        stub = pb_grpc.ResultServiceStub(client.channel)
        hosts = _pages(lambda r: client.call(stub.ListHostStates, r), request, "hosts", args.limit)
    answer = pb.ListHostStatesResponse(hosts=hosts)
    ctx.printer.show(answer, lambda now: [table(answer.hosts, HOST_COLUMNS, now)])
    return ExitCode.OK


def _checks(args: argparse.Namespace, ctx: Context) -> int:
    request = pb.ListCheckStatesRequest(tenant=args.tenant, poller_id=args.poller, state=args.state)
    with ctx.connect() as client:
        stub = pb_grpc.ResultServiceStub(client.channel)
        checks = _pages(lambda r: client.call(stub.ListCheckStates, r), request, "checks", args.limit)
    answer = pb.ListCheckStatesResponse(checks=checks)
    ctx.printer.show(answer, lambda now: [table(answer.checks, CHECK_COLUMNS, now)])
    return ExitCode.OK


def _sweeps(args: argparse.Namespace, ctx: Context) -> int:
    request = pb.ListSweepExecutionsRequest(tenant=args.tenant, partition=args.partition, sweep_id=args.sweep)
    with ctx.connect() as client:
        stub = pb_grpc.ResultServiceStub(client.channel)
        found = _pages(lambda r: client.call(stub.ListSweepExecutions, r), request, "executions", args.limit)
    answer = pb.ListSweepExecutionsResponse(executions=found)
    ctx.printer.show(answer, lambda now: [table(answer.executions, _execution_columns(now), now)])
    return ExitCode.OK


def _limit(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--limit", metavar="N", type=int_between(0), default=100, help="show at most N (default 100; 0: all)"
    )


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
        "--check", metavar="NAME", default="", help="only results of this service check: its history"
    )
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
    hosts_parser = add_verb(
        verbs,
        "hosts",
        summary="list swept hosts with their latest state",
        description=(
            "List the latest state of swept hosts by partition and address: availability, ICMP\n"
            "round trip and loss, fastest TCP connect, open ports (… when cut to the server's\n"
            "max_open_ports_per_host). A completed sweep marks the hosts of its scope it missed\n"
            "as unavailable."
        ),
        examples="  srctl results hosts --partition dc1 --availability down",
        handler=_hosts,
        common=common,
    )
    hosts_parser.add_argument("--tenant", default="", help="only this tenant (default: yours)")
    hosts_parser.add_argument("--partition", default="", help="only hosts of this partition")
    hosts_parser.add_argument(
        "--availability",
        choices=["up", "down"],
        default="",
        help="only available (up) or unavailable (down) hosts",
    )
    _limit(hosts_parser)
    checks_parser = add_verb(
        verbs,
        "checks",
        summary="list service checks with their checker state",
        description=(
            "List service checks with their checker state (active, failing, paused, disabled),\n"
            "failures in a row and latest result. A check is failing after the server's\n"
            "check_failing_after failures in a row and active again after one pass;\n"
            "`srctl results list --type service-checks --check NAME` shows its history."
        ),
        examples="  srctl results checks --state failing\n  srctl results checks --poller demo -o json",
        handler=_checks,
        common=common,
    )
    checks_parser.add_argument("--tenant", default="", help="only this tenant (default: yours)")
    checks_parser.add_argument("--poller", metavar="ID", default="", help="only checks of this poller")
    checks_parser.add_argument(
        "--state", choices=["active", "failing", "paused", "disabled"], default="", help="only this state"
    )
    _limit(checks_parser)
    sweeps_parser = add_verb(
        verbs,
        "sweeps",
        summary="list sweep executions with their totals",
        description=(
            "List sweep executions, newest first. Once an execution ended and its results are\n"
            "processed it shows hosts available/total and how many unseen hosts it marked down."
        ),
        examples="  srctl results sweeps --partition dc1 --limit 10",
        handler=_sweeps,
        common=common,
    )
    sweeps_parser.add_argument("--tenant", default="", help="only this tenant (default: yours)")
    sweeps_parser.add_argument("--partition", default="", help="only executions of this partition")
    sweeps_parser.add_argument("--sweep", metavar="ID", default="", help="only executions of this sweep id")
    _limit(sweeps_parser)
