"""stats and checker templates: leader-refreshed fleet figures, versioned checker templates

Revision ID: 0010_stats_templates
Revises: 0001
Create Date: 2026-12-02 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010_stats_templates"
down_revision = "0001"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    """Apply the change."""

    op.create_table(
        "stats_partitions",
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("partition", sa.String(length=63), nullable=False),
        sa.Column("devices_total", sa.BigInteger(), nullable=False),
        sa.Column("devices_available", sa.BigInteger(), nullable=False),
        sa.Column("pollers", _JSON, nullable=False),
        sa.Column("agents", _JSON, nullable=False),
        sa.Column("checks", _JSON, nullable=False),
        sa.Column("accepted_recent", sa.BigInteger(), nullable=False),
        sa.Column("rejected_recent", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "partition", name=op.f("pk_stats_partitions")),
    )
    op.create_table(
        "stats_refresh",
        sa.Column("name", sa.String(length=16), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_seconds", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_stats_refresh")),
    )
    op.create_table(
        "checker_templates",
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("checker_type", sa.String(length=32), nullable=False),
        sa.Column("format", sa.String(length=8), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("registered_by", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant"], ["tenants.name"], name=op.f("fk_checker_templates_tenant_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant", "name", "version", name=op.f("pk_checker_templates")),
    )


def downgrade() -> None:
    """Revert the change."""

    op.drop_table("checker_templates")
    op.drop_table("stats_refresh")
    op.drop_table("stats_partitions")
