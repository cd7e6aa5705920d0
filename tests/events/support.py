"""Helpers of the event tests: transitions, relays, stream reads and a private NATS server."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg

from srcore.domain.model import Transition
from srcore.events.bus import NatsBus
from srcore.events.config import EventConfig
from srcore.events.outbox import Outbox, OutboxSignal
from srcore.events.relay import Relay
from srcore.events.schema import Event
from srcore.settings import Settings
from srcore.store.database import Database
from srcore.store.transitions import record_transitions

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
REPLICA = "test-replica"
FENCING_TOKEN = 7


def event_config(nats_url: str, **overrides: Any) -> EventConfig:
    """Event settings with a stream name and subject prefix no other test uses."""
    token = uuid.uuid4().hex[:10]
    values: dict[str, Any] = {
        "nats_url": nats_url,
        "nats_stream": f"SRTEST_{token}",
        "events_subject_prefix": f"srtest{token}.infra",
        "events_poll_interval": 0.05,
        "events_publish_timeout": 2.0,
    }
    values.update(overrides)
    return EventConfig.from_settings(Settings(**values).validate())


async def wait_for(
    predicate: Callable[[], bool | Awaitable[bool]], timeout: float, what: str, interval: float = 0.02
) -> None:
    """Poll `predicate` until it holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def chain(
    tenant: str, entity_type: str, entity_id: str, states: Sequence[str], start: datetime | None = None
) -> list[Transition]:
    """Transitions through `states` in order, one millisecond apart."""
    at = start or datetime.now(UTC)
    return [
        Transition(tenant, entity_type, entity_id, old, new, f"test step {i}", at + timedelta(milliseconds=i))
        for i, (old, new) in enumerate(itertools.pairwise(states))
    ]


async def record(db: Database, transitions: Sequence[Transition]) -> None:
    """Record transitions in one transaction, as the registry does."""
    async with db.begin() as conn:
        await record_transitions(conn, transitions, REPLICA, FENCING_TOKEN)


async def stream_messages(js: JetStreamContext, stream: str) -> list[RawStreamMsg]:
    """Every message in the stream, in stream order."""
    info = await js.stream_info(stream)
    if not info.state.messages:
        return []
    seqs = list(range(info.state.first_seq, info.state.last_seq + 1))
    out: list[RawStreamMsg] = []
    for start in range(0, len(seqs), 200):
        out.extend(await asyncio.gather(*(js.get_msg(stream, seq) for seq in seqs[start : start + 200])))
    return out


def decode(message: RawStreamMsg | Msg) -> Event:
    """The event a message carries."""
    assert message.data is not None
    return Event.FromString(message.data)


async def backlog(outbox: Outbox) -> int:
    """Unpublished events in the outbox."""
    return (await outbox.backlog()).unpublished


@asynccontextmanager
async def running_relay(
    db: Database, bus: NatsBus, config: EventConfig, leading: Callable[[], bool] = lambda: True
) -> AsyncIterator[Relay]:
    """A relay running as a task for the duration of the block, then cancelled."""
    signal_ = OutboxSignal(db)
    relay = Relay(Outbox(db), bus, config, leading, signal_)
    task = asyncio.get_running_loop().create_task(relay.run())
    try:
        yield relay
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        signal_.close()


async def drained(db: Database, timeout: float = 20.0) -> None:
    """Wait until the relay published every event in the outbox."""
    outbox = Outbox(db)

    async def empty() -> bool:
        return await backlog(outbox) == 0

    await wait_for(empty, timeout, "the outbox backlog to drain")


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class NatsServer:
    """A nats-server with JetStream that the test starts, kills (by PID) and restarts."""

    store_dir: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Where clients reach it."""
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start it (on the same port and store each time) and wait until it accepts clients."""
        if not self.port:
            self.port = free_port()
        self.process = subprocess.Popen(
            [NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store_dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.5) as sock,
            ):
                if sock.recv(7) == b'INFO {"':
                    return
            time.sleep(0.05)
        raise AssertionError(f"nats-server on port {self.port} did not start")

    def kill(self) -> None:
        """Kill it without warning, as a crash or a power cut would."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.process = None
