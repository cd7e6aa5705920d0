"""Identity benchmark: ReportResults into PostgreSQL with device identity on versus off.

    python -m bench.identity [--results 200000] [--streams 10] [--per-chunk 500] [--rounds 5]

In one run, on the same generated data (bench/ingest_client.py's payload pool):
  (a) identity off: time from the first chunk sent until every chunk is acknowledged;
  (b) identity on: time until every chunk is acknowledged AND every committed flush is
      identified (resolved to devices), hence results/s end to end and the ratio (b)/(a);
      each on a fresh database (the fleet seen for the first time), --rounds times in turn,
      medians;
  (c) a repeat sweep on a fresh core: the same 64,000 hosts (about a /16) swept three times
      (the second sweep finds them cached, the third also in the sweep index); for each sweep,
      the share of results resolved by the fast path (every identifier cached, naming one live
      device) and the identity cache hit rate, from the core's /metrics;
  (d) the steady state, the fleet known: (a)'s load on three cores that have each taken it
      twice already, with identity off, on, and on with every device's last_seen due
      (`identity_last_seen_resolution` 0: what sweeps a minute or more apart cost, where each
      repeat moves every device's last_seen; with the default, repeats within a minute are
      quiet). The cores take turns, --rounds times, a different one first each round, and
      the medians are printed, with the median of each round's ratio to identity off: single
      runs of a few seconds on a shared machine vary more than the code does.
The load average is printed before and after: on a shared machine it moves the figures a lot.
Each scenario runs `srcore serve` on its own fresh PostgreSQL database.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
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
        # Identity off, nothing is awaited; the watch still polls, so both pay the same to measure.
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


def report_sweep(
    core: Core, sweep: int, hosts: int, result: dict[str, float], before: dict[str, float]
) -> dict[str, float]:
    """Print one repeat sweep's fast-path share and cache hit rate; returns the counters now."""
    # The stage counts a round just after committing it: wait for the counters to settle.
    now = counters(core.metrics_port)
    while True:
        time.sleep(0.2)
        latest = counters(core.metrics_port)
        if latest == now:
            break
        now = latest
    hits, misses, known, seen = (now[name] - before[name] for name in COUNTERS)
    rate = hits / (hits + misses) if hits + misses else 0.0
    share = known / seen if seen else 0.0
    print(f"(c) repeat sweep {sweep} of {hosts:,} hosts: {share:6.1%} resolved by the fast "
          f"path; cache hit rate {rate:6.1%} ({hits:,.0f} hits, {misses:,.0f} misses); "
          f"{result['end_to_end']:,.0f} results/s acked + identified; "
          f"CPU per result: core {result['cpu_us']:.1f} us, PostgreSQL {result['pg_us']:.1f} us")  # fmt: skip
    return now


def median(runs: list[dict[str, float]], name: str) -> float:
    """The median of one figure over runs."""
    return statistics.median(run[name] for run in runs)


def ratio(runs: list[dict[str, float]], baseline: list[dict[str, float]]) -> str:
    """The median of the runs' end-to-end rates over their baseline's, round by round, and the range."""
    ratios = [run["end_to_end"] / base["end_to_end"] for run, base in zip(runs, baseline, strict=True)]
    return f"{statistics.median(ratios):.2f} (runs {min(ratios):.2f}-{max(ratios):.2f})"


# The steady state's cores: identity off, on, and on with every last_seen due.
STEADY: tuple[tuple[str, bool, dict[str, str]], ...] = (
    ("identity off", False, {}),
    ("identity on", True, {}),
    ("on, last_seen due", True, {"identity_last_seen_resolution": "0"}),
)


def steady_state(work: Path, pki: Path, args: argparse.Namespace) -> None:
    """(d): the fleet known, identity off, on, and on with every last_seen due, interleaved."""
    cores = [Core(work, pki, args.postgres, f"steady-{n}", on, **settings)
             for n, (_, on, settings) in enumerate(STEADY)]  # fmt: skip
    try:
        for core in cores:
            for _ in range(2):
                core.push(args.streams, args.per_chunk, args.results)
        runs: list[list[dict[str, float]]] = [[] for _ in cores]
        for round_ in range(args.rounds):
            # A different core goes first each round, so drift in the machine's speed evens out.
            for k in range(len(cores)):
                n = (round_ + k) % len(cores)
                runs[n].append(cores[n].push(args.streams, args.per_chunk, args.results))
    finally:
        for core in cores:
            core.close()
    print(f"\n(d) steady state: the fleet known (two passes first), {args.results:,} results a run, "
          f"{args.rounds} runs of each core interleaved, medians:")  # fmt: skip
    for (label, _, _), figures in zip(STEADY, runs, strict=True):
        against = f"   / identity off: {ratio(figures, runs[0])}" if figures is not runs[0] else ""
        core_us, database_us = median(figures, "cpu_us"), median(figures, "pg_us")
        print(f"    {label + ':':<20} {median(figures, 'end_to_end'):>10,.0f} results/s"
              f"{' acked + identified' if figures is not runs[0] else ' acked':<20}"
              f" core {core_us:5.1f} us, PostgreSQL {database_us:5.1f} us{against}")  # fmt: skip


def main() -> None:
    """Run the scenarios and print the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=int, default=200_000)
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--per-chunk", type=int, default=500)
    parser.add_argument(
        "--rounds", type=int, default=5, help="interleaved runs of each scenario of (a), (b), (d)"
    )
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="srcore-identity-bench-"))
    try:
        pki = ensure_dev_pki(work / "pki").directory
        hosts = POOL * args.per_chunk
        print(f"identity benchmark: {args.results:,} sweep results over {hosts:,} distinct hosts, "
              f"{args.streams} streams x {args.per_chunk}/chunk, PostgreSQL")  # fmt: skip
        print(f"load average before: {load()}\n")
        runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
        for round_ in range(args.rounds):
            # Each on a fresh database; which goes first alternates, so drift evens out.
            for identity in (False, True) if round_ % 2 == 0 else (True, False):
                core = Core(work, pki, args.postgres, f"first-{round_}-{identity}", identity)
                try:
                    runs[identity].append(core.push(args.streams, args.per_chunk, args.results))
                finally:
                    core.close()
        for identity in (False, True):
            label = "(b) identity on, acked + identified" if identity else "(a) identity off, acked"
            done = runs[identity]
            print(f"{label:<40} {median(done, 'end_to_end'):>10,.0f} results/s   (acked at "
                  f"{median(done, 'rate'):,.0f} results/s; CPU per result: core "
                  f"{median(done, 'cpu_us'):.1f} us, PostgreSQL {median(done, 'pg_us'):.1f} us)")  # fmt: skip
        print(f"{'(b)/(a)':<40} {ratio(runs[True], runs[False])}   (goal: at least 0.80)\n")

        sweep_hosts = POOL * 1000
        core = Core(work, pki, args.postgres, "repeat", True)
        try:
            before = dict.fromkeys(COUNTERS, 0.0)
            for sweep in (1, 2, 3):
                result = core.push(1, 1000, sweep_hosts)
                before = report_sweep(core, sweep, sweep_hosts, result, before)
        finally:
            core.close()
        steady_state(work, pki, args)
        print(f"\nload average after: {load()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
