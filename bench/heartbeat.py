"""Heartbeat benchmark: many pollers register and heartbeat against one core replica.

    python -m bench.heartbeat --pollers 10000 --rate 1000 --duration 20

For each store (SQLite, PostgreSQL) it starts `srcore serve` in its own process, makes one
client certificate per poller (identity comes from the certificate), opens one mTLS channel
per poller from this process, registers them all, lets every poller report twice at --rate
(the fleet's start, not its steady state: agents go from connecting to connected, and the
pollers the leader degraded while the rest of the fleet registered, silent for a minute or
more, heal), then:
  1. paced: heartbeats at --rate per second spread over all pollers (the fleet's steady
     state: 10,000 pollers every 10 s is 1,000/s), latency measured from the scheduled time;
  2. saturated: --concurrency heartbeats in flight at all times, for the maximum rate.
The raw limit is the same load, paced and saturated, over as many channels against a
grpc.aio server that answers unary calls without any work, in the same run: its paced p99 is
the floor this machine puts under the heartbeat p99. Client and server share this machine's
cores, so every figure includes the client's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import psycopg

from bench.common import cpu_seconds, free_port, ms, percentile, start_core
from serviceradar.edge.v1 import edge_service_pb2 as pb
from serviceradar.edge.v1 import edge_service_pb2_grpc as pb_grpc
from srcore.security.pki import issue_edge_certificate, load_or_create_ca


@dataclass
class Poller:
    """One simulated poller: its channel, stub and session."""

    poller_id: str
    channel: grpc.aio.Channel
    stub: pb_grpc.EdgeServiceAsyncStub
    session_id: str = ""


def open_pollers(address: str, pki: Path, count: int) -> list[Poller]:
    """One certificate and one channel per poller."""
    ca = load_or_create_ca(pki, "unused: the CA exists")
    ca_pem = (pki / "ca.pem").read_bytes()
    pollers = []
    for i in range(count):
        poller_id = f"bench-{i:05d}"
        issued = issue_edge_certificate(ca, "serviceradar", "default", poller_id, timedelta(days=1))
        channel = grpc.aio.secure_channel(
            address, grpc.ssl_channel_credentials(ca_pem, issued.key_pem, issued.cert_pem)
        )
        pollers.append(Poller(poller_id, channel, pb_grpc.EdgeServiceStub(channel)))
    return pollers


async def register_all(pollers: list[Poller], concurrency: int = 200) -> float:
    """Register every poller; returns the registrations per second."""
    queue = list(pollers)
    started = time.perf_counter()

    async def worker() -> None:
        while queue:
            poller = queue.pop()
            answer = await poller.stub.RegisterPoller(
                pb.RegisterPollerRequest(
                    poller_id=poller.poller_id,
                    partition=f"p{int(poller.poller_id[-5:]) % 10}",
                    agents=[pb.AgentInfo(agent_id="agent-1", capabilities=["icmp"])],
                ),
                timeout=60,
            )
            poller.session_id = answer.session_id

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(pollers) / (time.perf_counter() - started)


def beat(poller: Poller) -> pb.ReportHealthRequest:
    """A heartbeat with one healthy agent."""
    return pb.ReportHealthRequest(
        session_id=poller.session_id,
        poller_id=poller.poller_id,
        status=pb.COMPONENT_STATUS_OK,
        agents=[pb.AgentHealth(agent_id="agent-1", status=pb.COMPONENT_STATUS_OK)],
    )


async def paced(
    calls: Sequence[tuple[Callable[..., Any], object]], rate: float, duration: float
) -> tuple[int, list[float], int]:
    """Calls at `rate`/s through `calls` (one per poller) in their order, round after round;
    returns (completed, latencies from the scheduled time, errors).

    The order is the same in every round, so each poller reports every len(calls) / rate
    seconds, as a poller heartbeating at its interval does. (A new order per round put up to
    two intervals between a poller's heartbeats, and the leader rightly degraded it as late.)
    """
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter() + 0.5
    total = int(rate * duration)
    tasks: set[asyncio.Task[None]] = set()

    async def one(call: Callable[..., Any], request: object, scheduled: float) -> None:
        nonlocal errors
        try:
            await call(request, timeout=10)
            latencies.append(time.perf_counter() - scheduled)
        except grpc.aio.AioRpcError:
            errors += 1

    for n in range(total):
        scheduled = start + n / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(*calls[n % len(calls)], scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    return len(latencies), latencies, errors


def settle_load_generator() -> None:
    """Freeze what the load generator holds out of its own collector.

    Its thousands of channels would otherwise be rescanned by every full collection in this
    process, and those pauses would count as call latency.
    """
    gc.collect()
    gc.freeze()


async def saturated(
    calls: Sequence[tuple[Callable[..., Any], object]], concurrency: int, duration: float
) -> tuple[float, list[float]]:
    """Keep `concurrency` calls in flight for `duration` s; returns (calls/s, latencies)."""
    latencies: list[float] = []
    deadline = time.perf_counter() + duration

    async def worker(offset: int) -> None:
        i = offset
        while time.perf_counter() < deadline:
            method, request = calls[i % len(calls)]
            started = time.perf_counter()
            await method(request, timeout=10)
            latencies.append(time.perf_counter() - started)
            i += concurrency

    began = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return len(latencies) / (time.perf_counter() - began), latencies


async def bench_store(name: str, env: dict[str, str], args: argparse.Namespace, work: Path) -> None:
    """Run both phases against one core on one store and print the figures."""
    port = free_port()
    data_dir = work / name
    core = start_core(data_dir, port, {**env, "SRCORE_HEARTBEAT_TIMEOUT": "600"})
    try:
        pollers = open_pollers(f"127.0.0.1:{port}", data_dir / "pki", args.pollers)
        reg_rate = await register_all(pollers)
        print(f"[{name}] registered {len(pollers)} pollers at {reg_rate:,.0f}/s")
        calls = [(p.stub.ReportHealth, beat(p)) for p in random.sample(pollers, len(pollers))]
        await paced(calls, args.rate, 2 * len(pollers) / args.rate)
        settle_load_generator()

        cpu_before = cpu_seconds(core.pid)
        wall = time.perf_counter()
        done, latencies, errors = await paced(calls, args.rate, args.duration)
        wall = time.perf_counter() - wall
        cpu = (cpu_seconds(core.pid) - cpu_before) / wall
        print(
            f"[{name}] paced {args.rate:,.0f}/s over {len(pollers)} pollers: "
            f"{done / wall:,.0f} ReportHealth/s, "
            f"p50 {ms(percentile(latencies, 0.5))}, p99 {ms(percentile(latencies, 0.99))}, "
            f"errors {errors}, server CPU {cpu * 100:.0f}% of one core"
        )

        cpu_before = cpu_seconds(core.pid)
        wall = time.perf_counter()
        rate, latencies = await saturated(calls, args.concurrency, args.duration)
        wall = time.perf_counter() - wall
        cpu = (cpu_seconds(core.pid) - cpu_before) / wall
        print(
            f"[{name}] saturated ({args.concurrency} in flight): {rate:,.0f} ReportHealth/s, "
            f"p50 {ms(percentile(latencies, 0.5))}, p99 {ms(percentile(latencies, 0.99))}, "
            f"server CPU {cpu * 100:.0f}% of one core"
        )
        for poller in pollers:
            await poller.channel.close()
    finally:
        core.terminate()
        core.wait(timeout=30)


async def bench_raw(args: argparse.Namespace, work: Path) -> None:
    """The same saturated load against a server that does no work: the machine's limit."""
    pki = next(work.glob("*/pki"))
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.raw_unary_server", str(port), str(pki)], stdout=subprocess.PIPE
    )
    try:
        assert server.stdout is not None
        server.stdout.readline()
        pollers = open_pollers(f"127.0.0.1:{port}", pki, args.pollers)
        calls = [
            (
                p.channel.unary_unary("/raw/Echo", request_serializer=bytes, response_deserializer=bytes),
                b"x" * 40,
            )
            for p in pollers
        ]
        await paced(calls, args.rate, len(pollers) / args.rate)
        settle_load_generator()
        _, latencies, errors = await paced(calls, args.rate, args.duration)
        print(
            f"[raw grpc] paced {args.rate:,.0f}/s over {len(pollers)} channels: "
            f"p50 {ms(percentile(latencies, 0.5))}, p99 {ms(percentile(latencies, 0.99))}, errors {errors}"
        )
        rate, latencies = await saturated(calls, args.concurrency, args.duration)
        print(
            f"[raw grpc] saturated ({args.concurrency} in flight): {rate:,.0f} unary calls/s, "
            f"p50 {ms(percentile(latencies, 0.5))}, p99 {ms(percentile(latencies, 0.99))}"
        )
        for poller in pollers:
            await poller.channel.close()
    finally:
        server.terminate()
        server.wait(timeout=10)


async def main() -> None:
    """Parse arguments and run every requested store, then the raw limit."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pollers", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=1_000.0, help="paced heartbeats per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per phase")
    parser.add_argument("--concurrency", type=int, default=64, help="calls in flight when saturated")
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="srcore-bench-") as tmp:
        work = Path(tmp)
        for store in args.stores.split(","):
            if store == "sqlite":
                await bench_store("sqlite", {}, args, work)
            elif store == "postgres":
                database = f"srcore_bench_{uuid.uuid4().hex[:8]}"
                with psycopg.connect(args.postgres, autocommit=True) as conn:
                    conn.execute(f'CREATE DATABASE "{database}"')
                try:
                    url = args.postgres.rsplit("/", 1)[0] + f"/{database}"
                    await bench_store("postgres", {"SRCORE_DATABASE_URL": url}, args, work)
                finally:
                    with psycopg.connect(args.postgres, autocommit=True) as conn:
                        conn.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
        await bench_raw(args, work)


if __name__ == "__main__":
    asyncio.run(main())
