"""Result processing in the store: committed flushes folded into latest state, sweeps closed.

One transaction per round, off the ack path (see srcore.ingest.projector):

1. Check results of the round are read in order (observed_at, flush, chunk, seq) and folded
   into each check's state machine (srcore.domain.processing); transitions are recorded with
   their outbox events in the same transaction.
2. Latest host and check state: one INSERT .. SELECT .. ON CONFLICT per table for the whole
   round, the newest result per key winning (`observed_at >=` makes arrival order irrelevant).
   A host's open ports are cut to `max_open_ports_per_host` in SQL, with a flag.
3. Ended sweep executions are closed once every flush that may hold their rows is projected:
   totals from host_latest, and (completed sweeps only) hosts of their scope they did not see
   marked unavailable, set-based.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import CIDR, INET
from sqlalchemy.ext.asyncio import AsyncConnection

from srcore.domain.ingest import SweepCompletion
from srcore.domain.model import CheckerState, Transition
from srcore.domain.processing import (
    CheckOutcome,
    ProcessingPolicy,
    addresses_within,
    checker_entity_id,
    fold_check_results,
    sweep_network,
)
from srcore.store.database import Database
from srcore.store.flush_reads import flush_index_reads
from srcore.store.ingest_tables import (
    check_latest,
    host_latest,
    ingest_flushes,
    service_check_results,
    sweep_executions,
)
from srcore.store.pollers import utc
from srcore.store.transitions import record_transitions

ENDED = (SweepCompletion.COMPLETED.value, SweepCompletion.FAILED.value, SweepCompletion.CANCELLED.value)
# Executions closed per round at most; the rest wait for the next round.
CLOSE_PER_ROUND = 20
# Addresses per UPDATE .. IN (...) on SQLite, well below its bound-parameter limit.
_IN_CHUNK = 500

# Number of ports in the comma-separated list, without splitting it.
_PORT_COUNT = (
    "(CASE WHEN open_ports = '' THEN 0"
    " ELSE length(open_ports) - length(replace(open_ports, ',', '')) + 1 END)"
)
# The first N ports of the (ascending) list; only evaluated for the rare host over the bound.
_FIRST_PORTS = {
    "postgresql": "array_to_string((string_to_array(open_ports, ','))[1:{n}], ',')",
    "sqlite": "(SELECT group_concat(value, ',')"
              " FROM (SELECT value FROM json_each('[' || open_ports || ']') LIMIT {n}))",
}  # fmt: skip

_HOST_PROJECTION = """
INSERT INTO host_latest (tenant, partition, ip, mac, hostname, available, icmp_rtt_us, icmp_loss,
                         open_ports, poller_id, execution_id, observed_at, response_time_us, ports_truncated)
SELECT tenant, partition, ip, mac, hostname, available, icmp_rtt_us, icmp_loss,
       CASE WHEN port_count > {n} THEN {first_ports} ELSE open_ports END,
       poller_id, execution_id, observed_at, response_time_us, port_count > {n}
FROM (SELECT *, {port_count} AS port_count,
             row_number() OVER (PARTITION BY tenant, partition, ip
                                ORDER BY observed_at DESC, flush_id DESC, chunk_index DESC, seq DESC) AS rn
      FROM sweep_host_results WHERE flush_id IN ({ids})) AS latest
WHERE rn = 1
ON CONFLICT (tenant, partition, ip) DO UPDATE SET
  mac = CASE WHEN excluded.mac <> '' THEN excluded.mac ELSE host_latest.mac END,
  hostname = CASE WHEN excluded.hostname <> '' THEN excluded.hostname ELSE host_latest.hostname END,
  available = excluded.available,
  icmp_rtt_us = excluded.icmp_rtt_us,
  icmp_loss = excluded.icmp_loss,
  open_ports = excluded.open_ports,
  ports_truncated = excluded.ports_truncated,
  response_time_us = excluded.response_time_us,
  poller_id = excluded.poller_id,
  execution_id = excluded.execution_id,
  observed_at = excluded.observed_at
WHERE excluded.observed_at >= host_latest.observed_at
"""

_CHECK_PROJECTION = """
INSERT INTO check_latest (tenant, poller_id, agent_id, name, check_id, check_type, available,
                          response_time_us, message, observed_at)
SELECT tenant, poller_id, agent_id, name, check_id, check_type, available,
       response_time_us, message, observed_at
