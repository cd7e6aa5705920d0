"""`srctl edge`: act as an edge poller (register, heartbeat, push results) with its certificate.

For operators checking a deployment end to end and for reproducing what an edge sees; the
calls are the very ones an edge core makes.
"""

from __future__ import annotations

import argparse
import socket
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import partial
from typing import TypeAlias

from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn
from rich.text import Text

from serviceradar.edge.v1 import config_pb2
from serviceradar.edge.v1 import edge_service_pb2 as pb
from serviceradar.edge.v1 import edge_service_pb2_grpc as pb_grpc
from srctl.argtypes import int_between, seconds
from srctl.command import Context, add_verb
from srctl.connection import Role
from srctl.errors import ExitCode, UsageError
from srctl.output import NONE, Column, enum_choices, key_values, parse_enum, table
from srctl.push import register_push

Status: TypeAlias = pb.ComponentStatus.ValueType

# Used only when the server sends no next interval, so a loop never spins without pause.
FALLBACK_INTERVAL = 1.0

REGISTER_COLUMNS: list[Column[pb.RegisterPollerResponse]] = [
    Column("Session", "session_id"),
    Column("Tenant", "tenant"),
    Column("Heartbeat interval", "heartbeat_interval"),
    Column("Heartbeat timeout", "heartbeat_timeout"),
    Column("Config version", "config_version"),
    Column("Server time", "server_time"),
    Column("Core replica", "core_replica"),
]

REDACTED = "<redacted>"

CONFIG_COLUMNS: list[Column[config_pb2.PollerConfig]] = [Column("Heartbeat interval", "heartbeat_interval")]

CHECK_COLUMNS: list[Column[config_pb2.CheckAssignment]] = [
    Column("CHECK", "name"),
    Column("TYPE", "check_type"),
    Column("TARGET", "target"),
    Column("PORT", "port"),
    Column("EVERY", "interval"),
    Column("TIMEOUT", "timeout"),
    Column("AGENT", "agent_id"),
    Column("SETTINGS", "settings"),
]

SWEEP_COLUMNS: list[Column[config_pb2.SweepAssignment]] = [
    Column("SWEEP", "name"),
    Column("CIDRS", "cidrs"),
    Column("PORTS", "ports"),
    Column("ICMP", "icmp_interval"),
    Column("TCP", "tcp_interval"),
    Column("TIMEOUT", "timeout"),
]

SOURCE_COLUMNS: list[Column[config_pb2.SourceAssignment]] = [
    Column("SOURCE", "name"),
    Column("KIND", "kind"),
    Column("ENDPOINT", "endpoint"),
    Column("EVERY", "sync_interval"),
    Column("CREDENTIALS", lambda s: _kv(s.credentials)),
    Column("SETTINGS", "settings"),
]

HEALTH_COLUMNS: list[Column[pb.ReportHealthResponse]] = [
    Column("Config version", "config_version"),
    Column("Config outdated", "config_outdated"),
    Column("Pending action", "pending_action"),
    Column("Next interval", "next_interval"),
    Column("Clock skew", "clock_skew"),
    Column("Server time", "server_time"),
]


def parse_agent(text: str) -> pb.AgentInfo:
    """`ID[:cap1,cap2]` as an AgentInfo.

    Agent ids may contain ':', so the capabilities follow the last one; an id with a colon
    and no capabilities is written with a trailing colon ("rack:1:").
    """
    agent_id, colon, capabilities = text.rpartition(":")
    if not colon:
        agent_id, capabilities = text, ""
    if not agent_id:
        raise argparse.ArgumentTypeError(f"expected ID[:cap1,cap2], got {text!r}")
    return pb.AgentInfo(agent_id=agent_id, capabilities=[c for c in capabilities.split(",") if c])


def parse_label(text: str) -> tuple[str, str]:
    """`key=value` as a pair."""
    key, equals, value = text.partition("=")
    if not equals or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key, value


