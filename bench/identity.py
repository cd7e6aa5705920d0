"""Identity benchmark: ReportResults into PostgreSQL with device identity on versus off.

    python -m bench.identity [--results 200000] [--streams 10] [--per-chunk 500]

In one run, on the same generated data (bench/ingest_client.py's payload pool):
  (a) identity off: time from the first chunk sent until every chunk is acknowledged;
  (b) identity on: time until every chunk is acknowledged AND every committed flush is
      identified (resolved to devices), hence results/s end to end and the ratio (b)/(a);
  (c) a repeat sweep on a fresh core: the same 64,000 hosts (about a /16) swept three times
      (the second sweep finds them cached, the third also in the sweep index); for each sweep,
      the share of results resolved by the fast path (every identifier cached, naming one live
      device) and the identity cache hit rate, from the core's /metrics;
      beside it the same third sweep with identity off, and with every device's last_seen due
      (`identity_last_seen_resolution` 0: what sweeps a minute or more apart cost with the
      default, where each repeat sweep moves every device's last_seen).
The load average is printed before and after: on a shared machine it moves the figures a lot.
Each scenario runs `srcore serve` on its own fresh PostgreSQL database.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path

import psycopg

from bench.common import BacklogWatch, cpu_seconds, free_port, start_core
from bench.ingest import create_database, drop_database, run_client
from bench.ingest_client import POOL
from srcore.security.pki import ensure_dev_pki


def backend_cpu(url: str) -> dict[int, float]:
    """CPU time used so far by each client backend connected to the benchmark's database.

    Autovacuum workers are left out: one starting during a phase would otherwise count its
    whole run against that phase's results.
    """
    with psycopg.connect(url) as conn:
        pids = [int(row[0]) for row in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )]  # fmt: skip
    found = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            found[pid] = cpu_seconds(pid)
    return found


COUNTERS = (
    "srcore_identity_cache_hits_total",
    "srcore_identity_cache_misses_total",
    "srcore_identity_known_total",
    "srcore_identity_observations_total",
)


def load() -> str:
    """The machine's load averages (1, 5, 15 minutes)."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def counters(metrics_port: int) -> dict[str, float]:
    """The core's identity counters so far (cache hits and misses, fast-path rows, observations)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    values = dict.fromkeys(COUNTERS, 0.0)
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in values:
            values[name] = float(value)
    return values


class Core:
    """A core on a fresh database, for one scenario."""

    def __init__(
        self, work: Path, pki: Path, admin_url: str, name: str, identity: bool, **settings: str
    ) -> None:
        self.url = create_database(admin_url)
        self.identity = identity
        self.admin_url = admin_url
        self.data = work / name
        self.data.mkdir()
        shutil.copytree(pki, self.data / "pki")
        self.port = free_port()
        self.metrics_port = free_port()
        env = {"SRCORE_DATABASE_URL": self.url, "SRCORE_IDENTITY_ENABLED": "true" if identity else "false"}
        env.update({f"SRCORE_{name.upper()}": value for name, value in settings.items()})
        self.process = start_core(self.data, self.port, env, self.metrics_port)

    def push(self, streams: int, per_chunk: int, results: int) -> dict[str, float]:
        """Run the load generator; adds `total` (seconds until acked and, with identity, identified).

        Counted from the generator's first chunk, not from starting its process.
        """
        cpu = cpu_seconds(self.process.pid)
        backends = backend_cpu(self.url)
        pending = "SELECT count(*) FROM identity_pending" if self.identity else "SELECT 0"
        with BacklogWatch(lambda: psycopg.connect(self.url, autocommit=True), pending) as watch:
            figures = run_client(f"127.0.0.1:{self.port}", self.data / "pki", streams, per_chunk, results)
            total = watch.settled_at(figures["ended_at"]) - figures["started_at"]
        figures.update(total=total, end_to_end=figures["results"] / total)
        # CPU the core used, in microseconds per result: steadier than rates on a shared machine.
        figures.update(cpu_us=(cpu_seconds(self.process.pid) - cpu) * 1e6 / figures["results"])
        # The core's PostgreSQL connections (pooled, so they outlive the run): the store's share.
        used = sum(value - backends.get(pid, 0.0) for pid, value in backend_cpu(self.url).items())
        figures.update(pg_us=used * 1e6 / figures["results"])
        return figures

    def close(self) -> None:
        """Stop the core and drop its database."""
        self.process.terminate()
        self.process.wait(timeout=60)
        drop_database(self.admin_url, self.url)


def main() -> None:
    """Run the scenarios and print the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=int, default=200_000)
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--per-chunk", type=int, default=500)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="srcore-identity-bench-"))
    try:
        pki = ensure_dev_pki(work / "pki").directory
        hosts = POOL * args.per_chunk
        print(f"identity benchmark: {args.results:,} sweep results over {hosts:,} distinct hosts, "
              f"{args.streams} streams x {args.per_chunk}/chunk, PostgreSQL")  # fmt: skip
        print(f"load average before: {load()}\n")
        figures: dict[bool, dict[str, float]] = {}
        for identity in (False, True):
            core = Core(work, pki, args.postgres, f"identity-{identity}", identity)
            try:
                figures[identity] = core.push(args.streams, args.per_chunk, args.results)
            finally:
                core.close()
            f = figures[identity]
            label = "(b) identity on, acked + identified" if identity else "(a) identity off, acked"
            print(f"{label:<40} {f['end_to_end']:>10,.0f} results/s   ({f['total']:.2f} s; "
                  f"acked at {f['rate']:,.0f} results/s; CPU per result: core {f['cpu_us']:.1f} us, "
                  f"PostgreSQL {f['pg_us']:.1f} us)")  # fmt: skip
        ratio = figures[True]["end_to_end"] / figures[False]["end_to_end"]
        print(f"{'(b)/(a)':<40} {ratio:>10.2f}   (goal: at least 0.80)\n")

        sweep_hosts = POOL * 1000
        core = Core(work, pki, args.postgres, "repeat", True)
        try:
            before = dict.fromkeys(COUNTERS, 0.0)
            for sweep in (1, 2, 3):
                result = core.push(1, 1000, sweep_hosts)
                # The stage counts a round just after committing it: wait for the counters to settle.
                now = counters(core.metrics_port)
                while True:
                    time.sleep(0.2)
                    latest = counters(core.metrics_port)
                    if latest == now:
                        break
                    now = latest
                hits, misses, known, seen = (now[name] - before[name] for name in COUNTERS)
                before = now
                rate = hits / (hits + misses) if hits + misses else 0.0
                share = known / seen if seen else 0.0
                print(f"(c) repeat sweep {sweep} of {sweep_hosts:,} hosts: {share:6.1%} resolved by the fast "
                      f"path; cache hit rate {rate:6.1%} "
                      f"({hits:,.0f} hits, {misses:,.0f} misses); "
                      f"{result['end_to_end']:,.0f} results/s acked + identified; "
                      f"CPU per result: core {result['cpu_us']:.1f} us, "
                      f"PostgreSQL {result['pg_us']:.1f} us")  # fmt: skip
        finally:
            core.close()
        for label, identity, settings in (
            ("identity off", False, {}),
            ("every last_seen due", True, {"identity_last_seen_resolution": "0"}),
        ):
            core = Core(work, pki, args.postgres, f"repeat-{identity}-{len(settings)}", identity, **settings)
            try:
                for _ in range(2):
                    core.push(1, 1000, sweep_hosts)
                result = core.push(1, 1000, sweep_hosts)
            finally:
                core.close()
            print(f"(c) repeat sweep 3, {label + ':':<20} {result['end_to_end']:,.0f} results/s acked"
                  f"{' + identified' if identity else ''}; CPU per result: core {result['cpu_us']:.1f} us, "
                  f"PostgreSQL {result['pg_us']:.1f} us")  # fmt: skip
        print(f"\nload average after: {load()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
