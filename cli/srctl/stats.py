"""`srctl stats`: devices, pollers, agents, checks and ingest of a tenant, per partition."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import datetime

from rich.console import RenderableType
from rich.text import Text

from serviceradar.admin.v1 import stats_service_pb2 as pb
from serviceradar.admin.v1 import stats_service_pb2_grpc as pb_grpc
from srctl.command import Context
from srctl.errors import ExitCode
from srctl.output import Column, format_timestamp, table


def states(counts: Sequence[pb.StateCount]) -> str:
    """State counts as "healthy=3 degraded=1", or "-" when there are none."""
    return " ".join(f"{c.state}={c.count}" for c in counts) or "-"


def devices(row: pb.PartitionStats) -> str:
    """Available devices out of all canonical devices: "41/42"."""
    return f"{row.devices_available}/{row.devices_total}"


def partition(row: pb.PartitionStats) -> str:
    """The partition, or TOTAL for the tenant totals."""
    return row.partition or "TOTAL"


COLUMNS: list[Column[pb.PartitionStats]] = [
    Column("PARTITION", partition),
    Column("DEVICES UP", devices),
    Column("POLLERS", lambda r: states(r.pollers)),
    Column("AGENTS", lambda r: states(r.agents)),
    Column("CHECKS", lambda r: states(r.checks)),
    Column("RESULTS/S", lambda r: f"{r.ingest_rate:.2f}"),
    Column("ACCEPTED", "accepted_recent"),
    Column("REJECTED", "rejected_recent"),
]


def stats_view(response: pb.GetStatsResponse, now: datetime) -> Sequence[RenderableType]:
    """The table view: one row per partition and the totals, under when they were computed."""
    if response.HasField("refreshed_at"):
        when = format_timestamp(response.refreshed_at, now)
        header = f"tenant {response.tenant}, computed {when}, ingest over the last {response.window_seconds}s"
    else:
        header = f"tenant {response.tenant}: not computed yet (the leader refreshes the stats periodically)"
    return [Text(header), table([*response.partitions, response.totals], COLUMNS, now)]


def _show(args: argparse.Namespace, ctx: Context) -> int:
    request = pb.GetStatsRequest(tenant=args.tenant, partition=args.partition)
    with ctx.connect() as client:
        response = client.call(pb_grpc.StatsServiceStub(client.channel).GetStats, request)
    ctx.printer.show(response, lambda now: stats_view(response, now))
    return ExitCode.OK


def register(
    nouns: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add `stats` (a noun without verbs)."""
    noun = nouns.add_parser(
        "stats",
        help="devices, pollers, agents, checks and ingest per partition",
        description=(
            "Show a tenant's fleet per partition, with totals: devices available out of all\n"
            "canonical devices, pollers, agents and checks by state, and results accepted per\n"
            "second and rejected over the last window. The leader recomputes the figures every\n"
            "stats_refresh_interval seconds; the header says when they were computed."
        ),
        epilog=(
            "examples:\n"
            "  srctl stats\n"
            "  srctl stats --partition dc1\n"
            "  srctl stats --tenant acme -o json | jq '.totals.devices_available'"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    noun.add_argument("--tenant", default="", help="tenant (default: yours)")
    noun.add_argument("--partition", default="", help="only this partition")
    noun.set_defaults(handler=_show)
