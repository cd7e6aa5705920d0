"""The reference ReportResults client: chunking, credits, acks, retries and resume.

This is the behaviour docs/protocol.md asks of every edge implementation (the Go edge core
included), written so it can be read next to that page:

- `build_chunks` cuts a lazy stream of results into numbered chunks, the last one `final`.
- `BatchWindow` is the pure bookkeeping of one batch: what is committed, what the credits
  allow, which sent chunks must be kept for a resend, where to resume.
- `ResultPusher` runs the exchange over `grpc.aio`: open (or reopen) a batch, send chunks while
  credits allow, read acks, and on a failed stream reconnect and resume as the status says.

Nothing here reads files or prints; `srctl edge push` (push.py) is the command around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, Self

import grpc
from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2, status_pb2
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from serviceradar.edge.v1 import edge_service_pb2 as pb
from serviceradar.edge.v1 import edge_service_pb2_grpc as pb_grpc
from serviceradar.edge.v1 import results_pb2 as results_pb

# Limits of the contract (docs/protocol.md, "Limits").
MAX_RESULTS_PER_CHUNK = 10_000
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# Room for the chunk's own fields and the request wrapper around the results.
_CHUNK_OVERHEAD_BYTES = 1024
# A repeated message field costs its tag and a length prefix on top of the message itself.
_RESULT_FRAMING_BYTES = 6

STATUS_DETAILS_KEY = "grpc-status-details-bin"

# Which payload field of ResultChunk carries each result type.
PAYLOAD_FIELDS: dict[results_pb.ResultType.ValueType, str] = {
    results_pb.RESULT_TYPE_SWEEP_HOSTS: "sweep_hosts",
    results_pb.RESULT_TYPE_SERVICE_CHECKS: "service_checks",
    results_pb.RESULT_TYPE_DEVICE_UPDATES: "device_updates",
}


class InputError(ValueError):
    """The results to push cannot be sent as they are (bad line, oversized result, mismatch)."""


def build_chunks(
    results: Iterable[Message],
    *,
    batch_id: str,
    result_type: results_pb.ResultType.ValueType,
    chunk_size: int = 500,
    completion: results_pb.SweepCompletion.ValueType = results_pb.SWEEP_COMPLETION_UNSPECIFIED,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    clock: Callable[[], Timestamp] | None = None,
) -> Iterator[results_pb.ResultChunk]:
    """Cut `results` into chunks 0, 1, 2, ... lazily; the last has `final` (and `completion`).

    A chunk holds at most `chunk_size` results and stays under `max_message_bytes` once
    serialized, so large results make smaller chunks rather than a message the server refuses.
    Only one result is read ahead (to know which chunk is final), so memory does not grow with
    the input. An empty input still makes one (empty) final chunk: a batch needs an end.
    Raises InputError when a single result is larger than a message may be.
    """
    if not 1 <= chunk_size <= MAX_RESULTS_PER_CHUNK:
        raise ValueError(f"chunk_size must be 1-{MAX_RESULTS_PER_CHUNK}, got {chunk_size}")
    payload_field = PAYLOAD_FIELDS[result_type]
    budget = max_message_bytes - _CHUNK_OVERHEAD_BYTES
    stamp = clock or _now
    source = iter(results)
    carry = next(source, None)
    index = 0
    taken = 0
    while True:
        chunk = results_pb.ResultChunk(batch_id=batch_id, index=index, observed_at=stamp())
        payload = getattr(chunk, payload_field)
        # Set the oneof even when no result follows, so an empty final chunk still says its type.
        payload.SetInParent()
        used = 0
        while carry is not None and len(payload.results) < chunk_size:
            cost = carry.ByteSize() + _RESULT_FRAMING_BYTES
            if used + cost > budget:
                if not payload.results:
                    raise InputError(
                        f"result {taken + 1} is {cost} bytes, more than a message may hold ({budget})"
                    )
                break
            payload.results.append(carry)
            used += cost
            taken += 1
            carry = next(source, None)
        chunk.final = carry is None
        if chunk.final:
            chunk.completion = completion
        yield chunk
        if chunk.final:
            return
        index += 1


def _now() -> Timestamp:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return stamp


def retry_delay(trailing_metadata: Iterable[tuple[str, str | bytes]] | None) -> float | None:
    """The delay google.rpc.RetryInfo asks for, in seconds, from a call's trailing metadata.

    None when the trailer is absent, undecodable or carries no RetryInfo.
    """
    for key, value in trailing_metadata or ():
        if key != STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:
            return None
        for detail in status.details:
            if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                info = error_details_pb2.RetryInfo()
                detail.Unpack(info)
                delay = info.retry_delay
                return max(0.0, float(delay.seconds) + float(delay.nanos) / 1e9)
    return None


class Disposition(enum.Enum):
    """What the client does after a stream fails with a given status."""

    # Wait the server's RetryInfo delay, reconnect, reopen, resume; without RetryInfo, fail.
    WAIT_AND_RESUME = "wait"
    # Back off exponentially with jitter, reconnect, reopen, resume.
    BACKOFF_AND_RESUME = "backoff"
    # Reopen at once to learn the committed index and resume; fail if it happens again.
    REOPEN_ONCE = "reopen"
    # Give up: retrying cannot help.
    FAIL = "fail"


_DISPOSITIONS: dict[grpc.StatusCode, Disposition] = {
    grpc.StatusCode.RESOURCE_EXHAUSTED: Disposition.WAIT_AND_RESUME,
    grpc.StatusCode.UNAVAILABLE: Disposition.BACKOFF_AND_RESUME,
    grpc.StatusCode.DEADLINE_EXCEEDED: Disposition.BACKOFF_AND_RESUME,
    grpc.StatusCode.ABORTED: Disposition.BACKOFF_AND_RESUME,
    # A connection cut in the middle of a message surfaces as INTERNAL ("Internal error from
    # Core") in gRPC's C core. Resuming is idempotent, so a bounded retry is safe.
    grpc.StatusCode.INTERNAL: Disposition.BACKOFF_AND_RESUME,
    grpc.StatusCode.FAILED_PRECONDITION: Disposition.REOPEN_ONCE,
}


def disposition(code: grpc.StatusCode) -> Disposition:
    """What to do when a ReportResults stream ends with `code` (docs/protocol.md)."""
    return _DISPOSITIONS.get(code, Disposition.FAIL)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long and how often to retry a batch.

    `max_retries` counts consecutive failed attempts that committed nothing new: a stream that
    keeps making progress between failures is never given up on, a stuck one is. `deadline`
    bounds the whole push in seconds (None: no bound). `ack_timeout` is how long chunks may be
    in flight without any acknowledgement before the stream is presumed dead.
    """

    max_retries: int = 10
    deadline: float | None = None
    initial_backoff: float = 0.5
    max_backoff: float = 30.0
    retry_info_jitter: float = 0.2
    ack_timeout: float = 60.0

    def backoff(self, failures: int, rng: random.Random) -> float:
        """Delay before retry number `failures` (1-based): equal jitter on a capped exponential.

        Half the cap is fixed so a retry never comes right away; the random other half keeps
        a fleet of edges that lost the same core from reconnecting in lockstep.
        """
        cap = min(self.max_backoff, self.initial_backoff * 2.0 ** max(0, failures - 1))
        return cap / 2 + rng.uniform(0, cap / 2)

    def after_retry_info(self, delay: float, rng: random.Random) -> float:
        """The server's RetryInfo delay plus up to `retry_info_jitter` of it, never less."""
        return delay + rng.uniform(0, delay * self.retry_info_jitter)


