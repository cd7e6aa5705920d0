"""Dispatch benchmark: configuration push latency, recovery time, and bulk placement.

    python -m bench.dispatch --changes 1000 --checks 100000 --pollers 1000

1. Push latency: an operator changes a check (UpdateCheck of its interval) and the edge's
   SyncConfig stream receives the configuration with the new value; --changes changes, one
   at a time, p50/p99 from the RPC call to the stream message. Measured twice: one embedded
   replica (SQLite, in-process coordination), and the production path across replicas: the
   change through replica 1, the stream held by replica 2, two `srcore serve` processes on
   one etcd and one PostgreSQL database (the signal crosses etcd twice: to the leader, and
   from the leader to replica 2).
2. Recovery: a replica in this process (etcd, PostgreSQL) whose poller p1 runs half of
   --recovery-checks checks goes silent; timed from its registry entry expiring (offline
   detection: the lease ran out) to poller p2's stream delivering the configuration with all
   of them; also from p1's last heartbeat. Repeated --rounds times (p1 registers again in
   between, and the rebalance on its return gives it its share back).
3. Bulk placement: --checks checks in one partition of --pollers pollers, none placed yet,
   then one dispatch round as the leader runs it (read, plan, fenced write, versions,
   announcement), on PostgreSQL; and the planning alone.
4. Resync: the leader's periodic full round (every `dispatch_resync_interval`) over a placed
   fleet that has not changed: --resync-pollers pollers in --resync-partitions partitions with
   one check each, on etcd and PostgreSQL. It changes nothing, and it runs on the event loop
   that answers heartbeats, so it prints the round's time, the CPU it took from the replica's
   process (what the calls arriving meanwhile cannot have), and the longest the loop was held
   during it (a 1 ms timer's worst lateness).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aetcd
import grpc
import psycopg

from bench.common import free_port, ms, percentile, start_core
from serviceradar.admin.v1 import check_service_pb2 as check_pb
from serviceradar.admin.v1 import check_service_pb2_grpc as check_grpc
from serviceradar.admin.v1 import partition_service_pb2 as partition_pb
from serviceradar.admin.v1 import partition_service_pb2_grpc as partition_grpc
from serviceradar.edge.v1 import config_pb2
from serviceradar.edge.v1 import edge_service_pb2 as pb
from serviceradar.edge.v1 import edge_service_pb2_grpc as pb_grpc
from srcore.app import CoreApp
from srcore.coord.etcd_client import parse_endpoint
from srcore.domain import dispatch
from srcore.domain.coordination import LeaderInfo, RegistryChange
from srcore.domain.model import Registration
from srcore.domain.work import Assignment, AssignmentState, CheckSpec, CheckType, WorkItem, WorkKind
from srcore.security.pki import issue_edge_certificate, load_or_create_ca
from srcore.settings import Settings
from srcore.store.tables import work_items
from srcore.store.work import WorkRepository, item_row


@dataclass
class Silence:
    """Whether the poller under test is "killed", and when it last heartbeated."""

    silent: bool = False
    last_heartbeat: float = 0.0


async def receive(
    stream: grpc.aio.UnaryStreamCall[pb.SyncConfigRequest, pb.SyncConfigResponse],
) -> pb.SyncConfigResponse:
    """The next message of a SyncConfig stream (it never ends by itself)."""
    message = await stream.read()
    assert isinstance(message, pb.SyncConfigResponse), "the stream ended"
    return message


# Longest wait for anything the benchmark expects: a bug must not hang it.
WAIT = 60.0


def edge_credentials(pki: Path, poller_id: str) -> grpc.ChannelCredentials:
    """mTLS credentials of poller `poller_id` of the default tenant, from the dev CA."""
    ca = load_or_create_ca(pki, "unused: the CA exists")
    issued = issue_edge_certificate(ca, "serviceradar", "default", poller_id, timedelta(days=1))
    return grpc.ssl_channel_credentials((pki / "ca.pem").read_bytes(), issued.key_pem, issued.cert_pem)


def operator_credentials(pki: Path) -> grpc.ChannelCredentials:
    """mTLS credentials of the dev platform operator."""
    ca, key, cert = ((pki / name).read_bytes() for name in ("ca.pem", "operator-key.pem", "operator.pem"))
    return grpc.ssl_channel_credentials(ca, key, cert)


def check_request(name: str, partition: str = "dc1", seconds: int = 60) -> check_pb.CreateCheckRequest:
    """An ICMP check."""
    spec = check_pb.CheckSpec(partition=partition, check_type=config_pb2.CHECK_TYPE_ICMP, target="10.0.0.1")
    spec.interval.FromSeconds(seconds)
    return check_pb.CreateCheckRequest(name=name, spec=spec)


async def push_latency(label: str, admin_address: str, edge_address: str, pki: Path, changes: int) -> None:
    """Time `changes` UpdateCheck calls until the stream shows each (see the module docstring)."""
    async with (
        grpc.aio.secure_channel(admin_address, operator_credentials(pki)) as admin,
        grpc.aio.secure_channel(edge_address, edge_credentials(pki, "bench-p1")) as edge_channel,
    ):
        await partition_grpc.PartitionServiceStub(admin).CreatePartition(
            partition_pb.CreatePartitionRequest(name="dc1")
        )
        edge = pb_grpc.EdgeServiceStub(edge_channel)
        await edge.RegisterPoller(
            pb.RegisterPollerRequest(poller_id="bench-p1", partition="dc1", capabilities=["icmp"])
        )
        checks = check_grpc.CheckServiceStub(admin)
        await checks.CreateCheck(check_request("bench-check"))
        stream = edge.SyncConfig(pb.SyncConfigRequest(poller_id="bench-p1"))
        while not (await receive(stream)).config.checks:
            pass
        latencies = []
        for n in range(changes):
            seconds = 30 + n % 2  # differs from the previous value (60 at first)
            mask_request = check_pb.UpdateCheckRequest(name="bench-check", spec=check_pb.CheckSpec())
            mask_request.spec.interval.FromSeconds(seconds)
            mask_request.update_mask.paths.append("interval")
            started = time.perf_counter()
            await checks.UpdateCheck(mask_request)
            async with asyncio.timeout(WAIT):
                while True:
                    message = await receive(stream)
                    if message.config.checks and message.config.checks[0].interval.seconds == seconds:
                        break
            latencies.append(time.perf_counter() - started)
        stream.cancel()
    print(
        f"[push {label}] {changes} changes, admin change -> edge stream: "
        f"p50 {ms(percentile(latencies, 0.5))}, p99 {ms(percentile(latencies, 0.99))}, "
        f"max {ms(max(latencies))}, mean {ms(statistics.fmean(latencies))}"
    )


@asynccontextmanager
async def database(admin_url: str) -> AsyncIterator[str]:
    """A fresh PostgreSQL database (SQLAlchemy URL), dropped afterwards."""
    name = f"srcore_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


async def wipe(endpoints: list[str], prefix: str) -> None:
    """Delete the benchmark's etcd keys."""
    client = aetcd.Client(*parse_endpoint(endpoints[0]), timeout=3)
    try:
        await client.delete_prefix(prefix.encode())
    finally:
        await client.close()


