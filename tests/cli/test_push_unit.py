"""The reference ReportResults client without a server.

Pure parts (RetryInfo parsing, dispositions, backoff, chunking, sources, the window) are tested
directly. `ResultPusher` runs against `FakeIngest`, an in-memory server that follows
docs/protocol.md strictly (a gap or a chunk beyond the credits fails the stream as the real
server does) and injects faults on cue. test_push_e2e.py runs the same client against the
real core.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import itertools
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

from serviceradar.edge.v1 import edge_service_pb2 as pb
from serviceradar.edge.v1 import results_pb2 as rpb
from srctl import push
from srctl.ingest_client import (
    STATUS_DETAILS_KEY,
    BatchProgress,
    BatchWindow,
    Disposition,
    InputError,
    Overtaken,
    ProtocolViolation,
    PushFailed,
    ResultPusher,
    RetryPolicy,
    build_chunks,
    disposition,
    retry_delay,
)
from srctl.main import main
from srctl.result_sources import count_results, read_jsonl, synthetic_hosts

BATCH = "5f2c1a2b-0000-4000-8000-000000000001"
OTHER_BATCH = "5f2c1a2b-0000-4000-8000-000000000002"


# --- RetryInfo, dispositions, backoff ------------------------------------------------------


def status_trailer(code: int, message: str, *details: Message) -> tuple[str, bytes]:
    """The grpc-status-details-bin trailer a server sends with google.rpc details."""
    status = status_pb2.Status(code=code, message=message)
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    return STATUS_DETAILS_KEY, status.SerializeToString()


def retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    delay = duration_pb2.Duration()
    delay.FromMilliseconds(int(seconds * 1000))
    return error_details_pb2.RetryInfo(retry_delay=delay)


def test_retry_delay_is_read_from_the_status_details_trailer() -> None:
    bad_request = error_details_pb2.BadRequest()
    trailer = status_trailer(code_pb2.RESOURCE_EXHAUSTED, "busy", bad_request, retry_info(1.5))
    assert retry_delay([("other", "x"), trailer]) == 1.5


@pytest.mark.parametrize(
    "metadata",
    [
        None,
        [],
        [("other", b"x")],
        [(STATUS_DETAILS_KEY, b"\xff\xff not a status")],
        [status_trailer(code_pb2.RESOURCE_EXHAUSTED, "busy", error_details_pb2.BadRequest())],
    ],
)
def test_retry_delay_is_none_without_retry_info(metadata: list[tuple[str, bytes]] | None) -> None:
    assert retry_delay(metadata) is None


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (grpc.StatusCode.RESOURCE_EXHAUSTED, Disposition.WAIT_AND_RESUME),
        (grpc.StatusCode.UNAVAILABLE, Disposition.BACKOFF_AND_RESUME),
        (grpc.StatusCode.DEADLINE_EXCEEDED, Disposition.BACKOFF_AND_RESUME),
        (grpc.StatusCode.ABORTED, Disposition.BACKOFF_AND_RESUME),
        (grpc.StatusCode.FAILED_PRECONDITION, Disposition.REOPEN_ONCE),
        (grpc.StatusCode.INVALID_ARGUMENT, Disposition.FAIL),
        (grpc.StatusCode.PERMISSION_DENIED, Disposition.FAIL),
        (grpc.StatusCode.UNAUTHENTICATED, Disposition.FAIL),
        (grpc.StatusCode.UNIMPLEMENTED, Disposition.FAIL),
        (grpc.StatusCode.INTERNAL, Disposition.BACKOFF_AND_RESUME),
        (grpc.StatusCode.DATA_LOSS, Disposition.FAIL),
    ],
)
def test_disposition_of_each_status(code: grpc.StatusCode, expected: Disposition) -> None:
    assert disposition(code) is expected


def test_backoff_grows_exponentially_with_equal_jitter_up_to_the_cap() -> None:
    policy = RetryPolicy(initial_backoff=0.5, max_backoff=30.0)
    rng = random.Random(7)
    for failures in range(1, 12):
        cap = min(30.0, 0.5 * 2 ** (failures - 1))
        delays = [policy.backoff(failures, rng) for _ in range(200)]
        assert all(cap / 2 <= d <= cap for d in delays)
        assert max(delays) - min(delays) > cap / 4  # jittered, not fixed


def test_retry_info_delay_is_never_shortened() -> None:
    policy = RetryPolicy(retry_info_jitter=0.2)
    rng = random.Random(3)
    delays = [policy.after_retry_info(2.0, rng) for _ in range(200)]
    assert all(2.0 <= d <= 2.4 for d in delays)


# --- chunking and sources ------------------------------------------------------------------


class Counted:
    """An iterator that counts how many items were taken from it."""

    def __init__(self, items: Iterator[rpb.SweepHostResult]) -> None:
        self.items = items
        self.taken = 0

    def __iter__(self) -> Iterator[rpb.SweepHostResult]:
        for item in self.items:
            self.taken += 1
            yield item


def sweep_chunks(
    results: Iterator[rpb.SweepHostResult] | list[rpb.SweepHostResult] | Counted,
    chunk_size: int,
    batch_id: str = BATCH,
    **kwargs: int,
) -> Iterator[rpb.ResultChunk]:
    return build_chunks(
        results,
        batch_id=batch_id,
        result_type=rpb.RESULT_TYPE_SWEEP_HOSTS,
        chunk_size=chunk_size,
        **kwargs,  # type: ignore[arg-type]
    )


def test_chunks_are_built_lazily_with_one_result_read_ahead() -> None:
    source = Counted(synthetic_hosts(1_000_000))
    chunks = sweep_chunks(source, 3)
    first = next(chunks)
    assert (first.index, first.final, len(first.sweep_hosts.results)) == (0, False, 3)
    assert source.taken == 4
    second = next(chunks)
    assert (second.index, [r.ip for r in second.sweep_hosts.results]) == (
        1,
        ["10.0.0.4", "10.0.0.5", "10.0.0.6"],
    )
    assert source.taken == 7


def test_the_last_chunk_is_final_and_carries_the_completion() -> None:
    chunks = list(sweep_chunks(synthetic_hosts(7), 3, completion=rpb.SWEEP_COMPLETION_COMPLETED))
    assert [(c.index, c.final, len(c.sweep_hosts.results)) for c in chunks] == [
        (0, False, 3),
        (1, False, 3),
        (2, True, 1),
    ]
    assert [c.completion for c in chunks] == [0, 0, rpb.SWEEP_COMPLETION_COMPLETED]
    assert all(c.batch_id == BATCH and c.HasField("observed_at") for c in chunks)


def test_an_exact_multiple_ends_without_an_empty_chunk() -> None:
    chunks = list(sweep_chunks(synthetic_hosts(6), 3))
    assert [(c.index, c.final) for c in chunks] == [(0, False), (1, True)]


def test_an_empty_input_is_one_empty_final_chunk_of_its_type() -> None:
    chunks = list(sweep_chunks([], 500))
    assert len(chunks) == 1
    assert chunks[0].final
    assert chunks[0].WhichOneof("payload") == "sweep_hosts"


def test_chunks_are_cut_to_stay_under_the_message_size() -> None:
    hosts = [rpb.SweepHostResult(ip=f"10.0.0.{i}", hostname="h" * 1000) for i in range(1, 21)]
    chunks = list(sweep_chunks(hosts, 500, max_message_bytes=5 * 1024))
    assert sum(len(c.sweep_hosts.results) for c in chunks) == 20
    assert all(c.ByteSize() <= 5 * 1024 for c in chunks)
    assert len(chunks) > 4


def test_a_result_larger_than_a_message_is_an_input_error() -> None:
    hosts = [rpb.SweepHostResult(ip="10.0.0.1"), rpb.SweepHostResult(ip="10.0.0.2", hostname="h" * 8000)]
    with pytest.raises(InputError, match="result 2 is"):
        list(sweep_chunks(hosts, 500, max_message_bytes=4096))


@pytest.mark.parametrize("size", [0, 10_001])
def test_chunk_size_is_bounded(size: int) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        next(sweep_chunks([], size))


def test_jsonl_is_parsed_one_line_at_a_time() -> None:
    taken: list[int] = []

    def lines() -> Iterator[str]:
        for number in itertools.count(1):
            taken.append(number)
            yield json.dumps({"ip": f"10.0.0.{number}", "available": True}) + "\n"

    results = read_jsonl(lines(), rpb.SweepHostResult, "hosts.jsonl")
    first = next(results)
    assert isinstance(first, rpb.SweepHostResult)
    assert (first.ip, first.available) == ("10.0.0.1", True)
    assert taken == [1]


def test_jsonl_uses_the_proto3_json_mapping_and_skips_blank_lines() -> None:
    text = (
        '{"ip": "10.0.0.1", "icmp_rtt": "0.004s", "ports": [{"port": 22, "open": true}]}\n'
        "\n"
        '{"ip": "10.0.0.2", "observedAt": "2025-01-02T03:04:05Z"}\n'
    )
    hosts = list(read_jsonl(io.StringIO(text), rpb.SweepHostResult, "f"))
    assert [h.ip for h in hosts] == ["10.0.0.1", "10.0.0.2"]  # type: ignore[attr-defined]
    assert hosts[0].icmp_rtt.ToMilliseconds() == 4  # type: ignore[attr-defined]
    assert hosts[1].observed_at.seconds == 1735787045  # type: ignore[attr-defined]
    assert count_results(io.StringIO(text), "f") == 2


@pytest.mark.parametrize(
    ("line", "problem"),
    [("{not json", "hosts.jsonl:3:"), ('{"ipp": "10.0.0.1"}', "hosts.jsonl:3:.*ipp")],
)
def test_a_bad_jsonl_line_names_the_file_and_line(line: str, problem: str) -> None:
    lines = ['{"ip": "10.0.0.1"}', "", line]
    with pytest.raises(InputError, match=problem):
        list(read_jsonl(lines, rpb.SweepHostResult, "hosts.jsonl"))


def test_synthetic_hosts_are_deterministic_per_seed() -> None:
    first = list(synthetic_hosts(300, seed=5))
    assert first == list(synthetic_hosts(300, seed=5))
    assert first != list(synthetic_hosts(300, seed=6))
    assert [h.ip for h in first[:2]] == ["10.0.0.1", "10.0.0.2"]
    assert first[255].ip == "10.0.1.0"
    assert len({h.ip for h in first}) == 300
    up = [h for h in first if h.available]
    assert 0.6 < len(up) / len(first) < 0.95
    assert all(h.HasField("icmp_rtt") for h in up)
    assert any(p.open for h in up for p in h.ports)
    assert all(h.icmp_packet_loss == 1.0 and not h.ports for h in first if not h.available)


def test_synthetic_host_count_is_bounded() -> None:
    with pytest.raises(ValueError, match="count"):
        next(synthetic_hosts(2**24))


# --- the window ----------------------------------------------------------------------------


def window_over(results: int, chunk_size: int = 10) -> BatchWindow:
    return BatchWindow(sweep_chunks(synthetic_hosts(results), chunk_size))


def send_all_allowed(window: BatchWindow) -> list[int]:
    sent = []
    while (request := window.next_to_send()) is not None:
        sent.append(request.chunk.index)
        window.mark_sent()
    return sent


def test_the_window_sends_up_to_committed_plus_credits_and_holds_no_more() -> None:
    window = window_over(200)  # 20 chunks
    window.reopened(committed=-1, credits=3)
    assert send_all_allowed(window) == [0, 1, 2]
    assert (window.in_flight, window.held) == (3, 3)
    window.acked(committed=0, credits=3)
    assert send_all_allowed(window) == [3]
    window.acked(committed=2, credits=1)  # fewer credits: the server is under pressure
    assert send_all_allowed(window) == []
    assert window.held == 1
    window.acked(committed=3, credits=4)
    assert send_all_allowed(window) == [4, 5, 6, 7]


def test_a_reopen_resends_the_held_chunks_from_committed_plus_one() -> None:
    window = window_over(200)
    window.reopened(committed=-1, credits=4)
    sent = []
    while (request := window.next_to_send()) is not None:
        sent.append(request)
        window.mark_sent()
    assert [r.chunk.index for r in sent] == [0, 1, 2, 3]
    window.acked(committed=0, credits=4)
    # The stream drops; the server committed chunk 1 too, but its ack was lost.
    window.reopened(committed=1, credits=4)
    assert window.held == 2
    assert window.next_to_send() is sent[2]  # the held chunk itself, not a regenerated one
    assert send_all_allowed(window) == [2, 3, 4, 5]


def test_a_restarted_client_skips_what_an_earlier_run_committed() -> None:
    window = window_over(200)
    window.reopened(committed=11, credits=2)
    assert send_all_allowed(window) == [12, 13]
    assert window.held == 2


def test_the_final_chunk_is_known_once_pulled() -> None:
    window = window_over(25)  # chunks 0, 1, 2 (final)
    window.reopened(committed=-1, credits=8)
    assert send_all_allowed(window) == [0, 1, 2]
    assert window.all_sent and window.final_index == 2 and not window.complete
    window.acked(committed=2, credits=8)
    assert window.complete and window.held == 0


def test_input_shorter_than_the_committed_index_is_an_input_error() -> None:
    window = window_over(25)
    window.reopened(committed=5, credits=8)
    with pytest.raises(InputError, match="ends at chunk 2"):
        window.next_to_send()


def test_a_committed_index_that_goes_back_is_data_loss() -> None:
    window = window_over(200)
    window.reopened(committed=-1, credits=4)
    send_all_allowed(window)
    window.acked(committed=2, credits=4)
    with pytest.raises(ProtocolViolation) as lost:
        window.reopened(committed=1, credits=4)
    assert lost.value.code is grpc.StatusCode.DATA_LOSS


def test_an_ack_for_an_unsent_chunk_is_a_violation() -> None:
    window = window_over(200)
    window.reopened(committed=-1, credits=4)
    window.next_to_send()
    window.mark_sent()
    with pytest.raises(ProtocolViolation, match="before it was sent"):
        window.acked(committed=1, credits=4)


def test_chunks_an_earlier_stream_sent_committed_late_make_the_stream_resume() -> None:
    window = window_over(200)
    window.reopened(committed=-1, credits=4)
    assert send_all_allowed(window) == [0, 1, 2, 3]
    # The stream drops with chunks 0-3 still queued in the server; the new stream resends 0.
    window.reopened(committed=-1, credits=1)
    assert send_all_allowed(window) == [0]
    with pytest.raises(Overtaken):
        window.acked(committed=3, credits=1)
    with pytest.raises(ProtocolViolation, match="before it was sent"):
        window.acked(committed=4, credits=1)


# --- the pusher against an in-memory server -------------------------------------------------


@dataclass
class Fault:
    """Fail (or silence) a stream on the `at`-th message of kind `on` the server receives.

    `code` None makes the stream go silent instead. With `after_commit`, the chunks received
    so far are committed first and their acks lost, as when a connection drops just after a
    commit. With `late_commit`, they commit after the client has reopened the batch.
    """

    on: str
    at: int
    code: grpc.StatusCode | None = grpc.StatusCode.UNAVAILABLE
    details: str = "connection reset"
    retry_after: float | None = None
    after_commit: bool = False
    # The chunks received so far stay queued, unacknowledged, and commit only when the next
    # stream sends its first chunk; from then on the server grants `credits_after`.
    late_commit: bool = False
    credits_after: int | None = None


@dataclass
class FakeBatch:
    committed: int = -1
    final: int | None = None
    accepted: int = 0
    rejected: int = 0


def reject_bad_ip(index: int, result: Message) -> str | None:
    """The server's validation, reduced to the IP address of sweep results."""
    assert isinstance(result, rpb.SweepHostResult)
    try:
        ipaddress.ip_address(result.ip)
    except ValueError:
        return f"results[{index}].ip: not an IP address"
    return None


