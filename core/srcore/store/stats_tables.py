"""Tables of the fleet stats (refreshed by the leader) and of the checker templates."""

from __future__ import annotations

import sqlalchemy as sa

from srcore.store.tables import Json, Timestamp, metadata

# One row per (tenant, partition) that had anything to count at the last refresh; the state
# counts are JSON objects {"healthy": 3, ...}. Rewritten whole by each refresh.
stats_partitions = sa.Table(
    "stats_partitions",
    metadata,
    sa.Column("tenant", sa.String(63), primary_key=True),
    sa.Column("partition", sa.String(63), primary_key=True),
    sa.Column("devices_total", sa.BigInteger, nullable=False),
    sa.Column("devices_available", sa.BigInteger, nullable=False),
    sa.Column("pollers", Json, nullable=False),
    sa.Column("agents", Json, nullable=False),
    sa.Column("checks", Json, nullable=False),
    sa.Column("accepted_recent", sa.BigInteger, nullable=False),
    sa.Column("rejected_recent", sa.BigInteger, nullable=False),
)

# One row ('stats'): when the figures were computed and over which ingest window.
stats_refresh = sa.Table(
    "stats_refresh",
    metadata,
    sa.Column("name", sa.String(16), primary_key=True),
    sa.Column("refreshed_at", Timestamp, nullable=False),
    sa.Column("window_seconds", sa.Integer, nullable=False),
)

checker_templates = sa.Table(
    "checker_templates",
    metadata,
    sa.Column("tenant", sa.String(63), sa.ForeignKey("tenants.name"), primary_key=True),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("checker_type", sa.String(32), nullable=False),
    sa.Column("format", sa.String(8), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("registered_by", sa.String(255), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
)
