"""Tenant fairness benchmark: a one-stream tenant beside a twenty-stream flood.

    python -m bench.fairness [--results 200000] [--per-chunk 500] [--store postgres|sqlite]

One `srcore serve`, one run, the same generated data, --rounds times over:
  1. once the core has processed everything before it, tenant B (`default`) alone: one stream
     of --results results; its acknowledged results/s, and its settled results/s (until the
     core has also processed them: result processing trails acks by up to
     processing_max_lag, so a short solo run's acked rate leaves part of its cost to the next
     phase);
  2. tenant A (`flood`) opens 20 streams and keeps them busy, and B sends the same again;
     B's results/s under the flood (processing keeps up in this steady state), and what A
     got meanwhile.
Prints the medians and B's contended/solo ratio against both solo rates (the ingest issue
asks for at least 0.5), and B's share of what was committed under the flood (the scheduler
aims at one half). Each tenant runs in its own load-generator process, with its own edge
certificate.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import psycopg

from bench.common import free_port, start_core
from bench.ingest import create_database, drop_database, run_client, run_settled, wait_settled
from serviceradar.admin.v1 import tenant_service_pb2 as tenant_pb
from serviceradar.admin.v1 import tenant_service_pb2_grpc as tenant_grpc
from srcore.security.pki import ensure_dev_pki, issue_edge_certificate, load_or_create_ca

FLOOD_TENANT = "flood"
FLOOD_STREAMS = 20


def create_tenant(address: str, pki: Path, name: str) -> None:
    """Create `name` through TenantService as the dev PKI's platform operator."""
    credentials = grpc.ssl_channel_credentials(
        (pki / "ca.pem").read_bytes(),
        (pki / "operator-key.pem").read_bytes(),
        (pki / "operator.pem").read_bytes(),
    )
    with grpc.secure_channel(address, credentials) as channel:
        tenant_grpc.TenantServiceStub(channel).CreateTenant(
            tenant_pb.CreateTenantRequest(name=name), timeout=30
        )


def flood_certificate(pki: Path) -> tuple[Path, Path]:
    """An edge certificate for a poller of the flood tenant."""
    ca = load_or_create_ca(pki, "unused: the CA exists")
    issued = issue_edge_certificate(ca, "serviceradar", FLOOD_TENANT, "flood-poller")
    cert, key = pki / "edge-flood.pem", pki / "edge-flood-key.pem"
    cert.write_bytes(issued.cert_pem)
    key.write_bytes(issued.key_pem)
    return cert, key


