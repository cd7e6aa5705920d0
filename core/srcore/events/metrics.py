"""Prometheus metrics of the outbox, the relay and the event watchers."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_WRITTEN = Counter(
    "srcore_events_written_total",
    "Events written to the outbox by this replica (counted when the write is issued; a "
    "transaction that rolls back takes its events with it).",
)
EVENTS_PUBLISHED = Counter(
    "srcore_events_published_total",
    "Outbox events JetStream acknowledged, by outcome: stored, or duplicate (already in the "
    "stream, dropped by message-id deduplication).",
    ["outcome"],
)
RELAY_ERRORS = Counter(
    "srcore_events_relay_errors_total",
    "Relay steps that failed and were retried after a backoff, by error type.",
    ["error"],
)
RELAY_RESYNCS = Counter(
    "srcore_events_relay_resyncs_total",
    "Times the relay found the stream's last sequence moved under it (another publisher, or "
    "duplicates of a crashed relay's messages) and re-read it before continuing.",
)
RELAY_BATCH = Histogram(
    "srcore_events_relay_batch_size",
    "Outbox rows read per relay batch.",
    buckets=(1, 10, 100, 500, 1000, 5000),
)
OUTBOX_BACKLOG = Gauge(
    "srcore_events_outbox_backlog",
    "Outbox events not yet published to JetStream (every event, when running without NATS).",
)
OUTBOX_OLDEST_AGE = Gauge(
    "srcore_events_outbox_oldest_unpublished_seconds",
    "Age of the oldest unpublished outbox event; 0 when there is none.",
)
WATCHERS = Gauge("srcore_events_watchers", "WatchEvents streams open on this replica.")
