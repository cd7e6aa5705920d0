"""SQLAlchemy Core tables. Alembic migrations (store/migrations) create and evolve them."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# JSONB on PostgreSQL (indexable, compact); JSON text on SQLite.
Json = sa.JSON().with_variant(JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True)

tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("display_name", sa.String(255), nullable=False, server_default=""),
    sa.Column("state", sa.String(16), nullable=False, server_default="active"),
    sa.Column("created_at", Timestamp, nullable=False),
)

partitions = sa.Table(
    "partitions",
    metadata,
    sa.Column("tenant", sa.String(63), sa.ForeignKey("tenants.name"), primary_key=True),
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("cidrs", Json, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
)

pollers = sa.Table(
    "pollers",
    metadata,
    sa.Column("tenant", sa.String(63), sa.ForeignKey("tenants.name"), primary_key=True),
    sa.Column("poller_id", sa.String(128), primary_key=True),
    sa.Column("partition", sa.String(63), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("version", sa.String(64), nullable=False, server_default=""),
    sa.Column("capabilities", Json, nullable=False),
    sa.Column("labels", Json, nullable=False),
    sa.Column("hostname", sa.String(255), nullable=False, server_default=""),
    sa.Column("session_id", sa.String(64), nullable=False, server_default=""),
    sa.Column("registered_at", Timestamp, nullable=False),
    sa.Column("last_seen", Timestamp, nullable=True),
    sa.Column("serving_replica", sa.String(128), nullable=False, server_default=""),
    sa.Column("desired_config_version", sa.String(80), nullable=False, server_default=""),
    sa.Column("applied_config_version", sa.String(80), nullable=False, server_default=""),
    sa.Column("clock_skew_ms", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("message", sa.String(1024), nullable=False, server_default=""),
    sa.Column("state_changed_at", Timestamp, nullable=False),
    sa.Index("ix_pollers_tenant_partition", "tenant", "partition"),
)

agents = sa.Table(
    "agents",
    metadata,
    sa.Column("tenant", sa.String(63), primary_key=True),
    sa.Column("poller_id", sa.String(128), primary_key=True),
    sa.Column("agent_id", sa.String(128), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("version", sa.String(64), nullable=False, server_default=""),
    sa.Column("capabilities", Json, nullable=False),
    sa.Column("address", sa.String(255), nullable=False, server_default=""),
    sa.Column("labels", Json, nullable=False),
    sa.Column("message", sa.String(1024), nullable=False, server_default=""),
    sa.Column("last_seen", Timestamp, nullable=True),
    sa.ForeignKeyConstraint(
        ["tenant", "poller_id"], ["pollers.tenant", "pollers.poller_id"], ondelete="CASCADE"
    ),
)

state_transitions = sa.Table(
    "state_transitions",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("tenant", sa.String(63), nullable=False),
    sa.Column("entity_type", sa.String(32), nullable=False),
    sa.Column("entity_id", sa.String(300), nullable=False),
    sa.Column("from_state", sa.String(16), nullable=False),
    sa.Column("to_state", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(255), nullable=False),
    sa.Column("replica", sa.String(128), nullable=False),
    sa.Column("fencing_token", sa.BigInteger, nullable=False),
    sa.Column("at", Timestamp, nullable=False),
    sa.Index("ix_state_transitions_entity", "tenant", "entity_type", "entity_id", "id"),
)
