"""The relay: publishes outbox rows to NATS JetStream, in order, each stored once.

It runs on the leader only, and it does not trust that alone (docs/events.md, "Exactly one
publisher"). Every message carries `Nats-Msg-Id` = the event id, so JetStream drops a message
it stored within the stream's duplicate window (a relay that published, then died before it
stamped its rows). And every message carries a compare-and-set condition that JetStream
checks before it stores it:

- the first message of a batch: `Nats-Expected-Last-Sequence` = the stream's last sequence as
  this relay last saw it (nothing was stored since);
- every later one: `Nats-Expected-Last-Msg-Id` = the id of the message before it in the
  batch (it is stored right after its predecessor, or not at all).

The batch is one chain, sent asynchronously with up to `max_in_flight` acks outstanding, and
the stream holds it in outbox order with nothing in between. A second publisher (a deposed
leader that woke up late) breaks the other's chain: the loser re-reads the stream's last
sequence, re-checks its leadership and resumes from the first message not acknowledged.

Rows JetStream acknowledged (stored, or duplicate: already in the stream) are stamped
published. Stamping is not fenced: it records a fact about the stream, whoever observed it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import APIError, NoStreamResponseError, NotFoundError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential_jitter

from srcore.events.bus import Ack, JetStreamPublisher, NatsBus
from srcore.events.config import EventConfig
from srcore.events.metrics import EVENTS_PUBLISHED, RELAY_BATCH, RELAY_ERRORS, RELAY_RESYNCS
from srcore.events.outbox import Outbox, OutboxSignal, PendingEvent, wait_signalled
from srcore.events.schema import encode, full_subject

log = logging.getLogger(__name__)
T = TypeVar("T")

MSG_ID = "Nats-Msg-Id"
EXPECTED_LAST_SEQUENCE = "Nats-Expected-Last-Sequence"
EXPECTED_LAST_MSG_ID = "Nats-Expected-Last-Msg-Id"
CONTENT_TYPE = "Content-Type"
# JetStream's error codes for failed Nats-Expected-Last-Msg-Id / -Sequence checks.
CHAIN_BROKEN = frozenset({10070, 10071})
MAX_BACKOFF = 5.0
# Re-reading the last sequence is cheap, but a chain that keeps breaking means a publisher
# that does not give up: after this many in a row, back off like for any other error.
MAX_QUICK_RESYNCS = 10


_STORED = EVENTS_PUBLISHED.labels("stored")
_DUPLICATES = EVENTS_PUBLISHED.labels("duplicate")


class LeadershipLost(Exception):
    """This replica no longer leads under the relay's fencing token."""


def _chain_broken(error: BaseException) -> bool:
    return isinstance(error, APIError) and error.err_code in CHAIN_BROKEN


