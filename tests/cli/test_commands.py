"""Command logic that needs no server: paging, the heartbeat loop, what goes to which stream.

`Client.call` is replaced by canned answers keyed on the request type; the end-to-end tests
in test_cli_e2e.py run the same commands against the real server.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import yaml
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message

from serviceradar.admin.v1 import poller_service_pb2 as poller_pb
from serviceradar.edge.v1 import edge_service_pb2 as edge_pb
from srctl.connection import Client
from srctl.main import main

Answer = Callable[[Message], Message]


class CannedCalls:
    """Records every request and answers it by request type."""

    def __init__(self, answers: dict[type[Message], Answer]) -> None:
        self.answers = answers
        self.requests: list[Message] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def call(client: Client, method: object, request: Message) -> Message:
            snapshot = type(request)()
            snapshot.CopyFrom(request)
            self.requests.append(snapshot)
            return self.answers[type(request)](request)

        monkeypatch.setattr(Client, "call", call)


def pages(request: Message) -> Message:
    """Three pages of one poller each: p1 (token t2), p2 (token t3), p3 (last)."""
    assert isinstance(request, poller_pb.ListPollersRequest)
    index = {"": 1, "t2": 2, "t3": 3}[request.page_token]
    return poller_pb.ListPollersResponse(
        pollers=[poller_pb.Poller(poller_id=f"p{index}", tenant="default", partition="dc1")],
        next_page_token=f"t{index + 1}" if index < 3 else "",
    )


def test_list_follows_every_page_by_default(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = CannedCalls({poller_pb.ListPollersRequest: pages})
    calls.install(monkeypatch)
    argv = ["pollers", "list", "--plaintext", "-o", "json", "--partition", "dc1"]
    assert main([*argv, "--state", "degraded", "--page-size", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [p["poller_id"] for p in data["pollers"]] == ["p1", "p2", "p3"]
    assert data["next_page_token"] == ""
    tokens = [r.page_token for r in calls.requests if isinstance(r, poller_pb.ListPollersRequest)]
    assert tokens == ["", "t2", "t3"]
    first = calls.requests[0]
    assert first == poller_pb.ListPollersRequest(
        partition="dc1", state=poller_pb.POLLER_STATE_DEGRADED, page_size=1
    )


def test_no_all_stops_after_one_page_and_says_how_to_go_on(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    CannedCalls({poller_pb.ListPollersRequest: pages}).install(monkeypatch)
    assert main(["pollers", "list", "--plaintext", "--no-all", "--page-token", "t2"]) == 0
    captured = capsys.readouterr()
    assert [line.split()[2] for line in captured.out.splitlines()] == ["POLLER", "p2"]
    assert captured.err == "more pollers: continue with --no-all --page-token t3\n"


def test_no_all_json_keeps_the_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    CannedCalls({poller_pb.ListPollersRequest: pages}).install(monkeypatch)
    assert main(["pollers", "list", "--plaintext", "--no-all", "-o", "json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["next_page_token"] == "t2"
    assert captured.err == ""


def registered(request: Message) -> Message:
    assert isinstance(request, edge_pb.RegisterPollerRequest)
    return edge_pb.RegisterPollerResponse(
        session_id="sess-1", tenant="default", heartbeat_interval=Duration(seconds=30)
    )


def heartbeat(request: Message) -> Message:
    return edge_pb.ReportHealthResponse(
        next_interval=Duration(seconds=30),
        config_version="c0ffee",
        config_outdated=True,
        pending_action=edge_pb.OPERATOR_ACTION_DRAIN,
    )


def test_register_prints_the_session(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = CannedCalls({edge_pb.RegisterPollerRequest: registered})
    calls.install(monkeypatch)
    argv = ["edge", "register", "--plaintext", "--poller", "demo", "--partition", "dc1"]
    assert main([*argv, "--agent", "a1:icmp", "--label", "site=ams", "--hostname", "h1"]) == 0
    out = capsys.readouterr().out
    assert "Session:             sess-1" in out
    assert "Heartbeat interval:  30s" in out
    assert calls.requests == [
        edge_pb.RegisterPollerRequest(
            poller_id="demo",
            partition="dc1",
            agents=[edge_pb.AgentInfo(agent_id="a1", capabilities=["icmp"])],
            labels={"site": "ams"},
            hostname="h1",
        )
    ]


def test_health_registers_then_beats_count_times(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = CannedCalls({edge_pb.RegisterPollerRequest: registered, edge_pb.ReportHealthRequest: heartbeat})
    calls.install(monkeypatch)
    argv = ["edge", "health", "--plaintext", "--poller", "demo", "--register"]
    argv += ["--partition", "dc1", "--agent", "a1", "--agent", "a2", "--agent-status", "a2=down"]
    argv += ["--count", "3", "--interval", "0", "--applied-config", "abc", "-o", "yaml"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    documents = list(yaml.safe_load_all(captured.out))
    assert len(documents) == 3
    assert documents[0]["pending_action"] == "OPERATOR_ACTION_DRAIN"
    # The registration goes to stderr, so stdout parses as heartbeat answers only.
    assert captured.err == "registered demo (tenant default), session sess-1\n"
    assert isinstance(calls.requests[0], edge_pb.RegisterPollerRequest)
    beats = calls.requests[1:]
    assert len(beats) == 3
    for beat in beats:
        assert isinstance(beat, edge_pb.ReportHealthRequest)
        assert (beat.session_id, beat.poller_id, beat.applied_config_version) == (
            "sess-1",
            "demo",
            "abc",
        )
        assert beat.status == edge_pb.COMPONENT_STATUS_OK
        # Agents announced with --agent report the poller's status unless named otherwise.
        assert {(a.agent_id, a.status) for a in beat.agents} == {
            ("a1", edge_pb.COMPONENT_STATUS_OK),
            ("a2", edge_pb.COMPONENT_STATUS_DOWN),
        }
        assert beat.HasField("sent_at")


def test_health_table_shows_each_answer(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = CannedCalls({edge_pb.ReportHealthRequest: heartbeat})
    calls.install(monkeypatch)
    argv = ["edge", "health", "--plaintext", "--poller", "demo", "--session", "s9"]
    assert main([*argv, "--count", "2", "--interval", "0"]) == 0
    out = capsys.readouterr().out
    assert "Heartbeat 1/2" in out
    assert "Heartbeat 2/2" in out
    assert out.count("Config outdated:  true") == 2
    assert out.count("Pending action:   drain") == 2
    sessions = [r.session_id for r in calls.requests if isinstance(r, edge_pb.ReportHealthRequest)]
    assert sessions == ["s9", "s9"]