def parse_status(text: str) -> Status:
    """A component status by short name (ok, degraded, down)."""
    try:
        return parse_enum(pb.ComponentStatus, text)
    except ValueError:
        choices = ", ".join(enum_choices(pb.ComponentStatus))
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {choices}") from None


def parse_agent_status(text: str) -> tuple[str, Status]:
    """`ID=STATUS` as an agent id and a component status."""
    agent_id, status = parse_label(text)
    return agent_id, parse_status(status)


def registration_request(args: argparse.Namespace) -> pb.RegisterPollerRequest:
    """The RegisterPoller request the registration flags describe."""
    return pb.RegisterPollerRequest(
        poller_id=args.poller,
        tenant=args.tenant,
        partition=args.partition,
        version=args.version,
        capabilities=args.capability,
        agents=args.agent,
        labels=dict(args.label),
        hostname=args.hostname,
    )


def health_request(
    args: argparse.Namespace, session_id: str, agent_statuses: dict[str, Status]
) -> pb.ReportHealthRequest:
    """One heartbeat, stamped with this machine's clock so the server can measure skew."""
    sent_at = Timestamp()
    sent_at.GetCurrentTime()
    return pb.ReportHealthRequest(
        session_id=session_id,
        poller_id=args.poller,
        status=args.status,
        agents=[pb.AgentHealth(agent_id=a, status=s) for a, s in agent_statuses.items()],
        sent_at=sent_at,
        applied_config_version=args.applied_config,
    )


def _register_view(response: pb.RegisterPollerResponse, now: datetime) -> Sequence[RenderableType]:
    return [key_values(response, REGISTER_COLUMNS, now)]


def _health_view(
    response: pb.ReportHealthResponse, number: int, count: int, now: datetime
) -> Sequence[RenderableType]:
    return [
        Text(f"Heartbeat {number}/{count}", style="bold"),
        key_values(response, HEALTH_COLUMNS, now),
    ]


def _register(args: argparse.Namespace, ctx: Context) -> int:
    with ctx.connect(Role.EDGE) as client:
        stub = pb_grpc.EdgeServiceStub(client.channel)
        response = client.call(stub.RegisterPoller, registration_request(args))
    ctx.printer.show(response, partial(_register_view, response))
    return ExitCode.OK


def _health(args: argparse.Namespace, ctx: Context) -> int:
    if args.register and not args.partition:
        raise UsageError("--partition is required with --register")
    agent_statuses: dict[str, Status] = dict(args.agent_status)
    with ctx.connect(Role.EDGE) as client:
        stub = pb_grpc.EdgeServiceStub(client.channel)
        session_id: str = args.session
        if args.register:
            registered = client.call(stub.RegisterPoller, registration_request(args))
            session_id = registered.session_id
            # On stderr, so that stdout holds only heartbeat answers for -o json/yaml.
            ctx.err.print(
                Text(f"registered {args.poller} (tenant {registered.tenant}), session {session_id}"),
                soft_wrap=True,
            )
            # A poller reports on every agent it announced; unnamed ones share its status.
            for agent in args.agent:
                agent_statuses.setdefault(agent.agent_id, args.status)
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=ctx.err,
            transient=True,
            disable=args.count == 1 or not ctx.err.is_terminal,
        ) as progress:
            task = progress.add_task("heartbeats", total=args.count)
            for number in range(1, args.count + 1):
                response = client.call(stub.ReportHealth, health_request(args, session_id, agent_statuses))
                ctx.printer.show(response, partial(_health_view, response, number, args.count))
                progress.advance(task)
                if number == args.count:
                    break
                wait = args.interval
                if wait is None:
                    next_interval = response.next_interval
                    wait = next_interval.seconds + next_interval.nanos / 1e9 or FALLBACK_INTERVAL
                progress.update(task, description=f"next heartbeat in {wait:g}s")
                time.sleep(wait)
    return ExitCode.OK


def redacted(response: pb.SyncConfigResponse) -> pb.SyncConfigResponse:
    """A copy of `response` with every credential value replaced by REDACTED."""
    copy = pb.SyncConfigResponse()
    copy.CopyFrom(response)
    for source in copy.config.sources:
        for name in list(source.credentials):
            source.credentials[name] = REDACTED
    return copy


