"""The leader-only job runner: starts the singleton jobs on election, stops them on loss.

On each leadership this replica gains, the runner first claims the fence in the store (so a
replica still running jobs under an older leadership is refused from then on, and operators
can see in `leadership_fence` which replica runs the jobs), then starts every job with a
`Leadership` handle carrying the fencing token. On loss it tells the jobs to stop, waits up
to `stop_timeout` for them to finish what they are doing, and cancels what is left.

A job whose write the fence refuses raises `Fenced`: the runner stops every job of that
leadership (it steps down) and starts them again only for a new leadership. A job that fails
otherwise is logged and started again after `restart_delay`, so one bad round cannot stop a
singleton job for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time

from prometheus_client import Counter, Gauge

from srcore.domain.coordination import Coordinator, LeaderInfo
from srcore.domain.leadership import Fenced, LeaderJob, Leadership, LeadershipFence

log = logging.getLogger(__name__)

# Seconds between full tracebacks of a leader job that keeps failing.
TRACE_INTERVAL = 60.0

LEADER_JOBS = Gauge("srcore_leader_jobs_running", "Leader-only jobs running on this replica.")
FENCED = Counter(
    "srcore_leader_fenced_total", "Leader-only writes the store's fence refused (this replica stepped down)."
)


class LeaderJobs:
    """Runs the registered jobs while this replica leads (see the module docstring)."""

    def __init__(
        self,
        coordinator: Coordinator,
        fence: LeadershipFence,
        *,
        stop_timeout: float = 2.0,
        restart_delay: float = 1.0,
    ) -> None:
        self._coordinator = coordinator
        self._fence = fence
        self._stop_timeout = stop_timeout
        self._restart_delay = restart_delay
        self._jobs: dict[str, LeaderJob] = {}
        # One handle for the claim, one per job: all of one leadership, stopped together.
        self._claim_handle: Leadership | None = None
        self._handles: list[Leadership] = []
        self._task: asyncio.Task[None] | None = None
        self._running: LeaderInfo | None = None

    def add(self, name: str, job: LeaderJob) -> None:
        """Register a job; it runs from the next leadership this replica gains."""
        if name in self._jobs:
            raise ValueError(f"leader job {name!r} is already registered")
        self._jobs[name] = job

    def start(self) -> None:
        """Follow this replica's leadership (call before the coordinator starts)."""
        self._coordinator.on_leadership_change(self._changed)

    @property
    def running(self) -> LeaderInfo | None:
        """The leadership whose jobs run now; None while none do."""
        return self._running

    async def stop(self) -> None:
        """Stop the jobs (on shutdown; leadership loss stops them by itself)."""
        await self._stop_jobs()

    async def _changed(self, info: LeaderInfo | None) -> None:
        await self._stop_jobs()
        if info is not None:
            self._claim_handle = Leadership(info)
            self._handles = [self._claim_handle, *(Leadership(info) for _ in self._jobs)]
            self._task = asyncio.get_running_loop().create_task(self._lead(info), name="leader-jobs")

    async def _lead(self, info: LeaderInfo) -> None:
        if not await self._claim(info):
            return
        log.info("leader jobs starting under fencing token %d (%s)", info.fencing_token, info.epoch)
        self._running = info
        LEADER_JOBS.set(len(self._jobs))
        try:
            async with asyncio.TaskGroup() as group:
                for (name, job), handle in zip(self._jobs.items(), self._handles[1:], strict=True):
                    group.create_task(self._keep_running(name, job, handle), name=f"leader-job-{name}")
        finally:
            self._running = None
            LEADER_JOBS.set(0)
            log.info("leader jobs stopped (fencing token %d)", info.fencing_token)

    async def _claim(self, info: LeaderInfo) -> bool:
        # The jobs' own writes are fenced too; claiming first makes a deposed leader's jobs
        # refused as soon as this one starts, not only once it writes.
        handle = self._claim_handle
        assert handle is not None
        while not handle.stopping:
            try:
                await self._fence.claim(info)
            except Fenced as exc:
                self._fenced(info, exc)
                return False
            except Exception as exc:
                log.warning("cannot claim leadership in the store, will retry: %s", exc)
                await handle.sleep(self._restart_delay)
                continue
            return True
        return False

    async def _keep_running(self, name: str, job: LeaderJob, handle: Leadership) -> None:
        traced = -math.inf
        while not handle.stopping:
            try:
                await job(handle)
            except Fenced as exc:
                self._fenced(handle.info, exc)
                return
            except Exception as exc:
                # A store outage fails every round: one traceback a minute, one line otherwise.
                trace = time.monotonic() - traced >= TRACE_INTERVAL
                traced = time.monotonic() if trace else traced
                log.warning(
                    "leader job %s failed; restarting in %.1fs: %s",
                    name,
                    self._restart_delay,
                    exc,
                    exc_info=trace,
                )
            else:
                if handle.stopping:
                    return
                log.warning(
                    "leader job %s returned while leading; restarting in %.1fs", name, self._restart_delay
                )
            await handle.sleep(self._restart_delay)

    def _fenced(self, info: LeaderInfo, error: Fenced) -> None:
        FENCED.inc()
        log.error(
            "leader-only write refused by the fence, stepping down (fencing token %d): %s",
            info.fencing_token, error,
        )  # fmt: skip
        for handle in self._handles:
            if handle.info == info:
                handle.stop()

    async def _stop_jobs(self) -> None:
        task, self._task = self._task, None
        for handle in self._handles:
            handle.stop()
        if task is None:
            return
        # Let a round in flight finish (the fence guards its writes); cancel what lingers.
        done, _ = await asyncio.wait([task], timeout=self._stop_timeout)
        if not done:
            log.warning("leader jobs did not stop within %.1fs: cancelling them", self._stop_timeout)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        elif not task.cancelled() and task.exception() is not None:
            log.error("leader jobs ended with an error", exc_info=task.exception())
