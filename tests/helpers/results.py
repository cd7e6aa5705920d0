"""Low-level ReportResults driving for tests: exact message sequences, and result makers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

from serviceradar.edge.v1 import edge_service_pb2 as pb
from serviceradar.edge.v1 import edge_service_pb2_grpc as pb_grpc
from serviceradar.edge.v1 import results_pb2 as rpb


def host(i: int, *, ip: str | None = None) -> rpb.SweepHostResult:
    """A deterministic sweep host result number `i`."""
    result = rpb.SweepHostResult(
        ip=ip if ip is not None else f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
        mac=f"02:00:00:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}",
        hostname=f"host-{i}",
        available=i % 3 != 0,
        icmp_packet_loss=0.0,
        ports=[rpb.PortResult(port=22, open=True), rpb.PortResult(port=80, open=i % 2 == 0)],
    )
    result.icmp_rtt.FromMicroseconds(1000 + i % 500)
    return result


def sweep_chunk(
    batch_id: str, index: int, start: int, count: int, *, final: bool = False
) -> pb.ReportResultsRequest:
    """A chunk of `count` host results numbered from `start`."""
    chunk = rpb.ResultChunk(
        batch_id=batch_id,
        index=index,
        final=final,
        sweep_hosts=rpb.SweepHostResults(results=[host(i) for i in range(start, start + count)]),
    )
    return pb.ReportResultsRequest(chunk=chunk)


def open_sweep(batch_id: str, partition: str = "dc1", expected: int = 0) -> pb.ReportResultsRequest:
    """Open (or reopen) a sweep batch."""
    return pb.ReportResultsRequest(
        open=rpb.BatchOpen(
            batch_id=batch_id,
            result_type=rpb.RESULT_TYPE_SWEEP_HOSTS,
            partition=partition,
            expected_chunks=expected,
        )
    )


def new_batch_id() -> str:
    """A fresh batch id."""
    return str(uuid.uuid4())


class RawStream:
    """One ReportResults call driven message by message."""

    def __init__(self, stub: pb_grpc.EdgeServiceAsyncStub) -> None:
        self._outbox: asyncio.Queue[pb.ReportResultsRequest | None] = asyncio.Queue()
        self.call = stub.ReportResults(self._requests())

    async def _requests(self) -> AsyncIterator[pb.ReportResultsRequest]:
        while True:
            message = await self._outbox.get()
            if message is None:
                return
            yield message

    def send(self, message: pb.ReportResultsRequest) -> None:
        """Queue one message for the server."""
        self._outbox.put_nowait(message)

    async def ack(self) -> rpb.BatchAck:
        """The next acknowledgement (raises the call's error if it ended with one)."""
        response = await self.call.read()
        if response is None or not isinstance(response, pb.ReportResultsResponse):
            raise EOFError("stream ended")
        return response.ack

    def close(self) -> None:
        """Half-close: no more messages."""
        self._outbox.put_nowait(None)

    def cancel(self) -> None:
        """Drop the call as a crashing client would."""
        self.call.cancel()


async def push_chunks(
    stream: RawStream,
    batch_id: str,
    total_chunks: int,
    per_chunk: int,
    *,
    start_at: int = 0,
    stop_after_acks: int | None = None,
) -> list[rpb.BatchAck]:
    """Send chunks start_at.. honouring credits; returns the chunk acks received.

    With `stop_after_acks`, returns as soon as that many chunk acks arrived (chunks beyond
    may be in flight), as a client that is about to crash would.
    """
    acks: list[rpb.BatchAck] = []
    sent = start_at
    opened = await stream.ack()
    if opened.state == rpb.BATCH_STATE_COMMITTED or start_at >= total_chunks:
        return [opened]
    allowed = opened.committed_index + opened.credits
    while True:
        while sent < total_chunks and sent <= allowed:
            stream.send(
                sweep_chunk(batch_id, sent, sent * per_chunk, per_chunk, final=sent == total_chunks - 1)
            )
            sent += 1
        if acks and acks[-1].chunk_index == total_chunks - 1:
            return acks
        ack = await stream.ack()
        acks.append(ack)
        allowed = ack.committed_index + ack.credits
        if stop_after_acks is not None and len(acks) >= stop_after_acks:
            return acks
