"""processing: host response time and port truncation, checker state, sweep execution totals

Revision ID: 0008_processing
Revises: 0004_ingest
Create Date: 2026-12-02 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_processing"
down_revision = "0004_ingest"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply the change."""
    with op.batch_alter_table("sweep_host_results", schema=None) as batch_op:
        batch_op.add_column(sa.Column("response_time_us", sa.BigInteger(), nullable=True))

    with op.batch_alter_table("host_latest", schema=None) as batch_op:
        batch_op.add_column(sa.Column("response_time_us", sa.BigInteger(), nullable=True))
        batch_op.add_column(
            sa.Column("ports_truncated", sa.Boolean(), nullable=False, server_default=sa.false())
        )

    with op.batch_alter_table("check_latest", schema=None) as batch_op:
        batch_op.add_column(sa.Column("state", sa.String(length=16), nullable=False, server_default="active"))
        batch_op.add_column(
            sa.Column("consecutive_failures", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("state_changed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_check_latest_tenant_state", ["tenant", "state"], unique=False)

    with op.batch_alter_table("sweep_executions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("hosts_total", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("hosts_available", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("hosts_unavailable", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("hosts_marked_unseen", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("close_after_flush", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_sweep_executions_closing", ["closed_at", "state"], unique=False)

    # Executions that ended before this revision are left as they are: closing them now would
    # mark hosts unseen on the strength of sweeps long past.
    sweep_executions = sa.table(
        "sweep_executions",
        sa.column("state", sa.String()),
        sa.column("completed_at", sa.DateTime(timezone=True)),
        sa.column("closed_at", sa.DateTime(timezone=True)),
    )
    op.execute(
        sweep_executions.update()
        .where(sweep_executions.c.state != "running", sweep_executions.c.completed_at.is_not(None))
        .values(closed_at=sweep_executions.c.completed_at)
    )

    if op.get_bind().dialect.name == "postgresql":
        # Every processing round rewrites the latest-state rows it touches; free room in each
        # page lets PostgreSQL update them in place (HOT) instead of growing the primary key.
        op.execute("ALTER TABLE host_latest SET (fillfactor = 70)")
        op.execute("ALTER TABLE check_latest SET (fillfactor = 70)")


def downgrade() -> None:
    """Revert the change."""
    with op.batch_alter_table("sweep_executions", schema=None) as batch_op:
        batch_op.drop_index("ix_sweep_executions_closing")
        for column in (
            "closed_at",
            "close_after_flush",
            "hosts_marked_unseen",
            "hosts_unavailable",
            "hosts_available",
            "hosts_total",
        ):
            batch_op.drop_column(column)

    with op.batch_alter_table("check_latest", schema=None) as batch_op:
        batch_op.drop_index("ix_check_latest_tenant_state")
        batch_op.drop_column("state_changed_at")
        batch_op.drop_column("consecutive_failures")
        batch_op.drop_column("state")

    with op.batch_alter_table("host_latest", schema=None) as batch_op:
        batch_op.drop_column("ports_truncated")
        batch_op.drop_column("response_time_us")

    with op.batch_alter_table("sweep_host_results", schema=None) as batch_op:
        batch_op.drop_column("response_time_us")
