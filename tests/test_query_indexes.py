"""The indexes of 0011_query_indexes, and the queries they serve, on SQLite and PostgreSQL.

A device's history by identifier, the two latest completed executions of each sweep (alert
rule), and the ingest totals of the alert window: each must be served by an index, not by reading
the raw tables or every execution ever completed. Plans are checked with sequential scans
disabled on PostgreSQL (so a tiny table still shows whether an index *can* serve the query) and
with EXPLAIN QUERY PLAN on SQLite (no statistics, as the embedded store runs).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from psycopg import sql as psql
from sqlalchemy import event
from sqlalchemy.schema import CreateIndex

import srcore.store.alert_tables
import srcore.store.device_tables
import srcore.store.stats_tables  # noqa: F401  (every module registers its tables on the metadata)
from srcore.store.alerts import AlertRepository
from srcore.store.database import Database, sqlite_url
from srcore.store.devices import DeviceRepository, IdentifierRow, ObservationRow
from srcore.store.ingest_tables import device_updates, ingest_batches, sweep_executions, sweep_host_results
from srcore.store.tables import metadata

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
MAC = "00:1a:2b:00:00:0a"

# Each index of 0011_query_indexes as the database describes it: PostgreSQL's pg_indexes.indexdef
# (canonical), SQLite's sqlite_master.sql (the DDL as written). None: not on that dialect.
EXPECTED: dict[str, dict[str, str | None]] = {
    "ix_device_updates_tenant_ip": {
        "postgresql": "CREATE INDEX ix_device_updates_tenant_ip ON public.device_updates"
        " USING btree (tenant, partition, ip)",
        "sqlite": "CREATE INDEX ix_device_updates_tenant_ip ON device_updates (tenant, partition, ip)",
    },
    "ix_device_updates_tenant_mac": {
        "postgresql": "CREATE INDEX ix_device_updates_tenant_mac ON public.device_updates"
        " USING btree (tenant, mac) WHERE ((mac)::text <> ''::text)",
        "sqlite": "CREATE INDEX ix_device_updates_tenant_mac ON device_updates (tenant, mac) WHERE mac <> ''",
    },
    "ix_device_updates_external_ids": {
        "postgresql": "CREATE INDEX ix_device_updates_external_ids ON public.device_updates"
        " USING gin (((external_ids)::jsonb) jsonb_path_ops) WHERE (external_ids <> '{}'::text)",
        "sqlite": None,
    },
    "ix_sweep_executions_latest": {
        "postgresql": "CREATE INDEX ix_sweep_executions_latest ON public.sweep_executions"
        " USING btree (tenant, poller_id, sweep_id, completed_at DESC, execution_id DESC)"
        " WHERE (((state)::text = 'completed'::text) AND ((sweep_id)::text <> ''::text))",
        "sqlite": "CREATE INDEX ix_sweep_executions_latest ON sweep_executions"
        " (tenant, poller_id, sweep_id, completed_at DESC, execution_id DESC)"
        " WHERE state = 'completed' AND sweep_id <> ''",
    },
}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated store on SQLite and on a fresh PostgreSQL database."""
    postgres = request.param == "postgres"
    database = Database(request.getfixturevalue("fresh_database") if postgres else sqlite_url(tmp_path))
    await database.migrate()
    yield database
    await database.dispose()


