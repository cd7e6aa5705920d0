"""Heartbeat throughput of the etcd poller registry with 10,000 registered pollers.

    python -m bench.registry_heartbeat [--pollers 10000] [--interval 10] [--seconds 10]
                                       [--endpoints 127.0.0.1:2379] [--etcd-pid PID]

Runs one EtcdCoordinator against a real etcd (SRCORE_TEST_ETCD_ENDPOINTS or --endpoints),
under a prefix of its own, and prints:
  1. registration: puts per second (lease grant + transaction each);
  2. burst: registry.touch() as fast as one event loop can call it, round robin over every
     poller, and how many lease refreshes (and other etcd calls) that cost;
  3. fleet: every poller touched once per --interval for longer than its TTL (the steady
     state of a fleet; 10,000 pollers every 10 s is 1,000 touches/s), then how many are
     still registered: all of them, when the batched refreshes keep up;
  4. the client choice: refreshing 1,000 leases with aetcd's refresh() (one stream each)
     against writing them into one long-lived keepalive stream.
etcd shares this machine's cores with the benchmark; every figure includes both.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import resource
import time
import uuid

import aetcd
from aetcd import rpc

from bench.common import cpu_seconds
from srcore.coord.etcd import EtcdCoordinator
from srcore.coord.etcd_client import EtcdCounters, parse_endpoint
from srcore.domain.coordination import RegistryEntry, ReplicaInfo


def cpu() -> float:
    """CPU seconds this process used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class EtcdCpu:
    """CPU etcd used during a phase, when its process id was given."""

    def __init__(self, pid: int | None) -> None:
        self._pid = pid
        self._start = cpu_seconds(pid) if pid else 0.0

    def share(self, elapsed: float) -> str:
        """ ", etcd CPU n% of a core" over `elapsed` seconds, or nothing without a pid."""
        if not self._pid:
            return ""
        return f", etcd CPU {(cpu_seconds(self._pid) - self._start) / elapsed:.0%} of a core"


def delta(after: EtcdCounters, before: EtcdCounters) -> dict[str, int]:
    """Counter differences, without the zeros."""
    diff = {f.name: getattr(after, f.name) - getattr(before, f.name) for f in dataclasses.fields(after)}
    return {name: value for name, value in diff.items() if value}


def entry(index: int) -> RegistryEntry:
    """Poller number `index`, spread over 10 tenants and 10 partitions."""
    return RegistryEntry(
        f"tenant-{index % 10}", f"dc{index // 10 % 10}", f"poller-{index}", f"s{index}", "bench"
    )


async def register(coordinator: EtcdCoordinator, pollers: int, ttl: float) -> None:
    """Register every poller, 64 at a time."""
    gate = asyncio.Semaphore(64)

    async def one(index: int) -> None:
        async with gate:
            await coordinator.registry.put(entry(index), ttl)

    before, start = dataclasses.replace(coordinator.counters), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(pollers)))
    elapsed = time.perf_counter() - start
    print(f"registration   {pollers} pollers in {elapsed:.1f} s = {pollers / elapsed:,.0f}/s")
    print(f"               etcd calls: {delta(coordinator.counters, before)}")


async def burst(coordinator: EtcdCoordinator, pollers: int, seconds: float, etcd_pid: int | None) -> None:
    """Touch round robin as fast as possible.

    Heartbeats arrive as separate RPCs, so the event loop runs other work between them;
    yielding every 100 touches gives the lease refresher its share of the loop likewise.
    """
    entries = [entry(i) for i in range(pollers)]
    before, cpu_before, etcd_cpu = dataclasses.replace(coordinator.counters), cpu(), EtcdCpu(etcd_pid)
    start = time.perf_counter()
    touched = missed = 0
    while time.perf_counter() - start < seconds:
        for _ in range(100):
            e = entries[touched % pollers]
            if await coordinator.registry.touch(e.tenant, e.poller_id, e.session_id) is None:
                missed += 1
            touched += 1
        await asyncio.sleep(0)
    elapsed = time.perf_counter() - start
    await coordinator.registry.flush()
    counters = delta(coordinator.counters, before)
    print(
        f"burst          {touched:,} touches in {elapsed:.1f} s = {touched / elapsed:,.0f} touches/s"
        f" (CPU {(cpu() - cpu_before) / elapsed:.0%} of a core{etcd_cpu.share(elapsed)}),"
        f" {missed:,} found expired"
    )
    refreshes = counters.get("lease_refreshes", 0)
    print(
        f"               {refreshes:,} lease refreshes = {refreshes / elapsed:,.0f}/s,"
        f" {touched / max(refreshes, 1):,.1f} touches per refresh"
    )
    print(f"               etcd calls: {counters}")