FROM (SELECT *, row_number() OVER (PARTITION BY tenant, poller_id, agent_id, name
                                   ORDER BY observed_at DESC, flush_id DESC, chunk_index DESC, seq DESC) AS rn
      FROM service_check_results WHERE flush_id IN ({ids})) AS latest
WHERE rn = 1
ON CONFLICT (tenant, poller_id, agent_id, name) DO UPDATE SET
  check_id = excluded.check_id,
  check_type = excluded.check_type,
  available = excluded.available,
  response_time_us = excluded.response_time_us,
  message = excluded.message,
  observed_at = excluded.observed_at
WHERE excluded.observed_at >= check_latest.observed_at
"""

CheckKey = tuple[str, str, str, str]


def _key_of(row: Any) -> CheckKey:
    return (row.tenant, row.poller_id, row.agent_id, row.name)


def _aware(value: datetime) -> datetime:
    # SQLite reads back naive UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@dataclass(slots=True)
class _Stored:
    state: CheckerState
    consecutive_failures: int
    state_changed_at: datetime | None
    observed_at: datetime


async def _fold_checks(
    conn: AsyncConnection, ids: Sequence[int], policy: ProcessingPolicy
) -> tuple[list[dict[str, Any]], list[Transition]]:
    """The state rows to write and the transitions to record for the round's check results."""
    r = service_check_results.c
    in_round = r.flush_id.in_(list(ids))
    rows = (
        await conn.execute(
            sa.select(r.tenant, r.poller_id, r.agent_id, r.name, r.available, r.observed_at)
            .where(in_round)
            .order_by(
                r.tenant, r.poller_id, r.agent_id, r.name, r.observed_at, r.flush_id, r.chunk_index, r.seq
            )
        )
    ).all()
    if not rows:
        return [], []
    keys = (
        sa.select(r.tenant, r.poller_id, r.agent_id, r.name)
        .where(in_round)
        .distinct()
        .subquery("round_checks")
    )
    c = check_latest.c
    stored_rows = await conn.execute(
        sa.select(c.tenant, c.poller_id, c.agent_id, c.name, c.state, c.consecutive_failures,
                  c.state_changed_at, c.observed_at)
        .join_from(check_latest, keys, sa.and_(c.tenant == keys.c.tenant, c.poller_id == keys.c.poller_id,
                                              c.agent_id == keys.c.agent_id, c.name == keys.c.name))
    )  # fmt: skip
    stored: dict[CheckKey, _Stored] = {
        (s.tenant, s.poller_id, s.agent_id, s.name): _Stored(
            CheckerState(s.state), s.consecutive_failures, utc(s.state_changed_at), _aware(s.observed_at)
        )
        for s in stored_rows
    }
    updates: list[dict[str, Any]] = []
    transitions: list[Transition] = []
    for key, results in itertools.groupby(rows, key=_key_of):
        before = stored.get(key)
        # A result older than what the check already shows arrived late: it is history, not news.
        fresh = [CheckOutcome(bool(row.available), _aware(row.observed_at)) for row in results]
        if before is not None:
            fresh = [result for result in fresh if result.at >= before.observed_at]
        if not fresh:
            continue
        fold = fold_check_results(
            before.state if before else CheckerState.ACTIVE,
            before.consecutive_failures if before else 0,
            before.state_changed_at if before else fresh[0].at,
            fresh,
            tenant=key[0],
            entity_id=checker_entity_id(key[1], key[2], key[3]),
            failing_after=policy.failing_after,
        )
        transitions.extend(fold.transitions)
        if before is None or (fold.state, fold.consecutive_failures) != (
            before.state,
            before.consecutive_failures,
        ):
            updates.append(
                {
                    "k_tenant": key[0],
                    "k_poller_id": key[1],
                    "k_agent_id": key[2],
                    "k_name": key[3],
                    "state": fold.state.value,
                    "consecutive_failures": fold.consecutive_failures,
                    "state_changed_at": fold.state_changed_at,
                }
            )
    return updates, transitions


async def _write_check_states(conn: AsyncConnection, updates: list[dict[str, Any]]) -> None:
    if not updates:
        return
    c = check_latest.c
    await conn.execute(
        check_latest.update()
        .where(
            c.tenant == sa.bindparam("k_tenant"),
            c.poller_id == sa.bindparam("k_poller_id"),
            c.agent_id == sa.bindparam("k_agent_id"),
            c.name == sa.bindparam("k_name"),
        )
        .values(
            state=sa.bindparam("state"),
            consecutive_failures=sa.bindparam("consecutive_failures"),
            state_changed_at=sa.bindparam("state_changed_at"),
        ),
        updates,
    )


