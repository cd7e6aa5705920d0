"""`srctl checks`: service checks (icmp, tcp, http, grpc, snmp, process) and where they run."""

from __future__ import annotations

import argparse
from typing import Any

from serviceradar.admin.v1 import check_service_pb2 as pb
from serviceradar.admin.v1 import check_service_pb2_grpc as pb_grpc
from serviceradar.edge.v1 import config_pb2
from srctl.output import Column, enum_choices, parse_enum, short_enum
from srctl.work import (
    SpecFlags,
    WorkNoun,
    assignment_columns,
    assignment_details,
    parse_pair,
    register_noun,
    seconds_text,
    short_duration,
    to_duration,
)

TYPES = enum_choices(config_pb2.CheckType)


def _type(check: Any) -> str:
    return short_enum(config_pb2.CheckType.DESCRIPTOR, check.spec.check_type)


LIST_COLUMNS: list[Column[pb.ServiceCheck]] = [
    Column("TENANT", "tenant"),
    Column("CHECK", "name"),
    Column("PARTITION", lambda c: c.spec.partition),
    Column("TYPE", _type),
    Column("TARGET", lambda c: c.spec.target),
    Column("PORT", lambda c: str(c.spec.port or "<none>")),
    Column("EVERY", lambda c: seconds_text(c.spec.interval)),
    Column("ENABLED", "enabled"),
    *assignment_columns(),
]

DETAIL_COLUMNS: list[Column[pb.ServiceCheck]] = [
    Column("Tenant", "tenant"),
    Column("Check", "name"),
    Column("Check id", "check_id"),
    Column("Partition", lambda c: c.spec.partition),
    Column("Type", _type),
    Column("Target", lambda c: c.spec.target),
    Column("Port", lambda c: str(c.spec.port or "<none>")),
    Column("Interval", lambda c: seconds_text(c.spec.interval)),
    Column("Timeout", lambda c: seconds_text(c.spec.timeout)),
    Column("Agent", lambda c: c.spec.agent_id or "<none>"),
    Column(
        "Settings", lambda c: ",".join(f"{k}={v}" for k, v in sorted(c.spec.settings.items())) or "<none>"
    ),
    Column("Enabled", "enabled"),
    *assignment_details(),
    Column("Revision", "revision"),
    Column("Created", "created_at"),
    Column("Updated", "updated_at"),
]


def _add_spec_flags(parser: argparse.ArgumentParser, for_update: bool) -> None:
    group = parser.add_argument_group("check")
    group.add_argument("--partition", required=not for_update, help="partition whose pollers run it")
    group.add_argument("--type", choices=TYPES, required=not for_update, help="kind of check")
    group.add_argument(
        "--target",
        required=not for_update,
        help="host name or IP (icmp, tcp, grpc, snmp), URL (http) or process name (process)",
    )
    group.add_argument("--port", type=int, help="port (tcp and grpc: required; snmp: default 161)")
    group.add_argument("--interval", type=short_duration, help="how often: 1s to 24h (default 60s)")
    group.add_argument(
        "--check-timeout",
        type=short_duration,
        help="how long one run may take (default 5s, at most the interval)",
    )
    group.add_argument("--agent", help="agent that must run it (default: the poller chooses)")
    group.add_argument(
        "--setting",
        metavar="KEY=VALUE",
        type=parse_pair,
        action="append",
        help="type-specific setting, e.g. method=HEAD, expect_status=200, oid=1.3.6.1.2.1.1.3.0 (repeatable; "
        "on update they replace all settings)",
    )


def _read_spec_flags(args: argparse.Namespace) -> SpecFlags:
    spec = pb.CheckSpec()
    paths: list[str] = []
    if args.partition is not None:
        spec.partition = args.partition
        paths.append("partition")
    if args.type is not None:
        spec.check_type = parse_enum(config_pb2.CheckType, args.type)
        paths.append("check_type")
    if args.target is not None:
        spec.target = args.target
        paths.append("target")
    if args.port is not None:
        spec.port = args.port
        paths.append("port")
    if args.interval is not None:
        spec.interval.CopyFrom(to_duration(args.interval))
        paths.append("interval")
    if args.check_timeout is not None:
        spec.timeout.CopyFrom(to_duration(args.check_timeout))
        paths.append("timeout")
    if args.agent is not None:
        spec.agent_id = args.agent
        paths.append("agent_id")
    if args.setting is not None:
        spec.settings.update(dict(args.setting))
        paths.append("settings")
    return SpecFlags(spec, paths)


NOUN = WorkNoun(
    noun="checks",
    alias="check",
    singular="check",
    help="service checks and where they run",
    description=(
        "Service checks: what a poller (or an agent behind it) probes and how often. The leader\n"
        "places every enabled check on one available poller of its partition that has the\n"
        "capability named by its type (icmp, tcp, http, grpc, snmp, process), least loaded\n"
        "first; a change reaches that poller's configuration stream at once."
    ),
    stub=pb_grpc.CheckServiceStub,
    service="Check",
    module=pb,
    field="check",
    items="checks",
    list_columns=LIST_COLUMNS,
    detail_columns=DETAIL_COLUMNS,
    add_spec_flags=_add_spec_flags,
    read_spec_flags=_read_spec_flags,
    create_examples=(
        "  srctl checks create gw-ping --partition dc1 --type icmp --target 10.0.0.1 --interval 30s\n"
        "  srctl checks create web --partition dc1 --type http --target https://intranet.example/health \\\n"
        "      --setting expect_status=200 --check-timeout 2s\n"
        "  srctl checks create db --partition dc1 --type tcp --target db1.example --port 5432 --agent rack-3"
    ),
    update_examples=(
        "  srctl checks update web --interval 15s\n  srctl checks update db --port 5433 --check-timeout 1s"
    ),
)


def register(
    nouns: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add `checks` and its verbs."""
    register_noun(nouns, common, NOUN)