def declared_indexes(dialect: str) -> dict[str, set[str]]:
    """Table -> names of the indexes `metadata.create_all` would create on `dialect`."""
    declared: dict[str, set[str]] = {name: set() for name in metadata.tables}

    def record(ddl: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(ddl, CreateIndex):
            index = ddl.element
            assert index.table is not None
            declared[index.table.name].add(str(index.name))

    driver = "postgresql+psycopg" if dialect == "postgresql" else "sqlite"
    metadata.create_all(sa.create_mock_engine(f"{driver}://", record), checkfirst=False)
    return declared


async def test_the_migrated_indexes_are_the_declared_ones(db: Database) -> None:
    def migrated(conn: sa.Connection) -> dict[str, set[str]]:
        inspector = sa.inspect(conn)
        return {
            table: {
                str(index["name"])
                for index in inspector.get_indexes(table)
                # PostgreSQL lists the index behind each UNIQUE constraint too.
                if not index.get("duplicates_constraint")
            }
            for table in metadata.tables
        }

    async with db.connect() as conn:
        found = await conn.run_sync(migrated)
    assert found == declared_indexes(db.dialect)


async def test_the_migrations_build_the_declared_schema(db: Database) -> None:
    """What alembic autogenerate would write against the migrated database: nothing."""

    def differences(conn: sa.Connection) -> list[Any]:
        with warnings.catch_warnings():
            # SQLite cannot reflect expression indexes; the one there is is PostgreSQL's only.
            warnings.filterwarnings("ignore", "autogenerate skipping metadata-specified expression")
            return list(compare_metadata(MigrationContext.configure(conn), metadata))

    async with db.connect() as conn:
        assert await conn.run_sync(differences) == []


async def test_the_query_indexes_exist_as_designed(db: Database) -> None:
    if db.is_postgres:
        query = sa.text("SELECT indexname, indexdef FROM pg_indexes WHERE indexname LIKE 'ix_%'")
    else:
        query = sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND name LIKE 'ix_%'")
    async with db.connect() as conn:
        found = {name: " ".join(str(ddl).split()) for name, ddl in await conn.execute(query)}
    for name, definitions in EXPECTED.items():
        assert found.get(name) == definitions[db.dialect], name


# ---- the queries ------------------------------------------------------------------------------


def _origin(tenant: str, partition: str, batch: str, seq: int, at: datetime) -> dict[str, Any]:
    return {
        "tenant": tenant, "partition": partition, "poller_id": "p1", "agent_id": "a1", "batch_id": batch,
        "chunk_index": 0, "seq": seq, "flush_id": 1, "observed_at": at, "received_at": at,
    }  # fmt: skip


def sweep(tenant: str, partition: str, ip: str, mac: str, seq: int, at: datetime) -> dict[str, Any]:
    """A sweep_host_results row."""
    return {
        **_origin(tenant, partition, "sweep", seq, at), "execution_id": "x1", "ip": ip, "mac": mac,
        "hostname": "", "available": True, "icmp_rtt_us": None, "icmp_loss": 0.0, "open_ports": "",
        "response_time_us": None,
    }  # fmt: skip


def update(tenant: str, ip: str, mac: str, external: str, seq: int, at: datetime) -> dict[str, Any]:
    """A device_updates row in partition dc1; `external` is the stored JSON text."""
    return {
        **_origin(tenant, "dc1", "update", seq, at), "source": "armis", "ip": ip, "mac": mac,
        "hostname": "", "external_ids": external, "available": True, "metadata": "{}",
    }  # fmt: skip


IDENTIFIERS = [
    IdentifierRow("ip", "10.0.0.1", "dc1", T0),
    IdentifierRow("mac", MAC, "", T0),
    IdentifierRow("external", "armis:A-1", "", T0),
]


async def seed_history(db: Database) -> set[tuple[str, int]]:
    """Raw rows of two tenants; the (kind, seq) of those IDENTIFIERS name in tenant acme."""
    at = [T0 + timedelta(minutes=i) for i in range(12)]
    sweeps = [
        sweep("acme", "dc1", "10.0.0.1", "", 0, at[0]),  # by IP
        sweep("acme", "dc2", "10.0.0.1", "", 1, at[1]),  # the same IP in another partition
        sweep("acme", "dc1", "10.0.0.9", MAC, 2, at[2]),  # by MAC, at another IP
        sweep("acme", "dc1", "10.0.0.2", "", 3, at[3]),
        sweep("other", "dc1", "10.0.0.1", MAC, 4, at[4]),  # another tenant
    ]
    updates = [
        update("acme", "", "", '{"armis": "A-1"}', 0, at[5]),  # by external id alone
        update("acme", "", "", '{"armis": "A-1", "netbox": "7"}', 1, at[6]),  # among others
        update("acme", "", "", '{"armis": "A-10"}', 2, at[7]),  # a longer id
        update("acme", "", "", '{"netbox": "A-1"}', 3, at[8]),  # another system
        update("acme", "10.0.0.1", "", "{}", 4, at[9]),  # by IP
        update("acme", "", MAC, "{}", 5, at[10]),  # by MAC
        update("other", "10.0.0.1", MAC, '{"armis": "A-1"}', 6, at[11]),  # another tenant
    ]
    async with db.begin() as conn:
        await conn.execute(sweep_host_results.insert(), sweeps)
        await conn.execute(device_updates.insert(), updates)
    return {("sweep", 0), ("sweep", 2), *(("device_update", seq) for seq in (0, 1, 4, 5))}


async def test_history_finds_every_identifier_of_the_tenant_and_nothing_else(db: Database) -> None:
    expected = await seed_history(db)
    repository = DeviceRepository(db)
    found = await repository.observations("acme", IDENTIFIERS, 100, None)
    assert {(o.kind, o.seq) for o in found} == expected
    stamps = [o.observed_at for o in found]
    assert stamps == sorted(stamps, reverse=True)

    # Page by page, the same rows in the same order.
    pages: list[ObservationRow] = []
    after = None
    while True:
        page = await repository.observations("acme", IDENTIFIERS, 2, after)
        pages.extend(page)
        if len(page) < 2:
            break
        last = page[-1]
        after = (last.observed_at, last.kind, last.poller_id, last.batch_id, last.chunk_index, last.seq)
    assert [(o.kind, o.seq) for o in pages] == [(o.kind, o.seq) for o in found]


@contextmanager
def captured(db: Database) -> Iterator[list[tuple[str, Any]]]:
    """The statements (with parameters) the store sends while the block runs."""
    statements: list[tuple[str, Any]] = []

    def grab(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        statements.append((statement, parameters))

    event.listen(db.engine.sync_engine, "before_cursor_execute", grab)
    try:
        yield statements
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", grab)


def positional(statement: str) -> tuple[str, list[str]]:
    """A psycopg statement with `%(name)s` placeholders as PREPARE takes it ($1, $2...), and the
    parameter names in that order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return re.sub(r"%\((\w+)\)s", number, statement).replace("%%", "%"), names


async def plans(db: Database, statements: list[tuple[str, Any]], table: str) -> list[str]:
    """The plan of each captured statement reading `table`.

    On PostgreSQL the generic plan, the one a server-side prepared statement may settle on (the
    parameters unknown, so a partial index serves only if the query spells its predicate out),
    with sequential scans disabled.
    """
    out: list[str] = []
    async with db.begin() as conn:
        if db.is_postgres:
            await conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            await conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
        for statement, parameters in statements:
            if f"FROM {table}" not in statement:
                continue
            if db.is_postgres:
                driver = (await conn.get_raw_connection()).driver_connection
                text, names = positional(statement)
                args = ", ".join(psql.Literal(parameters[name]).as_string(driver) for name in names)
                await conn.exec_driver_sql(f"PREPARE srcore_plan AS {text}")
                rows = await conn.exec_driver_sql(
                    "EXPLAIN EXECUTE srcore_plan" + (f"({args})" if args else "")
                )
                plan = "\n".join(str(row[0]) for row in rows)
                await conn.exec_driver_sql("DEALLOCATE srcore_plan")
            else:
                rows = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
                plan = "\n".join(str(row[-1]) for row in rows)
            out.append(plan)
    assert out, f"no statement read {table}"
    return out


async def add_filler(db: Database) -> None:
    """Thousands of other hosts of tenant acme, analysed: a tenant's rows are no longer few, so
    only an index that narrows to the identifier is worth using."""
    at = T0 - timedelta(days=1)
    hosts = [f"10.9.{n // 250}.{n % 250}" for n in range(5000)]
    async with db.begin() as conn:
        await conn.execute(
            sweep_host_results.insert(),
            [sweep("acme", "dc1", ip, "", 100 + n, at) for n, ip in enumerate(hosts)],
        )
        await conn.execute(
            device_updates.insert(),
            [update("acme", ip, "", f'{{"armis": "F-{n}"}}', 100 + n, at) for n, ip in enumerate(hosts)],
        )
        if db.is_postgres:
            await conn.exec_driver_sql("ANALYZE")  # SQLite: none, as the embedded store runs


async def test_history_is_read_through_the_identifier_indexes(db: Database) -> None:
    await seed_history(db)
    await add_filler(db)
    repository = DeviceRepository(db)
    with captured(db) as by_ip_and_mac:
        await repository.observations("acme", IDENTIFIERS[:2], 10, None)
    with captured(db) as with_external:
        await repository.observations("acme", IDENTIFIERS, 10, None)
    for plan in await plans(db, by_ip_and_mac, "device_updates"):
        assert "ix_device_updates_tenant_ip" in plan and "ix_device_updates_tenant_mac" in plan, plan
        assert "Seq Scan" not in plan and "SCAN " not in plan, plan
    (plan,) = await plans(db, with_external, "device_updates")
    if db.is_postgres:
        for index in (
            "ix_device_updates_tenant_ip",
            "ix_device_updates_tenant_mac",
            "ix_device_updates_external_ids",
        ):
            assert index in plan, plan
        assert "Seq Scan" not in plan, plan
    else:
        # No index serves a substring of the JSON text: one table scan, never the tenant walked
        # through an index's prefix.
        assert "(tenant=?)" not in plan, plan


async def test_sweep_pairs_are_the_two_latest_completed_executions_of_each_sweep(db: Database) -> None:
    def execution(
        tenant: str, sweep_id: str, execution_id: str, state: str, minute: int, available: int
    ) -> dict[str, Any]:
        at = T0 + timedelta(minutes=minute)
        return {
            "tenant": tenant, "poller_id": "p1", "execution_id": execution_id, "partition": "dc1",
            "sweep_id": sweep_id, "target_network": "10.0.0.0/24", "state": state, "started_at": at,
            "completed_at": None if state == "running" else at, "hosts_total": 100,
            "hosts_available": available,
        }  # fmt: skip

    rows = [
        execution("acme", "lan", "e1", "completed", 1, 90),
        execution("acme", "lan", "e2", "completed", 2, 80),
        execution("acme", "lan", "e3", "completed", 3, 50),
        execution("acme", "lan", "e4", "failed", 4, 0),
        execution("acme", "lan", "e5", "running", 5, 0),
        execution("acme", "dmz", "d1", "completed", 1, 10),  # one execution: no pair
        execution("acme", "", "n1", "completed", 1, 10),  # no sweep id
        execution("acme", "", "n2", "completed", 2, 10),
        # Same completion time: the larger execution id is the later one.
        execution("beta", "lan", "b1", "completed", 7, 40),
        execution("beta", "lan", "b2", "completed", 7, 30),
    ]
    batch = {"poller_id": "p1", "result_type": "sweep", "partition": "dc1", "opened_at": T0}
    batches = [
        {**batch, "tenant": "acme", "batch_id": "old", "state": "committed", "accepted": 5, "rejected": 5,
         "updated_at": T0 - timedelta(hours=1)},
        {**batch, "tenant": "acme", "batch_id": "new", "state": "committed", "accepted": 90, "rejected": 10,
         "updated_at": T0},
        {**batch, "tenant": "acme", "batch_id": "open", "state": "open", "accepted": 1, "rejected": 2,
         "updated_at": T0},
        {**batch, "tenant": "beta", "batch_id": "gone", "state": "expired", "accepted": 3, "rejected": 0,
         "updated_at": T0},
    ]  # fmt: skip
    async with db.begin() as conn:
        await conn.execute(sweep_executions.insert(), rows)
        await conn.execute(ingest_batches.insert(), batches)

    repository = AlertRepository(db)
    with captured(db) as statements:
        facts = await repository.facts(T0 - timedelta(minutes=5))
    assert [(p.tenant, p.sweep_id, p.previous_available, p.latest_available) for p in facts.sweeps] == [
        ("acme", "lan", 80, 50),
        ("beta", "lan", 40, 30),
    ]
    assert sorted((w.tenant, w.accepted, w.rejected) for w in facts.ingest) == [
        ("acme", 91, 12),
        ("beta", 3, 0),
    ]

    (plan,) = await plans(db, statements, "sweep_executions")
    assert "ix_sweep_executions_latest" in plan, plan
    if db.is_postgres:
        # Read per sweep through the index, never every execution sorted and ranked.
        assert "Seq Scan" not in plan and "WindowAgg" not in plan, plan
    (plan,) = await plans(db, statements, "ingest_batches")
    # A range of updated_at within each state, not the whole index read for updated_at.
    if db.is_postgres:
        assert "Index Cond: (((state)::text = ANY" in plan and "updated_at >=" in plan, plan
    else:
        assert "USING INDEX ix_ingest_batches_state_updated (state=? AND updated_at>?)" in plan, plan