class FakeStream:
    """One ReportResults call on FakeIngest; the ResultStream the pusher drives."""

    def __init__(self, server: FakeIngest) -> None:
        self.server = server
        self.responses: asyncio.Queue[object] = asyncio.Queue()
        self.error: grpc.aio.AioRpcError | None = None
        self.silent = False
        self.cancelled = False
        self.batch_id = ""
        self.next_index = 0
        self.allowed = -1
        self.pending: list[rpb.ResultChunk] = []
        self.holding = False

    async def write(self, request: pb.ReportResultsRequest) -> None:
        if self.error is not None:
            raise self.error
        if self.cancelled:
            raise grpc.aio.AioRpcError(grpc.StatusCode.CANCELLED, grpc.aio.Metadata(), grpc.aio.Metadata())
        self.server.receive(self, request)

    async def read(self) -> object:
        item = await self.responses.get()
        if isinstance(item, grpc.aio.AioRpcError):
            self.responses.put_nowait(item)
            raise item
        return item

    async def done_writing(self) -> None:
        self.responses.put_nowait(grpc.aio.EOF)

    def cancel(self) -> bool:
        self.cancelled = True
        return True

    def fail(self, code: grpc.StatusCode, details: str, retry_after: float | None = None) -> None:
        trailers = grpc.aio.Metadata()
        if retry_after is not None:
            key, value = status_trailer(code.value[0], details, retry_info(retry_after))
            trailers = grpc.aio.Metadata((key, value))
        self.error = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailers, details)
        self.responses.put_nowait(self.error)

    def ack(self, batch: FakeBatch, chunk_index: int, **counts: int | str) -> None:
        state = rpb.BATCH_STATE_COMMITTED if batch.committed == batch.final else rpb.BATCH_STATE_OPEN
        ack = rpb.BatchAck(
            batch_id=self.batch_id,
            chunk_index=chunk_index,
            committed_index=batch.committed,
            credits=self.server.credits,
            state=state,
            **counts,  # type: ignore[arg-type]
        )
        self.allowed = batch.committed + self.server.credits
        self.responses.put_nowait(pb.ReportResultsResponse(ack=ack))


