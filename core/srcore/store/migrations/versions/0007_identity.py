"""identity: devices, device identifiers, merge audit, identified flag on flushes

Revision ID: 0007_identity
Revises: 0004_ingest
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0007_identity"
down_revision = "0004_ingest"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    """Apply the change."""
    op.create_table(
        "devices",
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("partition", sa.String(length=63), nullable=False),
        sa.Column("ip", sa.String(length=45), nullable=False),
        sa.Column("mac", sa.String(length=17), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("available", sa.Boolean(), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("merged_into", sa.String(length=64), nullable=True),
        sa.Column("external_ids", _JSON, nullable=False),
        sa.Column("sources", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "device_id", name=op.f("pk_devices")),
    )
    op.create_index("ix_devices_tenant_partition", "devices", ["tenant", "partition"])
    op.create_table(
        "device_identifiers",
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("value", sa.String(length=200), nullable=False),
        sa.Column("partition", sa.String(length=63), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "kind", "value", "partition", name=op.f("pk_device_identifiers")),
    )
    op.create_index("ix_device_identifiers_device", "device_identifiers", ["tenant", "device_id"])
    op.create_table(
        "device_merges",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("survivor_id", sa.String(length=64), nullable=False),
        sa.Column("merged_id", sa.String(length=64), nullable=False),
        sa.Column("evidence", _JSON, nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("partition", sa.String(length=63), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("merged_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_merges")),
    )
    op.create_index("ix_device_merges_survivor", "device_merges", ["tenant", "survivor_id"])
    op.create_index("ix_device_merges_merged", "device_merges", ["tenant", "merged_id"])
    with op.batch_alter_table("ingest_flushes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("identified", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.create_index("ix_ingest_flushes_unidentified", ["identified", "id"], unique=False)


def downgrade() -> None:
    """Revert the change."""
    with op.batch_alter_table("ingest_flushes", schema=None) as batch_op:
        batch_op.drop_index("ix_ingest_flushes_unidentified")
        batch_op.drop_column("identified")
    op.drop_table("device_merges")
    op.drop_table("device_identifiers")
    op.drop_table("devices")
