"""Ingest benchmark: ReportResults end to end against the raw limits of this machine.

    python -m bench.ingest [--results 300000] [--streams 1,10,100] [--per-chunk 500,2000]
                           [--stores postgres,sqlite] [--rss 1000000,10000000]

In one run, on the same generated data:
  (a) raw gRPC streaming: a server that parses each chunk and discards it;
  (b) raw PostgreSQL binary COPY of the same rows from Python (psycopg), rows built beforehand;
      and (b') the same COPY with each chunk parsed and turned into rows as it goes (the
      least any server must do per result, with none of the bookkeeping: no ledger, acks,
      credits, processing or identity);
  (d) the CPU every sweep result costs at the least: (b')'s own CPU per result (parsing and
      COPY formatting in Python) plus PostgreSQL's for the two writes every result needs (binary
      COPY into the raw table, then the latest-state projection's upsert into host_latest, read
      from its backend's CPU time); hence the most a server doing only that could sustain on
      this machine's cores, with the database on them, and the highest (c)/(b) that allows;
  (c) end to end through `srcore serve` into PostgreSQL and into SQLite,
      with 1, 10 and 100 concurrent streams at 500 and 2,000 results per chunk.
The load generator is another process that assembles chunks from pre-serialised payloads.
Prints results/s, ack latency p50/p99, server peak RSS, and the ratio (c)/(b). Results are
acknowledged once stored; processing (latest state, checker states) and device identity run
after, off the ack path: "settled" is the rate counting until they have caught up too.
Set SRCORE_IDENTITY_ENABLED=false to measure without device identity.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from bench.common import (
    BacklogWatch,
    cpu_seconds,
    free_port,
    peak_rss_mib,
    reset_peak_rss,
    start_core,
)
from bench.ingest_client import payloads
from serviceradar.edge.v1 import results_pb2 as rpb
from srcore.domain.ingest import ResultKind
from srcore.ingest.rows import ChunkOrigin, Tally, sweep_rows
from srcore.security.pki import ensure_dev_pki
from srcore.store.database import Database
from srcore.store.flush_reads import FLUSH_INDEXES
from srcore.store.ingest import COPY_TYPES, TABLES
from srcore.store.processing import host_projection


def run_client(address: str, pki: Path, streams: int, per_chunk: int, results: int) -> dict[str, float]:
    """Run the load generator in its own process; returns its figures."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.ingest_client", "--address", address, "--pki", str(pki),
         "--streams", str(streams), "--per-chunk", str(per_chunk), "--results", str(results)],
        capture_output=True, text=True, check=False, timeout=3600,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{out.stderr}")
    figures: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def identity_enabled() -> bool:
    """Whether the cores this benchmark starts resolve device identity (their default)."""
    return os.environ.get("SRCORE_IDENTITY_ENABLED", "true").lower() in ("1", "true", "yes", "on")


def backlog_query() -> str:
    """Counts committed flushes not yet processed (or, with identity on, not yet identified)."""
    query = "SELECT count(*) FROM ingest_flushes WHERE NOT projected"
    if identity_enabled():
        query = f"SELECT ({query}) + (SELECT count(*) FROM identity_pending)"
    return query


def connector(url: str, data: Path) -> Callable[[], Any]:
    """Opens a connection to the benchmarked core's store: PostgreSQL at `url`, else its SQLite."""
    if url:
        return lambda: psycopg.connect(url, autocommit=True)
    return lambda: sqlite3.connect(data / "srcore.db")


def run_settled(
    address: str, pki: Path, streams: int, per_chunk: int, results: int, url: str, data: Path
) -> dict[str, float]:
    """Run the load generator; adds `settled`, results/s until processing had caught up too."""
    with BacklogWatch(connector(url, data), backlog_query()) as watch:
        figures = run_client(address, pki, streams, per_chunk, results)
        settled_at = watch.settled_at(figures["ended_at"])
    figures["settled"] = figures["results"] / (settled_at - figures["started_at"])
    return figures


def wait_settled(url: str, data: Path) -> None:
    """Return once processing (and identity, when on) has caught up with every committed flush."""
    with BacklogWatch(connector(url, data), backlog_query()) as watch:
        watch.settled_at(time.time())


def line(label: str, figures: dict[str, float], rss: float | None = None) -> str:
    """One printed row of figures."""
    text = (
        f"{label:<42} {figures['rate']:>10,.0f} results/s   ack p50 {figures['p50'] * 1000:6.1f} ms"
        f"   p99 {figures['p99'] * 1000:7.1f} ms"
    )
    if "settled" in figures:
        text += f"   settled {figures['settled']:>8,.0f}/s"
    return text + (f"   server peak RSS {rss:6.0f} MiB" if rss is not None else "")


