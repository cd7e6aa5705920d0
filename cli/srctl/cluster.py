"""`srctl cluster`: the core replicas, the leader and the dependencies."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import datetime

from rich.console import RenderableType
from rich.text import Text

from serviceradar.admin.v1 import cluster_service_pb2 as pb
from serviceradar.admin.v1 import cluster_service_pb2_grpc as pb_grpc
from srctl.command import Context, add_verb
from srctl.errors import ExitCode
from srctl.output import NONE, Column, key_values, table

REPLICA_COLUMNS: list[Column[pb.Replica]] = [
    Column("REPLICA", "replica_id"),
    Column("ADDRESS", "address"),
    Column("VERSION", "version"),
    Column("STARTED", "started_at"),
    Column("LEADER", lambda r: "*" if r.leader else ""),
]

DEPENDENCY_COLUMNS: list[Column[pb.DependencyHealth]] = [
    Column("DEPENDENCY", "name"),
    Column("BACKEND", "backend"),
    Column("STATUS", lambda d: "ok" if d.healthy else "down"),
    Column("DETAIL", "detail"),
]

STATUS_COLUMNS: list[Column[pb.GetClusterStatusResponse]] = [
    Column("Leader", lambda s: s.leader_id or f"{NONE} (no leader elected)"),
    Column("Fencing token", lambda s: str(s.fencing_token) if s.leader_id else NONE),
    Column("Answered by", "answered_by"),
    Column("Server time", "server_time"),
]


def status_view(response: pb.GetClusterStatusResponse, now: datetime) -> Sequence[RenderableType]:
    """The table view of a cluster status: summary, replicas, dependencies."""
    return [
        key_values(response, STATUS_COLUMNS, now),
        Text(),
        table(response.replicas, REPLICA_COLUMNS, now),
        Text(),
        table(response.dependencies, DEPENDENCY_COLUMNS, now),
    ]


def _status(args: argparse.Namespace, ctx: Context) -> int:
    with ctx.connect() as client:
        stub = pb_grpc.ClusterServiceStub(client.channel)
        response = client.call(stub.GetClusterStatus, pb.GetClusterStatusRequest())
    ctx.printer.show(response, lambda now: status_view(response, now))
    return ExitCode.OK


def register(
    nouns: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add `cluster` and its verbs."""
    noun = nouns.add_parser(
        "cluster",
        help="core replicas, leadership and dependencies",
        description="Inspect the core cluster.",
        parents=[common],
    )
    verbs = noun.add_subparsers(dest="verb", required=True, metavar="VERB")
    add_verb(
        verbs,
        "status",
        summary="show replicas, the leader and dependency health",
        description=(
            "Show every live core replica (the leader marked with *), the leader's fencing\n"
            "token and the health of the store, coordination backend and event bus, as seen\n"
            "by the replica that answered."
        ),
        examples=(
            "  srctl cluster status --data-dir ./data\n  srctl cluster status -o json | jq -r .leader_id"
        ),
        handler=_status,
        common=common,
    )
