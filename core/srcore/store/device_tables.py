"""Tables of device identity: canonical devices, the identifiers that name them, merge audit."""

from __future__ import annotations

import sqlalchemy as sa

from srcore.store.tables import Json, Timestamp, metadata

devices = sa.Table(
    "devices",
    metadata,
    sa.Column("tenant", sa.String(63), primary_key=True),
    sa.Column("device_id", sa.String(64), primary_key=True),
    sa.Column("partition", sa.String(63), nullable=False),
    sa.Column("ip", sa.String(45), nullable=False),
    sa.Column("mac", sa.String(17), nullable=False),
    sa.Column("hostname", sa.String(255), nullable=False),
    sa.Column("available", sa.Boolean, nullable=False),
    sa.Column("first_seen", Timestamp, nullable=False),
    sa.Column("last_seen", Timestamp, nullable=False),
    # Non-null: merged away into that device; counts and listings skip it.
    sa.Column("merged_into", sa.String(64), nullable=True),
    # {"armis": "1234", ...}: the external ids the device is known by.
    sa.Column("external_ids", Json, nullable=False),
    # Integrations and "sweep" that reported it, sorted.
    sa.Column("sources", Json, nullable=False),
    sa.Index("ix_devices_tenant_partition", "tenant", "partition"),
)

device_identifiers = sa.Table(
    "device_identifiers",
    metadata,
    sa.Column("tenant", sa.String(63), primary_key=True),
    # external, mac, ip, random-mac (srcore.domain.identity)
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("value", sa.String(200), primary_key=True),
    # "" for strong identifiers (they hold across partitions).
    sa.Column("partition", sa.String(63), primary_key=True),
    sa.Column("device_id", sa.String(64), nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Index("ix_device_identifiers_device", "tenant", "device_id"),
)

device_merges = sa.Table(
    "device_merges",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("tenant", sa.String(63), nullable=False),
    sa.Column("survivor_id", sa.String(64), nullable=False),
    sa.Column("merged_id", sa.String(64), nullable=False),
    # [[kind, value, partition], ...]: the identifiers the observation carried.
    sa.Column("evidence", Json, nullable=False),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("partition", sa.String(63), nullable=False),
    sa.Column("observed_at", Timestamp, nullable=False),
    sa.Column("merged_at", Timestamp, nullable=False),
    sa.Index("ix_device_merges_survivor", "tenant", "survivor_id"),
    sa.Index("ix_device_merges_merged", "tenant", "merged_id"),
)
