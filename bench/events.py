"""Events benchmark: the outbox and relay into JetStream against raw nats-py publishing.

    python -m bench.events --events 20000 --outage 60 --rate 100

Everything runs in one process against real PostgreSQL and a nats-server with JetStream that
the benchmark starts for itself (so it can stop it), in the same run:

1. raw: nats-py JetStream publishes of event-sized messages with a message id, awaiting each
   ack, then asynchronously with at most --in-flight acks outstanding (the raw limits);
2. relay drain: --events events already in the outbox (written 500 per transaction, as the
   heartbeat flusher writes them), published by the relay; events/s until the last is stored;
3. end to end: writers record --events transitions while the relay runs; events/s from the
   first write until the last event is in the stream;
4. outage: a writer records --rate transitions/s, NATS is killed for --outage seconds and
   started again; the drain time runs from the restart until the backlog is empty again,
   and every event must be in the stream exactly once.

Prints figures; asserts nothing but the correctness of the outage run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import nats
import psycopg
import sqlalchemy as sa
from nats.js import JetStreamContext

from bench.common import free_port
from srcore.domain.model import Transition
from srcore.events.bus import NatsBus
from srcore.events.config import EventConfig
from srcore.events.outbox import Outbox, OutboxSignal
from srcore.events.relay import Relay, ensure_stream
from srcore.events.schema import Event
from srcore.settings import Settings
from srcore.store.database import Database
from srcore.store.tables import event_outbox
from srcore.store.transitions import record_transitions

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
WRITE_BATCH = 500
ENTITIES = 2000
STATES = ("healthy", "degraded")


class NatsProcess:
    """A nats-server with JetStream on a free port; killed and restarted by PID."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Client URL."""
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start and wait until it greets clients."""
        self.process = subprocess.Popen(
            [NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.5) as sock,
            ):
                if sock.recv(4) == b"INFO":
                    return
            time.sleep(0.05)
        raise RuntimeError("nats-server did not start")

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None


def transitions(start: int, count: int) -> list[Transition]:
    """`count` transitions over ENTITIES pollers, numbered from `start`."""
    now = datetime.now(UTC)
    out = []
    for n in range(start, start + count):
        entity, step = n % ENTITIES, n // ENTITIES
        old, new = STATES[step % 2], STATES[(step + 1) % 2]
        out.append(Transition("bench", "poller", f"p{entity}", old, new, "bench", now))
    return out


async def write(db: Database, total: int, start: int = 0) -> None:
    """Record `total` transitions, WRITE_BATCH per transaction."""
    for offset in range(start, start + total, WRITE_BATCH):
        batch = transitions(offset, min(WRITE_BATCH, start + total - offset))
        async with db.begin() as conn:
            await record_transitions(conn, batch, "bench", 1)


async def stream_count(js: JetStreamContext, stream: str) -> int:
    """Messages in the stream."""
    return int((await js.stream_info(stream)).state.messages)


async def wait_until(predicate: Callable[[], Awaitable[bool]], interval: float = 0.02) -> None:
    """Poll an async predicate until it is true."""
    while True:
        if await predicate():
            return
        await asyncio.sleep(interval)


async def raw_rates(
    url: str, subject: str, sync_count: int, async_count: int, in_flight: int
) -> tuple[float, float]:
    """Plain nats-py on its own connection: (awaiting each ack, async with bounded in-flight)
    messages per second."""
    nc = await nats.connect(url)
    try:
        return await _raw_rates(
            nc.jetstream(publish_async_max_pending=in_flight), subject, sync_count, async_count
        )
    finally:
        await nc.close()


async def _raw_rates(
    js: JetStreamContext, subject: str, sync_count: int, async_count: int
) -> tuple[float, float]:
    event = Event(id=str(uuid.uuid4()), type="degraded", entity_type="poller", entity_id="p1", tenant="bench")
    event.old_state, event.new_state, event.reason, event.replica = "healthy", "degraded", "bench", "bench"
    payload = event.SerializeToString()
    started = time.perf_counter()
    for _ in range(sync_count):
        await js.publish(subject, payload, headers={"Nats-Msg-Id": str(uuid.uuid4())})
    sync_rate = sync_count / (time.perf_counter() - started)
    started = time.perf_counter()
    futures = [
        await js.publish_async(subject, payload, headers={"Nats-Msg-Id": str(uuid.uuid4())})
        for _ in range(async_count)
    ]
    await asyncio.gather(*futures)
    async_rate = async_count / (time.perf_counter() - started)
    return sync_rate, async_rate


class Harness:
    """A fresh database and stream, a bus, and relays on demand."""

    def __init__(self, db: Database, config: EventConfig) -> None:
        self.db = db
        self.config = config
        self.bus = NatsBus(config.nats_url, "bench", config.max_in_flight)
        self.signal = OutboxSignal(db)

    async def reset(self) -> None:
        """Empty the outbox and the stream."""
        async with self.db.begin() as conn:
            await conn.execute(event_outbox.delete())
        js = self.bus.jetstream()
        with contextlib.suppress(Exception):
            await js.delete_stream(self.config.stream)
        await ensure_stream(js, self.config)

    async def connected(self) -> bool:
        """Whether the bus is connected."""
        return self.bus.connected

    def relay(self) -> asyncio.Task[None]:
        """A relay running as a task."""
        relay = Relay(Outbox(self.db), self.bus, self.config, lambda: True, self.signal)
        return asyncio.get_running_loop().create_task(relay.run())


async def stop(task: asyncio.Task[None]) -> None:
    """Cancel and await."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def run(args: argparse.Namespace) -> None:
    admin = args.database_url
    name = f"bench_events_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(admin).set(database=name).render_as_string(hide_password=False)
    store = Path(tempfile.mkdtemp(prefix="bench-events-"))
    server = NatsProcess(store)
    server.start()
    db = Database(url)
    try:
        await db.migrate()
        config = EventConfig.from_settings(
            Settings(
                nats_url=server.url,
                nats_stream="BENCH_EVENTS",
                events_subject_prefix="bench.infra",
                events_relay_batch_size=args.batch,
                events_relay_max_in_flight=args.in_flight,
                events_poll_interval=0.1,
            ).validate()
        )
        harness = Harness(db, config)
        harness.bus.start()
        await wait_until(harness.connected)
        js = harness.bus.jetstream()
        await harness.reset()
        n = args.events

        print(f"events benchmark: PostgreSQL, nats-server {server.url}, {os.cpu_count()} cores, "
              f"batch {args.batch}, in-flight {args.in_flight}")  # fmt: skip
        sync_rate, async_rate = await raw_rates(
            server.url, "bench.infra.raw.poller.degraded", n // 5, n, args.in_flight
        )
        print(f"  raw nats-py publish, awaiting each ack   {sync_rate:10,.0f} msg/s")
        print(f"  raw nats-py publish_async, batched       {async_rate:10,.0f} msg/s")

        await harness.reset()
        started = time.perf_counter()
        await write(db, n)
        write_seconds = time.perf_counter() - started
        print(f"  outbox write alone ({WRITE_BATCH}/transaction)      {n / write_seconds:10,.0f} events/s")
        relay = harness.relay()
        started = time.perf_counter()
        await wait_until(lambda: _reached(js, config.stream, n))
        drain = time.perf_counter() - started
        await stop(relay)
        print(f"  relay drain of a full outbox             {n / drain:10,.0f} events/s"
              f"  ({n / drain / async_rate:.0%} of raw async)")  # fmt: skip

        await harness.reset()
        relay = harness.relay()
        started = time.perf_counter()
        await write(db, n)
        await wait_until(lambda: _reached(js, config.stream, n))
        end_to_end = time.perf_counter() - started
        await stop(relay)
        print(f"  end to end (write + relay, concurrent)   {n / end_to_end:10,.0f} events/s"
              f"  ({n / end_to_end / async_rate:.0%} of raw async)")  # fmt: skip

        await outage(harness, server, args)
    finally:
        server.kill()
        await db.dispose()
        shutil.rmtree(store, ignore_errors=True)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def backlog_at_most(outbox: Outbox, count: int) -> bool:
    """Whether at most `count` events wait in the outbox."""
    return (await outbox.backlog()).unpublished <= count