@dataclass
class FakeIngest:
    """An in-memory ReportResults server that follows docs/protocol.md to the letter.

    It commits the chunks a stream has in flight only once the client has filled its credit
    window (or sent the final chunk), so a client that sends less than it may would hang and
    one that sends more fails with FAILED_PRECONDITION, like the real server.
    """

    credits: int = 3
    faults: list[Fault] = field(default_factory=list)
    reject: Callable[[int, Message], str | None] = reject_bad_ip
    batches: dict[str, FakeBatch] = field(default_factory=dict)
    stored: dict[tuple[str, int], int] = field(default_factory=dict)
    streams: list[FakeStream] = field(default_factory=list)
    received: dict[str, int] = field(default_factory=lambda: {"open": 0, "chunk": 0})
    chunk_indexes: list[int] = field(default_factory=list)
    max_in_flight: int = 0
    queued: list[FakeStream] = field(default_factory=list)

    def open_stream(self) -> FakeStream:
        stream = FakeStream(self)
        self.streams.append(stream)
        return stream

    def stored_results(self, batch_id: str) -> int:
        return sum(n for (batch, _), n in self.stored.items() if batch == batch_id)

    def receive(self, stream: FakeStream, request: pb.ReportResultsRequest) -> None:
        kind = request.WhichOneof("message")
        assert kind is not None
        self.received[kind] += 1
        fault = next((f for f in self.faults if f.on == kind and f.at == self.received[kind]), None)
        if fault is not None and fault.late_commit:
            stream.holding = True
            self._chunk(stream, request.chunk)
            self.queued.append(stream)
            if fault.credits_after is not None:
                self.credits = fault.credits_after
            self._trip(stream, fault)
            return
        if fault is not None and not fault.after_commit:
            self._trip(stream, fault)
            return
        if stream.silent:
            return
        if kind == "open":
            self._open(stream, request.open)
        else:
            self._chunk(stream, request.chunk)
        if fault is not None:
            self._commit(stream, send_acks=False)
            self._trip(stream, fault)

    def _trip(self, stream: FakeStream, fault: Fault) -> None:
        if fault.code is None:
            stream.silent = True
        else:
            stream.fail(fault.code, fault.details, fault.retry_after)

    def _open(self, stream: FakeStream, opened: rpb.BatchOpen) -> None:
        batch = self.batches.setdefault(opened.batch_id, FakeBatch())
        stream.batch_id = opened.batch_id
        stream.next_index = batch.committed + 1
        stream.pending = []
        stream.ack(batch, -1)

    def _chunk(self, stream: FakeStream, chunk: rpb.ResultChunk) -> None:
        for old in self.queued:
            self._commit(old, send_acks=False)
        self.queued = []
        batch = self.batches[chunk.batch_id]
        self.chunk_indexes.append(chunk.index)
        if chunk.index <= batch.committed:
            stream.ack(batch, chunk.index)
            return
        if chunk.index != stream.next_index:
            stream.fail(grpc.StatusCode.FAILED_PRECONDITION, f"expected chunk index {stream.next_index}")
            return
        if chunk.index > stream.allowed:
            stream.fail(grpc.StatusCode.FAILED_PRECONDITION, "beyond the credit window")
            return
        stream.next_index += 1
        stream.pending.append(chunk)
        self.max_in_flight = max(self.max_in_flight, len(stream.pending))
        if chunk.final:
            batch.final = chunk.index
        if (chunk.final or chunk.index == stream.allowed) and not stream.holding:
            self._commit(stream, send_acks=True)

    def _commit(self, stream: FakeStream, *, send_acks: bool) -> None:
        for chunk in stream.pending:
            batch = self.batches[chunk.batch_id]
            results = list(chunk.sweep_hosts.results)
            reasons = [r for r in (self.reject(i, result) for i, result in enumerate(results)) if r]
            key = (chunk.batch_id, chunk.index)
            assert key not in self.stored, f"chunk {key} stored twice"
            self.stored[key] = len(results) - len(reasons)
            batch.committed = chunk.index
            batch.accepted += len(results) - len(reasons)
            batch.rejected += len(reasons)
            if send_acks:
                first = reasons[0] if reasons else ""
                stream.ack(
                    batch,
                    chunk.index,
                    accepted=len(results) - len(reasons),
                    rejected=len(reasons),
                    first_reject=first,
                )
        stream.pending = []


