"""Reading flushes back from the append-only raw tables on PostgreSQL in proportion to the flushes.

The raw result tables carry BRIN indexes on `flush_id` and `observed_at` (ingest_tables): a
B-tree on flush_id measured about 1.2 µs more per COPYed row. A BRIN index only narrows a scan
over the page ranges it has summarised, and PostgreSQL summarises new ranges in VACUUM, so until
autovacuum next visits the table (every 20 % of growth by default, never where it is off) every
page written since is read by every query on the index. The stages that read flushes back (the
latest-state projection, identity when it trails the writer) read the newest flushes, exactly
the unsummarised tail: measured, each round scanned the whole table, and a round's cost grew
with the table instead of with its flushes.

So the stages summarise the new ranges themselves before they read (`RangeSummarizer`),
and plan those reads with sequential scans off (`flush_index_reads`): on a table that has never
been analysed, as where autovacuum is off, the planner estimates a few flushes as a large share
of the table and scans all of it, summarised or not.
"""

from __future__ import annotations

import contextlib
import logging
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
# PostgreSQL's lock_not_available (another session holds the table's summarisation lock) and
# insufficient_privilege (only an index's owner may summarise it).
_LOCK_NOT_AVAILABLE = "55P03"
_INSUFFICIENT_PRIVILEGE = "42501"

log = logging.getLogger(__name__)


class RangeSummarizer:
    """Summarises the page ranges of BRIN indexes that are not covered yet, on PostgreSQL.

    Each call costs one pass over the pages written since the last summarisation, by anyone.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._permitted = True

    async def catch_up(self, indexes: Sequence[str]) -> int | None:
        """Summarise what these indexes do not cover yet; returns how many ranges.

        Summarising takes a lock that concurrent summarisers (another stage, another replica,
        VACUUM) also take: this call does not queue behind them but returns None, as their pass
        covers the same pages. Only the indexes' owner may summarise them: a role that is not
        (migrations run by another role) is told so once in the log, and reads then cost what
        they cost before. Nothing to do on SQLite, whose flush index is a B-tree.
        """
        if not self._db.is_postgres or not indexes:
            return 0
        if not self._permitted:
            return None
        calls = ", ".join(f"brin_summarize_new_values('{index}'::regclass)" for index in indexes)
        try:
            async with self._db.begin() as conn:
                await conn.exec_driver_sql("SET LOCAL lock_timeout = '20ms'")
                row = (await conn.exec_driver_sql(f"SELECT {calls}")).one()
        except DBAPIError as exc:
            state = getattr(exc.orig, "sqlstate", None)
            if state == _LOCK_NOT_AVAILABLE:
                return None
            if state == _INSUFFICIENT_PRIVILEGE:
                self._permitted = False
                log.warning(
                    "cannot summarise the raw tables' BRIN indexes (%s): reads of new flushes will scan"
                    " every page written since the last VACUUM; run the core as the owner of its tables",
                    exc.orig,
                )
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
