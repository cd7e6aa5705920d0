"""Shared pieces of the benchmarks: percentiles, process CPU, server processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path


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
