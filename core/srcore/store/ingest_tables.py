"""Tables of the ingest pipeline: batch ledger, raw results, latest state, sweep executions.

Raw result tables have no primary key on purpose: they are append-only, written with COPY,
and exactly-once is guaranteed by the batch ledger (`ingest_batches.committed_index`), which
is advanced in the same transaction as the rows.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from srcore.store.tables import Timestamp, metadata

# Column order of the raw tables as the ingest pipeline writes them (COPY and executemany).
SWEEP_COLUMNS = (
    "tenant", "partition", "poller_id", "agent_id", "batch_id", "chunk_index", "seq", "flush_id",
    "execution_id", "ip", "mac", "hostname", "available", "icmp_rtt_us", "icmp_loss", "open_ports",
    "observed_at", "received_at", "response_time_us",
)  # fmt: skip
CHECK_COLUMNS = (
    "tenant", "partition", "poller_id", "agent_id", "batch_id", "chunk_index", "seq", "flush_id",
    "check_id", "name", "check_type", "available", "response_time_us", "message",
    "observed_at", "received_at",
)  # fmt: skip
DEVICE_COLUMNS = (
    "tenant", "partition", "poller_id", "agent_id", "batch_id", "chunk_index", "seq", "flush_id",
    "source", "ip", "mac", "hostname", "external_ids", "available", "metadata",
    "observed_at", "received_at",
)  # fmt: skip


ingest_batches = sa.Table(
    "ingest_batches",
    metadata,
    sa.Column("tenant", sa.String(63), primary_key=True),
    sa.Column("poller_id", sa.String(128), primary_key=True),
    sa.Column("batch_id", sa.String(64), primary_key=True),
    sa.Column("result_type", sa.String(24), nullable=False),
    sa.Column("agent_id", sa.String(128), nullable=False, server_default=""),
    sa.Column("partition", sa.String(63), nullable=False),
    sa.Column("expected_chunks", sa.Integer, nullable=False, server_default="0"),
    sa.Column("committed_index", sa.BigInteger, nullable=False, server_default="-1"),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("accepted", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("rejected", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("first_reject", sa.String(512), nullable=False, server_default=""),
    sa.Column("execution_id", sa.String(64), nullable=False, server_default=""),
    sa.Column("sweep_id", sa.String(128), nullable=False, server_default=""),
    sa.Column("target_network", sa.String(64), nullable=False, server_default=""),
    sa.Column("completion", sa.String(16), nullable=False, server_default=""),
    sa.Column("opened_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Column("completed_at", Timestamp, nullable=True),
    sa.Index("ix_ingest_batches_state_updated", "state", "updated_at"),
    sa.Index("ix_ingest_batches_tenant_opened", "tenant", "opened_at"),
)

ingest_flushes = sa.Table(
    "ingest_flushes",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("projected", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_ingest_flushes_pending", "projected", "id"),
)

# Committed flushes not yet resolved to devices (srcore.ingest.identity), one row each until
# resolved: a queue of its own, so identity's claims never lock the rows the projector claims
# in ingest_flushes (migration 0013_identity_queue).
identity_pending = sa.Table(
    "identity_pending",
    metadata,
    sa.Column(
        "flush_id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=False
    ),
)


def _origin() -> list[sa.Column[object]]:
    return [
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("partition", sa.String(63), nullable=False),
        sa.Column("poller_id", sa.String(128), nullable=False),
        sa.Column("agent_id", sa.String(128), nullable=False),
        sa.Column("batch_id", sa.String(64), nullable=False),
        sa.Column("chunk_index", sa.Integer, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("flush_id", sa.BigInteger, nullable=False),
    ]


# BRIN indexes on PostgreSQL: tiny and nearly free to maintain on append-only, time-ordered data.
sweep_host_results = sa.Table(
    "sweep_host_results",
    metadata,
    *_origin(),
    sa.Column("execution_id", sa.String(64), nullable=False),
    sa.Column("ip", sa.String(45), nullable=False),
    sa.Column("mac", sa.String(17), nullable=False),
    sa.Column("hostname", sa.String(255), nullable=False),
    sa.Column("available", sa.Boolean, nullable=False),
    sa.Column("icmp_rtt_us", sa.BigInteger, nullable=True),
    sa.Column("icmp_loss", sa.Float, nullable=False),
    # Comma-separated open ports, ascending: built without per-port objects on the hot path.
    sa.Column("open_ports", sa.Text, nullable=False),
    sa.Column("observed_at", Timestamp, nullable=False),
    sa.Column("received_at", Timestamp, nullable=False),
    # The fastest TCP connect among the open ports (0008_processing).
    sa.Column("response_time_us", sa.BigInteger, nullable=True),
    sa.Index("ix_sweep_host_results_flush", "flush_id", postgresql_using="brin"),
    sa.Index("ix_sweep_host_results_observed", "observed_at", postgresql_using="brin"),
    # No index by IP or MAC: they would halve the COPY (see 0011_query_indexes).
)

service_check_results = sa.Table(
    "service_check_results",
    metadata,
    *_origin(),
    sa.Column("check_id", sa.String(128), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("check_type", sa.String(32), nullable=False),
    sa.Column("available", sa.Boolean, nullable=False),
    sa.Column("response_time_us", sa.BigInteger, nullable=True),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("observed_at", Timestamp, nullable=False),
    sa.Column("received_at", Timestamp, nullable=False),
    sa.Index("ix_service_check_results_flush", "flush_id", postgresql_using="brin"),
    sa.Index("ix_service_check_results_observed", "observed_at", postgresql_using="brin"),
)

device_updates = sa.Table(
    "device_updates",
    metadata,
    *_origin(),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("ip", sa.String(45), nullable=False),
    sa.Column("mac", sa.String(17), nullable=False),
    sa.Column("hostname", sa.String(255), nullable=False),
    sa.Column("external_ids", sa.Text, nullable=False),
    sa.Column("available", sa.Boolean, nullable=False),
    sa.Column("metadata", sa.Text, nullable=False),
    sa.Column("observed_at", Timestamp, nullable=False),
    sa.Column("received_at", Timestamp, nullable=False),
    sa.Index("ix_device_updates_flush", "flush_id", postgresql_using="brin"),
    sa.Index("ix_device_updates_observed", "observed_at", postgresql_using="brin"),
    # A device's history (store/devices.py observations, 0011_query_indexes): by IP, by MAC,
    # and on PostgreSQL by external id (JSON containment; SQLite matches the text unindexed).
    sa.Index("ix_device_updates_tenant_ip", "tenant", "partition", "ip"),
    sa.Index(
        "ix_device_updates_tenant_mac",
        "tenant",
        "mac",
        postgresql_where=sa.text("mac <> ''"),
        sqlite_where=sa.text("mac <> ''"),
    ),
)
sa.Index(
    "ix_device_updates_external_ids",
    sa.cast(device_updates.c.external_ids, JSONB).label("external_ids_jsonb"),
    postgresql_using="gin",
    postgresql_ops={"external_ids_jsonb": "jsonb_path_ops"},
    postgresql_where=sa.text("external_ids <> '{}'"),
).ddl_if(dialect="postgresql")

host_latest = sa.Table(
    "host_latest",
    metadata,
    sa.Column("tenant", sa.String(63), primary_key=True),
    sa.Column("partition", sa.String(63), primary_key=True),
    sa.Column("ip", sa.String(45), primary_key=True),
    sa.Column("mac", sa.String(17), nullable=False),
    sa.Column("hostname", sa.String(255), nullable=False),
    sa.Column("available", sa.Boolean, nullable=False),
    sa.Column("icmp_rtt_us", sa.BigInteger, nullable=True),
    sa.Column("icmp_loss", sa.Float, nullable=False),
    sa.Column("open_ports", sa.Text, nullable=False),
    sa.Column("poller_id", sa.String(128), nullable=False),
    sa.Column("execution_id", sa.String(64), nullable=False),
    sa.Column("observed_at", Timestamp, nullable=False),
    # Processing (0008_processing): open_ports holds at most max_open_ports_per_host ports.
    sa.Column("response_time_us", sa.BigInteger, nullable=True),
    sa.Column("ports_truncated", sa.Boolean, nullable=False, server_default=sa.false()),
)

check_latest = sa.Table(
    "check_latest",
    metadata,
    sa.Column("tenant", sa.String(63), primary_key=True),
    sa.Column("poller_id", sa.String(128), primary_key=True),
    sa.Column("agent_id", sa.String(128), primary_key=True),
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("check_id", sa.String(128), nullable=False),
    sa.Column("check_type", sa.String(32), nullable=False),
    sa.Column("available", sa.Boolean, nullable=False),
    sa.Column("response_time_us", sa.BigInteger, nullable=True),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("observed_at", Timestamp, nullable=False),
    # The checker state machine (0008_processing): a CheckerState value.
    sa.Column("state", sa.String(16), nullable=False, server_default="active"),
    sa.Column("consecutive_failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("state_changed_at", Timestamp, nullable=True),
    sa.Index("ix_check_latest_tenant_state", "tenant", "state"),
)

sweep_executions = sa.Table(
    "sweep_executions",
    metadata,
    sa.Column("tenant", sa.String(63), primary_key=True),
    sa.Column("poller_id", sa.String(128), primary_key=True),
    sa.Column("execution_id", sa.String(64), primary_key=True),
    sa.Column("partition", sa.String(63), nullable=False),
    sa.Column("sweep_id", sa.String(128), nullable=False),
    sa.Column("target_network", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("completed_at", Timestamp, nullable=True),
    # Totals of the execution once it ended and every flush up to close_after_flush is
    # projected (0008_processing); NULL until then.
    sa.Column("hosts_total", sa.Integer, nullable=True),
    sa.Column("hosts_available", sa.Integer, nullable=True),
    sa.Column("hosts_unavailable", sa.Integer, nullable=True),
    sa.Column("hosts_marked_unseen", sa.Integer, nullable=True),
    sa.Column("close_after_flush", sa.BigInteger, nullable=True),
    sa.Column("closed_at", Timestamp, nullable=True),
    sa.Index("ix_sweep_executions_closing", "closed_at", "state"),
)
# The last completed executions of each sweep, newest first (store/alerts.py, 0011_query_indexes).
sa.Index(
    "ix_sweep_executions_latest",
    sweep_executions.c.tenant,
    sweep_executions.c.poller_id,
    sweep_executions.c.sweep_id,
    sweep_executions.c.completed_at.desc(),
    sweep_executions.c.execution_id.desc(),
    postgresql_where=sa.text("state = 'completed' AND sweep_id <> ''"),
    sqlite_where=sa.text("state = 'completed' AND sweep_id <> ''"),
)
