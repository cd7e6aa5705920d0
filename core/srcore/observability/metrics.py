"""Prometheus metrics of the server. Later subsystems register theirs beside these."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RPC_REQUESTS = Counter(
    "srcore_rpc_requests_total", "RPCs handled, by method and status code.", ["method", "code"]
)
RPC_LATENCY = Histogram(
    "srcore_rpc_duration_seconds",
    "RPC handling time, by method (for streams: the whole stream).",
    ["method"],
    buckets=(
        0.0005,
        0.001,
        0.0025,
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1,
        2.5,
        5,
        10,
        30,
        60,
    ),
)
HEARTBEAT_FLUSHES = Histogram(
    "srcore_heartbeat_flush_size",
    "Heartbeats written per store batch.",
    buckets=(1, 10, 100, 1000, 10000),
)
EVENT_LOOP_LAG = Histogram(
    "srcore_event_loop_lag_seconds",
    "How late the event loop ran a timer: every call waits this long when the loop is held.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LIVE_POLLERS = Gauge("srcore_registry_pollers", "Pollers this replica has seen registered and alive.")


def serve_metrics(listen: str) -> int:
    """Start the /metrics HTTP endpoint on HOST:PORT; returns the bound port."""
    host, _, port = listen.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host or "127.0.0.1")
    return int(server.server_port)


INGEST_RESULTS = Counter(
    "srcore_ingest_results_total",
    "Results received on ReportResults, by type and outcome.",
    ["type", "outcome"],
)
INGEST_FLUSH_ROWS = Histogram(
    "srcore_ingest_flush_results", "Results per ingest flush (one transaction).",
    buckets=(100, 500, 1000, 2000, 5000, 10000, 20000, 50000),
)  # fmt: skip
INGEST_FLUSH_SECONDS = Histogram(
    "srcore_ingest_flush_seconds", "Time to build and commit one ingest flush.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)  # fmt: skip
INGEST_INFLIGHT_ROWS = Gauge("srcore_ingest_inflight_results", "Results received but not yet committed.")
INGEST_BATCHES = Counter("srcore_ingest_batches_total", "Batch opens, by outcome.", ["outcome"])