class ProtocolViolation(Exception):
    """The server answered something the protocol does not allow; retrying cannot fix it."""

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.INTERNAL) -> None:
        super().__init__(message)
        self.code = code


class Overtaken(Exception):
    """The server committed chunks an earlier stream of this batch sent, beyond this stream's.

    Chunks the old stream left queued in the server commit after the new stream reopened the
    batch. They are stored; this stream must not send them again in order, so it resumes past
    them with a reopen, as for ABORTED.
    """


class BatchWindow:
    """The send-side bookkeeping of one batch, free of I/O.

    Chunks come lazily from `chunks` (index 0, 1, ...). A chunk is pulled only when the
    credits allow sending it, and kept until an ack commits it, so it can be resent on a new
    stream: at most `credits` chunks are ever held. A client that starts on a batch the server
    already partly committed (a restarted process) pulls and drops the committed chunks.
    """

    def __init__(self, chunks: Iterator[results_pb.ResultChunk]) -> None:
        self._source = chunks
        self._source_next = 0
        self._held: deque[pb.ReportResultsRequest] = deque()
        self.committed = -1
        self.credits = 0
        # Next chunk to write on the current stream.
        self.next_index = 0
        # Highest chunk index written on any stream of this batch.
        self.highest_sent = -1
        self.final_index: int | None = None

    @property
    def limit(self) -> int:
        """Highest chunk index the latest ack allows to be sent."""
        return self.committed + self.credits

    @property
    def in_flight(self) -> int:
        """Chunks written on the current stream and not yet committed."""
        return max(0, self.next_index - self.committed - 1)

    @property
    def held(self) -> int:
        """Chunks kept for a resend (generated, not yet committed)."""
        return len(self._held)

    @property
    def all_sent(self) -> bool:
        """True once the final chunk is written on the current stream."""
        return self.final_index is not None and self.next_index > self.final_index

    @property
    def complete(self) -> bool:
        """True once the final chunk is committed."""
        return self.final_index is not None and self.committed >= self.final_index

    def reopened(self, committed: int, credits: int) -> None:
        """Apply the ack to a BatchOpen: resume at `committed` + 1 with `credits`.

        Raises ProtocolViolation (DATA_LOSS) when the server no longer has a chunk it acked.
        """
        if committed < self.committed:
            raise ProtocolViolation(
                f"the server reports chunk {committed} committed after acknowledging chunk "
                f"{self.committed}: acknowledged results were lost",
                grpc.StatusCode.DATA_LOSS,
            )
        self._commit(committed)
        self.credits = credits
        self.next_index = committed + 1
        # Committed chunks count as sent, whichever run of the client sent them.
        self.highest_sent = max(self.highest_sent, committed)

    def acked(self, committed: int, credits: int) -> None:
        """Apply a chunk ack: everything up to `committed` is durable; `credits` from there.

        Raises ProtocolViolation when the committed index goes back or covers chunks never
        sent, and Overtaken when it covers chunks an earlier stream sent and this one has not.
        """
        if committed < self.committed:
            raise ProtocolViolation(f"committed index went back from {self.committed} to {committed}")
        if committed > self.highest_sent:
            raise ProtocolViolation(f"chunk {committed} acknowledged before it was sent")
        if committed >= self.next_index:
            raise Overtaken(f"chunk {committed} was committed from an earlier stream of this batch")
        self._commit(committed)
        self.credits = credits

    def next_to_send(self) -> pb.ReportResultsRequest | None:
        """The request carrying chunk `next_index`, or None when credits or the batch end stop it.

        Raises InputError when the input ends before the server's committed index (a resume
        with other input than the first run).
        """
        if self.all_sent or self.next_index > self.limit:
            return None
        return self._request_for(self.next_index)

    def mark_sent(self) -> None:
        """Record that the chunk from `next_to_send` was written."""
        self.highest_sent = max(self.highest_sent, self.next_index)
        self.next_index += 1

    def _commit(self, committed: int) -> None:
        self.committed = committed
        while self._held and self._held[0].chunk.index <= committed:
            self._held.popleft()

    def _request_for(self, index: int) -> pb.ReportResultsRequest:
        if self._held and self._held[0].chunk.index <= index < self._source_next:
            return self._held[index - self._held[0].chunk.index]
        while True:
            chunk = next(self._source, None)
            if chunk is None or (chunk.final and chunk.index < index):
                last = self._source_next - 1 if chunk is None else chunk.index
                raise InputError(
                    f"the input ends at chunk {last} but the server has committed chunk "
                    f"{self.committed} of this batch: resume with the same input and chunk size"
                )
            self._source_next = chunk.index + 1
            if chunk.final:
                self.final_index = chunk.index
            if chunk.index < index:
                # Committed by an earlier run of the client; regenerated only to be skipped.
                continue
            request = pb.ReportResultsRequest(chunk=chunk)
            self._held.append(request)
            return request