def host_projection(dialect: str, max_ports: int, ids: Sequence[int]) -> str:
    """The host_latest upsert of the flushes `ids`, ports cut to `max_ports`."""
    return _HOST_PROJECTION.format(
        n=int(max_ports),
        first_ports=_FIRST_PORTS[dialect].format(n=int(max_ports)),
        port_count=_PORT_COUNT,
        ids=", ".join(str(int(i)) for i in ids),
    )


async def _mark_unseen(conn: AsyncConnection, execution: sa.Row[Any]) -> int:
    """Hosts of the execution's scope it did not see, made unavailable; returns how many.

    The scope is the target network when it is a CIDR, else the hosts last reported by an
    execution of the same sweep id. A host reported since the execution started (by any
    sweep) is left alone, so overlapping sweeps never mark each other's fresh results.
    """
    h = host_latest.c
    base = [
        h.tenant == execution.tenant,
        h.partition == execution.partition,
        h.available == sa.true(),
        sa.not_((h.poller_id == execution.poller_id) & (h.execution_id == execution.execution_id)),
        h.observed_at < execution.started_at,
    ]
    network = sweep_network(execution.target_network)
    if network is not None:
        if conn.dialect.name == "postgresql":
            inside = sa.cast(h.ip, INET).op("<<=")(sa.cast(str(network), CIDR))
            result = await conn.execute(host_latest.update().where(*base, inside).values(available=False))
            return int(result.rowcount)
        candidates = (await conn.execute(sa.select(h.ip).where(*base))).scalars().all()
        marked = 0
        within = addresses_within(candidates, network)
        for offset in range(0, len(within), _IN_CHUNK):
            chunk = within[offset : offset + _IN_CHUNK]
            result = await conn.execute(
                host_latest.update().where(*base, h.ip.in_(chunk)).values(available=False)
            )
            marked += int(result.rowcount)
        return marked
    if not execution.sweep_id:
        return 0
    e = sweep_executions.c
    same_sweep = sa.select(e.poller_id, e.execution_id).where(
        e.tenant == execution.tenant, e.partition == execution.partition, e.sweep_id == execution.sweep_id
    )
    result = await conn.execute(
        host_latest.update()
        .where(*base, sa.tuple_(h.poller_id, h.execution_id).in_(same_sweep))
        .values(available=False)
    )
    return int(result.rowcount)


async def _close_executions(conn: AsyncConnection, now: datetime) -> int:
    """Close ended executions whose rows are all projected; returns how many."""
    e = sweep_executions.c
    f = ingest_flushes.c
    open_and_ended = (e.closed_at.is_(None), e.state.in_(ENDED))
    # Every row of an ended execution was committed before it ended, so it sits in a flush
    # no later than the newest one visible now: remember that watermark.
    await conn.execute(
        sweep_executions.update()
        .where(*open_and_ended, e.close_after_flush.is_(None))
        .values(close_after_flush=sa.select(sa.func.coalesce(sa.func.max(f.id), 0)).scalar_subquery())
    )
    oldest_pending = (
        await conn.execute(sa.select(sa.func.min(f.id)).where(f.projected == sa.false()))
    ).scalar()
    query = sa.select(sweep_executions).where(*open_and_ended, e.close_after_flush.is_not(None))
    if oldest_pending is not None:
        query = query.where(e.close_after_flush < oldest_pending)
    ready = (await conn.execute(query.order_by(e.close_after_flush).limit(CLOSE_PER_ROUND))).all()
    closed = 0
    for execution in ready:
        key = (
            e.tenant == execution.tenant,
            e.poller_id == execution.poller_id,
            e.execution_id == execution.execution_id,
        )
        # Claiming first: a replica running the same round concurrently finds it closed.
        claim = await conn.execute(
            sweep_executions.update().where(*key, e.closed_at.is_(None)).values(closed_at=now)
        )
        if claim.rowcount != 1:
            continue
        h = host_latest.c
        totals = (
            await conn.execute(
                sa.select(
                    sa.func.count(),
                    sa.func.coalesce(sa.func.sum(sa.case((h.available == sa.true(), 1), else_=0)), 0),
                ).where(
                    h.tenant == execution.tenant,
                    h.partition == execution.partition,
                    h.poller_id == execution.poller_id,
                    h.execution_id == execution.execution_id,
                )
            )
        ).one()
        total, available = int(totals[0]), int(totals[1])
        marked = await _mark_unseen(conn, execution) if execution.state == SweepCompletion.COMPLETED else 0
        await conn.execute(
            sweep_executions.update()
            .where(*key)
            .values(
                hosts_total=total,
                hosts_available=available,
                hosts_unavailable=total - available,
                hosts_marked_unseen=marked,
            )
        )
        closed += 1
    return closed


