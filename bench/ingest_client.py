"""The ingest load generator, run in its own process by bench/ingest.py.

Chunks are assembled from pre-serialised payloads, so the client costs almost nothing per
result and the figures measure the server. Prints one JSON line of figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from bench.common import percentile
from serviceradar.edge.v1 import edge_service_pb2 as pb
from serviceradar.edge.v1 import results_pb2 as rpb

POOL = 64


def payloads(per_chunk: int) -> list[bytes]:
    """POOL distinct serialised SweepHostResults of `per_chunk` hosts each."""
    pool = []
    for p in range(POOL):
        results = []
        for i in range(per_chunk):
            n = p * per_chunk + i
            result = rpb.SweepHostResult(
                ip=f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}",
                mac=f"02:00:00:{(n >> 16) & 255:02x}:{(n >> 8) & 255:02x}:{n & 255:02x}",
                hostname=f"host-{n}.example.net",
                available=n % 4 != 0,
                ports=[rpb.PortResult(port=22, open=True), rpb.PortResult(port=443, open=n % 2 == 0)],
            )
            result.icmp_rtt.FromMicroseconds(500 + n % 2000)
            results.append(result)
        pool.append(rpb.SweepHostResults(results=results).SerializeToString())
    return pool


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def chunk_request(batch_id: str, index: int, final: bool, payload: bytes) -> bytes:
    """A serialised ReportResultsRequest{chunk} around a pre-serialised payload."""
    head = rpb.ResultChunk(batch_id=batch_id, index=index, final=final).SerializeToString()
    chunk = head + b"\x52" + _varint(len(payload)) + payload  # field 10, length-delimited
    return b"\x12" + _varint(len(chunk)) + chunk  # ReportResultsRequest.chunk = 2


async def one_stream(
    channel: grpc.aio.Channel, pool: list[bytes], chunks: int, latencies: list[float], offset: int
) -> int:
    """Send one batch of `chunks` chunks honouring credits; returns results acknowledged."""
    batch_id = str(uuid.uuid4())
    method = channel.stream_stream(
        "/serviceradar.edge.v1.EdgeService/ReportResults",
        request_serializer=lambda b: b,
        response_deserializer=pb.ReportResultsResponse.FromString,
    )
    outbox: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def requests() -> AsyncIterator[bytes]:
        while (item := await outbox.get()) is not None:
            yield item

    call = method(requests())
    outbox.put_nowait(
        pb.ReportResultsRequest(
            open=rpb.BatchOpen(batch_id=batch_id, result_type=rpb.RESULT_TYPE_SWEEP_HOSTS, partition="bench",
                               expected_chunks=chunks)
        ).SerializeToString()
    )  # fmt: skip
    opened = await call.read()
    assert isinstance(opened, pb.ReportResultsResponse)
    allowed = opened.ack.committed_index + opened.ack.credits
    sent = 0
    sent_at: deque[float] = deque()
    accepted = 0
    done = 0
    while done < chunks:
        while sent < chunks and sent <= allowed:
            payload = pool[(offset + sent) % len(pool)]
            outbox.put_nowait(chunk_request(batch_id, sent, sent == chunks - 1, payload))
            sent_at.append(time.perf_counter())
            sent += 1
        response = await call.read()
        assert isinstance(response, pb.ReportResultsResponse), response
        latencies.append(time.perf_counter() - sent_at.popleft())
        accepted += response.ack.accepted
        allowed = response.ack.committed_index + response.ack.credits
        done += 1
    outbox.put_nowait(None)
    await call.wait_for_connection()
    assert await call.read() == grpc.aio.EOF
    return accepted


async def run(args: argparse.Namespace) -> None:
    """Run `streams` concurrent streams until `results` results are acknowledged."""
    pki = Path(args.pki)
    cert = Path(args.cert) if args.cert else pki / "edge-default-demo.pem"
    key = Path(args.key) if args.key else pki / "edge-default-demo-key.pem"
    credentials = grpc.ssl_channel_credentials(
        (pki / "ca.pem").read_bytes(), key.read_bytes(), cert.read_bytes()
    )
    pool = payloads(args.per_chunk)
    chunks_per_stream = max(1, args.results // args.per_chunk // args.streams)
    # A few channels, as several edges would use; streams share them.
    options = [("grpc.max_send_message_length", 16 << 20), ("grpc.use_local_subchannel_pool", 1)]
    channels = [
        grpc.aio.secure_channel(args.address, credentials, options=options)
        for _ in range(min(args.streams, 8))
    ]
    latencies: list[float] = []
    started_at = time.time()
    started = time.perf_counter()
    accepted = await asyncio.gather(
        *(
            one_stream(channels[s % len(channels)], pool, chunks_per_stream, latencies, s * 7)
            for s in range(args.streams)
        )
    )
    elapsed = time.perf_counter() - started
    ended_at = time.time()
    for channel in channels:
        await channel.close()
    print(json.dumps({
        "results": sum(accepted), "seconds": elapsed, "rate": sum(accepted) / elapsed,
        "p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99),
        # Wall clock, so a benchmark can tell when work behind the acknowledgements was done.
        "started_at": started_at, "ended_at": ended_at,
    }))  # fmt: skip


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", required=True)
    parser.add_argument("--pki", required=True)
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--per-chunk", type=int, default=500)
    parser.add_argument("--results", type=int, default=200_000)
    parser.add_argument("--cert", help="edge certificate (default: the demo poller's)")
    parser.add_argument("--key", help="its key")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