async def fleet(
    coordinator: EtcdCoordinator, pollers: int, interval: float, ttl: float, etcd_pid: int | None
) -> None:
    """Each poller touched once per interval, evenly spread, for longer than the TTL."""
    entries = [entry(i) for i in range(pollers)]
    seconds = ttl + interval
    rate = pollers / interval
    before, cpu_before, etcd_cpu = dataclasses.replace(coordinator.counters), cpu(), EtcdCpu(etcd_pid)
    loop = asyncio.get_running_loop()
    start = loop.time()
    touched = 0
    lag = 0.0
    while (elapsed := loop.time() - start) < seconds:
        due = int(elapsed * rate)
        lag = max(lag, (due - touched) / rate)
        while touched < due:
            e = entries[touched % pollers]
            await coordinator.registry.touch(e.tenant, e.poller_id, e.session_id)
            touched += 1
        await asyncio.sleep(0.01)
    elapsed = loop.time() - start
    alive = len(await coordinator.registry.list())
    counters = delta(coordinator.counters, before)
    print(
        f"fleet          {pollers:,} pollers every {interval:g} s = {rate:,.0f} touches/s for"
        f" {elapsed:.0f} s (TTL {ttl:g} s): {alive:,}/{pollers:,} still registered,"
        f" max touch lag {lag * 1000:.0f} ms,"
        f" CPU {(cpu() - cpu_before) / elapsed:.0%} of a core{etcd_cpu.share(elapsed)}"
    )
    answered = counters.get("keepalive_responses", 0)
    print(
        f"               {counters.get('lease_refreshes', 0):,} lease refreshes,"
        f" {answered / elapsed:,.0f} keepalive answers/s; etcd calls: {counters}"
    )


async def client_choice(endpoint: str, leases: int) -> None:
    """aetcd's refresh() per lease against one long-lived keepalive stream."""
    host, port = parse_endpoint(endpoint)
    client = aetcd.Client(host, port, timeout=10)
    await client.connect()
    granted = [(await client.lease(30)).id for _ in range(leases)]
    try:
        start = time.perf_counter()
        for lease in granted:
            await client.refresh_lease(lease)
        per_call = leases / (time.perf_counter() - start)
        call = client.leasestub.LeaseKeepAlive(metadata=client.metadata)
        start = time.perf_counter()

        async def read() -> None:
            for _ in range(leases):
                await call.read()

        reader = asyncio.get_running_loop().create_task(read())
        for lease in granted:
            await call.write(rpc.LeaseKeepAliveRequest(ID=lease))
        await reader
        stream = leases / (time.perf_counter() - start)
        call.cancel()
        print(
            f"client choice  aetcd refresh() (a stream per call): {per_call:,.0f} refreshes/s;"
            f" one long-lived stream: {stream:,.0f} refreshes/s ({stream / per_call:.1f}x)"
        )
    finally:
        for lease in granted:
            await client.revoke_lease(lease)
        await client.close()


async def main() -> None:
    """Run the four measurements and print them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pollers", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=10.0, help="heartbeat interval (s)")
    parser.add_argument("--ttl", type=float, default=15.0, help="poller lease TTL (s)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the burst (s)")
    parser.add_argument("--refresh-interval", type=float, default=0.5)
    parser.add_argument("--etcd-pid", type=int, help="report the CPU this etcd process uses")
    parser.add_argument("--endpoints", default=os.environ.get("SRCORE_TEST_ETCD_ENDPOINTS", "127.0.0.1:2379"))
    args = parser.parse_args()
    endpoints = args.endpoints.split(",")
    prefix = f"/srcore-bench/{uuid.uuid4().hex[:8]}/"
    coordinator = EtcdCoordinator(endpoints, prefix, refresh_interval=args.refresh_interval)
    await coordinator.start(ReplicaInfo("bench", "bench:0", "bench", time.time()))
    try:
        await register(coordinator, args.pollers, args.ttl)
        await burst(coordinator, args.pollers, args.seconds, args.etcd_pid)
        await fleet(coordinator, args.pollers, args.interval, args.ttl, args.etcd_pid)
    finally:
        await coordinator.close()
        host, port = parse_endpoint(endpoints[0])
        client = aetcd.Client(host, port, timeout=30)
        await client.delete_prefix(prefix.encode())
        await client.close()
    await client_choice(endpoints[0], 1_000)


if __name__ == "__main__":
    asyncio.run(main())