async def bench_push(args: argparse.Namespace, work: Path) -> None:
    """Push latency on one embedded replica, then across two replicas on etcd and PostgreSQL."""
    quiet = {"SRCORE_SYNC_KEEPALIVE_INTERVAL": "300", "SRCORE_HEARTBEAT_TIMEOUT": "600"}
    port = free_port()
    embedded = start_core(work / "embedded", port, quiet)
    try:
        address = f"127.0.0.1:{port}"
        await push_latency("1 replica, SQLite", address, address, work / "embedded" / "pki", args.changes)
    finally:
        embedded.terminate()
        embedded.wait(timeout=30)

    prefix = f"/srcore-bench/{uuid.uuid4().hex[:8]}/"
    async with database(args.postgres) as url:
        env = {**quiet, "SRCORE_DATABASE_URL": url, "SRCORE_ETCD_ENDPOINTS": ",".join(args.etcd)}
        env["SRCORE_ETCD_PREFIX"] = prefix
        ports = [free_port(), free_port()]
        replicas = [start_core(work / "cluster", p, env) for p in ports]
        try:
            await push_latency(
                "replica 1 -> replica 2, etcd + PostgreSQL",
                f"127.0.0.1:{ports[0]}",
                f"127.0.0.1:{ports[1]}",
                work / "cluster" / "pki",
                args.changes,
            )
        finally:
            for replica in replicas:
                replica.terminate()
                replica.wait(timeout=30)
            await wipe(args.etcd, prefix)


