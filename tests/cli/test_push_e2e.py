"""`srctl edge push`, `srctl batches` and `srctl results` against a real core.

The fixture `running_core` serves from this event loop, so srctl (blocking) runs in a worker
thread, while `ResultPusher` (asyncio) runs here directly when a test needs to cut a stream.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from serviceradar.edge.v1 import edge_service_pb2 as pb
from serviceradar.edge.v1 import edge_service_pb2_grpc as pb_grpc
from serviceradar.edge.v1 import results_pb2 as rpb
from srctl.ingest_client import BatchProgress, ResultPusher, ResultStream, RetryPolicy, build_chunks
from srctl.result_sources import synthetic_hosts
from tests.cli.test_cli_e2e import Result, Srctl
from tests.helpers.core import RunningCore

pytestmark = pytest.mark.e2e

HOSTS = 5000
CHUNK = 500
CHUNKS = HOSTS // CHUNK


@pytest.fixture
def srctl(running_core: RunningCore, capsys: pytest.CaptureFixture[str]) -> Srctl:
    """srctl bound to the running core."""
    return Srctl(running_core, capsys)


def synthetic_push(batch_id: str, *extra: str, chunk: int = CHUNK) -> list[str]:
    """`edge push` of the 5,000 synthetic hosts, in 500-result chunks unless `chunk` says."""
    argv = ["edge", "push", "--synthetic-hosts", str(HOSTS), "--chunk-size", str(chunk)]
    return [*argv, "--partition", "dc1", "--batch-id", batch_id, *extra]


async def stored_hosts(srctl: Srctl) -> list[str]:
    """The IP of every stored sweep host result, through `srctl results list`."""
    listed = await srctl("results", "list", "--type", "sweep-hosts", "--limit", "0", "-o", "json")
    assert listed.code == 0, listed.err
    return [r["sweep_host"]["ip"] for r in listed.json()["results"]]


async def get_batch(srctl: Srctl, batch_id: str) -> Result:
    """`srctl batches get demo BATCH -o json`."""
    got = await srctl("batches", "get", "demo", batch_id, "-o", "json")
    assert got.code == 0, got.err
    return got


async def settled(srctl: Srctl, core: RunningCore, batch_id: str) -> dict[str, Any]:
    """The batch once nothing of it is left in the core and its committed index stops moving.

    Chunks a killed client had in flight are still committed after it died, as a restarted
    edge would find them; waiting for them makes the resume point exact. On a slow machine a
    flush can outlast two reads of the batch, so the core's in-flight rows must be zero too.
    """
    previous: dict[str, Any] = {}
    while True:
        batch: dict[str, Any] = (await get_batch(srctl, batch_id)).json()["batch"]
        idle = core.app.ingest.budget.total == 0
        if idle and batch.get("committed_index") == previous.get("committed_index"):
            return batch
        previous = batch if idle else {}
        await asyncio.sleep(0.1)


def edge_pusher(channel: grpc.aio.Channel) -> ResultPusher:
    """A pusher on an edge channel, with short backoffs so retries do not slow the tests."""
    return ResultPusher.over(channel, RetryPolicy(initial_backoff=0.05, max_backoff=0.2))


def host_chunks(batch_id: str, chunk: int = CHUNK) -> tuple[rpb.BatchOpen, Iterator[rpb.ResultChunk]]:
    """The BatchOpen and the chunks srctl makes for `synthetic_push`."""
    opened = rpb.BatchOpen(
        batch_id=batch_id,
        result_type=rpb.RESULT_TYPE_SWEEP_HOSTS,
        partition="dc1",
        expected_chunks=HOSTS // chunk,
    )
    chunks = build_chunks(
        synthetic_hosts(HOSTS),
        batch_id=batch_id,
        result_type=rpb.RESULT_TYPE_SWEEP_HOSTS,
        chunk_size=chunk,
        completion=rpb.SWEEP_COMPLETION_COMPLETED,
    )
    return opened, chunks


async def test_push_5000_synthetic_hosts(srctl: Srctl) -> None:
    batch = str(uuid.uuid4())
    pushed = await srctl(*synthetic_push(batch), "-o", "json")
    assert pushed.code == 0, pushed.err
    summary = pushed.json()
    assert summary["state"] == "BATCH_STATE_COMMITTED"
    assert (summary["accepted"], summary["rejected"], summary["retries"]) == (HOSTS, 0, 0)
    assert (summary["committed_index"], summary["chunks_sent"]) == (CHUNKS - 1, CHUNKS)

    stored = (await get_batch(srctl, batch)).json()["batch"]
    assert stored["state"] == "BATCH_STATE_COMMITTED"
    assert (stored["committed_index"], stored["expected_chunks"]) == (str(CHUNKS - 1), CHUNKS)
    assert (stored["accepted"], stored["rejected"]) == (str(HOSTS), "0")
    assert stored["completion"] == "SWEEP_COMPLETION_COMPLETED"

    hosts = await stored_hosts(srctl)
    assert len(hosts) == HOSTS
    assert len(set(hosts)) == HOSTS

    listed = await srctl("batches", "list", "--poller", "demo", "--state", "committed")
    assert listed.code == 0, listed.err
    row = next(line.split() for line in listed.out.splitlines() if batch in line)
    assert row[:6] == ["default", "demo", batch, "sweep-hosts", "committed", f"{CHUNKS}/{CHUNKS}"]
    assert row[6:8] == [str(HOSTS), "0"]


async def test_a_second_push_of_a_committed_batch_sends_nothing(srctl: Srctl) -> None:
    batch = str(uuid.uuid4())
    first = await srctl(*synthetic_push(batch), "-o", "json")
    assert first.code == 0, first.err
    again = await srctl(*synthetic_push(batch), "-o", "json")
    assert again.code == 0, again.err
    summary = again.json()
    assert summary["state"] == "BATCH_STATE_COMMITTED"
    assert (summary["chunks_sent"], summary["resumed_from"], summary["accepted"]) == (0, CHUNKS, 0)
    assert len(await stored_hosts(srctl)) == HOSTS


async def test_an_invalid_ip_is_rejected_and_named(srctl: Srctl, tmp_path: Path) -> None:
    lines = [json.dumps({"ip": f"10.9.0.{i}", "available": True}) for i in range(1, 21)]
    lines[11] = json.dumps({"ip": "10.9.0.256", "available": True})
    path = tmp_path / "sweep.jsonl"
    path.write_text("\n".join(lines) + "\n")
    batch = str(uuid.uuid4())
    argv = ["edge", "push", "--type", "sweep-hosts", "--file", str(path), "--chunk-size", "8"]
    pushed = await srctl(*argv, "--partition", "dc1", "--batch-id", batch, "-o", "json")
    assert pushed.code == 0, pushed.err
    summary = pushed.json()
    assert (summary["accepted"], summary["rejected"]) == (19, 1)
    # Chunk 1 holds lines 9-16; the bad line is its fourth result.
    assert summary["first_reject"].startswith("chunk 1: results[3].ip")

    table = await srctl("batches", "get", "demo", batch)
    assert "Rejected:          1" in table.out
    assert "results[3].ip" in table.out
    hosts = await stored_hosts(srctl)
    assert len(hosts) == 19 and "10.9.0.256" not in hosts


async def test_a_client_killed_mid_batch_resumes_and_stores_each_result_once(
    srctl: Srctl, running_core: RunningCore
) -> None:
    # Small chunks, so the credit window is far from the end when the client dies.
    chunk, kill_after_acks = 100, 4
    chunks_in_all = HOSTS // chunk
    batch = str(uuid.uuid4())
    opened, chunks = host_chunks(batch, chunk)
    seen: list[int] = []

    async def push_until_killed() -> None:
        killer = asyncio.current_task()
        assert killer is not None

        def count(progress: BatchProgress) -> None:
            seen.append(progress.committed_index)
            # One call for the open's answer, then one per ack.
            if len(seen) == kill_after_acks + 1:
                killer.cancel()

        async with running_core.channel(running_core.creds.edge()) as channel:
            await edge_pusher(channel).push(opened, chunks, count)

    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(push_until_killed())
    assert seen[-1] == kill_after_acks - 1
    half_done = await settled(srctl, running_core, batch)
    assert half_done["state"] == "BATCH_STATE_OPEN"

    resumed = await srctl(*synthetic_push(batch, chunk=chunk), "-o", "json")
    assert resumed.code == 0, resumed.err
    summary = resumed.json()
    # Chunks in flight at the kill (at most the credit window) may have been committed too.
    window = running_core.app.settings.ingest_credit_window
    assert kill_after_acks <= summary["resumed_from"] <= kill_after_acks + window
    assert summary["resumed_from"] == int(half_done["committed_index"]) + 1
    assert summary["accepted"] == (chunks_in_all - summary["resumed_from"]) * chunk
    assert summary["state"] == "BATCH_STATE_COMMITTED"

    stored = (await get_batch(srctl, batch)).json()["batch"]
    assert stored["state"] == "BATCH_STATE_COMMITTED"
    assert (stored["committed_index"], stored["expected_chunks"]) == (str(chunks_in_all - 1), chunks_in_all)
    assert stored["accepted"] == str(HOSTS)
    hosts = await stored_hosts(srctl)
    assert len(hosts) == HOSTS
    assert len(set(hosts)) == HOSTS


class CutAfterAcks:
    """Opens real ReportResults calls and fails the first one with UNAVAILABLE after N acks."""

    def __init__(self, channel: grpc.aio.Channel, acks: int) -> None:
        self._open = pb_grpc.EdgeServiceStub(channel).ReportResults
        self._acks = acks
        self.cut = False

    def __call__(self) -> ResultStream:
        call = self._open()
        if self.cut:
            return call
        self.cut = True
        return _Cut(call, self._acks)


class _Cut:
    def __init__(self, call: ResultStream, acks: int) -> None:
        self._call = call
        self._left = acks + 1  # the open's answer comes first

    async def write(self, request: pb.ReportResultsRequest) -> None:
        await self._call.write(request)

    async def read(self) -> object:
        if self._left == 0:
            self._call.cancel()
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "cut"
            )
        self._left -= 1
        return await self._call.read()

    async def done_writing(self) -> None:
        await self._call.done_writing()

    def cancel(self) -> bool:
        return self._call.cancel()


async def test_a_cut_stream_is_resumed_by_the_same_pusher(srctl: Srctl, running_core: RunningCore) -> None:
    batch = str(uuid.uuid4())
    opened, chunks = host_chunks(batch)
    async with running_core.channel(running_core.creds.edge()) as channel:
        opener = CutAfterAcks(channel, acks=3)
        # The default first backoff (0.25-0.5 s) gives the server time to commit what the cut
        # stream had in flight; an instant reconnect may also meet ABORTED (see protocol.md).
        pusher = ResultPusher(opener, RetryPolicy())
        async with pusher:
            done = await pusher.push(opened, chunks)
    assert done.state == rpb.BATCH_STATE_COMMITTED
    assert done.retries == 1 and done.last_error == "UNAVAILABLE: cut"
    assert pusher.streams_opened == 2
    stored = (await get_batch(srctl, batch)).json()["batch"]
    assert (stored["committed_index"], stored["accepted"]) == (str(CHUNKS - 1), str(HOSTS))
    assert len(set(await stored_hosts(srctl))) == len(await stored_hosts(srctl)) == HOSTS


async def test_a_tenant_over_budget_is_retried_after_the_retry_info_delay(running_core: RunningCore) -> None:
    ingest = running_core.app.ingest
    # As if the tenant had its whole budget in flight; released soon after.
    rows = ingest.limits.tenant_budget_rows
    ingest.budget.take("default", rows)
    loop = asyncio.get_running_loop()
    loop.call_later(0.3, ingest.budget.release, "default", rows)
    opened, chunks = host_chunks(str(uuid.uuid4()))
    async with (
        running_core.channel(running_core.creds.edge()) as channel,
        edge_pusher(channel) as pusher,
    ):
        started = loop.time()
        done = await pusher.push(opened, chunks)
        waited = loop.time() - started
    assert done.state == rpb.BATCH_STATE_COMMITTED
    assert done.retries == 1
    assert done.last_error.startswith("RESOURCE_EXHAUSTED: tenant 'default' is over its ingest budget")
    # The server asks tenants over budget to come back after 2 s; the client waits that long.
    assert waited >= 2.0
    assert done.accepted == HOSTS


async def test_an_unknown_batch_in_results_and_batches_exits_4(srctl: Srctl) -> None:
    missing = await srctl("batches", "get", "demo", str(uuid.uuid4()))
    assert missing.code == 4
    assert missing.err.startswith("Error: NOT_FOUND: ")
    empty = await srctl("results", "list", "--type", "service-checks", "-o", "json")
    assert empty.code == 0, empty.err
    assert empty.json()["results"] == []


async def test_wrong_partition_is_an_invalid_argument_not_retried(srctl: Srctl) -> None:
    pushed = await srctl(*synthetic_push(str(uuid.uuid4())), "--partition", "Not A Slug!")
    assert pushed.code == 1
    assert pushed.err.splitlines()[-1].startswith("Error: INVALID_ARGUMENT: open.partition")


async def test_a_chunk_over_the_message_limit_fails_without_retrying(srctl: Srctl, tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    line = json.dumps({"ip": "10.0.0.1", "hostname": "h" * 3000})
    path.write_text((line + "\n") * 2000)
    argv = ["edge", "push", "--type", "sweep-hosts", "--file", str(path), "--partition", "dc1"]
    # Told the server takes 16 MiB, the client builds one 6 MB chunk; the server's gRPC refuses it.
    pushed = await srctl(*argv, "--chunk-size", "2000", "--max-message-bytes", str(16 * 1024 * 1024))
    assert pushed.code == 1
    assert pushed.err.splitlines()[-1].startswith("Error: RESOURCE_EXHAUSTED: ")
    assert "larger than max" in pushed.err
    # With the real limit the client cuts the same input into chunks the server accepts.
    fitted = await srctl(*argv, "--chunk-size", "2000", "-o", "json")
    assert fitted.code == 0, fitted.err
    assert fitted.json()["chunks_sent"] == 2
