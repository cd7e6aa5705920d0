"""Every protocol violation ends the stream with a clear status, after earlier acks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from serviceradar.edge.v1 import edge_service_pb2 as pb
from serviceradar.edge.v1 import edge_service_pb2_grpc as pb_grpc
from serviceradar.edge.v1 import results_pb2 as rpb
from srcore.domain.ingest import BatchRecord, BatchState, IngestLimits, ResultKind, StreamBatch
from tests.helpers.core import running_core
from tests.helpers.db import count_rows
from tests.helpers.results import RawStream, host, new_batch_id, open_sweep, sweep_chunk


async def failure(stream: RawStream, acks_before: int = 0) -> grpc.aio.AioRpcError:
    """Read `acks_before` acks, then the error the stream must end with."""
    for _ in range(acks_before):
        await stream.ack()
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stream.ack()
    return error.value


@pytest.fixture
async def stream(edge: pb_grpc.EdgeServiceAsyncStub) -> RawStream:
    """A raw stream as the demo poller."""
    return RawStream(edge)


async def test_a_gap_in_chunk_numbering_names_the_expected_index(stream: RawStream) -> None:
    batch = new_batch_id()
    stream.send(open_sweep(batch))
    stream.send(sweep_chunk(batch, 0, 0, 5))
    stream.send(sweep_chunk(batch, 2, 10, 5))
    error = await failure(stream, acks_before=2)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "expected chunk index 1" in (error.details() or "")


async def test_a_chunk_for_a_batch_that_is_not_open_is_refused(stream: RawStream) -> None:
    stream.send(sweep_chunk(new_batch_id(), 0, 0, 5))
    error = await failure(stream)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "send open first" in (error.details() or "")


async def test_a_chunk_after_the_final_one_is_refused(stream: RawStream) -> None:
    batch = new_batch_id()
    stream.send(open_sweep(batch))
    stream.send(sweep_chunk(batch, 0, 0, 5, final=True))
    stream.send(sweep_chunk(batch, 1, 5, 5, final=True))
    error = await failure(stream, acks_before=2)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "already received its final chunk" in (error.details() or "")


@pytest.fixture
async def held_stream(tmp_path: Path) -> AsyncIterator[RawStream]:
    """A raw stream to a core that holds received chunks 2 s before committing them.

    A commit extends the credit window, so with the default 2 ms a loaded machine could commit
    the first chunks before the one past the window arrives, which is then within it.
    """
    async with (
        running_core(tmp_path / "data", ingest_flush_delay=2.0) as core,
        core.channel(core.creds.edge()) as channel,
    ):
        yield RawStream(pb_grpc.EdgeServiceStub(channel))


async def test_a_chunk_beyond_the_credit_window_is_refused(held_stream: RawStream) -> None:
    stream = held_stream
    batch = new_batch_id()
    stream.send(open_sweep(batch))
    opened = await stream.ack()
    for index in range(opened.credits + 1):
        stream.send(sweep_chunk(batch, index, index, 1))
    error = await failure(stream, acks_before=opened.credits)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "beyond the credit window" in (error.details() or "")


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (
            pb.ReportResultsRequest(
                open=rpb.BatchOpen(
                    batch_id="not-a-uuid", result_type=rpb.RESULT_TYPE_SWEEP_HOSTS, partition="dc1"
                )
            ),
            "open.batch_id",
        ),
        (
            pb.ReportResultsRequest(open=rpb.BatchOpen(batch_id=new_batch_id(), partition="dc1")),
            "open.result_type",
        ),
        (
            pb.ReportResultsRequest(
                open=rpb.BatchOpen(
                    batch_id=new_batch_id(), result_type=rpb.RESULT_TYPE_SWEEP_HOSTS, partition="DC1"
                )
            ),
            "open.partition",
        ),
        (
            pb.ReportResultsRequest(
                open=rpb.BatchOpen(
                    batch_id=new_batch_id(),
                    result_type=99,  # type: ignore[arg-type]
                    partition="dc1",
                )
            ),
            "open.result_type",
        ),
        (pb.ReportResultsRequest(), "message"),
    ],
)
async def test_a_malformed_open_is_invalid_argument_naming_the_field(
    stream: RawStream, message: pb.ReportResultsRequest, field: str
) -> None:
    stream.send(message)
    error = await failure(stream)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith(field)


async def test_a_payload_of_another_type_is_invalid_argument(stream: RawStream) -> None:
    batch = new_batch_id()
    stream.send(open_sweep(batch))
    stream.send(
        pb.ReportResultsRequest(
            chunk=rpb.ResultChunk(
                batch_id=batch,
                index=0,
                service_checks=rpb.ServiceCheckResults(results=[rpb.ServiceCheckResult(name="x")]),
            )
        )
    )
    error = await failure(stream, acks_before=1)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith("chunk.payload")


@pytest.fixture
async def tight_core(tmp_path: Path) -> AsyncIterator[Callable[[], RawStream]]:
    """A core with small limits: 20 results per chunk, 3 chunks per batch, 64 KiB messages."""
    async with (
        running_core(
            tmp_path / "data",
            ingest_max_results_per_chunk=20,
            ingest_max_chunks_per_batch=3,
            max_message_bytes=64 * 1024,
        ) as core,
        core.channel(core.creds.edge()) as channel,
    ):
        stub = pb_grpc.EdgeServiceStub(channel)
        yield lambda: RawStream(stub)


async def test_too_many_results_in_a_chunk_is_invalid_argument(tight_core: Callable[[], RawStream]) -> None:
    stream = tight_core()
    batch = new_batch_id()
    stream.send(open_sweep(batch))
    stream.send(sweep_chunk(batch, 0, 0, 21))
    error = await failure(stream, acks_before=1)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith("chunk.sweep_hosts.results: 21 results")


async def test_a_batch_over_its_maximum_size_is_invalid_argument(tight_core: Callable[[], RawStream]) -> None:
    stream = tight_core()
    batch = new_batch_id()
    stream.send(open_sweep(batch))
    for index in range(4):
        stream.send(sweep_chunk(batch, index, index, 1))
    error = await failure(stream, acks_before=4)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith("chunk.index")


async def test_an_oversized_chunk_is_resource_exhausted(tight_core: Callable[[], RawStream]) -> None:
    stream = tight_core()
    batch = new_batch_id()
    stream.send(open_sweep(batch))
    await stream.ack()
    big = sweep_chunk(batch, 0, 0, 1)
    big.chunk.sweep_hosts.results[0].hostname = "h" * (100 * 1024)
    stream.send(big)
    error = await failure(stream)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_invalid_results_are_counted_and_skipped_not_stored(
    sqlite_core: object, edge: pb_grpc.EdgeServiceAsyncStub
) -> None:
    stream = RawStream(edge)
    batch = new_batch_id()
    stream.send(open_sweep(batch))
    chunk = sweep_chunk(batch, 0, 0, 30, final=True)
    chunk.chunk.sweep_hosts.results[17].ip = "999.1.1.1"
    chunk.chunk.sweep_hosts.results[20].mac = "not-a-mac"
    # A MAC mixing separators is not a MAC.
    chunk.chunk.sweep_hosts.results[21].mac = "02-00:00:00:00:15"
    stream.send(chunk)
    await stream.ack()
    answer = await stream.ack()
    stream.close()
    assert (answer.accepted, answer.rejected) == (27, 3)
    assert answer.first_reject == "results[17].ip: '999.1.1.1' is not an IP address"
    core = sqlite_core
    assert await count_rows(core.app.db, "sweep_host_results") == 27  # type: ignore[attr-defined]
    assert await count_rows(core.app.db, "sweep_host_results", "WHERE ip = '999.1.1.1'") == 0  # type: ignore[attr-defined]


async def retry_delay(error: grpc.aio.AioRpcError) -> float:
    """The google.rpc.RetryInfo delay a RESOURCE_EXHAUSTED carries, in seconds."""
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert isinstance(raw, bytes)
    info = error_details_pb2.RetryInfo()
    assert status_pb2.Status.FromString(raw).details[0].Unpack(info)
    return float(info.retry_delay.ToTimedelta().total_seconds())


@pytest.mark.parametrize("budget", ["ingest_global_budget", "ingest_tenant_budget"])
async def test_over_budget_new_batches_get_resource_exhausted_with_retry_info(
    tmp_path: Path, budget: str
) -> None:
    async with (
        running_core(tmp_path / "data", **{budget: 0}) as core,
        core.channel(core.creds.edge()) as channel,
    ):
        stream = RawStream(pb_grpc.EdgeServiceStub(channel))
        stream.send(open_sweep(new_batch_id()))
        error = await failure(stream)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await retry_delay(error) > 0


async def test_a_half_open_batch_expires_and_can_no_longer_be_resumed(tmp_path: Path) -> None:
    async with running_core(tmp_path / "data", ingest_resume_window=0.2) as core:
        batch = new_batch_id()
        async with core.channel(core.creds.edge()) as channel:
            stub = pb_grpc.EdgeServiceStub(channel)
            stream = RawStream(stub)
            stream.send(open_sweep(batch))
            stream.send(sweep_chunk(batch, 0, 0, 3))
            await stream.ack()
            await stream.ack()
            stream.close()
            await asyncio.sleep(0.3)
            leader = core.app.coordinator.leader()
            assert leader is not None
            assert await core.app.expire_batches(leader) == 1
            again = RawStream(stub)
            again.send(open_sweep(batch))
            error = await failure(again)
        record = await core.app.ingest.store.get_batch("default", "demo", batch)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "expired" in (error.details() or "")
    assert record is not None and record.state.value == "expired"


async def test_sweep_results_become_latest_host_state_and_close_the_execution(
    sqlite_core: object, edge: pb_grpc.EdgeServiceAsyncStub
) -> None:
    core = sqlite_core
    batch = new_batch_id()
    stream = RawStream(edge)
    opening = open_sweep(batch)
    opening.open.sweep.execution_id = "exec-1"
    opening.open.sweep.target_network = "10.0.0.0/24"
    stream.send(opening)
    await stream.ack()
    first = sweep_chunk(batch, 0, 0, 2)
    first.chunk.sweep_hosts.results[0].observed_at.FromSeconds(1_700_000_000)
    stream.send(first)
    second = rpb.ResultChunk(batch_id=batch, index=1, final=True, completion=rpb.SWEEP_COMPLETION_COMPLETED)
    newer = host(0)
    newer.available = False
    newer.observed_at.FromSeconds(1_700_000_100)
    second.sweep_hosts.results.append(newer)
    stream.send(pb.ReportResultsRequest(chunk=second))
    await stream.ack()
    assert (await stream.ack()).state == rpb.BATCH_STATE_COMMITTED
    stream.close()
    await core.app.ingest.projector.drain()  # type: ignore[attr-defined]
    db = core.app.db  # type: ignore[attr-defined]
    assert await count_rows(db, "host_latest") == 2
    assert await count_rows(db, "host_latest", "WHERE ip = '10.0.0.0' AND available = 0") == 1
    assert (
        await count_rows(db, "sweep_executions", "WHERE execution_id = 'exec-1' AND state = 'completed'") == 1
    )


def test_a_smaller_window_never_takes_back_credit_already_granted() -> None:
    record = BatchRecord("t", "p", "b", ResultKind.SWEEP_HOSTS, "", "dc1", 0, -1, BatchState.OPEN)
    batch = StreamBatch.opened(record, credits=32)
    batch.next_index = 20
    batch.grant(committed_index=0, credits=4)  # the server got busy: the window shrank
    record.committed_index = 0
    # Chunk 20 was sent under the first grant (up to 31): still accepted.
    assert batch.classify(20, IngestLimits()) is True
