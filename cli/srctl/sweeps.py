"""`srctl sweeps`: sweep groups (networks swept with ICMP and TCP) and where they run."""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from serviceradar.admin.v1 import sweep_service_pb2 as pb
from serviceradar.admin.v1 import sweep_service_pb2_grpc as pb_grpc
from srctl.argtypes import int_between
from srctl.output import Column
from srctl.work import (
    SpecFlags,
    WorkNoun,
    assignment_columns,
    assignment_details,
    register_noun,
    seconds_text,
    short_duration,
    to_duration,
)


def _list_text(values: Iterable[object]) -> str:
    return ",".join(str(v) for v in values) or "<none>"


LIST_COLUMNS: list[Column[pb.SweepGroup]] = [
    Column("TENANT", "tenant"),
    Column("SWEEP", "name"),
    Column("PARTITION", lambda s: s.spec.partition),
    Column("CIDRS", lambda s: _list_text(s.spec.cidrs)),
    Column("PORTS", lambda s: _list_text(s.spec.ports)),
    Column("ICMP", lambda s: seconds_text(s.spec.icmp_interval)),
    Column("TCP", lambda s: seconds_text(s.spec.tcp_interval)),
    Column("ENABLED", "enabled"),
    *assignment_columns(),
]

DETAIL_COLUMNS: list[Column[pb.SweepGroup]] = [
    Column("Tenant", "tenant"),
    Column("Sweep", "name"),
    Column("Sweep id", "sweep_id"),
    Column("Partition", lambda s: s.spec.partition),
    Column("CIDRs", lambda s: _list_text(s.spec.cidrs)),
    Column("Ports", lambda s: _list_text(s.spec.ports)),
    Column("ICMP every", lambda s: seconds_text(s.spec.icmp_interval)),
    Column("TCP every", lambda s: seconds_text(s.spec.tcp_interval)),
    Column("Probe timeout", lambda s: seconds_text(s.spec.timeout)),
    Column("Enabled", "enabled"),
    *assignment_details(),
    Column("Revision", "revision"),
    Column("Created", "created_at"),
    Column("Updated", "updated_at"),
]


def _add_spec_flags(parser: argparse.ArgumentParser, for_update: bool) -> None:
    group = parser.add_argument_group("sweep")
    group.add_argument("--partition", required=not for_update, help="partition whose pollers sweep it")
    group.add_argument(
        "--cidr",
        action="append",
        metavar="CIDR",
        help="a network to sweep (repeatable; on update they replace all)",
    )
    group.add_argument(
        "--port",
        action="append",
        type=int_between(1, 65535),
        metavar="PORT",
        help="a TCP port to probe (repeatable; on update they replace all)",
    )
    group.add_argument("--icmp-every", type=short_duration, help="ICMP sweep cadence, 1m to 7d; 0s disables")
    group.add_argument("--tcp-every", type=short_duration, help="TCP sweep cadence, 1m to 7d; 0s disables")
    group.add_argument("--probe-timeout", type=short_duration, help="probe timeout, 10ms to 60s (default 1s)")


def _read_spec_flags(args: argparse.Namespace) -> SpecFlags:
    spec = pb.SweepSpec()
    paths: list[str] = []
    if args.partition is not None:
        spec.partition = args.partition
        paths.append("partition")
    if args.cidr is not None:
        spec.cidrs.extend(args.cidr)
        paths.append("cidrs")
    if args.port is not None:
        spec.ports.extend(args.port)
        paths.append("ports")
    if args.icmp_every is not None:
        spec.icmp_interval.CopyFrom(to_duration(args.icmp_every))
        paths.append("icmp_interval")
    if args.tcp_every is not None:
        spec.tcp_interval.CopyFrom(to_duration(args.tcp_every))
        paths.append("tcp_interval")
    if args.probe_timeout is not None:
        spec.timeout.CopyFrom(to_duration(args.probe_timeout))
        paths.append("timeout")
    return SpecFlags(spec, paths)


NOUN = WorkNoun(
    noun="sweeps",
    alias="sweep",
    singular="sweep group",
    help="sweep groups (networks swept with ICMP and TCP) and where they run",
    description=(
        "Sweep groups: networks a poller sweeps with ICMP and TCP on a cadence. The leader\n"
        "places every enabled group on one available poller of its partition with the 'sweep'\n"
        "capability."
    ),
    stub=pb_grpc.SweepServiceStub,
    service="Sweep",
    module=pb,
    field="sweep",
    items="sweeps",
    list_columns=LIST_COLUMNS,
    detail_columns=DETAIL_COLUMNS,
    add_spec_flags=_add_spec_flags,
    read_spec_flags=_read_spec_flags,
    create_examples=(
        "  srctl sweeps create lan --partition dc1 --cidr 10.1.0.0/16 --icmp-every 5m\n"
        "  srctl sweeps create servers --partition dc1 --cidr 10.2.0.0/24 --port 22 --port 443 \\\n"
        "      --icmp-every 5m --tcp-every 1h"
    ),
    update_examples=(
        "  srctl sweeps update lan --icmp-every 10m\n  srctl sweeps update servers --port 22 --port 8443"
    ),
)


def register(
    nouns: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add `sweeps` and its verbs."""
    register_noun(nouns, common, NOUN)