def _retryable(error: BaseException) -> bool:
    # tenacity hands BaseException over too: cancellation must end the relay, not be retried.
    return isinstance(error, Exception) and not isinstance(error, LeadershipLost)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _background(work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    task = asyncio.get_running_loop().create_task(work)
    # Awaiting the task raises its error where it matters; a task dropped when the relay
    # stops must not be reported as "exception never retrieved" on top.
    task.add_done_callback(lambda done: done.cancelled() or done.exception())
    return task


async def ensure_stream(js: JetStreamContext, config: EventConfig) -> None:
    """Create the stream, or bring the settings the core owns up to date.

    Settings an operator may have tuned on the stream (replicas, placement, storage) are kept.
    """

    def owned(stream: StreamConfig) -> StreamConfig:
        return dataclasses.replace(
            stream,
            subjects=[f"{config.prefix}.>"],
            max_age=config.max_age,
            max_bytes=config.max_bytes,
            max_msgs=config.max_msgs,
            duplicate_window=config.duplicate_window,
        )

    try:
        info = await js.stream_info(config.stream)
    except NotFoundError:
        created = StreamConfig(
            name=config.stream,
            description="ServiceRadar infrastructure events, relayed from the core outbox",
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
        )
        await js.add_stream(owned(created))
        log.info("created JetStream stream %s for %s.>", config.stream, config.prefix)
        return
    updated = owned(info.config)
    if updated != info.config:
        await js.update_stream(updated)
        log.info("updated JetStream stream %s for %s.>", config.stream, config.prefix)


class Relay:
    """Publishes the outbox for as long as `leading()` holds (one leadership term)."""

    def __init__(
        self,
        outbox: Outbox,
        bus: NatsBus,
        config: EventConfig,
        leading: Callable[[], bool],
        signal: OutboxSignal,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._outbox = outbox
        self._bus = bus
        self._config = config
        self._leading = leading
        self._signal = signal
        self._clock = clock
        self._stream_ready = False
        # The stream's last sequence as this relay knows it; None means "read it again".
        self._last_seq: int | None = None
        # Rows JetStream acknowledged whose stamp has not been written yet.
        self._unmarked: list[int] = []
        # The database work of neighbouring batches overlaps the publishing of this one: the
        # next batch is read while this one's acks come in, and this one is stamped while the
        # next one is published.
        self._prefetch: asyncio.Task[list[PendingEvent]] | None = None
        self._stamping: asyncio.Task[None] | None = None
        self._resyncs = 0
        self._failing = False
        self.last_error = ""

    async def run(self) -> None:
        """Publish until leadership is lost (returns) or the task is cancelled."""
        retrying = AsyncRetrying(
            retry=retry_if_exception(_retryable),
            wait=wait_exponential_jitter(multiplier=0.05, max=MAX_BACKOFF),
            stop=lambda _state: not self._leading(),
            before_sleep=self._before_sleep,
            sleep=self._back_off,
            reraise=True,
        )
        try:
            while self._leading():
                waiter = self._signal.waiter()
                try:
                    more: bool = await retrying(self.step)
                except Exception:
                    if self._leading():
                        raise
                    return
                if not more:
                    await wait_signalled(waiter, self._config.poll_interval)
        finally:
            for task in (self._prefetch, self._stamping):
                if task is not None:
                    task.cancel()
            self._prefetch = self._stamping = None
            self._last_seq = None

    async def _back_off(self, seconds: float) -> None:
        # A relay waiting out a NATS outage starts again as soon as the connection is back,
        # not when its backoff (up to MAX_BACKOFF) happens to end.
        await wait_signalled(self._bus.up_waiter(), seconds)

    def _before_sleep(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        if error is None:
            return
        RELAY_ERRORS.labels(type(error).__name__).inc()
        self.last_error = f"{type(error).__name__}: {error}"
        if not self._failing:
            log.warning("event relay: %s; retrying with backoff (events stay in the outbox)", self.last_error)
        self._failing = True

    def _succeeded(self) -> None:
        if self._failing:
            log.info("event relay: publishing again")
        self._failing = False
        self.last_error = ""

    async def step(self) -> bool:
        """Publish one batch; True when more rows may be waiting."""
        js = self._bus.jetstream()
        publisher = self._bus.publisher()
        try:
            if not self._stream_ready:
                await ensure_stream(js, self._config)
                self._stream_ready = True
            if self._last_seq is None:
                self._last_seq = (await js.stream_info(self._config.stream)).state.last_seq
        except NotFoundError:
            self._stream_ready = False
            raise
        rows = await self._take_rows()
        if not rows:
            self._succeeded()
            return False
        RELAY_BATCH.observe(len(rows))
        # The fencing check: a relay whose leadership ended publishes nothing more.
        if not self._leading():
            raise LeadershipLost()
        confirmed, error = await self._publish(publisher, rows)
        self._unmarked.extend(row.seq for row in rows[:confirmed])
        if error is None:
            await self._stamp_in_background()
            self._resyncs = 0
            self._succeeded()
            return self._prefetch is not None
        # The rows after the failure go again, before anything read after them.
        if self._prefetch is not None:
            self._prefetch.cancel()
            self._prefetch = None
        await self._stamp_now()
        # Whatever went wrong, the stream may have moved: read its last sequence again.
        self._last_seq = None
        if isinstance(error, (NoStreamResponseError, NotFoundError)):
            self._stream_ready = False
        if _chain_broken(error) and self._resyncs < MAX_QUICK_RESYNCS:
            self._resyncs += 1
            RELAY_RESYNCS.inc()
            return True
        self._resyncs = 0
        raise error

    async def _publish(
        self, publisher: JetStreamPublisher, rows: list[PendingEvent]
    ) -> tuple[int, Exception | None]:
        """Publish `rows` as one chain; returns how many leading rows JetStream acknowledged
        and the error that ended the chain early, if any."""
        assert self._last_seq is not None
        timeout = self._config.publish_timeout
        futures: list[asyncio.Future[Ack]] = []
        error: Exception | None = None
        condition = (EXPECTED_LAST_SEQUENCE, str(self._last_seq))
        try:
            for row in rows:
                body, content_type = encode(row.payload, self._config.encoding)
                headers = {MSG_ID: row.event_id, condition[0]: condition[1], CONTENT_TYPE: content_type}
                subject = full_subject(self._config.prefix, row.subject)
                futures.append(await publisher.publish(subject, body, headers, timeout))
                condition = (EXPECTED_LAST_MSG_ID, row.event_id)
        except Exception as exc:
            # The messages sent before the failure still count, in order.
            error = exc
        if error is None and len(rows) == self._config.batch_size:
            self._prefetch = _background(
                self._outbox.unpublished(self._config.batch_size, after=rows[-1].seq)
            )
        confirmed = duplicates = 0
        try:
            async with asyncio.timeout(timeout):
                for future in futures:
                    try:
                        ack = await future
                    except Exception as exc:
                        error = exc
                        break
                    confirmed += 1
                    if ack.duplicate:
                        duplicates += 1
                    else:
                        self._last_seq = ack.seq
        except TimeoutError as exc:
            error = exc
        finally:
            for future in futures[confirmed:]:
                future.cancel()
        _STORED.inc(confirmed - duplicates)
        _DUPLICATES.inc(duplicates)
        return confirmed, error

    async def _take_rows(self) -> list[PendingEvent]:
        """The next batch: the rows read ahead, or the oldest unpublished rows."""
        if self._prefetch is not None:
            task, self._prefetch = self._prefetch, None
            rows = await task
            if rows:
                return rows
        # A full read also finds rows that committed late, below batches already read; it
        # would also find the rows being stamped, so the stamp finishes first.
        await self._stamp_now()
        return await self._outbox.unpublished(self._config.batch_size)

    async def _finish_stamping(self) -> None:
        task, self._stamping = self._stamping, None
        if task is not None:
            await task

    async def _stamp_in_background(self) -> None:
        await self._finish_stamping()
        seqs, self._unmarked = self._unmarked, []
        self._stamping = _background(self._stamp(seqs))

    async def _stamp_now(self) -> None:
        await self._finish_stamping()
        seqs, self._unmarked = self._unmarked, []
        await self._stamp(seqs)

    async def _stamp(self, seqs: list[int]) -> None:
        try:
            await self._outbox.mark_published(seqs, self._clock())
        except BaseException:
            # Kept for the next attempt (the database is down): stamping them later is as
            # good, and sending them again would only be dropped as duplicates.
            self._unmarked = seqs + self._unmarked
            raise
