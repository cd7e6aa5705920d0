"""alerts: alerts, their delivery attempts, and the tenants' notifiers

Revision ID: 0009_alerts
Revises: 0001
Create Date: 2026-12-02 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009_alerts"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply the change."""

    op.create_table(
        "alerts",
        sa.Column("alert_id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("rule", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=300), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("title", sa.String(length=255), nullable=False),
        sa.Column("detail", sa.String(length=512), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_by", sa.String(length=300), server_default="", nullable=False),
        sa.Column("escalated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.String(length=300), server_default="", nullable=False),
        sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("notify_pending", sa.String(length=16), server_default="", nullable=False),
        sa.Column("notify_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column("notify_rounds", sa.Integer(), server_default="0", nullable=False),
        sa.Column("suppressed", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.ForeignKeyConstraint(["tenant"], ["tenants.name"], name=op.f("fk_alerts_tenant_tenants")),
        sa.PrimaryKeyConstraint("alert_id", name=op.f("pk_alerts")),
    )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.create_index("ix_alerts_tenant_created_at", ["tenant", "created_at"], unique=False)
        batch_op.create_index(
            "ix_alerts_tenant_rule_subject", ["tenant", "rule", "subject", "notified_at"], unique=False
        )
        batch_op.create_index(
            "uq_alerts_open_key",
            ["tenant", "rule", "subject"],
            unique=True,
            postgresql_where=sa.text("state <> 'resolved'"),
            sqlite_where=sa.text("state <> 'resolved'"),
        )
        batch_op.create_index(
            "ix_alerts_notify_pending",
            ["notify_pending"],
            unique=False,
            postgresql_where=sa.text("notify_pending <> ''"),
            sqlite_where=sa.text("notify_pending <> ''"),
        )
    op.create_table(
        "alert_deliveries",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("alert_id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("notifier", sa.String(length=63), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("success", sa.Boolean(), nullable=False),
        sa.Column("status_code", sa.Integer(), server_default="0", nullable=False),
        sa.Column("error", sa.String(length=512), server_default="", nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["alerts.alert_id"],
            name=op.f("fk_alert_deliveries_alert_id_alerts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_deliveries")),
    )
    with op.batch_alter_table("alert_deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_alert_deliveries_alert_id", ["alert_id", "id"], unique=False)
    op.create_table(
        "notifiers",
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("notifier_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("endpoint", sa.String(length=255), nullable=False),
        sa.Column("header_names", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("sealed_config", sa.LargeBinary(), nullable=False),
        sa.Column("config_key_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant"], ["tenants.name"], name=op.f("fk_notifiers_tenant_tenants")),
        sa.PrimaryKeyConstraint("tenant", "name", name=op.f("pk_notifiers")),
        sa.UniqueConstraint("notifier_id", name=op.f("uq_notifiers_notifier_id")),
    )


def downgrade() -> None:
    """Revert the change."""

    op.drop_table("notifiers")
    with op.batch_alter_table("alert_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_alert_deliveries_alert_id")
    op.drop_table("alert_deliveries")
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_index("ix_alerts_notify_pending")
        batch_op.drop_index("ix_alerts_tenant_rule_subject")
        batch_op.drop_index("uq_alerts_open_key")
        batch_op.drop_index("ix_alerts_tenant_created_at")
    op.drop_table("alerts")
