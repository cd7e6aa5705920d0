"""events: the transactional outbox of infrastructure events

Revision ID: 0002_events
Revises: 0001
Create Date: 2026-11-28 09:12:40.118204
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_events"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply the change."""

    op.create_table(
        "event_outbox",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("entity_type", sa.String(length=32), nullable=False),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("entity_key", sa.String(length=340), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_event_outbox")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("event_outbox", schema=None) as batch_op:
        batch_op.create_index(
            "ix_event_outbox_unpublished",
            ["seq"],
            unique=False,
            postgresql_where=sa.text("published_at IS NULL"),
            sqlite_where=sa.text("published_at IS NULL"),
        )
        batch_op.create_index("ix_event_outbox_tenant_seq", ["tenant", "seq"], unique=False)
        batch_op.create_index("ix_event_outbox_entity", ["tenant", "entity_key", "seq"], unique=False)
        batch_op.create_index("ix_event_outbox_created_at", ["created_at"], unique=False)


def downgrade() -> None:
    """Revert the change."""

    with op.batch_alter_table("event_outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_event_outbox_created_at")
        batch_op.drop_index("ix_event_outbox_entity")
        batch_op.drop_index("ix_event_outbox_tenant_seq")
        batch_op.drop_index("ix_event_outbox_unpublished")

    op.drop_table("event_outbox")
