"""Identity's lookups on PostgreSQL stay planned for their arrays once the driver has prepared
them. On tables without statistics yet (a young deployment, or autovacuum off) PostgreSQL may
switch a prepared lookup to a generic plan, which checks every identifier of the tenant against
the whole array: a first sweep of 200,000 hosts took 10 s a lookup that way, measured."""

from __future__ import annotations

import sqlalchemy as sa

from srcore.domain.identity import MAC
from srcore.store.database import Database
from srcore.store.devices import load_devices, load_links, plan_for_arrays

ROUNDS = 8
PER_ROUND = 1000


async def test_prepared_lookups_are_never_planned_generically(fresh_database: str) -> None:
    db = Database(fresh_database)
    try:
        await db.migrate()
        async with db.begin() as conn:
            # 20,000 identifiers of one tenant, and no statistics on the table.
            await conn.execute(
                sa.text(
                    "INSERT INTO device_identifiers (tenant, kind, value, partition, device_id, updated_at)"
                    " SELECT 't', 'mac', 'mac-' || g, '', 'd' || g, now()"
                    " FROM generate_series(1, 20000) AS g"
                )
            )
        async with db.engine.connect() as conn:
            # One session, as a replica's pooled connection is: the driver prepares the lookups
            # after a few rounds. This session plans prepared statements generically whenever it
            # may, as PostgreSQL chose to on that first sweep.
            await conn.execute(sa.text("SET plan_cache_mode = force_generic_plan"))
            await conn.commit()
            for round_ in range(ROUNDS):
                async with conn.begin():
                    await plan_for_arrays(conn)
                    keys = [(MAC, f"new-{round_}-{i}", "") for i in range(PER_ROUND)]
                    keys.append((MAC, "mac-7", ""))
                    assert await load_links(conn, "t", keys) == {(MAC, "mac-7", ""): "d7"}
                    ids = [f"missing-{round_}-{i}" for i in range(PER_ROUND)]
                    assert await load_devices(conn, "t", ids) == {}
            plans = await conn.execute(
                sa.text(
                    "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
                    " WHERE statement LIKE '%FROM device_identifiers%' OR statement LIKE '%FROM devices%'"
                )
            )
            counts = {
                statement.split("FROM")[1].split()[0]: (generic, custom)
                for statement, generic, custom in plans
            }
    finally:
        await db.engine.dispose()
    # Both lookups were prepared (so the plan cache had the choice) and never planned generically.
    assert set(counts) == {"device_identifiers", "devices"}
    for generic, custom in counts.values():
        assert generic == 0
        assert custom >= 1
