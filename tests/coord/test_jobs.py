"""The leader-only job runner and the store's fence, in one process: real coordinators, real
databases (SQLite for the runner's mechanics, PostgreSQL with etcd for the handover)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from srcore.coord.jobs import LeaderJobs
from srcore.coord.local import LocalCoordinator
from srcore.domain.coordination import Coordinator, LeaderInfo
from srcore.domain.leadership import Fenced, Leadership, every
from srcore.store.database import Database, sqlite_url
from srcore.store.fence import FenceRepository
from tests.coord.support import Coordinators, replica
from tests.helpers.waiting import eventually


def utcnow() -> datetime:
    """The clock the fence stamps its row with."""
    return datetime.now(UTC)


async def migrated(url: str) -> Database:
    """A database with the schema of this build."""
    db = Database(url)
    await db.migrate()
    return db


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated SQLite database of this test's own."""
    db = await migrated(sqlite_url(tmp_path))
    yield db
    await db.dispose()


class Recorder:
    """A leader job that writes through the fence every round and counts what it did."""

    def __init__(self, fence: FenceRepository) -> None:
        self.fence = fence
        self.rounds: list[int] = []

    async def step(self, leader: LeaderInfo) -> None:
        """One fenced write under `leader`."""
        await self.fence.claim(leader)
        self.rounds.append(leader.fencing_token)


def fenced() -> float:
    """Leader-only writes refused by the fence so far, in this process."""
    return REGISTRY.get_sample_value("srcore_leader_fenced_total") or 0.0


def runner(coordinator: Coordinator, fence: FenceRepository, recorder: Recorder) -> LeaderJobs:
    """A started runner with the recorder's job, polling every 20 ms."""
    jobs = LeaderJobs(coordinator, fence, stop_timeout=1.0, restart_delay=0.05)
    jobs.add("recorder", every(0.02, recorder.step))
    jobs.start()
    return jobs


async def test_jobs_run_under_the_claimed_leadership_and_step_down_when_fenced(sqlite_db: Database) -> None:
    fence = FenceRepository(sqlite_db, utcnow)
    recorder = Recorder(fence)
    coordinator = LocalCoordinator()
    jobs = runner(coordinator, fence, recorder)
    await coordinator.start(replica("a"))
    try:
        leader = coordinator.leader()
        assert leader is not None
        assert await eventually(lambda: len(recorder.rounds) >= 3, 5)
        assert jobs.running == leader
        record = await fence.current()
        assert (record.replica, record.token, record.epoch) == ("a", leader.fencing_token, "local")

        # A later leadership of the same epoch writes: this replica's next write is refused,
        # and every job of its leadership stops for good (nothing restarts it).
        fenced_before = fenced()
        await fence.claim(LeaderInfo("b", leader.fencing_token + 1, leader.epoch))
        assert await eventually(lambda: jobs.running is None, 5)
        assert fenced() == fenced_before + 1
        done = len(recorder.rounds)
        await asyncio.sleep(0.2)
        assert len(recorder.rounds) == done
        assert coordinator.is_leader(), "coordination still says so; the fence has the last word"
    finally:
        await coordinator.close()
        await jobs.stop()


async def test_a_failing_job_is_restarted_and_the_others_keep_running(sqlite_db: Database) -> None:
    fence = FenceRepository(sqlite_db, utcnow)
    recorder = Recorder(fence)
    attempts: list[float] = []

    async def flaky(leadership: Leadership) -> None:
        attempts.append(asyncio.get_running_loop().time())
        raise RuntimeError("a bug in one round")

    coordinator = LocalCoordinator()
    jobs = runner(coordinator, fence, recorder)
    jobs.add("flaky", flaky)
    await coordinator.start(replica("a"))
    try:
        assert await eventually(lambda: len(attempts) >= 3 and len(recorder.rounds) >= 3, 5)
        assert jobs.running is not None
    finally:
        await coordinator.close()
    # close() announced the loss: the jobs are stopped, within the stop timeout.
    assert jobs.running is None
    rounds, tries = len(recorder.rounds), len(attempts)
    await asyncio.sleep(0.2)
    assert (len(recorder.rounds), len(attempts)) == (rounds, tries)


@pytest.mark.etcd
async def test_the_jobs_follow_leadership_and_a_deposed_leaders_write_is_refused(
    etcd_coordinators: Coordinators, fresh_database: str
) -> None:
    db = await migrated(fresh_database)
    try:
        fence = FenceRepository(db, utcnow)
        a, b = etcd_coordinators.new_etcd(), etcd_coordinators.new_etcd()
        work = {"a": Recorder(fence), "b": Recorder(fence)}
        jobs = {"a": runner(a, fence, work["a"]), "b": runner(b, fence, work["b"])}
        await a.start(replica("a"))
        await b.start(replica("b"))
        assert await eventually(lambda: len(work["a"].rounds) >= 2, 10)
        first = a.leader()
        assert first is not None and first.epoch.startswith("etcd:")
        assert not work["b"].rounds

        # a resigns: b claims the fence under its larger token and runs the jobs at once.
        await a.close()
        assert await eventually(lambda: len(work["b"].rounds) >= 2, 5)
        second = b.leader()
        assert second is not None and second.fencing_token > first.fencing_token
        record = await fence.current()
        assert (record.replica, record.token) == ("b", second.fencing_token)
        assert jobs["a"].running is None

        # a write made under a's leadership now (a leader that woke up late) is refused.
        with pytest.raises(Fenced, match=f"older than {second.fencing_token}, written by b"):
            await work["a"].step(first)
        for runner_ in jobs.values():
            await runner_.stop()
    finally:
        await db.dispose()
