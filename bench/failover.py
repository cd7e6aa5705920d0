"""Failover benchmark: replicas of `srcore serve` on one etcd and one PostgreSQL database.

    python -m bench.failover [--ttl 10] [--rounds 3] [--pollers 10000] [--rate 1000]

Prints:
  1. crash failover: kill -9 the leader, time until another replica runs the leader jobs
     (it has claimed the fence row in the store, the first thing its job runner does);
  2. graceful handoff: SIGTERM the leader, the same time;
  3. offline detection: pollers heartbeat on time, then all stop; time from each poller's last
     heartbeat (its stored last-seen time) to its offline transition, both server clocks;
  4. heartbeat throughput of one replica with etcd coordination at --pollers pollers
     (bench/heartbeat.py's paced and saturated phases, against PostgreSQL).
Replicas use --ttl as their lease; the offline phase uses --heartbeat-interval and
--heartbeat-timeout (short, so a sample takes seconds, not minutes) and the default 1 s
liveness check. Every process shares this machine's cores with etcd, PostgreSQL and the bench.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from bench.common import free_port, percentile, start_core
from bench.heartbeat import Poller, beat, bench_store, open_pollers, register_all
from srcore.security.pki import ensure_dev_pki
from srcore.store.database import Database

FENCE = "SELECT replica, token FROM leadership_fence WHERE name = 'leader'"


@dataclass
class Bench:
    """Replicas on one etcd prefix and one database, sharing a dev PKI."""

    work: Path
    env: dict[str, str]
    database: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    started: int = 0

    def __post_init__(self) -> None:
        self.pki = self.work / "pki"
        ensure_dev_pki(self.pki)
        self.conn = psycopg.connect(self.database, autocommit=True)

    def start(self, count: int) -> None:
        """Start `count` more replicas, named r1, r2, ... in start order."""
        for _ in range(count):
            self.started += 1
            name = f"r{self.started}"
            data_dir = self.work / name
            shutil.copytree(self.pki, data_dir / "pki")
            self.ports[name] = free_port()
            self.processes[name] = start_core(
                data_dir, self.ports[name], {**self.env, "SRCORE_REPLICA_ID": name}
            )

    def fence(self) -> tuple[str, int]:
        """(replica, token) of the newest leadership that claimed the fence."""
        row = self.conn.execute(FENCE).fetchone()
        assert row is not None
        return str(row[0]), int(row[1])

    async def leader(self, timeout: float = 60) -> str:
        """The replica running the leader jobs, once one does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            replica, _ = self.fence()
            if replica in self.processes and self.processes[replica].poll() is None:
                return replica
            await asyncio.sleep(0.05)
        raise RuntimeError("no replica took the leader jobs")

    async def handover(self, sig: int) -> float:
        """Signal the leader; seconds until another replica runs the leader jobs."""
        leader = await self.leader()
        _, token = self.fence()
        self.processes[leader].send_signal(sig)
        began = time.perf_counter()
        while True:
            replica, new_token = self.fence()
            if replica != leader and new_token > token:
                took = time.perf_counter() - began
                break
            await asyncio.sleep(0.005)
            if time.perf_counter() - began > 120:
                raise RuntimeError("no replica took over within 120 s")
        self.processes.pop(leader).wait(timeout=60)
        # Back to full strength for the next round, settled on one leader.
        self.start(1)
        await self.leader()
        return took

    def address(self, name: str) -> str:
        """A replica's gRPC address."""
        return f"127.0.0.1:{self.ports[name]}"

    def stop(self) -> None:
        """Terminate every replica."""
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            process.wait(timeout=60)
        self.conn.close()


def seconds(samples: list[float]) -> str:
    """min / median / max of samples in seconds."""
    return (
        f"min {min(samples):.2f} s, median {percentile(samples, 0.5):.2f} s, max {max(samples):.2f} s"
        f" over {len(samples)}"
    )


