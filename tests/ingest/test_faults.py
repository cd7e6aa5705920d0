"""Fault tests: a killed server and a restarted database lose nothing acked, store nothing twice."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa

from serviceradar.edge.v1 import results_pb2 as rpb
from srcore.store.database import Database
from srctl.ingest_client import BatchProgress, ResultPusher, RetryPolicy, build_chunks
from tests.helpers.core import running_core, start_core_process
from tests.helpers.db import count_distinct_results, count_rows
from tests.helpers.private_postgres import PrivatePostgres
from tests.helpers.results import host, new_batch_id
from tests.services import free_port

TOTAL = 20_000
PER_CHUNK = 250


def hosts() -> Iterator[rpb.SweepHostResult]:
    """TOTAL distinct hosts, generated lazily."""
    return (host(i) for i in range(TOTAL))


def opening(batch_id: str) -> rpb.BatchOpen:
    """The BatchOpen of the test batch."""
    return rpb.BatchOpen(
        batch_id=batch_id,
        result_type=rpb.RESULT_TYPE_SWEEP_HOSTS,
        partition="dc1",
        expected_chunks=TOTAL // PER_CHUNK,
    )


def edge_channel(address: str, pki: Path) -> grpc.aio.Channel:
    """An mTLS channel with the demo edge certificate."""
    credentials = grpc.ssl_channel_credentials(
        (pki / "ca.pem").read_bytes(), (pki / "edge-default-demo-key.pem").read_bytes(),
        (pki / "edge-default-demo.pem").read_bytes(),
    )  # fmt: skip
    return grpc.aio.secure_channel(address, credentials)


async def push_with_fault(
    address: str, pki: Path, batch_id: str, fault_at: int, fault: object
) -> BatchProgress:
    """Push the batch with the reference client; run `fault()` once `fault_at` chunks are acked."""
    fired = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    def progress(state: BatchProgress) -> None:
        if state.committed_index + 1 >= fault_at and not fired.is_set():
            fired.set()
            tasks.append(asyncio.create_task(asyncio.to_thread(fault)))  # type: ignore[arg-type]

    policy = RetryPolicy(max_retries=60, initial_backoff=0.2, max_backoff=1.0, deadline=120)
    async with edge_channel(address, pki) as channel, ResultPusher.over(channel, policy) as pusher:
        chunks = build_chunks(
            hosts(), batch_id=batch_id, result_type=rpb.RESULT_TYPE_SWEEP_HOSTS, chunk_size=PER_CHUNK
        )
        result = await pusher.push(opening(batch_id), chunks, on_progress=progress)
    await asyncio.gather(*tasks)
    assert fired.is_set(), "the fault never ran"
    return result


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
async def test_server_killed_with_sigkill_mid_batch_loses_and_duplicates_nothing(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    data = tmp_path / "data"
    env = {"SRCORE_GRACE_PERIOD": "1"}
    url = ""
    if store == "postgres":
        url = request.getfixturevalue("fresh_database")
        env["SRCORE_DATABASE_URL"] = url
    port = free_port()
    core = start_core_process(data, port, env)
    restarted: list[object] = []

    def kill_and_restart() -> None:
        core.process.send_signal(signal.SIGKILL)
        core.process.wait(timeout=10)
        restarted.append(start_core_process(data, port, env))

    batch = new_batch_id()
    try:
        result = await push_with_fault(core.address, data / "pki", batch, fault_at=30, fault=kill_and_restart)
    finally:
        for process in [core, *restarted]:
            process.terminate(signal.SIGKILL)  # type: ignore[attr-defined]
    assert result.retries >= 1
    db = Database(url or f"sqlite:///{data / 'srcore.db'}")
    try:
        assert await count_rows(db, "sweep_host_results") == TOTAL
        assert await count_distinct_results(db, "sweep_host_results") == TOTAL
        async with db.connect() as conn:
            state = await conn.scalar(sa.text(f"SELECT state FROM ingest_batches WHERE batch_id = '{batch}'"))
        assert state == "committed"
    finally:
        await db.dispose()


async def test_postgres_restarted_during_ingest_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    postgres = PrivatePostgres().init()
    postgres.start()
    try:

        def crash_and_restart() -> None:
            postgres.crash()
            postgres.start()

        async with running_core(tmp_path / "data", database_url=postgres.url) as core:
            batch = new_batch_id()
            result = await push_with_fault(core.address, core.data_dir / "pki", batch, 25, crash_and_restart)
            assert result.retries >= 1
            assert await count_rows(core.app.db, "sweep_host_results") == TOTAL
            assert await count_distinct_results(core.app.db, "sweep_host_results") == TOTAL
    finally:
        postgres.remove()
