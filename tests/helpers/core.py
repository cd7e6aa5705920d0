"""Run real core replicas for tests: in-process (fast) or as `srcore serve` subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from srcore.app import CoreApp
from srcore.settings import Settings


@dataclass(frozen=True)
class DevCredentials:
    """Paths of the development PKI a core made under its data dir."""

    pki: Path

    def read(self, name: str) -> bytes:
        """Bytes of one PKI file."""
        return (self.pki / name).read_bytes()

    def operator(self) -> grpc.ChannelCredentials:
        """mTLS credentials of the platform-admin operator certificate."""
        return grpc.ssl_channel_credentials(
            self.read("ca.pem"), self.read("operator-key.pem"), self.read("operator.pem")
        )

    def edge(self) -> grpc.ChannelCredentials:
        """mTLS credentials of the edge certificate (tenant default, poller demo)."""
        return grpc.ssl_channel_credentials(
            self.read("ca.pem"), self.read("edge-default-demo-key.pem"), self.read("edge-default-demo.pem")
        )

    def custom(
        self, cert: bytes | None, key: bytes | None, ca: bytes | None = None
    ) -> grpc.ChannelCredentials:
        """Credentials with another client certificate (or none) against this core's CA."""
        return grpc.ssl_channel_credentials(ca or self.read("ca.pem"), key, cert)


@dataclass
class RunningCore:
    """A started core: its app (in-process), address and credentials."""

    app: CoreApp
    address: str
    data_dir: Path
    creds: DevCredentials

    def channel(self, credentials: grpc.ChannelCredentials) -> grpc.aio.Channel:
        """An aio channel to this core."""
        return grpc.aio.secure_channel(self.address, credentials)


@asynccontextmanager
async def running_core(data_dir: Path, **overrides: Any) -> AsyncIterator[RunningCore]:
    """Start a CoreApp in this event loop on 127.0.0.1 with an ephemeral port."""
    options: dict[str, Any] = {"listen": "127.0.0.1:0", "metrics_listen": "", **overrides}
    settings = Settings(data_dir=data_dir, **options).validate()
    app = CoreApp(settings)
    await app.start()
    try:
        yield RunningCore(app, f"127.0.0.1:{app.port}", data_dir, DevCredentials(data_dir / "pki"))
    finally:
        await app.stop()


@dataclass
class CoreProcess:
    """A `srcore serve` subprocess."""

    process: subprocess.Popen[str]
    address: str
    data_dir: Path
    log_path: Path

    def log(self) -> str:
        """Everything the process printed so far."""
        return self.log_path.read_text()

    def terminate(self, sig: int = signal.SIGTERM) -> None:
        """Send a signal to the process (by its PID)."""
        self.process.send_signal(sig)


def start_core_process(
    data_dir: Path, port: int, env: dict[str, str] | None = None, timeout: float = 30.0
) -> CoreProcess:
    """Start `srcore serve` and wait until it prints that it is serving."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "srcore.log"
    handle = log_path.open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "srcore.cli_main", "serve", "--data-dir", str(data_dir),
         "--listen", f"127.0.0.1:{port}", "--metrics-listen", ""],
        stdout=handle, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "srcore serving on" in log_path.read_text():
            return CoreProcess(process, f"127.0.0.1:{port}", data_dir, log_path)
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"srcore did not start:\n{log_path.read_text()}")
