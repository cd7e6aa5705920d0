"""`srctl batches` and `srctl results` without a server: requests, paging, views, time flags.

test_push_e2e.py runs them against the real core after real pushes.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from google.protobuf.message import Message

from serviceradar.admin.v1 import batch_service_pb2 as bpb
from serviceradar.admin.v1 import result_service_pb2 as rspb
from serviceradar.edge.v1 import results_pb2 as rpb
from srctl.main import main
from tests.cli.test_commands import CannedCalls

BATCH = "5f2c1a2b-0000-4000-8000-000000000001"


def batch(committed: int, expected: int, state: int = rpb.BATCH_STATE_OPEN) -> bpb.Batch:
    return bpb.Batch(
        tenant="default",
        poller_id="demo",
        batch_id=BATCH,
        result_type=rpb.RESULT_TYPE_SWEEP_HOSTS,
        partition="dc1",
        state=state,  # type: ignore[arg-type]
        committed_index=committed,
        expected_chunks=expected,
        accepted=26_498,
        rejected=2,
        first_reject="chunk 3: results[17].ip: not an IP address",
    )


def listed(request: Message) -> Message:
    assert isinstance(request, bpb.ListBatchesRequest)
    return bpb.ListBatchesResponse(batches=[batch(52, 130), batch(-1, 0)])


def test_batches_list_filters_and_shows_progress(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = CannedCalls({bpb.ListBatchesRequest: listed})
    calls.install(monkeypatch)
    argv = ["batches", "list", "--plaintext", "--poller", "demo", "--state", "open", "--type", "sweep-hosts"]
    assert main(argv) == 0
    assert calls.requests == [
        bpb.ListBatchesRequest(
            poller_id="demo", state=rpb.BATCH_STATE_OPEN, result_type=rpb.RESULT_TYPE_SWEEP_HOSTS
        )
    ]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "TENANT",
        "POLLER",
        "BATCH",
        "TYPE",
        "STATE",
        "CHUNKS",
        "ACCEPTED",
        "REJECTED",
        "UPDATED",
    ]
    assert lines[1].split() == [
        "default",
        "demo",
        BATCH,
        "sweep-hosts",
        "open",
        "53/130",
        "26498",
        "2",
        "<none>",
    ]
    assert lines[2].split()[5] == "0/?"


def test_batches_get_shows_the_first_reject(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def got(request: Message) -> Message:
        assert request == bpb.GetBatchRequest(poller_id="demo", batch_id=BATCH, tenant="acme")
        return bpb.GetBatchResponse(batch=batch(129, 130, rpb.BATCH_STATE_COMMITTED))

    CannedCalls({bpb.GetBatchRequest: got}).install(monkeypatch)
    assert main(["batches", "get", "demo", BATCH, "--tenant", "acme", "--plaintext"]) == 0
    out = capsys.readouterr().out
    assert "Chunks committed:  130/130\n" in out
    assert "State:             committed\n" in out
    assert "First reject:      chunk 3: results[17].ip: not an IP address\n" in out

    assert main(["batches", "get", "demo", BATCH, "--tenant", "acme", "--plaintext", "-o", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["batch"]["state"] == "BATCH_STATE_COMMITTED"
    assert document["batch"]["committed_index"] == "129"


class ResultPages:
    """A server holding `total` sweep results, served in pages of at most page_size."""

    def __init__(self, total: int) -> None:
        self.total = total

    def __call__(self, request: Message) -> Message:
        assert isinstance(request, rspb.ListResultsRequest)
        start = int(request.page_token or "0")
        end = min(self.total, start + (request.page_size or 100))
        results = []
        for n in range(start, end):
            stored = rspb.StoredResult(
                poller_id="demo", partition="dc1", batch_id=BATCH, chunk_index=n // 500
            )
            stored.sweep_host.ip = f"10.0.{n >> 8}.{n & 255}"
            stored.sweep_host.available = n % 2 == 0
            stored.sweep_host.observed_at.FromSeconds(1_735_787_045)
            stored.sweep_host.icmp_rtt.FromMilliseconds(4)
            stored.sweep_host.ports.add(port=22, open=True)
            results.append(stored)
        return rspb.ListResultsResponse(results=results, next_page_token=str(end) if end < self.total else "")


@pytest.mark.parametrize(
    ("limit", "sizes", "shown", "token"),
    [
        ("2500", [1000, 1000, 500], 2500, "2500"),
        ("0", [1000, 1000, 1000, 1000], 3200, ""),
        ("100", [100], 100, "100"),
    ],
)
def test_results_list_fetches_up_to_the_limit(
    limit: str,
    sizes: list[int],
    shown: int,
    token: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    calls = CannedCalls({rspb.ListResultsRequest: ResultPages(3200)})
    calls.install(monkeypatch)
    argv = ["results", "list", "--plaintext", "--type", "sweep-hosts", "--poller", "demo"]
    assert main([*argv, "--limit", limit, "-o", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert len(document["results"]) == shown
    assert document["next_page_token"] == token
    requests = [r for r in calls.requests if isinstance(r, rspb.ListResultsRequest)]
    assert [r.page_size for r in requests] == sizes
    assert all(r.result_type == rpb.RESULT_TYPE_SWEEP_HOSTS and r.poller_id == "demo" for r in requests)


def test_results_table_and_the_hint_to_continue(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    CannedCalls({rspb.ListResultsRequest: ResultPages(5)}).install(monkeypatch)
    assert main(["results", "list", "--plaintext", "--type", "sweep-hosts", "--limit", "2"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].split() == [
        "OBSERVED",
        "IP",
        "AVAILABLE",
        "RTT",
        "OPEN-PORTS",
        "HOSTNAME",
        "POLLER",
        "PARTITION",
        "AGENT",
        "BATCH",
    ]
    row = lines[1].split()
    assert row[0] == "2025-01-02T03:04:05Z"
    assert row[-9:] == ["10.0.0.0", "yes", "0.004s", "22", "<none>", "demo", "dc1", "<none>", "5f2c1a2b#0"]
    assert captured.err == "more results: continue with --page-token 2 (or raise --limit)\n"


def test_results_time_filters_are_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = CannedCalls({rspb.ListResultsRequest: ResultPages(0)})
    calls.install(monkeypatch)
    argv = ["results", "list", "--plaintext", "--type", "device-updates"]
    assert main([*argv, "--since", "2025-01-02T03:04:05Z", "--until", "2025-01-02T04:04:05+01:00"]) == 0
    request = calls.requests[0]
    assert isinstance(request, rspb.ListResultsRequest)
    assert request.since.seconds == request.until.seconds == 1_735_787_045
    assert request.result_type == rpb.RESULT_TYPE_DEVICE_UPDATES


def test_results_since_takes_an_age(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = CannedCalls({rspb.ListResultsRequest: ResultPages(0)})
    calls.install(monkeypatch)
    before = datetime.now(UTC).timestamp()
    assert main(["results", "list", "--plaintext", "--type", "service-checks", "--since", "1h30m"]) == 0
    request = calls.requests[0]
    assert isinstance(request, rspb.ListResultsRequest)
    assert before - 5400 - 5 <= request.since.seconds <= before - 5400 + 5
    assert not request.HasField("until")


def test_a_time_it_cannot_place_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["results", "list", "--plaintext", "--type", "sweep-hosts", "--since", "yesterday"]
    assert main(argv) == 2
    assert "not a time" in capsys.readouterr().err


def test_results_list_requires_a_type(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["results", "list", "--plaintext"]) == 2
    assert "--type" in capsys.readouterr().err
