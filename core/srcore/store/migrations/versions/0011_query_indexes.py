"""query indexes: a device's integration history by identifier, the latest executions of each sweep

Revision ID: 0011_query_indexes
Revises: 0004_ingest
Create Date: 2026-11-27 10:40:00.000000

The raw result tables are the ingest hot path (COPY): each index here is the narrowest one its
query uses. sweep_host_results gets none: an index by IP and one by MAC cost the sweep COPY
about 2-4 microseconds a row (its throughput halved, measured), more than the history lookup
is worth, so a device's sweep history stays a scan of its tenant's rows. device_updates (the
integrations' far smaller volume) is indexed by IP, by MAC where present and, on PostgreSQL,
by external id as JSON containment over the rows that carry one.

Built inside the migration's transaction, the indexes block writes to their tables while they
build. A large PostgreSQL installation can build them beforehand with CREATE INDEX CONCURRENTLY
(same names and definitions): the migration then skips them (IF NOT EXISTS).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_query_indexes"
down_revision = "0004_ingest"
branch_labels = None
depends_on = None

_HAS_MAC = sa.text("mac <> ''")
_HAS_EXTERNAL_IDS = sa.text("external_ids <> '{}'")
_COMPLETED_SWEEP = sa.text("state = 'completed' AND sweep_id <> ''")


def upgrade() -> None:
    """Apply the change."""
    # Not in batch mode: on SQLite that would copy the raw tables.
    op.create_index(
        "ix_device_updates_tenant_ip",
        "device_updates",
        ["tenant", "partition", "ip"],
        unique=False,
        if_not_exists=True,
    )
    op.create_index(
        "ix_device_updates_tenant_mac",
        "device_updates",
        ["tenant", "mac"],
        unique=False,
        if_not_exists=True,
        postgresql_where=_HAS_MAC,
        sqlite_where=_HAS_MAC,
    )
    if op.get_bind().dialect.name == "postgresql":
        op.create_index(
            "ix_device_updates_external_ids",
            "device_updates",
            [sa.text("CAST(external_ids AS JSONB) jsonb_path_ops")],
            unique=False,
            if_not_exists=True,
            postgresql_using="gin",
            postgresql_where=_HAS_EXTERNAL_IDS,
        )
    op.create_index(
        "ix_sweep_executions_latest",
        "sweep_executions",
        ["tenant", "poller_id", "sweep_id", sa.text("completed_at DESC"), sa.text("execution_id DESC")],
        unique=False,
        if_not_exists=True,
        postgresql_where=_COMPLETED_SWEEP,
        sqlite_where=_COMPLETED_SWEEP,
    )


def downgrade() -> None:
    """Revert the change."""
    op.drop_index("ix_sweep_executions_latest", table_name="sweep_executions")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_device_updates_external_ids", table_name="device_updates")
    op.drop_index("ix_device_updates_tenant_mac", table_name="device_updates")
    op.drop_index("ix_device_updates_tenant_ip", table_name="device_updates")
