"""Reading flushes back from the append-only raw tables on PostgreSQL in proportion to the flushes.

The raw result tables carry BRIN indexes on `flush_id` and `observed_at` (ingest_tables): a
B-tree on flush_id measured about 1.2 µs more per COPYed row. A BRIN index only narrows a scan
over the page ranges it has summarised, and PostgreSQL summarises new ranges in VACUUM, so until
autovacuum next visits the table (every 20 % of growth by default, never where it is off) every
page written since is read by every query on the index. The stages that read flushes back (the
latest-state projection, identity when it trails the writer) read the newest flushes, exactly
the unsummarised tail: measured, each round scanned the whole table, and a round's cost grew
with the table instead of with its flushes.

So the stages summarise the new ranges themselves before they read (`summarize_new_ranges`),
and plan those reads with sequential scans off (`flush_index_reads`): on a table that has never
been analysed, as where autovacuum is off, the planner estimates a few flushes as a large share
of the table and scans all of it, summarised or not.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from srcore.store.database import Database

FLUSH_INDEXES = (
    "ix_sweep_host_results_flush",
    "ix_service_check_results_flush",
    "ix_device_updates_flush",
)
TIME_INDEXES = (
    "ix_sweep_host_results_observed",
    "ix_service_check_results_observed",
    "ix_device_updates_observed",
)
# PostgreSQL's lock_not_available: another session holds the table's summarisation lock.
_LOCK_NOT_AVAILABLE = "55P03"


async def summarize_new_ranges(db: Database, indexes: Sequence[str]) -> int | None:
    """Summarise the page ranges these BRIN indexes do not cover yet; returns how many.

    Costs one pass over the pages written since the last summarisation. Summarising takes a
    lock that concurrent summarisers (another stage, another replica, VACUUM) also take: this
    one does not queue behind them but returns None, as their pass covers the same pages.
    Nothing to do on SQLite, whose flush index is a B-tree.
    """
    if not db.is_postgres or not indexes:
        return 0
    calls = ", ".join(f"brin_summarize_new_values('{index}'::regclass)" for index in indexes)
    try:
        async with db.begin() as conn:
            await conn.exec_driver_sql("SET LOCAL lock_timeout = '20ms'")
            row = (await conn.exec_driver_sql(f"SELECT {calls}")).one()
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE:
            return None
        raise
    return sum(int(count) for count in row)


@contextlib.asynccontextmanager
async def flush_index_reads(conn: AsyncConnection) -> AsyncIterator[None]:
    """Plan the statements inside with sequential scans off (PostgreSQL), for reads by flush.

    Only for statements that select a few flushes of the raw tables: the setting covers every
    table they touch. It is back to its default after the block for the rest of the transaction.
    """
    if conn.dialect.name != "postgresql":
        yield
        return
    await conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
    yield
    # Not on an error: the transaction is aborted then, and ends with the setting.
    await conn.exec_driver_sql("SET LOCAL enable_seqscan TO DEFAULT")