def copy_rows(per_chunk: int) -> list[tuple[Any, ...]]:
    """The rows the server would write for the payload pool (same conversion code)."""
    rows: list[tuple[Any, ...]] = []
    now = datetime.now(UTC)
    for p, payload in enumerate(payloads(per_chunk)):
        results = rpb.SweepHostResults.FromString(payload).results
        origin = ChunkOrigin("default", "bench", "demo", "", str(uuid.uuid4()), p, 1)
        sweep_rows(results, origin, now, now, lambda d: d, rows, Tally())
    return rows


async def sweep_copy_statement(url: str) -> str:
    """Bring the benchmark database to the core's schema; returns the raw sweep table's COPY."""
    db = Database(url)
    await db.migrate()
    await db.dispose()
    table, columns = TABLES[ResultKind.SWEEP_HOSTS]
    return f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"


async def copy_flush(conn: psycopg.AsyncConnection[Any], statement: str, rows: list[tuple[Any, ...]]) -> None:
    """Binary COPY of `rows` into the raw sweep table in one transaction, as the writer commits."""
    async with conn.cursor() as cursor, cursor.copy(statement) as copy:
        copy.set_types(COPY_TYPES[ResultKind.SWEEP_HOSTS])
        for row in rows:
            await copy.write_row(row)
    await conn.commit()


async def copy_rate(
    url: str, total: int, next_rows: Callable[[int], list[tuple[Any, ...]]]
) -> tuple[float, float]:
    """Rows per second of binary COPY into sweep_host_results, from Python, until `total`.

    Each transaction writes `next_rows(rows written so far)`, timed with the COPY. Also returns
    this process's CPU per row in µs: making the rows, formatting and sending them.
    """
    statement = await sweep_copy_statement(url)
    written = 0
    async with await psycopg.AsyncConnection.connect(url) as conn:
        started = time.perf_counter()
        cpu = time.process_time()
        while written < total:
            rows = next_rows(written)
            await copy_flush(conn, statement, rows)
            written += len(rows)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
    return written / elapsed, cpu * 1e6 / written


async def raw_copy(url: str, total: int) -> tuple[float, float]:
    """(b): COPY of rows built beforehand, the pool's 32,000 rows per transaction."""
    rows = copy_rows(500)
    return await copy_rate(url, total, lambda _: rows)


