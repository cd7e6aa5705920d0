"""What an SRE relies on: reflection for grpcurl, the health service, metrics, clean shutdown."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from grpc_health.v1 import health_pb2, health_pb2_grpc

from serviceradar.admin.v1 import cluster_service_pb2 as cluster_pb
from serviceradar.admin.v1 import cluster_service_pb2_grpc as cluster_grpc
from serviceradar.edge.v1 import edge_service_pb2 as pb
from serviceradar.edge.v1 import edge_service_pb2_grpc as pb_grpc
from tests.helpers.core import RunningCore, running_core, start_core_process
from tests.helpers.waiting import eventually
from tests.services import free_port

GRPCURL = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "grpcurl"


async def grpcurl(core_address: str, pki: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run grpcurl (a client this project did not write) with the operator certificate.

    In a worker thread: the core under test serves from this test's event loop.
    """
    command = [
        str(GRPCURL), "-cacert", str(pki / "ca.pem"), "-cert", str(pki / "operator.pem"),
        "-key", str(pki / "operator-key.pem"), core_address, *args,
    ]  # fmt: skip
    return await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=60, check=False
    )


async def test_grpcurl_lists_services_describes_them_and_calls_health(sqlite_core: RunningCore) -> None:
    pki = sqlite_core.data_dir / "pki"
    listed = await grpcurl(sqlite_core.address, pki, "list")
    assert listed.returncode == 0, listed.stderr
    services = set(listed.stdout.split())
    assert {
        "serviceradar.edge.v1.EdgeService",
        "serviceradar.admin.v1.ClusterService",
        "serviceradar.admin.v1.PollerService",
        "grpc.health.v1.Health",
    } <= services

    described = await grpcurl(
        sqlite_core.address, pki, "describe", "serviceradar.edge.v1.RegisterPollerRequest"
    )
    assert described.returncode == 0, described.stderr
    # Field comments from the contract travel through reflection to the operator.
    assert "Must equal the poller in the client certificate" in described.stdout

    health = await grpcurl(sqlite_core.address, pki, "grpc.health.v1.Health/Check")
    assert health.returncode == 0, health.stderr
    assert json.loads(health.stdout) == {"status": "SERVING"}

    status = await grpcurl(sqlite_core.address, pki, "serviceradar.admin.v1.ClusterService/GetClusterStatus")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["leaderId"] == sqlite_core.app.replica_id


async def health_status(core: RunningCore) -> int:
    """The overall health status reported by the standard gRPC health service."""
    async with core.channel(core.creds.operator()) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    return int(answer.status)


async def test_health_is_not_serving_when_the_schema_is_not_current(sqlite_core: RunningCore) -> None:
    assert await health_status(sqlite_core) == health_pb2.HealthCheckResponse.SERVING
    async with sqlite_core.app.db.begin() as conn:
        # One migration branch rolled back: the schema is no longer what this build needs.
        head = (await conn.execute(sa.text("SELECT MIN(version_num) FROM alembic_version"))).scalar_one()
        await conn.execute(sa.text("DELETE FROM alembic_version WHERE version_num = :v"), {"v": head})
    await sqlite_core.app.refresh_health()
    assert await health_status(sqlite_core) == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_cluster_status_names_this_replica_leader_and_dependencies(sqlite_core: RunningCore) -> None:
    async with sqlite_core.channel(sqlite_core.creds.operator()) as channel:
        status = await cluster_grpc.ClusterServiceStub(channel).GetClusterStatus(
            cluster_pb.GetClusterStatusRequest()
        )
    assert status.leader_id == sqlite_core.app.replica_id
    assert status.fencing_token > 0
    assert [r.replica_id for r in status.replicas] == [sqlite_core.app.replica_id]
    deps = {d.name: d for d in status.dependencies}
    assert deps["store"].backend == "sqlite" and deps["store"].healthy
    assert deps["coordination"].backend == "local" and deps["coordination"].healthy


def scrape(port: int) -> str:
    """The /metrics page."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
        return str(page.read().decode())


def sample(page: str, name: str, labels: str) -> float:
    """One sample's value on a /metrics page (0 when absent)."""
    selector = rf"\{{{re.escape(labels)}\}}" if labels else ""
    match = re.search(rf"^{re.escape(name)}{selector} (\S+)$", page, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_metrics_count_rpcs_by_method_and_code(tmp_path: Path) -> None:
    method = "/serviceradar.edge.v1.EdgeService/ReportHealth"
    labels = f'code="FAILED_PRECONDITION",method="{method}"'
    async with running_core(tmp_path / "data", metrics_listen=f"127.0.0.1:{free_port()}") as core:
        before = await asyncio.to_thread(scrape, core.app.metrics_port)
        async with core.channel(core.creds.edge()) as channel:
            for _ in range(3):
                with pytest.raises(grpc.aio.AioRpcError):
                    await pb_grpc.EdgeServiceStub(channel).ReportHealth(
                        pb.ReportHealthRequest(session_id="x", poller_id="demo")
                    )
        after = await asyncio.to_thread(scrape, core.app.metrics_port)
    total = "srcore_rpc_requests_total"
    assert sample(after, total, labels) - sample(before, total, labels) == 3
    latency = "srcore_rpc_duration_seconds_count"
    assert sample(after, latency, f'method="{method}"') - sample(before, latency, f'method="{method}"') == 3


async def test_a_held_event_loop_shows_in_the_lag_metric_and_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_core(tmp_path / "data", metrics_listen=f"127.0.0.1:{free_port()}") as core:

        async def late_observations() -> float:
            page = await asyncio.to_thread(scrape, core.app.metrics_port)
            total = sample(page, "srcore_event_loop_lag_seconds_count", "")
            return total - sample(page, "srcore_event_loop_lag_seconds_bucket", 'le="0.5"')

        before = await late_observations()

        async def observed() -> bool:
            return await late_observations() > before

        # What a long synchronous step does to every call of a replica: the loop runs nothing else.
        time.sleep(1.0)  # noqa: ASYNC251 - holding the loop is the point (past the 0.5 s bucket)
        assert await eventually(observed), "the lag was not observed"
    assert "event loop ran" in caplog.text


def test_sigterm_drains_and_exits_zero_within_the_grace_period(tmp_path: Path) -> None:
    core = start_core_process(tmp_path / "data", free_port(), env={"SRCORE_GRACE_PERIOD": "5"})
    core.terminate(signal.SIGTERM)
    # wait() raises TimeoutExpired if the process outlives its grace period (plus start-up slack).
    assert core.process.wait(timeout=5 + 10) == 0, core.log()
    assert "stopped" in core.log()


def test_healthcheck_command_reports_serving_for_container_probes(tmp_path: Path) -> None:
    core = start_core_process(tmp_path / "data", free_port())
    try:
        probe = subprocess.run(
            [sys.executable, "-m", "srcore.cli_main", "healthcheck", "--data-dir", str(core.data_dir),
             "--address", core.address],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        core.terminate()
        core.process.wait(timeout=30)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "serving"
