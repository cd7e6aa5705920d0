"""The replica's connection to NATS: made in the background, kept up by nats-py's reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from typing import NamedTuple

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import APIError, NoStreamResponseError

log = logging.getLogger(__name__)

RECONNECT_WAIT = 1.0
CONNECT_TIMEOUT = 2.0


class NatsUnavailable(Exception):
    """NATS is not connected right now; the caller backs off and tries again."""


class Ack(NamedTuple):
    """JetStream's acknowledgement of one stored message."""

    seq: int
    """Stream sequence of the message (of the earlier copy, for a duplicate)."""
    duplicate: bool
    """True when JetStream had the message id already and dropped this copy."""


class JetStreamPublisher:
    """Asynchronous JetStream publishes with at most `max_in_flight` acks outstanding.

    nats-py's own `publish_async` loses error replies (its reply handler raises instead of
    failing the future, so a message JetStream rejected looks like a timeout). The relay needs
    the rejection itself, so this sends with reply subjects of its own and fails the future
    with the APIError JetStream answered.
    """

    def __init__(self, nc: NatsClient, max_in_flight: int) -> None:
        self._nc = nc
        self._prefix = nc.new_inbox()
        self._tokens = itertools.count()
        self._pending: dict[str, asyncio.Future[Ack]] = {}
        self._slots = asyncio.Semaphore(max_in_flight)

    async def start(self) -> None:
        """Subscribe to the replies (nats-py renews the subscription after a reconnect)."""
        await self._nc.subscribe(f"{self._prefix}.*", cb=self._on_reply)

    async def publish(
        self, subject: str, body: bytes, headers: dict[str, str], stall_timeout: float
    ) -> asyncio.Future[Ack]:
        """Send one message; the future resolves with its ack or fails with JetStream's error.

        Waits up to `stall_timeout` for an in-flight slot (TimeoutError after that).
        """
        if self._slots.locked():
            async with asyncio.timeout(stall_timeout):
                await self._slots.acquire()
        else:
            # The common case, and a timer per message costs more than the publish itself.
            await self._slots.acquire()
        token = str(next(self._tokens))
        future: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda _f: self._done(token))
        self._pending[token] = future
        try:
            await self._nc.publish(subject, body, reply=f"{self._prefix}.{token}", headers=headers)
        except BaseException:
            future.cancel()
            raise
        return future

    def _done(self, token: str) -> None:
        del self._pending[token]
        self._slots.release()

    async def _on_reply(self, msg: Msg) -> None:
        future = self._pending.get(msg.subject.rpartition(".")[2])
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get("Status") == "503":
            # No responders: no stream listens on the subject.
            future.set_exception(NoStreamResponseError())
            return
        try:
            reply = json.loads(msg.data)
        except ValueError as exc:
            future.set_exception(exc)
            return
        if "error" in reply:
            error = reply["error"]
            future.set_exception(
                APIError(
                    code=error.get("code"),
                    err_code=error.get("err_code"),
                    description=error.get("description"),
                )
            )
        else:
            future.set_result(Ack(reply["seq"], bool(reply.get("duplicate"))))


class NatsBus:
    """One NATS connection per replica, for the relay (on the leader) and the health probe.

    The connection is opened by a background task, so a replica starts and serves while NATS
    is down; nats-py then reconnects forever (`max_reconnect_attempts=-1`). Publishers ask for
    `publisher()` per step and back off on NatsUnavailable, instead of letting nats-py
    buffer messages for a server that is not there.
    """

    def __init__(self, url: str, client_name: str, max_in_flight: int) -> None:
        self.url = url
        self._client_name = client_name
        self._max_in_flight = max_in_flight
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._publisher: JetStreamPublisher | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._up = asyncio.Event()
        self.last_error = ""

    @property
    def connected(self) -> bool:
        """Whether the connection is up now."""
        return self._nc is not None and self._nc.is_connected

    def start(self) -> None:
        """Start connecting in the background."""
        self._task = asyncio.get_running_loop().create_task(self._connect(), name="nats-connect")

    async def _connect(self) -> None:
        try:
            nc = await nats.connect(
                self.url,
                name=self._client_name,
                max_reconnect_attempts=-1,
                reconnect_time_wait=RECONNECT_WAIT,
                connect_timeout=CONNECT_TIMEOUT,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
            )
        except Exception as exc:
            # Only what retrying cannot fix gets here (a malformed URL, refused credentials).
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.error("cannot connect to NATS at %s: %s", self.url, self.last_error)
            return
        publisher = JetStreamPublisher(nc, self._max_in_flight)
        await publisher.start()
        self._nc = nc
        self._js = nc.jetstream()
        self._publisher = publisher
        self._connection_up()
        log.info("connected to NATS at %s", nc.connected_url.netloc if nc.connected_url else self.url)

    async def _on_error(self, error: Exception) -> None:
        # nats-py reports every failed (re)connect attempt, once a second while NATS is down:
        # say it once, then quietly.
        self.last_error = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        log.log(logging.DEBUG if self._failing else logging.WARNING, "NATS: %s", self.last_error)
        self._failing = True

    async def _on_disconnected(self) -> None:
        log.warning("disconnected from NATS at %s; reconnecting", self.url)

    async def _on_reconnected(self) -> None:
        self._connection_up()
        log.info("reconnected to NATS at %s", self.url)

    def _connection_up(self) -> None:
        self._failing = False
        self.last_error = ""
        current, self._up = self._up, asyncio.Event()
        current.set()

    def up_waiter(self) -> asyncio.Event:
        """An event set when the connection is next (re)established."""
        return self._up

    def jetstream(self) -> JetStreamContext:
        """The JetStream context; NatsUnavailable while the connection is down."""
        if self._js is None or not self.connected:
            raise NatsUnavailable(f"NATS at {self.url} is not connected: {self.last_error or 'connecting'}")
        return self._js

    def publisher(self) -> JetStreamPublisher:
        """The publisher; NatsUnavailable while the connection is down."""
        if self._publisher is None or not self.connected:
            raise NatsUnavailable(f"NATS at {self.url} is not connected: {self.last_error or 'connecting'}")
        return self._publisher

    async def close(self) -> None:
        """Stop connecting, or close the connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):
                await self._nc.close()