@asynccontextmanager
async def core_here(
    work: Path, url: str, etcd: list[str], prefix: str, **settings: object
) -> AsyncIterator[CoreApp]:
    """A replica in this process on etcd and PostgreSQL."""
    options: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "metrics_listen": "",
        "database_url": url,
        "etcd_endpoints": etcd,
        "etcd_prefix": prefix,
        "log_level": "warning",
        **settings,
    }
    app = CoreApp(Settings(data_dir=work, **options).validate())
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


async def bench_recovery(args: argparse.Namespace, work: Path) -> None:
    """Offline detection -> the new owner's stream delivering the reassigned configuration."""
    prefix = f"/srcore-bench/{uuid.uuid4().hex[:8]}/"
    async with (
        database(args.postgres) as url,
        core_here(
            work / "recovery",
            url,
            args.etcd,
            prefix,
            heartbeat_interval=1.0,
            heartbeat_timeout=3.0,
            sync_keepalive_interval=300.0,
        ) as app,
    ):
        pki = work / "recovery" / "pki"
        address = f"127.0.0.1:{app.port}"
        async with (
            grpc.aio.secure_channel(address, operator_credentials(pki)) as admin,
            grpc.aio.secure_channel(address, edge_credentials(pki, "p1")) as c1,
            grpc.aio.secure_channel(address, edge_credentials(pki, "p2")) as c2,
        ):
            await partition_grpc.PartitionServiceStub(admin).CreatePartition(
                partition_pb.CreatePartitionRequest(name="dc1")
            )
            p1, p2 = pb_grpc.EdgeServiceStub(c1), pb_grpc.EdgeServiceStub(c2)
            sessions = {}
            for poller_id, stub in (("p1", p1), ("p2", p2)):
                answer = await stub.RegisterPoller(
                    pb.RegisterPollerRequest(poller_id=poller_id, partition="dc1", capabilities=["icmp"])
                )
                sessions[poller_id] = answer.session_id
            p1_state = Silence()

            async def heartbeats() -> None:
                while True:
                    for poller_id, stub in (("p1", p1), ("p2", p2)):
                        if poller_id == "p1" and p1_state.silent:
                            continue
                        request = pb.ReportHealthRequest(session_id=sessions[poller_id], poller_id=poller_id)
                        with contextlib.suppress(grpc.aio.AioRpcError):
                            await stub.ReportHealth(request)
                            if poller_id == "p1":
                                p1_state.last_heartbeat = time.perf_counter()
                    await asyncio.sleep(0.2)

            beat_task = asyncio.create_task(heartbeats())
            checks = check_grpc.CheckServiceStub(admin)
            for n in range(args.recovery_checks):
                await checks.CreateCheck(check_request(f"c{n:05d}"))
            stream = p2.SyncConfig(pb.SyncConfigRequest(poller_id="p2"))
            changes = app.coordinator.registry.changes()
            detections: list[float] = []
            since_heartbeat: list[float] = []
            try:
                for _ in range(args.rounds):
                    async with asyncio.timeout(WAIT):
                        # Wait until the two share the work, then kill p1.
                        while True:
                            message = await receive(stream)
                            if message.config.checks and len(message.config.checks) < args.recovery_checks:
                                break
                        # Let p1 heartbeat once more, so its last heartbeat is this round's.
                        await asyncio.sleep(0.5)
                        p1_state.silent = True
                        last = p1_state.last_heartbeat
                        while True:
                            event = await anext(changes)
                            if event.change is RegistryChange.DELETED and event.entry.poller_id == "p1":
                                detected = time.perf_counter()
                                break
                        while True:
                            message = await receive(stream)
                            if len(message.config.checks) == args.recovery_checks:
                                delivered = time.perf_counter()
                                break
                        detections.append(delivered - detected)
                        since_heartbeat.append(delivered - last)
                        answer = await p1.RegisterPoller(
                            pb.RegisterPollerRequest(poller_id="p1", partition="dc1", capabilities=["icmp"])
                        )
                        sessions["p1"] = answer.session_id
                        p1_state.silent = False
            finally:
                beat_task.cancel()
                changes.close()
                stream.cancel()
    await wipe(args.etcd, prefix)
    print(
        f"[recovery] {args.rounds} rounds, {args.recovery_checks // 2} of {args.recovery_checks} checks "
        "moved: "
        f"offline detection -> new owner's stream p50 {ms(percentile(detections, 0.5))}, "
        f"max {ms(max(detections))}; last heartbeat -> new owner's stream (heartbeat timeout 3 s) "
        f"p50 {ms(percentile(since_heartbeat, 0.5))}"
    )


