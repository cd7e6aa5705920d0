"""registry: tenants, partitions, pollers, agents, transitions

Revision ID: 0001
Revises:
Create Date: 2026-11-27 04:16:05.580876
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply the change."""

    op.create_table(
        "state_transitions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("entity_type", sa.String(length=32), nullable=False),
        sa.Column("entity_id", sa.String(length=300), nullable=False),
        sa.Column("from_state", sa.String(length=16), nullable=False),
        sa.Column("to_state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=255), nullable=False),
        sa.Column("replica", sa.String(length=128), nullable=False),
        sa.Column("fencing_token", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_state_transitions")),
    )
    with op.batch_alter_table("state_transitions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_state_transitions_entity",
            ["tenant", "entity_type", "entity_id", "id"],
            unique=False,
        )

    op.create_table(
        "tenants",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("display_name", sa.String(length=255), server_default="", nullable=False),
        sa.Column("state", sa.String(length=16), server_default="active", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_tenants")),
    )
    op.create_table(
        "partitions",
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column(
            "cidrs",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant"], ["tenants.name"], name=op.f("fk_partitions_tenant_tenants")),
        sa.PrimaryKeyConstraint("tenant", "name", name=op.f("pk_partitions")),
    )
    op.create_table(
        "pollers",
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("poller_id", sa.String(length=128), nullable=False),
        sa.Column("partition", sa.String(length=63), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("version", sa.String(length=64), server_default="", nullable=False),
        sa.Column(
            "capabilities",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "labels",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("hostname", sa.String(length=255), server_default="", nullable=False),
        sa.Column("session_id", sa.String(length=64), server_default="", nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=True),
        sa.Column("serving_replica", sa.String(length=128), server_default="", nullable=False),
        sa.Column("desired_config_version", sa.String(length=80), server_default="", nullable=False),
        sa.Column("applied_config_version", sa.String(length=80), server_default="", nullable=False),
        sa.Column("clock_skew_ms", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("message", sa.String(length=1024), server_default="", nullable=False),
        sa.Column("state_changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant"], ["tenants.name"], name=op.f("fk_pollers_tenant_tenants")),
        sa.PrimaryKeyConstraint("tenant", "poller_id", name=op.f("pk_pollers")),
    )
    with op.batch_alter_table("pollers", schema=None) as batch_op:
        batch_op.create_index("ix_pollers_tenant_partition", ["tenant", "partition"], unique=False)

    op.create_table(
        "agents",
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("poller_id", sa.String(length=128), nullable=False),
        sa.Column("agent_id", sa.String(length=128), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("version", sa.String(length=64), server_default="", nullable=False),
        sa.Column(
            "capabilities",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("address", sa.String(length=255), server_default="", nullable=False),
        sa.Column(
            "labels",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("message", sa.String(length=1024), server_default="", nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant", "poller_id"],
            ["pollers.tenant", "pollers.poller_id"],
            name=op.f("fk_agents_tenant_pollers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant", "poller_id", "agent_id", name=op.f("pk_agents")),
    )


def downgrade() -> None:
    """Revert the change."""

    op.drop_table("agents")
    with op.batch_alter_table("pollers", schema=None) as batch_op:
        batch_op.drop_index("ix_pollers_tenant_partition")

    op.drop_table("pollers")
    op.drop_table("partitions")
    op.drop_table("tenants")
    with op.batch_alter_table("state_transitions", schema=None) as batch_op:
        batch_op.drop_index("ix_state_transitions_entity")

    op.drop_table("state_transitions")
