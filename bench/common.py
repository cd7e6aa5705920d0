"""Shared pieces of the benchmarks: percentiles, process CPU, server processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any


def percentile(samples: list[float], fraction: float) -> float:
    """The value below which `fraction` of the sorted samples fall (nearest rank)."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def reset_peak_rss(pid: int) -> None:
    """Reset a process's peak RSS (VmHWM) so each scenario reports its own peak."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def ms(seconds: float) -> str:
    """Seconds as milliseconds for people, with one decimal."""
    return f"{seconds * 1000:.1f} ms"


def peak_rss_mib(pid: int) -> float:
    """Peak resident memory of a process (VmHWM) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_core(
    data_dir: Path, port: int, env: dict[str, str], metrics_port: int | None = None
) -> subprocess.Popen[bytes]:
    """Start `srcore serve` (with /metrics on `metrics_port` if given) and wait until it serves."""
    metrics = f"127.0.0.1:{metrics_port}" if metrics_port is not None else ""
    data_dir.mkdir(parents=True, exist_ok=True)
    log = (data_dir / "srcore.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "srcore.cli_main", "serve", "--data-dir", str(data_dir),
         "--listen", f"127.0.0.1:{port}", "--metrics-listen", metrics, "--log-level", "warning"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env},
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if b"srcore serving on" in (data_dir / "srcore.log").read_bytes():
            return process
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    raise RuntimeError((data_dir / "srcore.log").read_text())


class BacklogWatch:
    """Polls a backlog (a count query) from a thread of its own while a load runs.

    A settled rate counts until the work behind the acknowledgements (processing, identity) is
    done. Polling only once the load generator has returned would count its exit too, and
    credit the work done meanwhile; polling throughout tells when the backlog last emptied, to
    the poll interval. `connect` opens the DB-API connection the thread uses (its own).
    """

    def __init__(self, connect: Callable[[], Any], query: str, interval: float = 0.02) -> None:
        self._connect = connect
        self._query = query
        self._interval = interval
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._polled = 0.0
        self._empty_since: float | None = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="backlog-watch", daemon=True)

    def __enter__(self) -> BacklogWatch:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def settled_at(self, ended_at: float) -> float:
        """Wait until a poll begun after `ended_at` (wall clock) finds the backlog empty.

        Returns when it became empty (the first empty poll since it last held work), and not
        earlier than `ended_at`.
        """
        while True:
            with self._lock:
                polled, empty_since, failure = self._polled, self._empty_since, self._failure
            if failure is not None:
                raise RuntimeError("polling the backlog failed") from failure
            if polled >= ended_at and empty_since is not None:
                return max(ended_at, empty_since)
            time.sleep(self._interval)

    def _run(self) -> None:
        try:
            conn = self._connect()
            try:
                while not self._stop.is_set():
                    began = time.time()
                    (count,) = conn.execute(self._query).fetchone()
                    with self._lock:
                        if count:
                            self._empty_since = None
                        elif self._empty_since is None:
                            self._empty_since = began
                        self._polled = began
                    self._stop.wait(self._interval)
            finally:
                conn.close()
        except Exception as failure:  # handed to the waiting thread, which raises it
            with self._lock:
                self._failure = failure
