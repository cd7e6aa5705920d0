"""One tenant's flood must not starve another tenant's ingest.

The writer decides who is served: every flush gives each tenant with work an equal share of
its rows (max-min), whatever the number of streams behind a tenant. That is asserted here on
the real writer, deterministically. The throughput figure (a 20-stream tenant against a
1-stream tenant) is measured by bench/fairness.py, not asserted: tests make no timing claims.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from serviceradar.edge.v1 import results_pb2 as rpb
from srcore.domain.ingest import BatchRecord, BatchState, Budget, IngestLimits, ResultKind, SweepCompletion
from srcore.ingest.writer import BatchingWriter, PendingChunk
from srcore.store.database import Database
from srcore.store.ingest import IngestStore


def record(tenant: str, batch: str) -> BatchRecord:
    """An open sweep batch of `tenant`."""
    return BatchRecord(tenant, "poller", batch, ResultKind.SWEEP_HOSTS, "", "dc1", 0, -1, BatchState.OPEN)


async def test_each_flush_gives_a_one_stream_tenant_its_share_beside_a_twenty_stream_flood(
    tmp_path: Path,
) -> None:
    db = Database(f"sqlite:///{tmp_path / 'srcore.db'}")
    writer = BatchingWriter(
        IngestStore(db), Budget(IngestLimits()), lambda: datetime.now(UTC), flush_rows=5000
    )
    empty = rpb.ResultChunk()
    # Tenant A: 20 streams (batches), 8 chunks of 500 each queued; tenant B: 1 stream, 8 chunks.
    for stream in range(20):
        flood = record("acme", f"a-{stream}")
        for index in range(8):
            writer.submit(PendingChunk(flood, index, False, SweepCompletion.NONE, empty, 500))
    quiet = record("default", "b-0")
    for index in range(8):
        writer.submit(PendingChunk(quiet, index, False, SweepCompletion.NONE, empty, 500))

    served = []
    for _ in range(4):
        taken = writer._take()
        rows = {
            tenant: sum(p.size for p in taken if p.record.tenant == tenant) for tenant in ("acme", "default")
        }
        served.append(rows)
        for pending in taken:
            writer._budget.release(pending.record.tenant, pending.size)
    await db.dispose()
    # B gets half of every flush while it has work (5 then 3 chunks), never less than A.
    assert served[0] == {"acme": 2500, "default": 2500}
    assert served[1]["default"] == 1500 and served[1]["acme"] == 3500
    assert served[2] == {"acme": 5000, "default": 0}
    # In order within a batch: B's chunks came out 0..7.
    assert sum(s["default"] for s in served) == 8 * 500


async def test_a_tenant_with_many_streams_gets_narrower_windows_per_stream() -> None:
    budget = Budget(IngestLimits())
    budget.stream_started("default")
    for _ in range(20):
        budget.stream_started("acme")
    one_stream = budget.credits("default", chunk_rows=500)
    each_of_twenty = budget.credits("acme", chunk_rows=500)
    assert one_stream == IngestLimits().credit_window
    assert each_of_twenty * 20 <= one_stream * 4
    assert each_of_twenty >= 1