@dataclass(slots=True)
class BatchProgress:
    """What a push has achieved so far; passed to the progress callback and returned at the end.

    `accepted` and `rejected` count the chunks acknowledged to this client. A chunk committed
    just before a disconnect, whose ack was lost, is not counted here (it is not sent again);
    the server's totals are in BatchService.GetBatch.
    """

    batch_id: str
    result_type: results_pb.ResultType.ValueType
    expected_chunks: int
    state: results_pb.BatchState.ValueType = results_pb.BATCH_STATE_UNSPECIFIED
    committed_index: int = -1
    credits: int = 0
    chunks_sent: int = 0
    accepted: int = 0
    rejected: int = 0
    first_reject: str = ""
    retries: int = 0
    # First chunk this client had to send: above 0 when an earlier run committed chunks.
    resumed_from: int = 0
    last_error: str = ""
    # Seconds until the next attempt while waiting to retry; 0 otherwise.
    retry_in: float = 0.0
    started: float = field(default_factory=time.monotonic)
    elapsed: float = 0.0

    @property
    def results(self) -> int:
        """Results acknowledged (stored or rejected)."""
        return self.accepted + self.rejected

    @property
    def results_per_second(self) -> float:
        """Acknowledged results per second of the push so far."""
        return self.results / self.elapsed if self.elapsed > 0 else 0.0