def start_flood(
    address: str, pki: Path, cert: Path, key: Path, per_chunk: int, results: int
) -> subprocess.Popen[str]:
    """Tenant A's load generator, in the background."""
    return subprocess.Popen(
        [sys.executable, "-m", "bench.ingest_client", "--address", address, "--pki", str(pki),
         "--streams", str(FLOOD_STREAMS), "--per-chunk", str(per_chunk), "--results", str(results),
         "--cert", str(cert), "--key", str(key)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def query(url: str, data: Path, sql: str, *params: object) -> list[tuple[int, ...]]:
    """Rows of `sql` (written with ? placeholders) from the benchmark's store."""
    if url:
        with psycopg.connect(url) as conn:
            return [tuple(r) for r in conn.execute(sql.replace("?", "%s"), params).fetchall()]
    with sqlite3.connect(data / "srcore.db") as lite:
        return [tuple(r) for r in lite.execute(sql, params).fetchall()]


def last_flush(url: str, data: Path) -> int:
    """The highest flush id that wrote sweep results so far."""
    return int(query(url, data, "SELECT coalesce(max(flush_id), 0) FROM sweep_host_results")[0][0])


def rows_by_tenant(url: str, data: Path, tenant: str, after: int) -> dict[str, int]:
    """Rows per tenant in the flushes that carried `tenant`'s rows after flush `after`.

    Counting by flush instead of by wall clock measures exactly what the scheduler decided
    while both tenants had work, without the load generator's start-up at either end.
    """
    span = query(
        url, data,
        "SELECT min(flush_id), max(flush_id) FROM sweep_host_results WHERE tenant = ? AND flush_id > ?",
        tenant, after,
    )[0]  # fmt: skip
    counts = query(
        url, data,
        "SELECT tenant, count(*) FROM sweep_host_results WHERE flush_id BETWEEN ? AND ? GROUP BY tenant",
        span[0], span[1],
    )  # fmt: skip
    return {str(name): int(count) for name, count in counts}


def main() -> None:
    """Run both phases and print the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=int, default=200_000, help="tenant B's results per phase")
    parser.add_argument("--per-chunk", type=int, default=500)
    parser.add_argument("--store", default="postgres", choices=["postgres", "sqlite"])
    parser.add_argument("--rounds", type=int, default=3, help="solo/contended pairs; medians are printed")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="srcore-fairness-bench-"))
    url = create_database(args.postgres) if args.store == "postgres" else ""
    core: subprocess.Popen[bytes] | None = None
    try:
        data = work / "data"
        pki = ensure_dev_pki(data / "pki").directory
        port = free_port()
        address = f"127.0.0.1:{port}"
        core = start_core(data, port, {"SRCORE_DATABASE_URL": url} if url else {})
        create_tenant(address, pki, FLOOD_TENANT)
        cert, key = flood_certificate(pki)

        solos, settleds, contendeds, floods, shares = [], [], [], [], []
        for _ in range(args.rounds):
            wait_settled(url, data)  # the last round's flood processed
            alone = run_settled(address, pki, 1, args.per_chunk, args.results, url, data)
            solo, settled = alone["rate"], alone["settled"]
            # A floods with far more than it can send while B runs, so it is busy throughout.
            flood = start_flood(address, pki, cert, key, args.per_chunk, args.results * 50)
            try:
                time.sleep(3.0)  # A's 20 streams open and fill their windows first
                mark = last_flush(url, data)
                contended = run_client(address, pki, 1, args.per_chunk, args.results)["rate"]
                counts = rows_by_tenant(url, data, "default", mark)
                if flood.poll() is not None:
                    raise SystemExit("A finished before B: rerun with more --results")
            finally:
                # Cut off: a load generator needs no graceful exit (and grpc's threads can keep
                # an interrupted asyncio.run from returning); the core sees the streams cancelled.
                flood.terminate()
                flood.wait(timeout=60)
            solos.append(solo)
            settleds.append(settled)
            contendeds.append(contended)
            shares.append(counts["default"] / sum(counts.values()))
            floods.append(contended * counts.get(FLOOD_TENANT, 0) / counts["default"])
            print(
                f"round {len(solos)}: B alone {solo:,.0f}/s (settled {settled:,.0f}/s), "
                f"B beside A {contended:,.0f}/s, A {floods[-1]:,.0f}/s, B's share {shares[-1]:.2f}"
            )
        solo, contended = statistics.median(solos), statistics.median(contendeds)
        settled = statistics.median(settleds)
        print(f"B alone, 1 stream x {args.per_chunk}/chunk (median): {solo:>10,.0f} results/s acked")
        print(f"  settled (processed too, median):          {settled:>10,.0f} results/s")
        print(f"B beside A's {FLOOD_STREAMS} streams (median):     {contended:>10,.0f} results/s")
        print(f"A meanwhile (median):                      {statistics.median(floods):>10,.0f} results/s")
        print(f"B's share of the flushes that carried its rows (median): {statistics.median(shares):.2f}")
        print(f"B kept {contended / settled:.2f} of its settled solo throughput (goal >= 0.5)")
        print(f"       {contended / solo:.2f} of its acked solo throughput")
        print(json.dumps({"solo": solos, "settled": settleds, "contended": contendeds, "flood": floods,
                          "share": shares, "ratio": contended / settled, "acked_ratio": contended / solo,
                          "load": os.getloadavg()[0]}))  # fmt: skip
    finally:
        if core is not None:
            core.terminate()
            core.wait(timeout=60)
        if url:
            drop_database(args.postgres, url)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
