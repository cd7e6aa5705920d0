"""Tables of alerting: alerts, one row per notification attempt, and the tenants' notifiers.

`alerts.notify_pending` is the delivery queue: the notice an alert still has to send
("opened", "escalated", "resolved"), set by the evaluator in the transaction that changes the
alert and cleared by the deliverer once it is sent or given up. A notice no receiver accepted
stays queued until `notify_after` (backoff across delivery rounds, counted in `notify_rounds`).
`notified_at` is the cooldown: written only after a receiver accepted a notification.
"""

from __future__ import annotations

import sqlalchemy as sa

from srcore.store.tables import Json, Timestamp, metadata

alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("alert_id", sa.String(32), primary_key=True),
    sa.Column("tenant", sa.String(63), sa.ForeignKey("tenants.name"), nullable=False),
    sa.Column("rule", sa.String(32), nullable=False),
    sa.Column("subject", sa.String(300), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("title", sa.String(255), nullable=False),
    sa.Column("detail", sa.String(512), nullable=False, server_default=""),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Column("acknowledged_at", Timestamp, nullable=True),
    sa.Column("acknowledged_by", sa.String(300), nullable=False, server_default=""),
    sa.Column("escalated_at", Timestamp, nullable=True),
    sa.Column("resolved_at", Timestamp, nullable=True),
    sa.Column("resolved_by", sa.String(300), nullable=False, server_default=""),
    sa.Column("notified_at", Timestamp, nullable=True),
    sa.Column("notify_pending", sa.String(16), nullable=False, server_default=""),
    sa.Column("notify_after", Timestamp, nullable=True),
    sa.Column("notify_rounds", sa.Integer, nullable=False, server_default="0"),
    sa.Column("suppressed", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_alerts_tenant_created_at", "tenant", "created_at"),
    sa.Index("ix_alerts_tenant_rule_subject", "tenant", "rule", "subject", "notified_at"),
    # One open alert per key: the database refuses a second even if two evaluators raced.
    sa.Index(
        "uq_alerts_open_key",
        "tenant",
        "rule",
        "subject",
        unique=True,
        postgresql_where=sa.text("state <> 'resolved'"),
        sqlite_where=sa.text("state <> 'resolved'"),
    ),
    sa.Index(
        "ix_alerts_notify_pending",
        "notify_pending",
        postgresql_where=sa.text("notify_pending <> ''"),
        sqlite_where=sa.text("notify_pending <> ''"),
    ),
)

alert_deliveries = sa.Table(
    "alert_deliveries",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column(
        "alert_id", sa.String(32), sa.ForeignKey("alerts.alert_id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("tenant", sa.String(63), nullable=False),
    sa.Column("notifier", sa.String(63), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("success", sa.Boolean, nullable=False),
    sa.Column("status_code", sa.Integer, nullable=False, server_default="0"),
    sa.Column("error", sa.String(512), nullable=False, server_default=""),
    sa.Column("at", Timestamp, nullable=False),
    sa.Index("ix_alert_deliveries_alert_id", "alert_id", "id"),
)

notifiers = sa.Table(
    "notifiers",
    metadata,
    sa.Column("tenant", sa.String(63), sa.ForeignKey("tenants.name"), primary_key=True),
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("notifier_id", sa.String(32), nullable=False, unique=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("endpoint", sa.String(255), nullable=False),
    sa.Column("header_names", Json, nullable=False),
    sa.Column("sealed_config", sa.LargeBinary, nullable=False),
    sa.Column("config_key_id", sa.String(32), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
)