class ResultStream(Protocol):
    """The client side of one ReportResults call, as grpc.aio's StreamStreamCall offers it."""

    async def write(self, request: pb.ReportResultsRequest) -> None:
        """Send one message; raises grpc.aio.AioRpcError once the call has failed."""

    async def read(self) -> object:
        """The next response, or grpc.aio.EOF; raises grpc.aio.AioRpcError on failure."""

    async def done_writing(self) -> None:
        """Half-close: no more requests."""

    def cancel(self) -> bool:
        """Abandon the call."""


StreamOpener = Callable[[], ResultStream]
ProgressCallback = Callable[[BatchProgress], None]


class PushFailed(grpc.RpcError):
    """A batch could not be committed. A grpc.RpcError with the status that ended it.

    `progress` says how far it got; pushing again with the same batch id resumes from there.
    """

    def __init__(self, code: grpc.StatusCode, details: str, progress: BatchProgress) -> None:
        super().__init__(details)
        self._code = code
        self._details = details
        self.progress = progress

    def code(self) -> grpc.StatusCode:
        """The status that ended the push."""
        return self._code

    def details(self) -> str:
        """What went wrong, for people."""
        return self._details


class _StreamFailure(Exception):
    """One attempt ended: the stream failed with `code`, or the client gave up on it."""

    def __init__(self, code: grpc.StatusCode, details: str, delay: float | None = None) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.retry_delay = delay
        self.retryable = False

    @classmethod
    def from_rpc_error(cls, error: grpc.aio.AioRpcError) -> _StreamFailure:
        return cls(error.code(), error.details() or "no details", retry_delay(error.trailing_metadata()))


