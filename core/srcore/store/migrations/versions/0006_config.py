"""config: service checks, sweep groups and integration sources, with their assignments

Revision ID: 0006_config
Revises: 0001
Create Date: 2026-11-28 11:20:05.113052
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006_config"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply the change."""

    op.create_table(
        "work_items",
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("item_id", sa.String(length=32), nullable=False),
        sa.Column("partition", sa.String(length=63), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("spec", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("capability", sa.String(length=32), nullable=False),
        sa.Column("agent_id", sa.String(length=128), server_default="", nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("sealed_credentials", sa.LargeBinary(), nullable=True),
        sa.Column("credentials_key_id", sa.String(length=32), nullable=True),
        sa.Column("credentials_version", sa.Integer(), server_default="0", nullable=False),
        sa.Column("credentials_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("poller_id", sa.String(length=128), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("state_reason", sa.String(length=512), server_default="", nullable=False),
        sa.Column("state_changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant"], ["tenants.name"], name=op.f("fk_work_items_tenant_tenants")),
        sa.PrimaryKeyConstraint("tenant", "kind", "name", name=op.f("pk_work_items")),
        sa.UniqueConstraint("item_id", name=op.f("uq_work_items_item_id")),
    )
    with op.batch_alter_table("work_items", schema=None) as batch_op:
        batch_op.create_index("ix_work_items_tenant_partition", ["tenant", "partition"], unique=False)
        batch_op.create_index("ix_work_items_tenant_poller", ["tenant", "poller_id"], unique=False)
        batch_op.create_index(
            "ix_work_items_credentials_key_id",
            ["credentials_key_id"],
            unique=False,
            postgresql_where=sa.text("credentials_key_id IS NOT NULL"),
            sqlite_where=sa.text("credentials_key_id IS NOT NULL"),
        )


def downgrade() -> None:
    """Revert the change."""

    with op.batch_alter_table("work_items", schema=None) as batch_op:
        batch_op.drop_index("ix_work_items_credentials_key_id")
        batch_op.drop_index("ix_work_items_tenant_poller")
        batch_op.drop_index("ix_work_items_tenant_partition")
    op.drop_table("work_items")