def _kv(values: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(values.items())) or NONE


def _config_view(response: pb.SyncConfigResponse, now: datetime) -> Sequence[RenderableType]:
    body = response.WhichOneof("body") or "empty"
    heading = Text(f"{body.replace('_', ' ')}  version {response.version}", style="bold")
    if body != "config":
        return [heading]
    config = response.config
    view: list[RenderableType] = [heading, key_values(config, CONFIG_COLUMNS, now)]
    checks = table(config.checks, CHECK_COLUMNS, now) if config.checks else NONE
    sweeps = table(config.sweeps, SWEEP_COLUMNS, now) if config.sweeps else NONE
    sources = table(config.sources, SOURCE_COLUMNS, now) if config.sources else NONE
    for title, rendered in (
        (f"Checks ({len(config.checks)}):", checks),
        (f"Sweeps ({len(config.sweeps)}):", sweeps),
        (f"Sources ({len(config.sources)}):", sources),
    ):
        view += [Text(), Text(title, style="bold"), rendered]
    return view


def _sync_config(args: argparse.Namespace, ctx: Context) -> int:
    request = pb.SyncConfigRequest(poller_id=args.poller, known_version=args.known_version)
    with ctx.connect(Role.EDGE) as client:
        stub = pb_grpc.EdgeServiceStub(client.channel)
        # No deadline while watching: the stream runs until the operator stops it.
        stream = stub.SyncConfig(request, timeout=None if args.watch else client.timeout)
        seen = 0
        try:
            for response in stream:
                shown = response if args.show_credentials else redacted(response)
                ctx.printer.show(shown, partial(_config_view, shown))
                seen += 1
                if not args.watch or (args.count and seen >= args.count):
                    break
        finally:
            stream.cancel()
    return ExitCode.OK


def _add_registration_flags(parser: argparse.ArgumentParser, *, for_health: bool) -> None:
    group = parser.add_argument_group("registration (with --register)" if for_health else "registration")
    group.add_argument(
        "--partition",
        required=not for_health,
        default="",
        help="partition (network segment) of the poller",
    )
    group.add_argument("--tenant", default="", help="tenant; must match the certificate when given")
    group.add_argument("--version", default="", help="poller software version to announce")
    group.add_argument(
        "--capability",
        metavar="C",
        action="append",
        default=[],
        help="a capability of the poller (repeatable), e.g. sweep, icmp, snmp",
    )
    group.add_argument(
        "--agent",
        metavar="ID[:cap1,cap2]",
        type=parse_agent,
        action="append",
        default=[],
        help="an agent behind the poller with its capabilities (repeatable)",
    )
    group.add_argument(
        "--label",
        metavar="KEY=VALUE",
        type=parse_label,
        action="append",
        default=[],
        help="a label of the poller (repeatable)",
    )
    group.add_argument(
        "--hostname",
        default=socket.gethostname(),
        help="host name to announce (default: this machine's)",
    )