@asynccontextmanager
async def replica_alone(args: argparse.Namespace, work: Path) -> AsyncIterator[CoreApp]:
    """A replica in this process on a database and etcd prefix of its own, whose liveness
    monitor and periodic dispatch stay out of what is timed."""
    prefix = f"/srcore-bench/{uuid.uuid4().hex[:8]}/"
    async with (
        database(args.postgres) as url,
        core_here(
            work, url, args.etcd, prefix, heartbeat_timeout=3600.0, dispatch_resync_interval=3600.0
        ) as app,
    ):
        yield app
    await wipe(args.etcd, prefix)


async def register_alone(app: CoreApp, registrations: list[Registration], label: str) -> LeaderInfo:
    """Register the fleet, then stop the leader's own jobs and return its leadership.

    What is timed next runs alone: the leader's dispatcher cannot place the checks first, and
    its leadership, hence its fencing token, stays.
    """
    started = time.perf_counter()
    for start in range(0, len(registrations), 100):
        await asyncio.gather(*(app.registry.register(r) for r in registrations[start : start + 100]))
    print(
        f"[{label}] registered {len(registrations)} pollers in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    leader = app.leader_jobs.running
    assert leader is not None, "this replica leads (it is the only one)"
    await app.leader_jobs.stop()
    return leader


def unplaced_check(partition: str) -> WorkItem:
    """An ICMP check not placed yet, to copy with its name, id and partition."""
    now = datetime.now(UTC)
    spec = CheckSpec(CheckType.ICMP, "10.0.0.1", 0, 60.0, 5.0)
    return WorkItem(
        "default", WorkKind.CHECK, "", "", partition, True, spec, Assignment(AssignmentState.UNASSIGNED),
        created_at=now, updated_at=now,
    )  # fmt: skip


async def bench_bulk(args: argparse.Namespace, work: Path) -> None:
    """One dispatch round placing --checks new checks over --pollers pollers."""
    async with replica_alone(args, work / "bulk") as app:
        registrations = [
            Registration(tenant="default", poller_id=f"p{n:04d}", partition="dc1", capabilities=("icmp",))
            for n in range(args.pollers)
        ]
        leader = await register_alone(app, registrations, "bulk")
        template = unplaced_check("dc1")
        repository = WorkRepository(app.db)
        started = time.perf_counter()
        rows = []
        for n in range(args.checks):
            item = replace(template, name=f"c{n:06d}", item_id=uuid.uuid4().hex)
            rows.append(item_row(item, None))
        async with app.db.begin() as conn:
            for start in range(0, len(rows), 5000):
                await conn.execute(work_items.insert(), rows[start : start + 5000])
        print(
            f"[bulk] stored {args.checks} unplaced checks in {time.perf_counter() - started:.1f} s",
            flush=True,
        )

        view = await repository.dispatch_view("default", "dc1")
        candidates = [dispatch.Candidate(p, frozenset({"icmp"})) for p in view.pollers]
        started = time.perf_counter()
        planned = dispatch.plan("dc1", [i.placeable for i in view.items], candidates)
        plan_seconds = time.perf_counter() - started
        started = time.perf_counter()
        outcome = await app.dispatcher.place("default", "dc1", leader)
        round_seconds = time.perf_counter() - started
        loads = list(planned.loads.values())
    print(
        f"[bulk] {args.checks:,} checks over {args.pollers:,} pollers (PostgreSQL): one dispatch round "
        f"{round_seconds:.2f} s ({outcome.placements:,} placements, {len(outcome.versions):,} versions); "
        f"planning alone {plan_seconds:.2f} s; load per poller {min(loads)}-{max(loads)}"
    )


async def loop_holds(done: asyncio.Event) -> float:
    """The longest a 1 ms timer fired late until `done` is set: how long the loop was held."""
    worst = 0.0
    while not done.is_set():
        started = time.perf_counter()
        await asyncio.sleep(0.001)
        worst = max(worst, time.perf_counter() - started - 0.001)
    return worst


async def bench_resync(args: argparse.Namespace, work: Path) -> None:
    """Full dispatch rounds over a placed fleet that has not changed (see the module docstring)."""
    partitions = [f"dc{n}" for n in range(args.resync_partitions)]
    async with replica_alone(args, work / "resync") as app:
        registrations = [
            Registration("default", f"p{n:05d}", partitions[n % len(partitions)], capabilities=("icmp",))
            for n in range(args.resync_pollers)
        ]
        leader = await register_alone(app, registrations, "resync")
        template = unplaced_check("")
        rows = [
            item_row(replace(template, name=f"c{n:06d}", item_id=uuid.uuid4().hex, partition=partition), None)
            for n in range(args.resync_pollers)
            for partition in [partitions[n % len(partitions)]]
        ]
        async with app.db.begin() as conn:
            for start in range(0, len(rows), 5000):
                await conn.execute(work_items.insert(), rows[start : start + 5000])
        first = await app.dispatcher.dispatch({}, True, leader)
        placed = sum(outcome.placements for outcome in first.values())
        rounds: list[float] = []
        holds: list[float] = []
        cpus: list[float] = []
        for _ in range(args.resync_rounds):
            done = asyncio.Event()
            watcher = asyncio.create_task(loop_holds(done))
            await asyncio.sleep(0.01)
            started, cpu = time.perf_counter(), time.process_time()
            outcomes = await app.dispatcher.dispatch({}, True, leader)
            rounds.append(time.perf_counter() - started)
            cpus.append(time.process_time() - cpu)
            done.set()
            holds.append(await watcher)
            assert not any(o.placements or o.versions for o in outcomes.values()), "a resync changed nothing"
    print(
        f"[resync] {args.resync_pollers:,} pollers in {len(partitions)} partitions, {placed:,} checks "
        "placed: "
        f"full round over an unchanged fleet p50 {ms(percentile(rounds, 0.5))}, max {ms(max(rounds))}, "
        f"this process's CPU p50 {ms(percentile(cpus, 0.5))}; "
        f"longest loop hold p50 {ms(percentile(holds, 0.5))}, max {ms(max(holds))}"
    )


async def main() -> None:
    """Parse arguments and run the requested parts."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--changes", type=int, default=1000, help="changes timed for push latency")
    parser.add_argument("--recovery-checks", type=int, default=1000, help="checks in the recovery partition")
    parser.add_argument("--rounds", type=int, default=5, help="recovery rounds")
    parser.add_argument("--checks", type=int, default=100_000, help="checks placed in bulk")
    parser.add_argument("--pollers", type=int, default=1000, help="pollers the bulk checks go to")
    parser.add_argument("--resync-pollers", type=int, default=10_000, help="pollers of the resync fleet")
    parser.add_argument("--resync-partitions", type=int, default=10, help="partitions of the resync fleet")
    parser.add_argument("--resync-rounds", type=int, default=5, help="resync rounds timed")
    parser.add_argument("--parts", default="push,recovery,bulk,resync")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("SRCORE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    parser.add_argument(
        "--etcd",
        default=os.environ.get("SRCORE_TEST_ETCD_ENDPOINTS", "127.0.0.1:2379"),
        type=lambda s: s.split(","),
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="srcore-bench-") as tmp:
        work = Path(tmp)
        parts = args.parts.split(",")
        if "push" in parts:
            await bench_push(args, work)
        if "recovery" in parts:
            await bench_recovery(args, work)
        if "bulk" in parts:
            await bench_bulk(args, work)
        if "resync" in parts:
            await bench_resync(args, work)


if __name__ == "__main__":
    asyncio.run(main())