async def _reached(js: JetStreamContext, stream: str, count: int) -> bool:
    return await stream_count(js, stream) >= count


async def outage(harness: Harness, server: NatsProcess, args: argparse.Namespace) -> None:
    """Steady writes, NATS down for a while, then the drain."""
    await harness.reset()
    outbox = Outbox(harness.db)
    relay = harness.relay()
    written = 0

    async def writer() -> None:
        nonlocal written
        tick = 0.1
        per_tick = max(1, round(args.rate * tick))
        next_at = time.perf_counter()
        while True:
            batch = transitions(written, per_tick)
            async with harness.db.begin() as conn:
                await record_transitions(conn, batch, "bench", 1)
            written += per_tick
            next_at += tick
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

    writing = asyncio.get_running_loop().create_task(writer())
    await asyncio.sleep(2)
    server.kill()
    killed_at = time.perf_counter()
    await asyncio.sleep(args.outage)
    backlog_at_restart = (await outbox.backlog()).unpublished
    server.start()
    restarted = time.perf_counter()
    await wait_until(harness.connected)
    reconnected = time.perf_counter() - restarted
    await wait_until(lambda: backlog_at_most(outbox, int(args.rate * 0.2)), 0.01)
    drained = time.perf_counter() - restarted
    writing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await writing
    await wait_until(lambda: backlog_at_most(outbox, 0))
    await stop(relay)
    js = harness.bus.jetstream()
    stored = await stream_count(js, harness.config.stream)
    down = restarted - killed_at
    print(
        f"  outage: {args.rate} transitions/s, NATS down {down:.0f}s, backlog {backlog_at_restart} at restart"
    )
    print(f"    reconnect {reconnected:.2f}s, backlog drained {drained:.2f}s after restart;"
          f" {stored} of {written} events in the stream"
          f" ({'each once' if stored == written else 'MISMATCH'})")  # fmt: skip
    assert stored == written, (stored, written)


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000, help="relay batch size")
    parser.add_argument("--in-flight", type=int, default=1000, help="maximum unacknowledged publishes")
    parser.add_argument("--rate", type=int, default=100, help="transitions per second during the outage run")
    parser.add_argument("--outage", type=float, default=60.0, help="seconds NATS is down")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("SRCORE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="maintenance database of the PostgreSQL server to use",
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
