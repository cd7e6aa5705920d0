"""tenancy: tenant suspension, partition descriptions, API tokens, onboarding packages, audit

Revision ID: 0003_tenancy
Revises: 0001
Create Date: 2026-11-27 05:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_tenancy"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply the change."""

    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("suspended_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("suspend_reason", sa.String(length=255), server_default="", nullable=False)
        )

    with op.batch_alter_table("partitions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("description", sa.String(length=255), server_default="", nullable=False)
        )
        batch_op.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))

    op.create_table(
        "api_tokens",
        sa.Column("token_id", sa.String(length=16), nullable=False),
        sa.Column("tenant", sa.String(length=63), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("description", sa.String(length=255), server_default="", nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.String(length=300), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["tenant"], ["tenants.name"], name=op.f("fk_api_tokens_tenant_tenants")),
        sa.PrimaryKeyConstraint("token_id", name=op.f("pk_api_tokens")),
    )
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.create_index("ix_api_tokens_tenant_created", ["tenant", "created_at"], unique=False)

    op.create_table(
        "onboarding_packages",
        sa.Column("package_id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("partition", sa.String(length=63), nullable=False),
        sa.Column("poller_id", sa.String(length=128), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("spiffe_id", sa.String(length=512), nullable=False),
        sa.Column("cert_serial", sa.String(length=40), nullable=False),
        sa.Column("cert_pem", sa.Text(), nullable=False),
        sa.Column("cert_not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sealed_key", sa.LargeBinary(), nullable=True),
        sa.Column("download_id", sa.String(length=16), nullable=False),
        sa.Column("download_digest", sa.String(length=64), nullable=True),
        sa.Column("created_by", sa.String(length=300), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoke_reason", sa.String(length=255), server_default="", nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant"], ["tenants.name"], name=op.f("fk_onboarding_packages_tenant_tenants")
        ),
        sa.PrimaryKeyConstraint("package_id", name=op.f("pk_onboarding_packages")),
        sa.UniqueConstraint("cert_serial", name=op.f("uq_onboarding_packages_cert_serial")),
        sa.UniqueConstraint("download_id", name=op.f("uq_onboarding_packages_download_id")),
    )
    with op.batch_alter_table("onboarding_packages", schema=None) as batch_op:
        batch_op.create_index("ix_onboarding_packages_tenant_created", ["tenant", "created_at"], unique=False)
        batch_op.create_index("ix_onboarding_packages_state_expires", ["state", "expires_at"], unique=False)

    op.create_table(
        "audit_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=300), nullable=False),
        sa.Column("tenant", sa.String(length=63), server_default="", nullable=False),
        sa.Column("method", sa.String(length=200), nullable=False),
        sa.Column("target", sa.String(length=300), server_default="", nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("message", sa.String(length=512), server_default="", nullable=False),
        sa.Column("peer", sa.String(length=128), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index("ix_audit_events_tenant_id", ["tenant", "id"], unique=False)


def downgrade() -> None:
    """Revert the change."""

    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_events_tenant_id")
    op.drop_table("audit_events")

    with op.batch_alter_table("onboarding_packages", schema=None) as batch_op:
        batch_op.drop_index("ix_onboarding_packages_state_expires")
        batch_op.drop_index("ix_onboarding_packages_tenant_created")
    op.drop_table("onboarding_packages")

    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_index("ix_api_tokens_tenant_created")
    op.drop_table("api_tokens")

    with op.batch_alter_table("partitions", schema=None) as batch_op:
        batch_op.drop_column("updated_at")
        batch_op.drop_column("description")

    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_column("suspend_reason")
        batch_op.drop_column("suspended_at")
