"""A PostgreSQL server of the test's own, so a test may crash and restart it.

The machine's shared PostgreSQL must never be restarted by a test: other tests use it.
This one lives in a temporary directory, listens on 127.0.0.1 on a free port, and is
stopped by the test that started it.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.services import free_port


def _bin(name: str) -> str:
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not candidates:
        raise RuntimeError(f"{name} not found: install Debian's postgresql package (scripts/setup does)")
    return candidates[-1]


def _as_postgres(*command: str) -> list[str]:
    # initdb and postgres refuse to run as root; CI runs as root.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)


class PrivatePostgres:
    """initdb, start, crash (immediate stop), restart, and remove."""

    def __init__(self) -> None:
        # Under /tmp itself: pytest's tmp_path sits in root-only directories the postgres
        # user cannot enter.
        self.directory = Path(tempfile.mkdtemp(prefix="srcore-pg-"))
        self.data = self.directory / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> PrivatePostgres:
        """Create the cluster (trust auth on loopback)."""
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        subprocess.run(
            _as_postgres(_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"),
            check=True, capture_output=True,
        )  # fmt: skip
        return self

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory} -c fsync=on"
        log = str(self.directory / "log")
        command = _as_postgres(_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", log, "-w", "start")
        subprocess.run(command, check=True, capture_output=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            probe = subprocess.run(
                [_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
                check=False,
            )
            if probe.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("private PostgreSQL did not start")

    def crash(self) -> None:
        """Stop at once, as a crash would (no checkpoint); committed data must survive."""
        subprocess.run(
            _as_postgres(_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"),
            check=True, capture_output=True,
        )  # fmt: skip

    def remove(self) -> None:
        """Stop if running and delete the cluster."""
        subprocess.run(
            _as_postgres(_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"),
            check=False, capture_output=True,
        )  # fmt: skip
        shutil.rmtree(self.directory, ignore_errors=True)
