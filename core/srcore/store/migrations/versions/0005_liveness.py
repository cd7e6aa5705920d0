"""liveness: the leadership fence, and the index of the liveness monitor's scan

Revision ID: 0005_liveness
Revises: 0001
Create Date: 2026-11-28 10:02:11.402913
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0005_liveness"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply the change."""

    fence = op.create_table(
        "leadership_fence",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("epoch", sa.String(length=64), nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("replica", sa.String(length=128), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leadership_fence")),
    )
    # The one row every leader-only write updates; no leadership has written yet.
    op.bulk_insert(
        fence, [{"name": "leader", "epoch": "", "token": 0, "replica": "", "updated_at": datetime.now(UTC)}]
    )
    # Not in batch mode: on SQLite that could copy the pollers table, whose agents cascade.
    op.create_index("ix_pollers_state_last_seen", "pollers", ["state", "last_seen"], unique=False)


def downgrade() -> None:
    """Revert the change."""

    op.drop_index("ix_pollers_state_last_seen", table_name="pollers")
    op.drop_table("leadership_fence")
