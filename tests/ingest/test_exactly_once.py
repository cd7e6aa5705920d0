"""Every acknowledged chunk is stored exactly once, across disconnects and resumes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from serviceradar.admin.v1 import batch_service_pb2 as bpb
from serviceradar.admin.v1 import batch_service_pb2_grpc as bgrpc
from serviceradar.edge.v1 import edge_service_pb2_grpc as pb_grpc
from serviceradar.edge.v1 import results_pb2 as rpb
from tests.helpers.core import RunningCore, running_core
from tests.helpers.db import count_distinct_results, count_rows
from tests.helpers.results import RawStream, new_batch_id, open_sweep, push_chunks, sweep_chunk


async def opened(stub: pb_grpc.EdgeServiceAsyncStub, batch_id: str) -> tuple[RawStream, rpb.BatchAck]:
    """A new stream with `batch_id` opened (or reopened) on it, and the answer to the open."""
    stream = RawStream(stub)
    stream.send(open_sweep(batch_id))
    return stream, await stream.ack()


async def get_batch(core: RunningCore, batch_id: str) -> bpb.Batch:
    """The batch as operators see it."""
    async with core.channel(core.creds.operator()) as channel:
        answer = await bgrpc.BatchServiceStub(channel).GetBatch(
            bpb.GetBatchRequest(poller_id="demo", batch_id=batch_id)
        )
    return answer.batch


async def test_a_batch_is_acked_in_order_and_stored_once(core: RunningCore) -> None:
    batch = new_batch_id()
    async with core.channel(core.creds.edge()) as channel:
        stream = RawStream(pb_grpc.EdgeServiceStub(channel))
        stream.send(open_sweep(batch, expected=20))
        acks = await push_chunks(stream, batch, total_chunks=20, per_chunk=250)
        stream.close()
    assert [a.chunk_index for a in acks] == list(range(20))
    assert [a.committed_index for a in acks] == list(range(20))
    assert all(a.accepted == 250 and a.rejected == 0 for a in acks)
    assert acks[-1].state == rpb.BATCH_STATE_COMMITTED
    assert await count_rows(core.app.db, "sweep_host_results") == 5000
    assert await count_distinct_results(core.app.db, "sweep_host_results") == 5000
    stored = await get_batch(core, batch)
    assert stored.state == rpb.BATCH_STATE_COMMITTED
    assert (stored.committed_index, stored.expected_chunks, stored.accepted) == (19, 20, 5000)


async def test_client_killed_mid_batch_resumes_and_stores_exactly_n(core: RunningCore) -> None:
    batch = new_batch_id()
    async with core.channel(core.creds.edge()) as channel:
        first = RawStream(pb_grpc.EdgeServiceStub(channel))
        first.send(open_sweep(batch))
        # More chunks than any credit window, so the client dies with the batch unfinished.
        acks = await push_chunks(first, batch, total_chunks=300, per_chunk=10, stop_after_acks=7)
        first.cancel()  # chunks beyond the 7th ack may have been sent and committed, or not

    async with core.channel(core.creds.edge()) as channel:
        second = RawStream(pb_grpc.EdgeServiceStub(channel))
        second.send(open_sweep(batch))
        reopened = await second.ack()
        assert reopened.committed_index >= acks[-1].committed_index
        second.send(open_sweep(batch))  # push_chunks reads the open ack itself
        assert reopened.state == rpb.BATCH_STATE_OPEN
        rest = await push_chunks(second, batch, 300, 10, start_at=reopened.committed_index + 1)
        second.close()
    assert rest[-1].state == rpb.BATCH_STATE_COMMITTED
    assert await count_rows(core.app.db, "sweep_host_results") == 3000
    assert await count_distinct_results(core.app.db, "sweep_host_results") == 3000


async def test_resent_acknowledged_chunks_are_acked_again_not_stored(sqlite_core: RunningCore) -> None:
    core = sqlite_core
    batch = new_batch_id()
    async with core.channel(core.creds.edge()) as channel:
        stream = RawStream(pb_grpc.EdgeServiceStub(channel))
        stream.send(open_sweep(batch))
        await stream.ack()
        for index in range(3):
            stream.send(sweep_chunk(batch, index, index * 10, 10))
        assert [(await stream.ack()).chunk_index for _ in range(3)] == [0, 1, 2]
        stream.close()
    async with core.channel(core.creds.edge()) as channel:
        again = RawStream(pb_grpc.EdgeServiceStub(channel))
        again.send(open_sweep(batch))
        reopened = await again.ack()
        assert reopened.committed_index == 2
        for index in range(3):
            again.send(sweep_chunk(batch, index, index * 10, 10))
        duplicates = [await again.ack() for _ in range(3)]
        again.close()
    assert [d.chunk_index for d in duplicates] == [0, 1, 2]
    assert all(d.accepted == 0 and d.committed_index == 2 for d in duplicates)
    assert await count_rows(core.app.db, "sweep_host_results") == 30


async def test_reopening_a_committed_batch_says_so(sqlite_core: RunningCore) -> None:
    core = sqlite_core
    batch = new_batch_id()
    async with core.channel(core.creds.edge()) as channel:
        stream = RawStream(pb_grpc.EdgeServiceStub(channel))
        stream.send(open_sweep(batch))
        await push_chunks(stream, batch, total_chunks=2, per_chunk=5)
        stream.send(open_sweep(batch))
        reopened = await stream.ack()
        stream.close()
    assert reopened.state == rpb.BATCH_STATE_COMMITTED
    assert reopened.committed_index == 1


async def test_a_second_stream_takes_the_batch_and_the_first_is_aborted(sqlite_core: RunningCore) -> None:
    core = sqlite_core
    batch = new_batch_id()
    async with core.channel(core.creds.edge()) as channel:
        stub = pb_grpc.EdgeServiceStub(channel)
        old, _ = await opened(stub, batch)
        old.send(sweep_chunk(batch, 0, 0, 10))
        await old.ack()
        new, reopened = await opened(stub, batch)
        assert reopened.committed_index == 0
        old.send(sweep_chunk(batch, 1, 10, 10))
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await old.ack()
        assert error.value.code() == grpc.StatusCode.ABORTED
        new.send(sweep_chunk(batch, 1, 10, 10, final=True))
        assert (await new.ack()).state == rpb.BATCH_STATE_COMMITTED
        new.close()
    assert await count_rows(core.app.db, "sweep_host_results") == 20


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_chunks_of_an_old_and_a_new_stream_in_one_flush_are_stored_once(
    store: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # The edge reconnects while its old stream's chunks still wait for a flush, and sends them
    # again: the writer's pause puts both streams' copies in the same flush.
    overrides: dict[str, object] = {"ingest_flush_delay": 1.0}
    if store == "postgres":
        overrides["database_url"] = request.getfixturevalue("fresh_database")
    async with running_core(tmp_path / "data", **overrides) as core:
        batch = new_batch_id()
        async with core.channel(core.creds.edge()) as channel:
            stub = pb_grpc.EdgeServiceStub(channel)
            old, _ = await opened(stub, batch)
            for index in range(5):
                old.send(sweep_chunk(batch, index, index * 10, 10))
            await asyncio.sleep(0.2)
            new, reopened = await opened(stub, batch)
            assert reopened.committed_index == -1  # the old stream's chunks are not flushed yet
            for index in range(10):
                new.send(sweep_chunk(batch, index, index * 10, 10, final=index == 9))
            acks = [await new.ack() for _ in range(10)]
            new.close()
            old.close()
        # Acks count up one by one, and only the final chunk's says the batch is committed.
        assert [(a.chunk_index, a.committed_index) for a in acks] == [(i, i) for i in range(10)]
        assert [a.state for a in acks] == [rpb.BATCH_STATE_OPEN] * 9 + [rpb.BATCH_STATE_COMMITTED]
        assert sum(a.accepted for a in acks) == 50  # chunks 5-9: 0-4 were the old stream's
        assert await count_rows(core.app.db, "sweep_host_results") == 100
        assert await count_distinct_results(core.app.db, "sweep_host_results") == 100