@dataclass
class Sleeps:
    """An asyncio.sleep that records the delays and does not wait."""

    delays: list[float] = field(default_factory=list)

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


def sweep_open(batch_id: str = BATCH, expected: int = 0) -> rpb.BatchOpen:
    return rpb.BatchOpen(
        batch_id=batch_id,
        result_type=rpb.RESULT_TYPE_SWEEP_HOSTS,
        partition="dc1",
        expected_chunks=expected,
    )


def pusher_for(server: FakeIngest, sleeps: Sleeps | None = None, **policy: float) -> ResultPusher:
    return ResultPusher(
        server.open_stream,
        RetryPolicy(**policy),  # type: ignore[arg-type]
        rng=random.Random(1),
        sleep=sleeps or Sleeps(),
    )


async def push_hosts(
    pusher: ResultPusher, count: int, chunk_size: int = 10, batch_id: str = BATCH
) -> BatchProgress:
    chunks = sweep_chunks(synthetic_hosts(count), chunk_size, batch_id)
    return await pusher.push(sweep_open(batch_id, -(-count // chunk_size)), chunks)


async def test_a_batch_fills_the_credit_window_and_commits() -> None:
    server = FakeIngest(credits=3)
    seen: list[int] = []
    async with pusher_for(server) as pusher:
        chunks = sweep_chunks(synthetic_hosts(100), 10)
        done = await pusher.push(sweep_open(expected=10), chunks, lambda p: seen.append(p.committed_index))
    assert done.state == rpb.BATCH_STATE_COMMITTED
    assert (done.committed_index, done.accepted, done.rejected, done.retries) == (9, 100, 0, 0)
    assert (done.chunks_sent, done.resumed_from) == (10, 0)
    assert server.max_in_flight == 3
    assert server.chunk_indexes == list(range(10))
    assert server.stored_results(BATCH) == 100
    assert seen == sorted(seen) and seen[-1] == 9
    assert len(server.streams) == 1 and server.streams[0].cancelled  # closed after the batch


async def test_rejected_results_are_counted_with_the_first_reason() -> None:
    server = FakeIngest()
    hosts = list(synthetic_hosts(30))
    hosts[13].ip = "10.0.0.999"
    hosts[27].ip = "nope"
    async with pusher_for(server) as pusher:
        chunks = build_chunks(hosts, batch_id=BATCH, result_type=rpb.RESULT_TYPE_SWEEP_HOSTS, chunk_size=10)
        done = await pusher.push(sweep_open(), chunks)
    assert (done.accepted, done.rejected) == (28, 2)
    assert done.first_reject == "chunk 1: results[3].ip: not an IP address"


async def test_a_dropped_stream_is_resumed_and_every_chunk_stored_once() -> None:
    server = FakeIngest(credits=4, faults=[Fault("chunk", at=7)])
    sleeps = Sleeps()
    async with pusher_for(server, sleeps) as pusher:
        done = await push_hosts(pusher, 200)
    assert done.state == rpb.BATCH_STATE_COMMITTED
    assert done.retries == 1
    assert done.last_error == "UNAVAILABLE: connection reset"
    assert len(server.streams) == 2
    assert server.stored_results(BATCH) == 200
    assert len(server.stored) == 20
    # Chunks 4 and 5 were in flight when the seventh chunk broke the stream: sent again.
    assert server.chunk_indexes == [0, 1, 2, 3, 4, 5, *range(4, 20)]
    assert len(sleeps.delays) == 1 and 0.25 <= sleeps.delays[0] <= 0.5


async def test_chunks_committed_whose_acks_were_lost_are_not_sent_again() -> None:
    server = FakeIngest(credits=4, faults=[Fault("chunk", at=6, after_commit=True)])
    async with pusher_for(server) as pusher:
        done = await push_hosts(pusher, 200)
    assert done.state == rpb.BATCH_STATE_COMMITTED
    assert server.chunk_indexes == [0, 1, 2, 3, 4, 5, *range(6, 20)]
    assert server.stored_results(BATCH) == 200
    # The client counts only what it saw acknowledged; GetBatch has the server's totals.
    assert done.accepted == 200 - 2 * 10


async def test_chunks_of_the_old_stream_committed_after_the_reopen_are_resumed_past() -> None:
    # Chunks 0-3 are still queued in the server when the stream drops; they commit once the
    # client, reopened at -1, has resent chunk 0 (the only one its new credit allows).
    dropped = Fault("chunk", at=4, late_commit=True, credits_after=1)
    server = FakeIngest(credits=4, faults=[dropped])
    async with pusher_for(server) as pusher:
        done = await push_hosts(pusher, 200)
    assert done.state == rpb.BATCH_STATE_COMMITTED
    # The ack of the resent chunk 0 says chunk 3 is committed: the client reopens and goes on
    # from chunk 4 instead of sending 1-3 again or stopping on a protocol violation.
    assert server.chunk_indexes == [0, 1, 2, 3, 0, *range(4, 20)]
    assert server.stored_results(BATCH) == 200
    assert done.retries == 2


async def test_resource_exhausted_waits_for_the_retry_info_delay() -> None:
    busy = Fault(
        "open", at=1, code=grpc.StatusCode.RESOURCE_EXHAUSTED, details="over budget", retry_after=2.0
    )
    server = FakeIngest(faults=[busy])
    sleeps = Sleeps()
    async with pusher_for(server, sleeps) as pusher:
        done = await push_hosts(pusher, 50)
    assert done.state == rpb.BATCH_STATE_COMMITTED
    assert len(sleeps.delays) == 1 and 2.0 <= sleeps.delays[0] <= 2.4


async def test_resource_exhausted_without_retry_info_is_a_limit_and_fails() -> None:
    too_big = "SERVER: Received message larger than max (6032050 vs. 4194304)"
    server = FakeIngest(
        faults=[Fault("chunk", at=1, code=grpc.StatusCode.RESOURCE_EXHAUSTED, details=too_big)]
    )
    sleeps = Sleeps()
    async with pusher_for(server, sleeps) as pusher:
        with pytest.raises(PushFailed) as failed:
            await push_hosts(pusher, 50)
    assert failed.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert failed.value.details() == too_big
    assert sleeps.delays == []


async def test_failed_precondition_reopens_at_once_and_resumes() -> None:
    gap = Fault("chunk", at=5, code=grpc.StatusCode.FAILED_PRECONDITION, details="expected chunk index 3")
    server = FakeIngest(faults=[gap])
    sleeps = Sleeps()
    async with pusher_for(server, sleeps) as pusher:
        done = await push_hosts(pusher, 100)
    assert done.state == rpb.BATCH_STATE_COMMITTED
    assert sleeps.delays == [0.0]
    assert server.stored_results(BATCH) == 100


async def test_failed_precondition_twice_without_progress_fails() -> None:
    refused = [
        Fault("open", at=n, code=grpc.StatusCode.FAILED_PRECONDITION, details="batch expired") for n in (1, 2)
    ]
    server = FakeIngest(faults=refused)
    async with pusher_for(server) as pusher:
        with pytest.raises(PushFailed) as failed:
            await push_hosts(pusher, 100)
    assert failed.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert failed.value.details().startswith("batch expired")
    assert server.received["open"] == 2


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED],
)
async def test_statuses_retrying_cannot_fix_fail_at_once(code: grpc.StatusCode) -> None:
    server = FakeIngest(faults=[Fault("chunk", at=2, code=code, details="open.partition: required")])
    sleeps = Sleeps()
    async with pusher_for(server, sleeps) as pusher:
        with pytest.raises(PushFailed) as failed:
            await push_hosts(pusher, 100)
    assert failed.value.code() is code
    assert failed.value.details() == "open.partition: required"
    assert failed.value.progress.retries == 0
    assert sleeps.delays == [] and len(server.streams) == 1


async def test_retries_without_progress_are_bounded() -> None:
    server = FakeIngest(faults=[Fault("open", at=n) for n in range(1, 10)])
    sleeps = Sleeps()
    async with pusher_for(server, sleeps, max_retries=3) as pusher:
        with pytest.raises(PushFailed) as failed:
            await push_hosts(pusher, 100)
    assert failed.value.code() is grpc.StatusCode.UNAVAILABLE
    assert failed.value.details() == "connection reset (gave up after 3 retries)"
    assert len(sleeps.delays) == 3
    assert sleeps.delays == sorted(sleeps.delays)  # backing off


async def test_progress_between_failures_resets_the_retry_budget() -> None:
    # A failure after every 4th chunk, 6 failures in all, with only 2 retries allowed in a row.
    server = FakeIngest(credits=2, faults=[Fault("chunk", at=n) for n in range(4, 28, 4)])
    async with pusher_for(server, max_retries=2) as pusher:
        done = await push_hosts(pusher, 200)
    assert done.state == rpb.BATCH_STATE_COMMITTED
    assert done.retries == 6
    assert server.stored_results(BATCH) == 200


async def test_a_silent_server_is_given_up_on_after_the_ack_timeout() -> None:
    server = FakeIngest(faults=[Fault("chunk", at=2, code=None)])
    async with pusher_for(server, ack_timeout=0.05) as pusher:
        done = await push_hosts(pusher, 100)
    assert done.state == rpb.BATCH_STATE_COMMITTED
    assert done.last_error == "DEADLINE_EXCEEDED: no acknowledgement for 0.05s"
    assert server.stored_results(BATCH) == 100


async def test_the_deadline_bounds_the_whole_push() -> None:
    server = FakeIngest(faults=[Fault("open", at=n) for n in range(1, 100)])
    pusher = ResultPusher(server.open_stream, RetryPolicy(deadline=0.2, initial_backoff=0.1, max_backoff=0.1))
    with pytest.raises(PushFailed) as failed:
        await push_hosts(pusher, 100)
    assert failed.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert "0.2s deadline; last error UNAVAILABLE: connection reset" in failed.value.details()


async def test_a_restarted_client_resumes_where_the_server_stands() -> None:
    server = FakeIngest(credits=4, faults=[Fault("chunk", at=9)])
    async with pusher_for(server, max_retries=0) as pusher:
        with pytest.raises(PushFailed) as failed:
            await push_hosts(pusher, 200)
    assert failed.value.progress.committed_index == 7
    server.chunk_indexes.clear()
    async with pusher_for(server) as again:
        done = await push_hosts(again, 200)
    assert done.resumed_from == 8
    assert server.chunk_indexes == list(range(8, 20))
    assert server.stored_results(BATCH) == 200
    assert done.accepted == 120


async def test_a_committed_batch_is_not_sent_again() -> None:
    server = FakeIngest()
    async with pusher_for(server) as pusher:
        await push_hosts(pusher, 100)
    server.chunk_indexes.clear()
    async with pusher_for(server) as again:
        done = await push_hosts(again, 100)
    assert done.state == rpb.BATCH_STATE_COMMITTED
    assert (done.resumed_from, done.chunks_sent, done.accepted) == (10, 0, 0)
    assert server.chunk_indexes == []


async def test_batches_follow_one_another_on_one_stream() -> None:
    server = FakeIngest()
    async with pusher_for(server) as pusher:
        first = await push_hosts(pusher, 50, batch_id=BATCH)
        second = await push_hosts(pusher, 70, batch_id=OTHER_BATCH)
    assert (first.accepted, second.accepted) == (50, 70)
    assert len(server.streams) == 1
    assert pusher.streams_opened == 1


async def test_an_ack_for_another_batch_is_a_protocol_violation() -> None:
    server = FakeIngest()

    def misdirect(stream: FakeStream, request: pb.ReportResultsRequest) -> None:
        stream.responses.put_nowait(
            pb.ReportResultsResponse(ack=rpb.BatchAck(batch_id=OTHER_BATCH, chunk_index=-1))
        )

    server.receive = misdirect  # type: ignore[method-assign]
    async with pusher_for(server) as pusher:
        with pytest.raises(PushFailed) as failed:
            await push_hosts(pusher, 10)
    assert failed.value.code() is grpc.StatusCode.INTERNAL
    assert "protocol violation: ack for batch" in failed.value.details()


async def test_an_input_error_mid_batch_stops_the_push() -> None:
    server = FakeIngest()

    def hosts() -> Iterator[rpb.SweepHostResult]:
        yield from synthetic_hosts(35)
        raise InputError("hosts.jsonl:36: bad line")

    async with pusher_for(server) as pusher:
        chunks = sweep_chunks(hosts(), 10)
        with pytest.raises(InputError, match=r"hosts\.jsonl:36"):
            await pusher.push(sweep_open(), chunks)
    assert server.streams[0].cancelled


# --- the command ----------------------------------------------------------------------------


@pytest.fixture
def fake_core(monkeypatch: pytest.MonkeyPatch) -> FakeIngest:
    """`srctl edge push` talks to a FakeIngest instead of a channel."""
    server = FakeIngest(credits=4)

    def over(channel: object, policy: RetryPolicy | None = None) -> ResultPusher:
        return ResultPusher(server.open_stream, policy, sleep=Sleeps())

    monkeypatch.setattr(ResultPusher, "over", staticmethod(over))
    return server


PUSH = ["edge", "push", "--plaintext", "--partition", "dc1"]


def test_push_prints_the_summary_as_json(fake_core: FakeIngest, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*PUSH, "--synthetic-hosts", "1234", "--chunk-size", "100", "--batch-id", BATCH.upper()]
    assert main([*argv, "-o", "json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["batch_id"] == BATCH
    assert summary["state"] == "BATCH_STATE_COMMITTED"
    assert summary["result_type"] == "RESULT_TYPE_SWEEP_HOSTS"
    assert (summary["accepted"], summary["rejected"], summary["retries"]) == (1234, 0, 0)
    assert (summary["committed_index"], summary["expected_chunks"], summary["chunks_sent"]) == (12, 13, 13)
    assert captured.err == f"pushing batch {BATCH}\n"
    assert fake_core.stored_results(BATCH) == 1234


def test_push_sends_the_sweep_information(fake_core: FakeIngest, capsys: pytest.CaptureFixture[str]) -> None:
    opened: list[rpb.BatchOpen] = []
    receive = fake_core.receive

    def spy(stream: FakeStream, request: pb.ReportResultsRequest) -> None:
        if request.HasField("open"):
            opened.append(request.open)
        receive(stream, request)

    fake_core.receive = spy  # type: ignore[method-assign]
    argv = [*PUSH, "--synthetic-hosts", "10", "--agent", "a1", "--target-network", "10.0.0.9/8"]
    assert main([*argv, "--execution-id", "exec-1", "--completion", "failed"]) == 0
    assert opened[0].sweep == rpb.SweepInfo(execution_id="exec-1", target_network="10.0.0.0/8")
    assert (opened[0].agent_id, opened[0].partition, opened[0].expected_chunks) == ("a1", "dc1", 1)
    out = capsys.readouterr().out
    assert "Chunks:        1/1 committed\n" in out
    assert "Accepted:      10\n" in out


def test_push_reads_a_jsonl_file(
    fake_core: FakeIngest, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "hosts.jsonl"
    lines = [json.dumps({"ip": f"10.0.0.{i}", "available": True}) for i in range(1, 8)]
    lines[4] = json.dumps({"ip": "10.0.0.300"})
    path.write_text("\n".join(lines) + "\n")
    assert main([*PUSH, "--type", "sweep-hosts", "--file", str(path), "--chunk-size", "3", "-o", "yaml"]) == 0
    out = capsys.readouterr().out
    assert "accepted: 6\nrejected: 1\nfirst_reject: 'chunk 1: results[1].ip: not an IP address'\n" in out
    assert "expected_chunks: 3\n" in out


def test_a_bad_jsonl_line_exits_2(
    fake_core: FakeIngest, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "hosts.jsonl"
    path.write_text('{"ip": "10.0.0.1"}\n{"ip": 5\n')
    assert main([*PUSH, "--type", "sweep-hosts", "--file", str(path)]) == 2
    assert f"srctl: error: {path}:2: " in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["--file", "x.jsonl"], "--type is required with --file"),
        (["--synthetic-hosts", "5", "--type", "device-updates"], "--synthetic-hosts makes sweep-hosts"),
        (["--file", "x.jsonl", "--type", "service-checks", "--completion", "failed"], "are for sweep-hosts"),
        (["--file", "/no/such/file.jsonl", "--type", "service-checks"], "cannot read /no/such/file.jsonl"),
    ],
)
def test_push_usage_errors_exit_2(
    fake_core: FakeIngest, capsys: pytest.CaptureFixture[str], argv: list[str], problem: str
) -> None:
    assert main([*PUSH, *argv]) == 2
    assert problem in capsys.readouterr().err


def test_a_file_that_is_not_utf8_exits_2(
    fake_core: FakeIngest, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "hosts.jsonl"
    path.write_bytes(b'{"ip": "10.0.0.1"}\n\xff\xfe\n')
    assert main([*PUSH, "--type", "sweep-hosts", "--file", str(path)]) == 2
    assert f"srctl: error: {path}: not UTF-8 text (invalid start byte)" in capsys.readouterr().err


def test_a_bad_batch_id_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*PUSH, "--synthetic-hosts", "5", "--batch-id", "batch-1"]) == 2
    assert "not a UUID: 'batch-1'" in capsys.readouterr().err


def test_a_push_that_gives_up_says_how_to_resume(
    fake_core: FakeIngest, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_core.faults = [Fault("chunk", at=n) for n in range(9, 20)]
    argv = [
        *PUSH,
        "--synthetic-hosts",
        "200",
        "--chunk-size",
        "10",
        "--batch-id",
        BATCH,
        "--max-retries",
        "2",
    ]
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert f"batch {BATCH}: chunks 0-7 are committed; run the same push with --batch-id {BATCH}" in err
    assert err.endswith("Error: UNAVAILABLE: connection reset (gave up after 2 retries)\n")


def test_push_summary_document_keys() -> None:
    progress = BatchProgress(BATCH, rpb.RESULT_TYPE_SERVICE_CHECKS, 4, state=rpb.BATCH_STATE_OPEN)
    assert list(push.summary(progress)) == [
        "batch_id",
        "result_type",
        "state",
        "committed_index",
        "expected_chunks",
        "chunks_sent",
        "accepted",
        "rejected",
        "first_reject",
        "retries",
        "resumed_from",
        "elapsed_seconds",
        "results_per_second",
    ]
