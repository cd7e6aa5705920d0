"""Alert evaluation cost at fleet scale: one round that raises every alert, then steady-state
rounds (nothing changes), on SQLite and PostgreSQL.

The store is seeded with N pollers (default 10,000), 2 agents and 2 checks each, and 2
completed sweep executions per poller; 5% of pollers are offline, 2% of agents disconnected,
3% of checks failing and 1% of sweeps lost 40% of their hosts. Prints ms per round.

    .venv/bin/python -m bench.alerts [--pollers 10000] [--stores sqlite,postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from bench.ingest import create_database, drop_database
from srcore.alerting.delivery import Sender
from srcore.alerting.service import Alerting, AlertPolicy
from srcore.domain.coordination import LeaderInfo
from srcore.security.credentials import CredentialVault
from srcore.security.crypto import keyring
from srcore.store.alerts import AlertRepository
from srcore.store.database import Database, sqlite_url
from srcore.store.fence import FenceRepository
from srcore.store.pollers import PollerRepository
from srcore.store.tables import agents, pollers

_check_latest = sa.table(
    "check_latest",
    *(sa.column(c) for c in ("tenant", "poller_id", "agent_id", "name", "check_id", "check_type", "available",
                             "message", "observed_at", "state", "consecutive_failures")),
)  # fmt: skip
_sweeps = sa.table(
    "sweep_executions",
    *(sa.column(c) for c in ("tenant", "poller_id", "execution_id", "partition", "sweep_id", "target_network",
                             "state", "started_at", "completed_at", "hosts_total", "hosts_available")),
)  # fmt: skip


def now() -> datetime:
    """The bench clock."""
    return datetime.now(UTC)


async def seed(db: Database, count: int) -> None:
    """The fleet described in the module docstring."""
    at = now()
    await PollerRepository(db).ensure_tenant("default", at)
    p_rows: list[dict[str, object]] = []
    a_rows: list[dict[str, object]] = []
    c_rows: list[dict[str, object]] = []
    s_rows: list[dict[str, object]] = []
    for i in range(count):
        pid = f"p{i:05d}"
        p_rows.append({
            "tenant": "default", "poller_id": pid, "partition": "dc1",
            "state": "offline" if i % 20 == 0 else "healthy", "capabilities": [], "labels": {},
            "registered_at": at, "state_changed_at": at,
        })  # fmt: skip
        for a in range(2):
            a_rows.append({
                "tenant": "default", "poller_id": pid, "agent_id": f"a{a}",
                "state": "disconnected" if (i * 2 + a) % 50 == 1 else "connected",
                "capabilities": [], "labels": {},
            })  # fmt: skip
            c_rows.append({
                "tenant": "default", "poller_id": pid, "agent_id": f"a{a}", "name": f"c{a}",
                "check_id": f"c{a}", "check_type": "icmp", "available": True, "message": "",
                "observed_at": at,
                "state": "failing" if (i * 2 + a) % 33 == 2 else "active", "consecutive_failures": 0,
            })  # fmt: skip
        for n in range(2):
            lost = i % 100 == 3 and n == 1
            s_rows.append({
                "tenant": "default", "poller_id": pid, "execution_id": f"e{n}", "partition": "dc1",
                "sweep_id": "lan", "target_network": "10.0.0.0/24", "state": "completed", "started_at": at,
                "completed_at": at + timedelta(seconds=n), "hosts_total": 254,
                "hosts_available": 60 if lost else 100,
            })  # fmt: skip
    async with db.begin() as conn:
        for table, rows in ((pollers, p_rows), (agents, a_rows), (_check_latest, c_rows), (_sweeps, s_rows)):
            for start in range(0, len(rows), 5000):
                await conn.execute(table.insert(), rows[start : start + 5000])


async def measure(url: str, count: int, rounds: int) -> tuple[float, int, list[float]]:
    """(first round ms, alerts raised, steady-state round ms)."""
    db = Database(url)
    await db.migrate()
    await seed(db, count)
    leader = LeaderInfo("bench", 1, "bench")
    await FenceRepository(db, now).claim(leader)
    key = base64.b64encode(os.urandom(32)).decode()
    vault = CredentialVault(lambda: keyring([f"k1:{key}"]))
    alerting = Alerting(
        AlertRepository(db), vault, Sender(now, 1, 0.0, 1.0), now, "bench", lambda: 1, AlertPolicy()
    )
    started = time.perf_counter()
    plan = await alerting.evaluate(leader)
    first = (time.perf_counter() - started) * 1000
    steady: list[float] = []
    for _ in range(rounds):
        started = time.perf_counter()
        again = await alerting.evaluate(leader)
        steady.append((time.perf_counter() - started) * 1000)
        assert again.empty
    await alerting.close()
    await db.dispose()
    return first, len(plan.opens), steady


def main() -> None:
    """Seed, evaluate, print."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pollers", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    for store in args.stores.split(","):
        if store == "sqlite":
            work = Path(tempfile.mkdtemp(prefix="srcore-alerts-bench-"))
            first, raised, steady = asyncio.run(measure(sqlite_url(work), args.pollers, args.rounds))
        else:
            url = create_database(args.postgres)
            try:
                first, raised, steady = asyncio.run(measure(url, args.pollers, args.rounds))
            finally:
                drop_database(args.postgres, url)
        print(
            f"{store:8} {args.pollers} pollers: first round {first:7.1f} ms ({raised} alerts raised), "
            f"steady state median {statistics.median(steady):6.1f} ms, max {max(steady):6.1f} ms per round"
        )


if __name__ == "__main__":
    main()
