"""identity queue: flushes waiting for device identity get a table of their own

Revision ID: 0013_identity_queue
Revises: 0007_identity

Identity and the latest-state projector both claimed their flushes with FOR UPDATE SKIP LOCKED
on the same `ingest_flushes` rows. Each skipped the rows the other held for its whole round, so
identity claimed past the flushes being projected and dropped them from the writer's hand-over
(a quarter of the flushes in bench/identity.py, read back from the store instead), and the
projector ran out of order behind identity. A queue row per unidentified flush, deleted when
resolved, lets each claim lock only its own rows.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_identity_queue"
down_revision = "0007_identity"
branch_labels = None
depends_on = None

_FLUSH_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Apply the change."""
    op.create_table(
        "identity_pending",
        sa.Column("flush_id", _FLUSH_ID, autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("flush_id", name=op.f("pk_identity_pending")),
    )
    op.execute("INSERT INTO identity_pending (flush_id) SELECT id FROM ingest_flushes WHERE NOT identified")
    with op.batch_alter_table("ingest_flushes", schema=None) as batch_op:
        batch_op.drop_index("ix_ingest_flushes_unidentified")
        batch_op.drop_column("identified")


def downgrade() -> None:
    """Revert the change."""
    with op.batch_alter_table("ingest_flushes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("identified", sa.Boolean(), server_default=sa.true(), nullable=False))
        batch_op.create_index("ix_ingest_flushes_unidentified", ["identified", "id"], unique=False)
    op.execute(
        "UPDATE ingest_flushes SET identified = false WHERE id IN (SELECT flush_id FROM identity_pending)"
    )
    op.drop_table("identity_pending")
