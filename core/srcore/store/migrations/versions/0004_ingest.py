"""ingest: batch ledger, raw results, latest state, sweep executions

Revision ID: 0004_ingest
Revises: 0001
Create Date: 2026-11-27 04:25:43.419183
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_ingest"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply the change."""

    op.create_table(
        "check_latest",
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("poller_id", sa.String(length=128), nullable=False),
        sa.Column("agent_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("check_id", sa.String(length=128), nullable=False),
        sa.Column("check_type", sa.String(length=32), nullable=False),
        sa.Column("available", sa.Boolean(), nullable=False),
        sa.Column("response_time_us", sa.BigInteger(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "poller_id", "agent_id", "name", name=op.f("pk_check_latest")),
    )
    op.create_table(
        "device_updates",
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("partition", sa.String(length=63), nullable=False),
        sa.Column("poller_id", sa.String(length=128), nullable=False),
        sa.Column("agent_id", sa.String(length=128), nullable=False),
        sa.Column("batch_id", sa.String(length=64), nullable=False),
        sa.Column("chunk_index", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("flush_id", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("ip", sa.String(length=45), nullable=False),
        sa.Column("mac", sa.String(length=17), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("external_ids", sa.Text(), nullable=False),
        sa.Column("available", sa.Boolean(), nullable=False),
        sa.Column("metadata", sa.Text(), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("device_updates", schema=None) as batch_op:
        batch_op.create_index("ix_device_updates_flush", ["flush_id"], unique=False, postgresql_using="brin")
        batch_op.create_index(
            "ix_device_updates_observed", ["observed_at"], unique=False, postgresql_using="brin"
        )

    op.create_table(
        "host_latest",
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("partition", sa.String(length=63), nullable=False),
        sa.Column("ip", sa.String(length=45), nullable=False),
        sa.Column("mac", sa.String(length=17), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("available", sa.Boolean(), nullable=False),
        sa.Column("icmp_rtt_us", sa.BigInteger(), nullable=True),
        sa.Column("icmp_loss", sa.Float(), nullable=False),
        sa.Column("open_ports", sa.Text(), nullable=False),
        sa.Column("poller_id", sa.String(length=128), nullable=False),
        sa.Column("execution_id", sa.String(length=64), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "partition", "ip", name=op.f("pk_host_latest")),
    )
    op.create_table(
        "ingest_batches",
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("poller_id", sa.String(length=128), nullable=False),
        sa.Column("batch_id", sa.String(length=64), nullable=False),
        sa.Column("result_type", sa.String(length=24), nullable=False),
        sa.Column("agent_id", sa.String(length=128), server_default="", nullable=False),
        sa.Column("partition", sa.String(length=63), nullable=False),
        sa.Column("expected_chunks", sa.Integer(), server_default="0", nullable=False),
        sa.Column("committed_index", sa.BigInteger(), server_default="-1", nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("accepted", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("rejected", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("first_reject", sa.String(length=512), server_default="", nullable=False),
        sa.Column("execution_id", sa.String(length=64), server_default="", nullable=False),
        sa.Column("sweep_id", sa.String(length=128), server_default="", nullable=False),
        sa.Column("target_network", sa.String(length=64), server_default="", nullable=False),
        sa.Column("completion", sa.String(length=16), server_default="", nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("tenant", "poller_id", "batch_id", name=op.f("pk_ingest_batches")),
    )
    with op.batch_alter_table("ingest_batches", schema=None) as batch_op:
        batch_op.create_index("ix_ingest_batches_state_updated", ["state", "updated_at"], unique=False)
        batch_op.create_index("ix_ingest_batches_tenant_opened", ["tenant", "opened_at"], unique=False)

    op.create_table(
        "ingest_flushes",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("projected", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ingest_flushes")),
    )
    with op.batch_alter_table("ingest_flushes", schema=None) as batch_op:
        batch_op.create_index("ix_ingest_flushes_pending", ["projected", "id"], unique=False)

    op.create_table(
        "service_check_results",
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("partition", sa.String(length=63), nullable=False),
        sa.Column("poller_id", sa.String(length=128), nullable=False),
        sa.Column("agent_id", sa.String(length=128), nullable=False),
        sa.Column("batch_id", sa.String(length=64), nullable=False),
        sa.Column("chunk_index", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("flush_id", sa.BigInteger(), nullable=False),
        sa.Column("check_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("check_type", sa.String(length=32), nullable=False),
        sa.Column("available", sa.Boolean(), nullable=False),
        sa.Column("response_time_us", sa.BigInteger(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("service_check_results", schema=None) as batch_op:
        batch_op.create_index(
            "ix_service_check_results_flush", ["flush_id"], unique=False, postgresql_using="brin"
        )
        batch_op.create_index(
            "ix_service_check_results_observed", ["observed_at"], unique=False, postgresql_using="brin"
        )

    op.create_table(
        "sweep_executions",
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("poller_id", sa.String(length=128), nullable=False),
        sa.Column("execution_id", sa.String(length=64), nullable=False),
        sa.Column("partition", sa.String(length=63), nullable=False),
        sa.Column("sweep_id", sa.String(length=128), nullable=False),
        sa.Column("target_network", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("tenant", "poller_id", "execution_id", name=op.f("pk_sweep_executions")),
    )
    op.create_table(
        "sweep_host_results",
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("partition", sa.String(length=63), nullable=False),
        sa.Column("poller_id", sa.String(length=128), nullable=False),
        sa.Column("agent_id", sa.String(length=128), nullable=False),
        sa.Column("batch_id", sa.String(length=64), nullable=False),
        sa.Column("chunk_index", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("flush_id", sa.BigInteger(), nullable=False),
        sa.Column("execution_id", sa.String(length=64), nullable=False),
        sa.Column("ip", sa.String(length=45), nullable=False),
        sa.Column("mac", sa.String(length=17), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("available", sa.Boolean(), nullable=False),
        sa.Column("icmp_rtt_us", sa.BigInteger(), nullable=True),
        sa.Column("icmp_loss", sa.Float(), nullable=False),
        sa.Column("open_ports", sa.Text(), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("sweep_host_results", schema=None) as batch_op:
        batch_op.create_index(
            "ix_sweep_host_results_flush", ["flush_id"], unique=False, postgresql_using="brin"
        )
        batch_op.create_index(
            "ix_sweep_host_results_observed", ["observed_at"], unique=False, postgresql_using="brin"
        )


def downgrade() -> None:
    """Revert the change."""

    with op.batch_alter_table("sweep_host_results", schema=None) as batch_op:
        batch_op.drop_index("ix_sweep_host_results_observed", postgresql_using="brin")
        batch_op.drop_index("ix_sweep_host_results_flush", postgresql_using="brin")

    op.drop_table("sweep_host_results")
    op.drop_table("sweep_executions")
    with op.batch_alter_table("service_check_results", schema=None) as batch_op:
        batch_op.drop_index("ix_service_check_results_observed", postgresql_using="brin")
        batch_op.drop_index("ix_service_check_results_flush", postgresql_using="brin")

    op.drop_table("service_check_results")
    with op.batch_alter_table("ingest_flushes", schema=None) as batch_op:
        batch_op.drop_index("ix_ingest_flushes_pending")

    op.drop_table("ingest_flushes")
    with op.batch_alter_table("ingest_batches", schema=None) as batch_op:
        batch_op.drop_index("ix_ingest_batches_tenant_opened")
        batch_op.drop_index("ix_ingest_batches_state_updated")

    op.drop_table("ingest_batches")
    op.drop_table("host_latest")
    with op.batch_alter_table("device_updates", schema=None) as batch_op:
        batch_op.drop_index("ix_device_updates_observed", postgresql_using="brin")
        batch_op.drop_index("ix_device_updates_flush", postgresql_using="brin")

    op.drop_table("device_updates")
    op.drop_table("check_latest")