@dataclass(slots=True)
class _BatchRun:
    """The state of one push across its attempts."""

    open: results_pb.BatchOpen
    window: BatchWindow
    progress: BatchProgress
    on_progress: ProgressCallback | None
    credit: asyncio.Event = field(default_factory=asyncio.Event)
    opened_once: bool = False
    # Highest chunk whose accepted/rejected counts are added to progress.
    counted_through: int = -1
    # Consecutive failed attempts that committed nothing new.
    failures: int = 0
    precondition_strike: bool = False
    last_failure: _StreamFailure | None = None
    # When the oldest unanswered message went out; None when nothing awaits an answer.
    awaiting_since: float | None = None

    def notify(self) -> None:
        self.progress.elapsed = time.monotonic() - self.progress.started
        if self.on_progress is not None:
            self.on_progress(self.progress)

    def record_commit(self, committed: int) -> None:
        if committed > self.progress.committed_index:
            # Progress: the stream is worth another full round of retries.
            self.failures = 0
            self.precondition_strike = False
        self.progress.committed_index = self.window.committed


class ResultPusher:
    """Pushes result batches over ReportResults, one after another on one stream.

    The stream is opened on the first push and kept for the next; a failed stream is
    abandoned and a new one opened for the retry. Await each push before the next one (a
    pusher drives one batch at a time), and close the pusher (or use `async with`) to end the
    stream cleanly.
    """

    def __init__(
        self,
        open_stream: StreamOpener,
        policy: RetryPolicy | None = None,
        *,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._open_stream = open_stream
        self.policy = policy or RetryPolicy()
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._stream: ResultStream | None = None
        self.streams_opened = 0

    @classmethod
    def over(cls, channel: grpc.aio.Channel, policy: RetryPolicy | None = None) -> ResultPusher:
        """A pusher calling ReportResults on `channel` (an edge mTLS channel)."""
        stub = pb_grpc.EdgeServiceStub(channel)
        return cls(stub.ReportResults, policy)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def push(
        self,
        batch: results_pb.BatchOpen,
        chunks: Iterable[results_pb.ResultChunk],
        on_progress: ProgressCallback | None = None,
    ) -> BatchProgress:
        """Open `batch`, send `chunks` (from `build_chunks`) and return once the batch is committed.

        Retries and resumes as docs/protocol.md says. Raises PushFailed when the batch cannot
        be committed (a status not worth retrying, retries or deadline exhausted) and
        InputError when `chunks` cannot be sent (e.g. it ends before what the server committed).
        """
        run = _BatchRun(
            open=batch,
            window=BatchWindow(iter(chunks)),
            progress=BatchProgress(batch.batch_id, batch.result_type, batch.expected_chunks),
            on_progress=on_progress,
        )
        retrying = AsyncRetrying(
            retry=retry_if_exception(lambda error: isinstance(error, _StreamFailure) and error.retryable),
            stop=lambda _: run.failures > self.policy.max_retries,
            wait=lambda _: self._delay(run),
            before_sleep=lambda state: self._before_retry(run, state),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            async with asyncio.timeout(self.policy.deadline):
                async for attempt in retrying:
                    with attempt:
                        await self._attempt(run)
        except _StreamFailure as failure:
            details = failure.details
            if failure.retryable:
                details += f" (gave up after {run.progress.retries} retries)"
            raise PushFailed(failure.code, details, run.progress) from failure
        except ProtocolViolation as violation:
            raise PushFailed(violation.code, f"protocol violation: {violation}", run.progress) from None
        except TimeoutError:
            last = f"; last error {run.progress.last_error}" if run.progress.last_error else ""
            details = f"batch not committed within the {self.policy.deadline:g}s deadline{last}"
            raise PushFailed(grpc.StatusCode.DEADLINE_EXCEEDED, details, run.progress) from None
        run.progress.retry_in = 0.0
        run.notify()
        return run.progress

    async def close(self) -> None:
        """Half-close the stream and let the server end it."""
        stream, self._stream = self._stream, None
        if stream is None:
            return
        try:
            await stream.done_writing()
            await asyncio.wait_for(stream.read(), self.policy.ack_timeout)
        except (grpc.RpcError, TimeoutError):
            # Every batch on the stream is committed already; how it ends changes nothing.
            pass
        finally:
            stream.cancel()

    def _drop_stream(self) -> None:
        if self._stream is not None:
            self._stream.cancel()
            self._stream = None

    async def _attempt(self, run: _BatchRun) -> None:
        if self._stream is None:
            self._stream = self._open_stream()
            self.streams_opened += 1
        stream = self._stream
        try:
            await self._open_batch(stream, run)
            if run.progress.state != results_pb.BATCH_STATE_COMMITTED:
                await self._exchange(stream, run)
        except grpc.aio.AioRpcError as error:
            failure = _StreamFailure.from_rpc_error(error)
        except _StreamFailure as error:
            failure = error
        except BaseException:
            self._drop_stream()
            raise
        else:
            return
        self._drop_stream()
        run.failures += 1
        run.last_failure = failure
        run.progress.last_error = f"{failure.code.name}: {failure.details}"
        rule = disposition(failure.code)
        if rule is Disposition.REOPEN_ONCE:
            failure.retryable = not run.precondition_strike
            run.precondition_strike = True
        elif rule is Disposition.WAIT_AND_RESUME and failure.retry_delay is None:
            # A budget always says when to come back. Without RetryInfo this is a hard limit,
            # such as gRPC's own "message larger than max", that the same chunk hits again.
            failure.retryable = False
        else:
            failure.retryable = rule is not Disposition.FAIL
        raise failure

    def _delay(self, run: _BatchRun) -> float:
        failure = run.last_failure
        assert failure is not None, "tenacity waits only after a failed attempt"
        rule = disposition(failure.code)
        if rule is Disposition.REOPEN_ONCE:
            return 0.0
        if failure.retry_delay is not None:
            return self.policy.after_retry_info(failure.retry_delay, self._rng)
        return self.policy.backoff(run.failures, self._rng)

    def _before_retry(self, run: _BatchRun, state: RetryCallState) -> None:
        run.progress.retries += 1
        run.progress.retry_in = state.upcoming_sleep
        run.notify()

    async def _open_batch(self, stream: ResultStream, run: _BatchRun) -> None:
        run.awaiting_since = time.monotonic()
        # A call that already ended refuses the write; reading then raises its status.
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            await stream.write(pb.ReportResultsRequest(open=run.open))
        ack = await self._read_ack(stream, run)
        run.awaiting_since = None
        run.progress.retry_in = 0.0
        if ack.chunk_index != -1:
            raise ProtocolViolation(f"the answer to BatchOpen acknowledges chunk {ack.chunk_index}")
        if ack.state == results_pb.BATCH_STATE_EXPIRED:
            raise _StreamFailure(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"batch {run.open.batch_id} expired before it was complete; push it again "
                "under a new batch id",
            )
        run.window.reopened(ack.committed_index, ack.credits)
        if not run.opened_once:
            run.opened_once = True
            run.progress.resumed_from = ack.committed_index + 1
            run.counted_through = ack.committed_index
        run.record_commit(ack.committed_index)
        run.progress.state = ack.state
        run.progress.credits = ack.credits
        run.notify()

    async def _exchange(self, stream: ResultStream, run: _BatchRun) -> None:
        # Writing and reading run side by side: acks free credits while chunks still go out.
        sender = asyncio.ensure_future(self._send(stream, run))
        receiver = asyncio.ensure_future(self._receive(stream, run))
        try:
            await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_EXCEPTION)
            # The receiver's error comes first: it carries the status the server ended with.
            for task in (receiver, sender):
                if task.done() and (error := task.exception()) is not None:
                    raise error
        finally:
            for task in (sender, receiver):
                task.cancel()
            await asyncio.gather(sender, receiver, return_exceptions=True)

    async def _send(self, stream: ResultStream, run: _BatchRun) -> None:
        window = run.window
        while not window.all_sent:
            request = window.next_to_send()
            if request is None:
                run.credit.clear()
                await run.credit.wait()
                continue
            if run.awaiting_since is None:
                run.awaiting_since = time.monotonic()
            # Counted as sent before the write returns: the ack may be read before it does.
            window.mark_sent()
            run.progress.chunks_sent += 1
            try:
                await stream.write(request)
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                # The call has ended (gRPC says so either way, depending on timing). Acks the
                # server sent before its status are still to be read, and the receiver raises
                # the status after them.
                return

    async def _receive(self, stream: ResultStream, run: _BatchRun) -> None:
        window = run.window
        last_chunk = window.committed
        while not window.complete:
            ack = await self._read_ack(stream, run)
            if ack.chunk_index != -1:
                # -1 is a credit update; anything else answers a chunk, in order.
                if ack.chunk_index <= last_chunk or ack.chunk_index >= window.next_index:
                    raise ProtocolViolation(
                        f"ack for chunk {ack.chunk_index} out of order (last {last_chunk}, "
                        f"sent up to {window.next_index - 1})"
                    )
                last_chunk = ack.chunk_index
            try:
                window.acked(ack.committed_index, ack.credits)
            except Overtaken as overtaken:
                raise _StreamFailure(grpc.StatusCode.ABORTED, str(overtaken)) from None
            committed_state = ack.state == results_pb.BATCH_STATE_COMMITTED
            if committed_state != window.complete:
                raise ProtocolViolation(
                    f"ack for chunk {ack.chunk_index} says state {results_pb.BatchState.Name(ack.state)} "
                    f"with chunk {ack.committed_index} committed and the final chunk "
                    f"{window.final_index if window.all_sent else 'not sent'}"
                )
            run.awaiting_since = time.monotonic() if window.in_flight else None
            if ack.chunk_index > run.counted_through:
                run.counted_through = ack.chunk_index
                run.progress.accepted += ack.accepted
                run.progress.rejected += ack.rejected
                if ack.rejected and not run.progress.first_reject:
                    run.progress.first_reject = f"chunk {ack.chunk_index}: {ack.first_reject}"
            run.record_commit(ack.committed_index)
            run.progress.state = ack.state
            run.progress.credits = ack.credits
            run.credit.set()
            run.notify()

    async def _read_ack(self, stream: ResultStream, run: _BatchRun) -> results_pb.BatchAck:
        """The next ack of this batch; a silent server is given up on after `ack_timeout`."""
        timeout = self.policy.ack_timeout
        read = asyncio.ensure_future(stream.read())
        try:
            while True:
                done, _ = await asyncio.wait({read}, timeout=timeout)
                if done:
                    break
                # Waiting for credits with nothing in flight is not the server's silence.
                since = run.awaiting_since
                if since is not None and time.monotonic() - since >= timeout:
                    raise _StreamFailure(
                        grpc.StatusCode.DEADLINE_EXCEEDED, f"no acknowledgement for {timeout:g}s"
                    )
        finally:
            if not read.done():
                read.cancel()
            elif not read.cancelled():
                # Mark a failed read as seen even when another error wins: asyncio would
                # otherwise log it as never retrieved.
                read.exception()
        response = read.result()
        if response is grpc.aio.EOF:
            raise _StreamFailure(
                grpc.StatusCode.UNAVAILABLE,
                f"the server ended the stream before batch {run.open.batch_id} was committed",
            )
        if not isinstance(response, pb.ReportResultsResponse) or not response.HasField("ack"):
            raise ProtocolViolation(f"expected a BatchAck, got {response!r}")
        if response.ack.batch_id != run.open.batch_id:
            raise ProtocolViolation(
                f"ack for batch {response.ack.batch_id!r} while batch {run.open.batch_id} is open"
            )
        return response.ack
