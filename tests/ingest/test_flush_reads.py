"""Reading the newest flushes back costs what they hold, not what the raw table holds (PostgreSQL).

The latest-state projection and identity (when it trails the writer) read committed flushes
back from sweep_host_results, which only has a BRIN index on flush_id. Unless the stages keep
that index summarised and plan their reads on it, every round reads every page written since
the last VACUUM, and on a never-analysed table (autovacuum off) the whole table: a round's cost
then grows with the table. Each test builds a history of flushes the stage has already handled,
commits two new ones, and counts the table's pages the stage's next round reads, from
PostgreSQL's own per-table I/O statistics.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import sql as psql
from sqlalchemy.engine import make_url

from srcore.domain.processing import ProcessingPolicy
from srcore.ingest.identity import IdentityStage
from srcore.ingest.projector import Projector
from srcore.store.database import Database
from srcore.store.flush_reads import FLUSH_INDEXES, RangeSummarizer

FLUSH_ROWS = 2_000
HISTORY_FLUSHES = 80
HOSTS = 2_000
# Hostnames this long make about 20 rows a page: the history fills some 8,000 pages.
PADDING = "x" * 200


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _commit_flushes(url: str, first: int, count: int, *, identify: bool) -> None:
    """Commit `count` flushes of FLUSH_ROWS sweep results, as the writer would, in id order."""
    last = first + count - 1
    with psycopg.connect(_plain(url)) as conn:
        conn.execute(
            "INSERT INTO ingest_flushes (id, created_at, projected)"
            " SELECT f, now(), false FROM generate_series(%s::bigint, %s::bigint) AS f",
            (first, last),
        )
        if identify:
            conn.execute(
                "INSERT INTO identity_pending (flush_id) SELECT generate_series(%s::bigint, %s::bigint)",
                (first, last),
            )
        conn.execute(
            "INSERT INTO sweep_host_results (tenant, partition, poller_id, agent_id, batch_id, chunk_index,"
            " seq, flush_id, execution_id, ip, mac, hostname, available, icmp_rtt_us, icmp_loss, open_ports,"
            " observed_at, received_at, response_time_us)"
            " SELECT 'default', 'lab', 'poller-1', 'agent-1', 'batch-' || (r / %(rows)s), 0, r %% %(rows)s,"
            " r / %(rows)s, '', '10.1.' || (r %% %(hosts)s / 256) || '.' || (r %% %(hosts)s %% 256), '',"
            " 'host-' || (r %% %(hosts)s) || %(pad)s, true, 500, 0, '22', now(), now(), 100"
            " FROM generate_series(%(start)s::bigint, %(end)s::bigint) AS r",
            {
                "rows": FLUSH_ROWS,
                "hosts": HOSTS,
                "pad": PADDING,
                "start": first * FLUSH_ROWS,
                "end": (last + 1) * FLUSH_ROWS - 1,
            },
        )


async def _quiesce(url: str) -> None:
    """Wait until no other session is connected: each flushed its I/O statistics when it ended."""
    with psycopg.connect(_plain(url), autocommit=True) as conn:
        for _ in range(500):
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            ).fetchone()
            if row is not None and row[0] == 0:
                return
            await asyncio.sleep(0.02)
    raise AssertionError("sessions of the test database did not end")


async def _pages_read(url: str, work: Callable[[Database], Awaitable[int]]) -> tuple[int, int, int]:
    """Run `work` on a database of its own; returns its result, the table's pages read, its size."""
    await _quiesce(url)

    def counters() -> tuple[int, int]:
        with psycopg.connect(_plain(url)) as conn:
            row = conn.execute(
                "SELECT coalesce(heap_blks_read, 0) + coalesce(heap_blks_hit, 0),"
                " pg_relation_size('sweep_host_results') / current_setting('block_size')::int"
                " FROM pg_statio_user_tables WHERE relname = 'sweep_host_results'"
            ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    before, _ = counters()
    db = Database(url)
    try:
        result = await work(db)
    finally:
        await db.dispose()
    await _quiesce(url)
    after, table_pages = counters()
    return result, after - before, table_pages


async def _migrated(url: str) -> None:
    db = Database(url)
    try:
        await db.migrate()
    finally:
        await db.dispose()


def _projector(db: Database) -> Projector:
    return Projector(db, ProcessingPolicy(), lambda: datetime.now(UTC), "replica-1", lambda: 1)


async def _pages_of_a_round_after_history(
    url: str, identify: bool, drain: Callable[[Database], Awaitable[int]]
) -> None:
    """The stage (`drain`) handles a history of flushes, then two new ones reading few pages."""
    await _migrated(url)
    _commit_flushes(url, 1, HISTORY_FLUSHES, identify=identify)
    handled, _, _ = await _pages_read(url, drain)
    assert handled == HISTORY_FLUSHES

    _commit_flushes(url, HISTORY_FLUSHES + 1, 2, identify=identify)
    handled, pages, table_pages = await _pages_read(url, drain)

    assert handled == 2
    assert table_pages > 7_000, table_pages
    # Two flushes fill about 200 pages; summarising their ranges reads them once more.
    assert pages < table_pages / 10, (pages, table_pages)


async def test_a_projection_round_reads_the_new_flushes_not_the_table(fresh_database: str) -> None:
    await _pages_of_a_round_after_history(fresh_database, False, lambda db: _projector(db).drain())

    with psycopg.connect(_plain(fresh_database)) as conn:
        row = conn.execute("SELECT count(*), bool_and(projected) FROM ingest_flushes").fetchone()
        assert row == (HISTORY_FLUSHES + 2, True)
        assert conn.execute("SELECT count(*) FROM host_latest").fetchone() == (HOSTS,)


async def test_an_identity_round_reading_back_reads_the_new_flushes_not_the_table(
    fresh_database: str,
) -> None:
    def drain(db: Database) -> Awaitable[int]:
        # Never notified by a writer: every flush is read back from the store.
        return IdentityStage(db, lambda: datetime.now(UTC), "replica-1").drain()

    await _pages_of_a_round_after_history(fresh_database, True, drain)

    with psycopg.connect(_plain(fresh_database)) as conn:
        assert conn.execute("SELECT count(*) FROM identity_pending").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM devices").fetchone() == (HOSTS,)


async def test_summarising_does_not_wait_behind_another_summariser(fresh_database: str) -> None:
    url = fresh_database
    await _migrated(url)
    _commit_flushes(url, 1, 3, identify=False)
    db = Database(url)
    try:
        with psycopg.connect(_plain(url)) as holder:
            # VACUUM or another replica's pass holds this lock while it summarises.
            holder.execute("LOCK TABLE sweep_host_results IN SHARE UPDATE EXCLUSIVE MODE")
            assert await asyncio.wait_for(RangeSummarizer(db).catch_up(FLUSH_INDEXES), timeout=5) is None
        summarized = await RangeSummarizer(db).catch_up(FLUSH_INDEXES)
        assert summarized is not None and summarized > 0
        assert await RangeSummarizer(db).catch_up(FLUSH_INDEXES) == 0
    finally:
        await db.dispose()


async def test_a_core_that_does_not_own_its_tables_still_projects_and_says_why_reads_are_slow(
    fresh_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = fresh_database
    await _migrated(url)
    _commit_flushes(url, 1, 2, identify=False)
    role = f"srcore_reader_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_plain(url), autocommit=True) as admin:
        admin.execute(psql.SQL("CREATE ROLE {} LOGIN").format(psql.Identifier(role)))
        admin.execute(
            psql.SQL("GRANT ALL ON ALL TABLES IN SCHEMA public TO {}").format(psql.Identifier(role))
        )
        try:
            as_role = make_url(url).set(username=role).render_as_string(hide_password=False)
            db = Database(as_role)
            try:
                summarizer = RangeSummarizer(db)
                assert await summarizer.catch_up(FLUSH_INDEXES) is None
                assert "run the core as the owner of its tables" in caplog.text
                caplog.clear()
                # Said once: later rounds do not try again.
                assert await summarizer.catch_up(FLUSH_INDEXES) is None
                assert caplog.text == ""
                assert await _projector(db).drain() == 2
            finally:
                await db.dispose()
        finally:
            admin.execute(psql.SQL("DROP OWNED BY {}").format(psql.Identifier(role)))
            admin.execute(psql.SQL("DROP ROLE {}").format(psql.Identifier(role)))