async def process_pending(
    db: Database,
    policy: ProcessingPolicy,
    now: datetime,
    replica_id: str,
    fencing_token: int,
    limit: int = 50,
) -> int:
    """One round: fold up to `limit` committed flushes, close ready executions.

    Returns how many flushes and executions it handled (0: nothing left to do). On
    PostgreSQL, SKIP LOCKED lets every replica help without two projecting the same flush.
    """
    async with db.begin() as conn:
        query = (
            sa.select(ingest_flushes.c.id)
            .where(ingest_flushes.c.projected == sa.false())
            .order_by(ingest_flushes.c.id)
            .limit(limit)
        )
        if db.is_postgres:
            query = query.with_for_update(skip_locked=True)
        ids = [int(i) for i in (await conn.execute(query)).scalars()]
        if ids:
            if db.is_postgres:
                # A round sorts every row of its flushes to find each host's latest: in memory,
                # not in temporary files (PostgreSQL's default work_mem is 4 MB).
                await conn.exec_driver_sql("SET LOCAL work_mem = '64MB'")
            async with flush_index_reads(conn):
                updates, transitions = await _fold_checks(conn, ids, policy)
                await conn.exec_driver_sql(
                    host_projection(conn.dialect.name, policy.max_open_ports_per_host, ids)
                )
                await conn.exec_driver_sql(_CHECK_PROJECTION.format(ids=", ".join(str(i) for i in ids)))
            await _write_check_states(conn, updates)
            await record_transitions(conn, transitions, replica_id, fencing_token)
            await conn.execute(
                ingest_flushes.update().where(ingest_flushes.c.id.in_(ids)).values(projected=True)
            )
        closed = await _close_executions(conn, now)
    return len(ids) + closed


async def list_host_states(
    db: Database,
    tenant: str,
    partition: str | None,
    available: bool | None,
    limit: int,
    after: tuple[str, str] | None,
) -> list[sa.Row[Any]]:
    """Latest host states of a tenant, keyset-paginated on (partition, ip)."""
    h = host_latest.c
    query = sa.select(host_latest).where(h.tenant == tenant).order_by(h.partition, h.ip)
    if partition is not None:
        query = query.where(h.partition == partition)
    if available is not None:
        query = query.where(h.available == available)
    if after is not None:
        query = query.where(sa.tuple_(h.partition, h.ip) > sa.tuple_(*after))
    async with db.connect() as conn:
        return list((await conn.execute(query.limit(limit))).all())


async def list_check_states(
    db: Database,
    tenant: str,
    poller_id: str | None,
    state: CheckerState | None,
    limit: int,
    after: tuple[str, str, str] | None,
) -> list[sa.Row[Any]]:
    """Check states of a tenant, keyset-paginated on (poller, agent, name)."""
    c = check_latest.c
    query = sa.select(check_latest).where(c.tenant == tenant).order_by(c.poller_id, c.agent_id, c.name)
    if poller_id is not None:
        query = query.where(c.poller_id == poller_id)
    if state is not None:
        query = query.where(c.state == state.value)
    if after is not None:
        query = query.where(sa.tuple_(c.poller_id, c.agent_id, c.name) > sa.tuple_(*after))
    async with db.connect() as conn:
        return list((await conn.execute(query.limit(limit))).all())


async def list_sweep_executions(
    db: Database,
    tenant: str,
    partition: str | None,
    sweep_id: str | None,
    limit: int,
    after: tuple[datetime, str, str] | None,
) -> list[sa.Row[Any]]:
    """Sweep executions of a tenant, newest first, keyset-paginated on (started_at, poller, execution)."""
    e = sweep_executions.c
    key = (e.started_at, e.poller_id, e.execution_id)
    query = sa.select(sweep_executions).where(e.tenant == tenant).order_by(*(k.desc() for k in key))
    if partition is not None:
        query = query.where(e.partition == partition)
    if sweep_id is not None:
        query = query.where(e.sweep_id == sweep_id)
    if after is not None:
        query = query.where(sa.tuple_(*key) < sa.tuple_(*after))
    async with db.connect() as conn:
        return list((await conn.execute(query.limit(limit))).all())