async def offline_detection(bench: Bench, count: int, interval: float) -> list[float]:
    """Stop `count` pollers' heartbeats at once; each one's last-seen to offline time."""
    leader = await bench.leader()
    follower = next(n for n, p in bench.processes.items() if n != leader and p.poll() is None)
    pollers = open_pollers(bench.address(follower), bench.pki, count)
    await register_all(pollers, concurrency=min(count, 50))

    async def beats(poller: Poller, until: float) -> None:
        while time.monotonic() < until:
            await poller.stub.ReportHealth(beat(poller), timeout=10)
            await asyncio.sleep(interval / 2)

    until = time.monotonic() + 2 * interval
    await asyncio.gather(*(beats(p, until) for p in pollers))
    ids = [p.poller_id for p in pollers]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        rows = bench.conn.execute(
            "SELECT EXTRACT(EPOCH FROM t.at - p.last_seen) FROM pollers p JOIN state_transitions t"
            " ON t.tenant = p.tenant AND t.entity_type = 'poller' AND t.entity_id = p.poller_id"
            " AND t.to_state = 'offline' WHERE p.poller_id = ANY(%s)",
            (ids,),
        ).fetchall()
        if len(rows) == len(ids):
            break
        await asyncio.sleep(0.1)
    for poller in pollers:
        await poller.channel.close()
    return [float(r[0]) for r in rows]


async def main() -> None:
    """Parse arguments, run every phase and print the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ttl", type=int, default=10, help="replica lease TTL, seconds")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="samples of each handover")
    parser.add_argument("--heartbeat-interval", type=float, default=2.0)
    parser.add_argument("--heartbeat-timeout", type=float, default=6.0)
    parser.add_argument("--offline-pollers", type=int, default=20)
    parser.add_argument("--pollers", type=int, default=10_000, help="pollers of the throughput phase")
    parser.add_argument("--rate", type=float, default=1_000.0, help="paced heartbeats per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per throughput phase")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--endpoints", default=os.environ.get("SRCORE_TEST_ETCD_ENDPOINTS", "127.0.0.1:2379"))
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()

    name = f"srcore_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.postgres, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = args.postgres.rsplit("/", 1)[0] + f"/{name}"
    try:
        db = Database(url)
        await db.migrate()
        await db.dispose()
        with tempfile.TemporaryDirectory(prefix="srcore-failover-") as tmp:
            env = {
                "SRCORE_DATABASE_URL": url,
                "SRCORE_ETCD_ENDPOINTS": args.endpoints,
                "SRCORE_ETCD_PREFIX": f"/srcore-bench/{uuid.uuid4().hex[:8]}/",
                "SRCORE_LEASE_TTL": str(args.ttl),
                "SRCORE_HEARTBEAT_INTERVAL": str(args.heartbeat_interval),
                "SRCORE_HEARTBEAT_TIMEOUT": str(args.heartbeat_timeout),
            }
            bench = Bench(Path(tmp), env, url)
            try:
                bench.start(args.replicas)
                await bench.leader()
                crash = [await bench.handover(signal.SIGKILL) for _ in range(args.rounds)]
                print(f"crash failover (kill -9, lease TTL {args.ttl} s): {seconds(crash)}")
                graceful = [await bench.handover(signal.SIGTERM) for _ in range(args.rounds)]
                print(f"graceful handoff (SIGTERM): {seconds(graceful)}")
                offline = await offline_detection(bench, args.offline_pollers, args.heartbeat_interval)
                print(
                    f"offline detection (heartbeat timeout {args.heartbeat_timeout:g} s, liveness check 1 s):"
                    f" last heartbeat to offline {seconds(offline)}"
                )
            finally:
                bench.stop()
            throughput = argparse.Namespace(
                pollers=args.pollers, rate=args.rate, duration=args.duration, concurrency=args.concurrency
            )
            coordination = {
                "SRCORE_DATABASE_URL": url,
                "SRCORE_ETCD_ENDPOINTS": args.endpoints,
                "SRCORE_ETCD_PREFIX": f"/srcore-bench/{uuid.uuid4().hex[:8]}/",
            }
            await bench_store("postgres+etcd", coordination, throughput, Path(tmp))
    finally:
        with psycopg.connect(args.postgres, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main())
