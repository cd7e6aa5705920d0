"""One tenant's flood must not starve another tenant's ingest."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import grpc

from serviceradar.admin.v1 import tenant_service_pb2 as tenant_pb
from serviceradar.admin.v1 import tenant_service_pb2_grpc as tenant_grpc
from srcore.security.pki import issue_edge_certificate, load_or_create_ca, write_pem_pair
from tests.helpers.core import CoreProcess, DevCredentials, start_core_process
from tests.services import free_port

LOAD = [sys.executable, "-m", "bench.ingest_client"]


def load(core: CoreProcess, streams: int, results: int, cert: Path | None = None) -> list[str]:
    """The load generator's command line (its own process, chunks from pre-serialised payloads)."""
    pki = str(core.data_dir / "pki")
    command = [*LOAD, "--address", core.address, "--pki", pki, "--streams", str(streams),
               "--per-chunk", "500", "--results", str(results)]  # fmt: skip
    if cert is not None:
        command += ["--cert", str(cert), "--key", str(cert.with_name(cert.stem + "-key.pem"))]
    return command


def rate(core: CoreProcess, results: int) -> float:
    """Results per second one stream of the default tenant achieves."""
    out = subprocess.run(load(core, 1, results), capture_output=True, text=True, timeout=600, check=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1])["rate"])


async def create_tenant(core: CoreProcess, name: str) -> None:
    """Create a tenant through the admin API as the platform operator."""
    credentials = DevCredentials(core.data_dir / "pki").operator()
    async with grpc.aio.secure_channel(core.address, credentials) as channel:
        await tenant_grpc.TenantServiceStub(channel).CreateTenant(tenant_pb.CreateTenantRequest(name=name))


async def test_a_flooding_tenant_leaves_another_at_least_half_its_solo_throughput(tmp_path: Path) -> None:
    core = start_core_process(tmp_path / "data", free_port())
    flood: subprocess.Popen[bytes] | None = None
    try:
        await create_tenant(core, "acme")
        ca = load_or_create_ca(core.data_dir / "pki", "unused: the CA exists")
        cert = tmp_path / "acme-flood.pem"
        write_pem_pair(
            cert,
            tmp_path / "acme-flood-key.pem",
            issue_edge_certificate(ca, "serviceradar", "acme", "flood", timedelta(days=1)),
        )
        solo = await asyncio.to_thread(rate, core, 60_000)
        flood = await asyncio.to_thread(
            subprocess.Popen,
            load(core, 20, 50_000_000, cert),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        await asyncio.sleep(2)  # let the 20 streams fill their credit windows
        assert flood.poll() is None, "the flood ended early"
        shared = await asyncio.to_thread(rate, core, 60_000)
    finally:
        if flood is not None:
            flood.kill()
            flood.wait()
        core.terminate()
        core.process.wait(timeout=30)
    assert shared >= 0.5 * solo, f"alone {solo:,.0f}/s, beside a 20-stream flood {shared:,.0f}/s"
