"""Rendering of real generated messages as tables, JSON and YAML."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console

from serviceradar.admin.v1 import cluster_service_pb2 as cluster_pb
from serviceradar.admin.v1 import poller_service_pb2 as poller_pb
from serviceradar.edge.v1 import edge_service_pb2 as edge_pb
from srctl import cluster, pollers
from srctl.output import (
    NONE,
    EnumLike,
    Format,
    Printer,
    View,
    enum_choices,
    enum_prefix,
    format_age,
    format_duration,
    format_field,
    format_timestamp,
    parse_enum,
    short_enum,
    table,
    to_dict,
)

NOW = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)


def timestamp(when: datetime) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(when)
    return result


def demo_poller() -> poller_pb.Poller:
    poller = poller_pb.Poller(
        tenant="default",
        partition="dc1",
        poller_id="demo",
        state=poller_pb.POLLER_STATE_HEALTHY,
        version="1.4.0",
        capabilities=["sweep", "icmp"],
        labels={"site": "ams", "rack": "r7"},
        hostname="edge-1",
        registered_at=timestamp(NOW - timedelta(hours=2, minutes=5)),
        last_seen=timestamp(NOW - timedelta(seconds=12)),
        desired_config_version="c0ffee",
        applied_config_version="c0ffee",
        clock_skew=Duration(nanos=-250_000_000),
        agent_count=1,
    )
    poller.agents.add(
        agent_id="agent-1",
        state=poller_pb.AGENT_STATE_CONNECTED,
        capabilities=["icmp", "tcp"],
        last_seen=timestamp(NOW - timedelta(seconds=3)),
        message="up [fine]",
    )
    return poller


def render_table(fmt_view: View) -> str:
    out = io.StringIO()
    Printer(Format.TABLE, Console(file=out, width=300)).show(poller_pb.Poller(), fmt_view)
    return out.getvalue()


def show(message: poller_pb.ListPollersResponse, fmt: Format) -> str:
    out = io.StringIO()
    Printer(fmt, Console(file=out, width=80)).show(message, lambda now: [])
    return out.getvalue()


@pytest.mark.parametrize(
    ("enum", "number", "short"),
    [
        (poller_pb.PollerState.DESCRIPTOR, poller_pb.POLLER_STATE_HEALTHY, "healthy"),
        (poller_pb.PollerState.DESCRIPTOR, poller_pb.POLLER_STATE_MAINTENANCE, "maintenance"),
        (poller_pb.AgentState.DESCRIPTOR, poller_pb.AGENT_STATE_DISCONNECTED, "disconnected"),
        (edge_pb.OperatorAction.DESCRIPTOR, edge_pb.OPERATOR_ACTION_DRAIN, "drain"),
        (edge_pb.ComponentStatus.DESCRIPTOR, edge_pb.COMPONENT_STATUS_OK, "ok"),
        (poller_pb.PollerState.DESCRIPTOR, poller_pb.POLLER_STATE_UNSPECIFIED, NONE),
        # A value added to the contract after this client was built.
        (poller_pb.PollerState.DESCRIPTOR, 99, "99"),
    ],
)
def test_short_enum(enum: EnumLike, number: int, short: str) -> None:
    assert short_enum(enum, number) == short


def test_enum_prefix_follows_proto_style() -> None:
    assert enum_prefix(poller_pb.PollerState.DESCRIPTOR) == "POLLER_STATE_"
    assert enum_prefix(edge_pb.ComponentStatus.DESCRIPTOR) == "COMPONENT_STATUS_"


def test_enum_choices_and_parse_round_trip() -> None:
    choices = enum_choices(poller_pb.PollerState)
    assert choices == [
        "healthy",
        "degraded",
        "offline",
        "recovering",
        "maintenance",
        "draining",
        "inactive",
    ]
    assert [parse_enum(poller_pb.PollerState, c) for c in choices] == list(range(1, 8))
    with pytest.raises(ValueError):
        parse_enum(poller_pb.PollerState, "sleepy")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (12, "12s"),
        (60, "1m"),
        (303, "5m3s"),
        (7500, "2h5m"),
        (7200, "2h"),
        (3 * 86400 + 4 * 3600 + 59, "3d4h"),
        (86400, "1d"),
        (-3, "in 3s"),
    ],
)
def test_format_age(seconds: int, text: str) -> None:
    assert format_age(timedelta(seconds=seconds)) == text


def test_format_timestamp_is_iso_utc_with_age() -> None:
    when = timestamp(NOW - timedelta(seconds=12, microseconds=500))
    assert format_timestamp(when, NOW) == "2025-03-04T05:05:54Z (12s ago)"
    assert format_timestamp(timestamp(NOW + timedelta(seconds=2)), NOW) == ("2025-03-04T05:06:09Z (in 2s)")


@pytest.mark.parametrize(
    ("duration", "text"),
    [
        (Duration(seconds=30), "30s"),
        (Duration(seconds=1, nanos=500_000_000), "1.5s"),
        (Duration(nanos=-2_000_000), "-0.002s"),
        (Duration(), "0s"),
    ],
)
def test_format_duration(duration: Duration, text: str) -> None:
    assert format_duration(duration) == text


def test_format_field_by_type() -> None:
    poller = demo_poller()
    assert format_field(poller, "state", NOW) == "healthy"
    assert format_field(poller, "capabilities", NOW) == "sweep,icmp"
    assert format_field(poller, "labels", NOW) == "rack=r7,site=ams"
    assert format_field(poller, "last_seen", NOW) == "2025-03-04T05:05:55Z (12s ago)"
    assert format_field(poller, "clock_skew", NOW) == "-0.25s"
    assert format_field(poller, "agent_count", NOW) == "1"
    assert format_field(poller, "agents", NOW) == "1"
    assert format_field(poller, "message", NOW) == NONE
    assert format_field(poller_pb.Poller(), "last_seen", NOW) == NONE
    assert format_field(poller_pb.Poller(), "labels", NOW) == NONE
    assert format_field(cluster_pb.Replica(leader=True), "leader", NOW) == "true"
    # A nested message of the project's own has no column format; it reads as text format.
    nested = poller_pb.GetPollerResponse(poller=poller_pb.Poller(poller_id="p"))
    assert format_field(nested, "poller", NOW) == 'poller_id: "p"'


def test_poller_list_table() -> None:
    drifting = poller_pb.Poller(
        tenant="default",
        partition="dc2",
        poller_id="edge-9",
        state=poller_pb.POLLER_STATE_OFFLINE,
        desired_config_version="c0ffee",
    )
    text = render_table(lambda now: [table([demo_poller(), drifting], pollers.LIST_COLUMNS, NOW)])
    lines = text.splitlines()
    assert lines[0].split() == [
        "TENANT",
        "PARTITION",
        "POLLER",
        "STATE",
        "VERSION",
        "AGENTS",
        "LAST-SEEN",
        "WORK",
        "CONFIG",
    ]
    assert lines[1].split() == [
        "default",
        "dc1",
        "demo",
        "healthy",
        "1.4.0",
        "1",
        "2025-03-04T05:05:55Z",
        "(12s",
        "ago)",
        "0",
        "ok",
    ]
    assert lines[2].split() == [
        "default",
        "dc2",
        "edge-9",
        "offline",
        NONE,
        "0",
        NONE,
        "0",
        "drift",
    ]
    assert all(line == line.rstrip() for line in lines)


def test_poller_detail_view_shows_fields_and_agents() -> None:
    text = render_table(lambda now: pollers.poller_view(demo_poller(), NOW))
    assert "State:            healthy" in text
    assert "Labels:           rack=r7,site=ams" in text
    assert "Config:           ok" in text
    assert "Agents (1):" in text
    agent_line = next(line for line in text.splitlines() if line.startswith("agent-1"))
    # Cell text is data, not rich markup: the brackets survive.
    assert agent_line.split()[:3] == ["agent-1", "connected", NONE]
    assert agent_line.endswith("up [fine]")


def test_poller_without_agents_says_none() -> None:
    text = render_table(lambda now: pollers.poller_view(poller_pb.Poller(poller_id="p"), NOW))
    assert text.splitlines()[-2:] == ["Agents (0):", NONE]


def test_cluster_status_view() -> None:
    status = cluster_pb.GetClusterStatusResponse(
        answered_by="core-b",
        leader_id="core-a",
        fencing_token=42,
        server_time=timestamp(NOW),
    )
    status.replicas.add(replica_id="core-a", address="10.0.0.1:50051", version="0.1.0", leader=True)
    status.replicas.add(replica_id="core-b", address="10.0.0.2:50051", version="0.1.0")
    status.dependencies.add(name="store", backend="postgresql", healthy=True, detail="16.2")
    status.dependencies.add(name="events", backend="nats", healthy=False, detail="timeout")
    lines = render_table(lambda now: cluster.status_view(status, NOW)).splitlines()
    assert lines[0].split() == ["Leader:", "core-a"]
    assert lines[1].split() == ["Fencing", "token:", "42"]
    assert lines[3].startswith("Server time:    2025-03-04T05:06:07Z (0s ago)")
    assert [line.split()[0::4] for line in lines if line.startswith("core-")] == [
        ["core-a", "*"],
        ["core-b"],
    ]
    assert [line.split()[:3] for line in lines if line.startswith(("store", "events"))] == [
        ["store", "postgresql", "ok"],
        ["events", "nats", "down"],
    ]


def test_cluster_status_without_leader() -> None:
    text = render_table(lambda now: cluster.status_view(cluster_pb.GetClusterStatusResponse(), NOW))
    assert "Leader:         <none> (no leader elected)" in text
    assert "Fencing token:  <none>" in text


def test_json_is_the_response_with_proto_names_and_defaults() -> None:
    response = poller_pb.ListPollersResponse(pollers=[demo_poller()])
    data = json.loads(show(response, Format.JSON))
    assert list(data) == ["pollers", "next_page_token"]
    poller = data["pollers"][0]
    assert poller["poller_id"] == "demo"
    assert poller["state"] == "POLLER_STATE_HEALTHY"
    assert poller["last_seen"] == "2025-03-04T05:05:55Z"
    assert poller["clock_skew"] == "-0.250s"
    assert poller["labels"] == {"site": "ams", "rack": "r7"}
    assert poller["message"] == ""
    assert poller["agents"][0]["state"] == "AGENT_STATE_CONNECTED"
    # Keys follow the .proto order even though MessageToDict puts defaulted fields last.
    assert list(poller)[:5] == ["tenant", "partition", "poller_id", "state", "version"]
    assert list(poller["agents"][0])[:3] == ["agent_id", "state", "version"]


def test_empty_list_still_has_its_key() -> None:
    assert json.loads(show(poller_pb.ListPollersResponse(), Format.JSON)) == {
        "pollers": [],
        "next_page_token": "",
    }


def test_yaml_matches_json() -> None:
    response = poller_pb.ListPollersResponse(pollers=[demo_poller()], next_page_token="t2")
    assert yaml.safe_load(show(response, Format.YAML)) == json.loads(show(response, Format.JSON))
    assert yaml.safe_load(show(response, Format.YAML)) == to_dict(response)


def test_repeated_documents_are_separated() -> None:
    out = io.StringIO()
    printer = Printer(Format.YAML, Console(file=out))
    for interval in (30, 15):
        printer.show(edge_pb.ReportHealthResponse(next_interval=Duration(seconds=interval)), lambda now: [])
    documents = list(yaml.safe_load_all(out.getvalue()))
    assert [d["next_interval"] for d in documents] == ["30s", "15s"]


def test_long_json_lines_are_not_wrapped() -> None:
    response = poller_pb.ListPollersResponse(pollers=[poller_pb.Poller(message="x" * 500)])
    assert '"message": "' + "x" * 500 + '"' in show(response, Format.JSON)