def register(
    nouns: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add `edge` and its verbs."""
    noun = nouns.add_parser(
        "edge",
        help="act as an edge poller (register, heartbeat, push results)",
        description=(
            "Make the calls an edge poller makes, with the edge client certificate: with\n"
            "--data-dir, DIR/pki/edge-default-demo.pem (poller 'demo' of tenant 'default')\n"
            "unless --cert/--key name another. The poller identity comes from the\n"
            "certificate; a --poller that disagrees is PERMISSION_DENIED (exit 5)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    verbs = noun.add_subparsers(dest="verb", required=True, metavar="VERB")

    register_parser = add_verb(
        verbs,
        "register",
        summary="register a poller and open a session",
        description=(
            "Call RegisterPoller and print the session id, heartbeat interval and the\n"
            "configuration version the core wants the poller to run."
        ),
        examples=(
            "  srctl edge register --data-dir ./data --poller demo --partition dc1\n"
            "  srctl edge register --poller demo --partition dc1 --version 1.4.0 \\\n"
            "      --capability sweep --agent agent-1:icmp,tcp --label site=ams"
        ),
        handler=_register,
        common=common,
    )
    register_parser.add_argument(
        "--poller", required=True, metavar="ID", help="poller id (must match the certificate)"
    )
    _add_registration_flags(register_parser, for_health=False)

    health_parser = add_verb(
        verbs,
        "health",
        summary="send heartbeats and print the answers",
        description=(
            "Call ReportHealth COUNT times and print each answer: whether the applied\n"
            "configuration is outdated, the next interval, any pending operator action and\n"
            "the measured clock skew. Use a session from 'edge register', or --register to\n"
            "register first (taking the registration flags below). Heartbeats follow the\n"
            "server's next interval unless --interval is given. With -o json or yaml only\n"
            "the answers go to stdout, one document each."
        ),
        examples=(
            "  srctl edge health --poller demo --session 3f1c...\n"
            "  srctl edge health --poller demo --register --partition dc1 \\\n"
            "      --agent agent-1 --agent-status agent-1=degraded --count 5 --interval 2"
        ),
        handler=_health,
        common=common,
    )
    health_parser.add_argument(
        "--poller", required=True, metavar="ID", help="poller id (must match the certificate)"
    )
    session = health_parser.add_mutually_exclusive_group(required=True)
    session.add_argument("--session", metavar="S", help="session id from RegisterPoller")
    session.add_argument("--register", action="store_true", help="register first and use the new session")
    statuses = ", ".join(enum_choices(pb.ComponentStatus))
    health_parser.add_argument(
        "--status",
        type=parse_status,
        default=pb.COMPONENT_STATUS_OK,
        metavar="STATUS",
        help=f"overall poller status: {statuses} (default: ok)",
    )
    health_parser.add_argument(
        "--agent-status",
        metavar="ID=STATUS",
        type=parse_agent_status,
        action="append",
        default=[],
        help="status of one agent (repeatable); with --register, agents given with --agent "
        "and not named here report the poller's --status",
    )
    health_parser.add_argument(
        "--applied-config",
        metavar="V",
        default="",
        help="configuration version the poller runs (default: none reported)",
    )
    health_parser.add_argument(
        "--count", metavar="N", type=int_between(1), default=1, help="heartbeats to send (default 1)"
    )
    health_parser.add_argument(
        "--interval",
        metavar="SECONDS",
        type=seconds(allow_zero=True),
        help="seconds between heartbeats (default: the server's next interval)",
    )
    _add_registration_flags(health_parser, for_health=True)

    sync_parser = add_verb(
        verbs,
        "sync-config",
        summary="print the configuration the core sends a poller (--watch: and every change)",
        description=(
            "Call SyncConfig as the poller of the certificate and print what it receives: the\n"
            "configuration (or 'not modified' when --known-version is current), then, with\n"
            "--watch, every configuration the core pushes and the keepalives in between.\n"
            "Credential values are shown as <redacted> unless --show-credentials is given:\n"
            "the poller receives them in clear, over mutual TLS."
        ),
        examples=(
            "  srctl edge sync-config --data-dir ./data --poller demo\n"
            "  srctl edge sync-config --poller demo --watch\n"
            "  srctl edge sync-config --poller demo --known-version 3f1c... -o json"
        ),
        handler=_sync_config,
        common=common,
    )
    sync_parser.add_argument(
        "--poller", required=True, metavar="ID", help="poller id (must match the certificate)"
    )
    sync_parser.add_argument(
        "--known-version", metavar="V", default="", help="version the poller already holds"
    )
    sync_parser.add_argument("--watch", action="store_true", help="keep printing what the core pushes")
    sync_parser.add_argument(
        "--count", metavar="N", type=int_between(1), default=0, help="with --watch, stop after N messages"
    )
    sync_parser.add_argument(
        "--show-credentials", action="store_true", help="print credential values (they are secrets)"
    )

    register_push(verbs, common)