async def raw_copy_from_chunks(
    url: str, total: int, per_chunk: int = 500, flush: int = 5000
) -> tuple[float, float]:
    """(b'): each transaction's `flush` results parsed from serialised chunks into rows first.

    Uses the server's row-building code and commits every `flush` results, as the writer does.
    """
    pool = payloads(per_chunk)
    batch = str(uuid.uuid4())

    def parsed(written: int) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        now = datetime.now(UTC)
        for index in range(written // per_chunk, (written + flush) // per_chunk):
            results = rpb.SweepHostResults.FromString(pool[index % len(pool)]).results
            origin = ChunkOrigin("default", "bench", "demo", "", batch, index, 1)
            sweep_rows(results, origin, now, now, lambda d: d, rows, Tally())
        return rows

    return await copy_rate(url, total, parsed)


async def postgres_floor(url: str, sweeps: int = 4, flush: int = 5000) -> tuple[float, float]:
    """(d): PostgreSQL CPU per result of the raw COPY and of the host_latest projection, in µs.

    The pool's hosts are swept `sweeps` times, `flush` results per transaction as the writer
    commits them. Each flush is COPYed, then projected as the projector does it: new BRIN ranges
    summarised, sequential scans off, the projector's own upsert. The first sweep inserts into
    host_latest; the figures are the later sweeps', which update it as a fleet's repeat sweeps
    do. CPU is read from the backend process, so neither Python nor the client counts.
    """
    statement = await sweep_copy_statement(url)
    pool = payloads(500)
    per_flush = flush // 500
    copy_cpu = projection_cpu = 0.0
    counted = 0
    flush_id = 0
    async with await psycopg.AsyncConnection.connect(url) as conn:
        found = await (await conn.execute("SELECT pg_backend_pid()")).fetchone()
        assert found is not None
        backend = int(found[0])
        for sweep in range(sweeps):
            observed = datetime.now(UTC)
            for first in range(0, len(pool) - per_flush + 1, per_flush):
                flush_id += 1
                rows: list[tuple[Any, ...]] = []
                for index in range(first, first + per_flush):
                    origin = ChunkOrigin("default", "bench", "demo", "", f"sweep-{sweep}", index, flush_id)
                    results = rpb.SweepHostResults.FromString(pool[index]).results
                    sweep_rows(results, origin, observed, observed, lambda d: d, rows, Tally())
                started = cpu_seconds(backend)
                await copy_flush(conn, statement, rows)
                copied = cpu_seconds(backend)
                await conn.execute("SELECT brin_summarize_new_values(%s::regclass)", (FLUSH_INDEXES[0],))
                await conn.execute("SET LOCAL enable_seqscan = off")
                await conn.execute(host_projection("postgresql", 64, [flush_id]).encode())
                await conn.commit()
                if sweep:
                    copy_cpu += copied - started
                    projection_cpu += cpu_seconds(backend) - copied
                    counted += len(rows)
    return copy_cpu * 1e6 / counted, projection_cpu * 1e6 / counted


def create_database(admin_url: str) -> str:
    """A fresh PostgreSQL database; returns its URL."""
    name = f"srcore_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def drop_database(admin_url: str, url: str) -> None:
    """Drop a database made by create_database."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def main() -> None:
    """Run every scenario and print the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=int, default=300_000, help="results per scenario")
    parser.add_argument("--streams", default="1,10,100")
    parser.add_argument("--per-chunk", default="500,2000")
    parser.add_argument("--stores", default="postgres,sqlite")
    parser.add_argument("--rss", default="", help="e.g. 1000000,10000000: peak RSS at growing volumes")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    streams = [int(s) for s in args.streams.split(",")]
    sizes = [int(s) for s in args.per_chunk.split(",")]
    work = Path(tempfile.mkdtemp(prefix="srcore-ingest-bench-"))
    try:
        pki = ensure_dev_pki(work / "pki").directory
        print(f"ingest benchmark: {args.results:,} results per scenario\n")

        port = free_port()
        raw = subprocess.Popen([sys.executable, "-m", "bench.raw_stream_server", str(port), str(pki)],
                               stdout=subprocess.PIPE)  # fmt: skip
        try:
            assert raw.stdout is not None
            raw.stdout.readline()
            for size in sizes:
                for n in streams:
                    figures = run_client(f"127.0.0.1:{port}", pki, n, size, args.results)
                    print(line(f"(a) raw gRPC, {n} streams x {size}/chunk", figures))
        finally:
            raw.terminate()
            raw.wait()

        url = create_database(args.postgres)
        try:
            copy_rate, _ = asyncio.run(raw_copy(url, max(args.results, 500_000)))
            parsed_rate, python_us = asyncio.run(raw_copy_from_chunks(url, max(args.results, 500_000)))
        finally:
            drop_database(args.postgres, url)
        url = create_database(args.postgres)
        try:
            copy_us, projection_us = asyncio.run(postgres_floor(url))
        finally:
            drop_database(args.postgres, url)
        print(f"{'(b) raw PostgreSQL binary COPY from Python':<42} {copy_rate:>10,.0f} rows/s")
        label = "(b') the same, parsing chunks into rows"
        print(f"{label:<42} {parsed_rate:>10,.0f} results/s")
        cores = os.cpu_count() or 1
        database = cores * 1e6 / (copy_us + projection_us)
        ceiling = cores * 1e6 / (python_us + copy_us + projection_us)
        print(f"(d) CPU per result: parsing into rows and COPY formatting in Python {python_us:.2f} us "
              f"(from (b')), PostgreSQL's COPY {copy_us:.2f} us and latest-state projection "
              f"{projection_us:.2f} us;\n    on {cores} cores PostgreSQL's part alone allows at most "
              f"{database:,.0f} results/s, (c)/(b) <= {database / copy_rate:.2f}; with the parsing, "
              f"{ceiling:,.0f} results/s, (c)/(b) <= {ceiling / copy_rate:.2f}\n")  # fmt: skip

        for store in args.stores.split(","):
            env: dict[str, str] = {}
            url = ""
            if store == "postgres":
                url = create_database(args.postgres)
                env["SRCORE_DATABASE_URL"] = url
            data = work / store
            data.mkdir()
            shutil.copytree(pki, data / "pki")
            port = free_port()
            core = start_core(data, port, env)
            try:
                for size in sizes:
                    for n in streams:
                        reset_peak_rss(core.pid)
                        figures = run_settled(
                            f"127.0.0.1:{port}", data / "pki", n, size, args.results, url, data
                        )
                        ratio = (
                            f"   (c)/(b) {figures['rate'] / copy_rate:.2f}"
                            f"   (c)/(b') {figures['rate'] / parsed_rate:.2f}"
                            if store == "postgres"
                            else ""
                        )
                        print(
                            line(f"(c) {store}, {n} streams x {size}/chunk", figures, peak_rss_mib(core.pid))
                            + ratio
                        )
                for volume in [int(v) for v in args.rss.split(",") if v]:
                    reset_peak_rss(core.pid)
                    figures = run_settled(f"127.0.0.1:{port}", data / "pki", 10, 500, volume, url, data)
                    print(line(f"(c) {store}, {volume:,} results, 10 x 500", figures, peak_rss_mib(core.pid)))
            finally:
                core.terminate()
                core.wait(timeout=60)
                if url:
                    drop_database(args.postgres, url)
            print()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
