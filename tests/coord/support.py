"""Helpers of the coordination tests: coordinator factories, private etcd processes, polling."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import IO, Any

import pytest

from srcore.coord.etcd import EtcdCoordinator
from srcore.coord.local import LocalCoordinator
from srcore.domain.coordination import Coordinator, ReplicaInfo
from tests import services
from tests.helpers.waiting import eventually

# Short leases keep failover tests quick; etcd grants no lease shorter than 2 s anyway.
TEST_LEASE_TTL = 3.0
REPO = Path(__file__).resolve().parents[2]


def healthy(port: int) -> bool:
    """Whether the etcd on this loopback port says it is healthy."""
    try:
        services.check_etcd(services.Endpoint("127.0.0.1", port))
    except services.ServiceUnavailable:
        return False
    return True


def replica(replica_id: str) -> ReplicaInfo:
    """A ReplicaInfo for tests."""
    return ReplicaInfo(replica_id, f"{replica_id}.test:50051", "test", time.time())


class Coordinators:
    """Makes coordinators of one backend on one keyspace and closes them all at the end."""

    def __init__(self, backend: str, endpoints: list[str], prefix: str) -> None:
        self.backend = backend
        self.endpoints = endpoints
        self.prefix = prefix
        self._made: list[Coordinator] = []

    def new(self, lease_ttl: float = TEST_LEASE_TTL, **options: Any) -> Coordinator:
        """A coordinator, not started (`options` go to EtcdCoordinator)."""
        coordinator: Coordinator
        if self.backend == "local":
            coordinator = LocalCoordinator()
        else:
            options.setdefault("op_timeout", 1.0)
            options.setdefault("refresh_interval", 0.25)
            coordinator = EtcdCoordinator(self.endpoints, self.prefix, lease_ttl, **options)
        self._made.append(coordinator)
        return coordinator

    def new_etcd(self, lease_ttl: float = TEST_LEASE_TTL, **options: Any) -> EtcdCoordinator:
        """An etcd coordinator, not started (etcd-only tests want its counters)."""
        coordinator = self.new(lease_ttl, **options)
        assert isinstance(coordinator, EtcdCoordinator)
        return coordinator

    async def started(
        self, replica_id: str, lease_ttl: float = TEST_LEASE_TTL, **options: Any
    ) -> Coordinator:
        """A coordinator that joined as `replica_id`."""
        coordinator = self.new(lease_ttl, **options)
        await coordinator.start(replica(replica_id))
        return coordinator

    async def started_etcd(
        self, replica_id: str, lease_ttl: float = TEST_LEASE_TTL, **options: Any
    ) -> EtcdCoordinator:
        """An etcd coordinator that joined as `replica_id`."""
        coordinator = self.new_etcd(lease_ttl, **options)
        await coordinator.start(replica(replica_id))
        return coordinator

    async def close_all(self) -> None:
        """Close every coordinator made (closing twice is harmless)."""
        for coordinator in self._made:
            await coordinator.close()


class EtcdProcess:
    """A single-node etcd of one test's own, on loopback ports, that the test may stop."""

    def __init__(self, binary: str) -> None:
        self._binary = binary
        self._port = services.free_port()
        self.endpoint = f"127.0.0.1:{self._port}"
        self._peer = f"http://127.0.0.1:{services.free_port()}"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._dirs: list[str] = []

    def _launch(self, fresh: bool) -> None:
        if fresh or not self._dirs:
            self._dirs.append(tempfile.mkdtemp(prefix="srcore-etcd-"))
        data = self._dirs[-1]
        self._log = (Path(data) / "etcd.log").open("ab")
        self._process = subprocess.Popen(
            [
                self._binary,
                "--name=test",
                f"--data-dir={data}",
                f"--listen-client-urls=http://{self.endpoint}",
                f"--advertise-client-urls=http://{self.endpoint}",
                f"--listen-peer-urls={self._peer}",
                f"--initial-advertise-peer-urls={self._peer}",
                f"--initial-cluster=test={self._peer}",
                # A new token gives a fresh data dir a new cluster id.
                f"--initial-cluster-token={uuid.uuid4().hex}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    def _check_alive(self, deadline: float) -> None:
        assert self._process is not None
        if self._process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"private etcd did not start, see {self._dirs[-1]}/etcd.log")

    def start(self) -> None:
        """Start etcd and wait until it is healthy (blocking: for fixtures)."""
        self._launch(fresh=False)
        deadline = time.monotonic() + 20
        while not healthy(self._port):
            self._check_alive(deadline)
            time.sleep(0.1)

    async def restart(self, fresh: bool = False) -> None:
        """Start again, on the old data dir or (`fresh`) as a new, empty cluster."""
        self.kill()
        self._launch(fresh)
        deadline = time.monotonic() + 20
        while not await asyncio.to_thread(healthy, self._port):
            self._check_alive(deadline)
            await asyncio.sleep(0.1)

    def pause(self) -> None:
        """SIGSTOP: etcd keeps its connections open and answers nothing."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT."""
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def cleanup(self) -> None:
        """Kill and delete the data dirs."""
        self.kill()
        for data in self._dirs:
            shutil.rmtree(data, ignore_errors=True)


class ReplicaProcess:
    """An etcd coordinator in a child process (tests/coord/replica_proc.py) that can be killed.

    The child prints a JSON line whenever its leadership changes, stamped with the system-wide
    monotonic clock, so the test can tell what it claimed before and after a signal.
    """

    def __init__(self, endpoints: list[str], prefix: str, replica_id: str, lease_ttl: float) -> None:
        self._args = [",".join(endpoints), prefix, replica_id, str(lease_ttl)]
        self.replica_id = replica_id
        self.lines: list[dict[str, Any]] = []
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the child and wait until it joined."""
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.coord.replica_proc",
            *self._args,
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.get_running_loop().create_task(self._read())
        if not await eventually(lambda: any(x.get("event") == "started" for x in self.lines), 20):
            pytest.fail(f"replica process {self.replica_id} did not start")

    async def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        async for line in self._process.stdout:
            self.lines.append(json.loads(line))

    def claims(self) -> list[dict[str, Any]]:
        """The leadership lines, in order: {"leader": bool, "token": int, "t": monotonic}."""
        return [x for x in self.lines if "leader" in x]

    def leading(self) -> bool:
        """Whether the last line says it leads."""
        claims = self.claims()
        return bool(claims and claims[-1]["leader"])

    def signal(self, signum: int) -> None:
        """Send a signal to the child."""
        assert self._process is not None
        self._process.send_signal(signum)

    async def wait(self, timeout: float) -> int | None:
        """Wait for the child to exit; its return code, or None when it still runs."""
        assert self._process is not None
        try:
            return await asyncio.wait_for(self._process.wait(), timeout)
        except TimeoutError:
            return None

    async def kill(self) -> None:
        """SIGKILL (after SIGCONT, in case it is stopped) and reap."""
        if self._process is not None and self._process.returncode is None:
            self._process.send_signal(signal.SIGCONT)
            self._process.kill()
            await self._process.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
