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
    sa.Column("suspended_at", Timestamp, nullable=True),
    sa.Column("suspend_reason", sa.String(255), nullable=False, server_default=""),
)

partitions = sa.Table(
    "partitions",
    metadata,
    sa.Column("tenant", sa.String(63), sa.ForeignKey("tenants.name"), primary_key=True),
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("cidrs", Json, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("description", sa.String(255), nullable=False, server_default=""),
    sa.Column("updated_at", Timestamp, nullable=True),
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
    # Nothing a heartbeat writes is indexed, so PostgreSQL updates the rows in place (HOT); see
    # migration 0012_pollers_in_place. The liveness monitor's scan reads the table.
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

# The newest leadership that wrote (store/fence.py): one row, 'leader'. Every write made on
# behalf of leadership updates it in its own transaction, only when its token is not older.
leadership_fence = sa.Table(
    "leadership_fence",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    # The coordination cluster that issued `token` (tokens of two epochs do not compare).
    sa.Column("epoch", sa.String(64), nullable=False),
    sa.Column("token", sa.BigInteger, nullable=False),
    sa.Column("replica", sa.String(128), nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
)

# The transactional outbox of infrastructure events (srcore.events): one row per state change,
# written in the transaction that makes the change; the relay publishes rows to JetStream in
# `seq` order and stamps `published_at`.
event_outbox = sa.Table(
    "event_outbox",
    metadata,
    # AUTOINCREMENT on SQLite: without it an emptied table would hand out used numbers again,
    # and watchers resume by sequence.
    sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("event_id", sa.Uuid(), nullable=False),
    sa.Column("tenant", sa.String(63), nullable=False),
    sa.Column("entity_type", sa.String(32), nullable=False),
    sa.Column("event_type", sa.String(32), nullable=False),
    # "<entity_type>:<entity_id>", for the history of one entity.
    sa.Column("entity_key", sa.String(340), nullable=False),
    # The subject below the configured prefix ("<tenant>.<entity_type>.<event_type>"): the
    # prefix is the relay's setting, not the writer's.
    sa.Column("subject", sa.String(200), nullable=False),
    # serviceradar.events.v1.Event, protobuf binary encoding.
    sa.Column("payload", sa.LargeBinary, nullable=False),
    # When the event happened (the transition's time), which is when the row was written.
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("published_at", Timestamp, nullable=True),
    # The relay's work list: only unpublished rows, in order, so it stays small.
    sa.Index(
        "ix_event_outbox_unpublished",
        "seq",
        postgresql_where=sa.text("published_at IS NULL"),
        sqlite_where=sa.text("published_at IS NULL"),
    ),
    sa.Index("ix_event_outbox_tenant_seq", "tenant", "seq"),
    sa.Index("ix_event_outbox_entity", "tenant", "entity_key", "seq"),
    sa.Index("ix_event_outbox_created_at", "created_at"),
    sqlite_autoincrement=True,
)

# API tokens: only the SHA-256 of a secret is stored; token_id is its public prefix.
api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("token_id", sa.String(16), primary_key=True),
    sa.Column("tenant", sa.String(63), sa.ForeignKey("tenants.name"), nullable=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("description", sa.String(255), nullable=False, server_default=""),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("created_by", sa.String(300), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("expires_at", Timestamp, nullable=False),
    sa.Column("last_used_at", Timestamp, nullable=True),
    sa.Column("revoked_at", Timestamp, nullable=True),
    sa.Index("ix_api_tokens_tenant_created", "tenant", "created_at"),
)

# Onboarding packages. The row keyed by cert_serial is the revocation list every replica reads.
# sealed_key (AES-256-GCM) and download_digest are erased when the bundle is downloaded.
onboarding_packages = sa.Table(
    "onboarding_packages",
    metadata,
    sa.Column("package_id", sa.String(32), primary_key=True),
    sa.Column("tenant", sa.String(63), sa.ForeignKey("tenants.name"), nullable=False),
    sa.Column("partition", sa.String(63), nullable=False),
    sa.Column("poller_id", sa.String(128), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("spiffe_id", sa.String(512), nullable=False),
    sa.Column("cert_serial", sa.String(40), nullable=False, unique=True),
    sa.Column("cert_pem", sa.Text, nullable=False),
    sa.Column("cert_not_after", Timestamp, nullable=False),
    sa.Column("sealed_key", sa.LargeBinary, nullable=True),
    sa.Column("download_id", sa.String(16), nullable=False, unique=True),
    sa.Column("download_digest", sa.String(64), nullable=True),
    sa.Column("created_by", sa.String(300), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("expires_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Column("delivered_at", Timestamp, nullable=True),
    sa.Column("activated_at", Timestamp, nullable=True),
    sa.Column("revoked_at", Timestamp, nullable=True),
    sa.Column("revoke_reason", sa.String(255), nullable=False, server_default=""),
    sa.Index("ix_onboarding_packages_tenant_created", "tenant", "created_at"),
    sa.Index("ix_onboarding_packages_state_expires", "state", "expires_at"),
)

# Every admin mutation and every denial. Never holds a secret.
audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("at", Timestamp, nullable=False),
    sa.Column("actor", sa.String(300), nullable=False),
    sa.Column("tenant", sa.String(63), nullable=False, server_default=""),
    sa.Column("method", sa.String(200), nullable=False),
    sa.Column("target", sa.String(300), nullable=False, server_default=""),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("message", sa.String(512), nullable=False, server_default=""),
    sa.Column("peer", sa.String(128), nullable=False, server_default=""),
    sa.Index("ix_audit_events_tenant_id", "tenant", "id"),
)

# Service checks, sweep groups and integration sources (srcore.domain.work), one row each,
# with where the leader placed it. `spec` holds the kind's fields; credentials exist only
# sealed (AES-256-GCM) beside the id of the key that sealed them. `digest` hashes the item's
# edge entry, so the leader computes poller configuration versions without reading specs.
# `revision` grows with every operator change; the leader's placement writes are conditioned
# on the revision they read, so they never overwrite a newer change.
work_items = sa.Table(
    "work_items",
    metadata,
    sa.Column("tenant", sa.String(63), sa.ForeignKey("tenants.name"), primary_key=True),
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("item_id", sa.String(32), nullable=False, unique=True),
    sa.Column("partition", sa.String(63), nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("spec", Json, nullable=False),
    sa.Column("capability", sa.String(32), nullable=False),
    sa.Column("agent_id", sa.String(128), nullable=False, server_default=""),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("sealed_credentials", sa.LargeBinary, nullable=True),
    sa.Column("credentials_key_id", sa.String(32), nullable=True),
    sa.Column("credentials_version", sa.Integer, nullable=False, server_default="0"),
    sa.Column("credentials_updated_at", Timestamp, nullable=True),
    sa.Column("revision", sa.BigInteger, nullable=False),
    sa.Column("poller_id", sa.String(128), nullable=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("state_reason", sa.String(512), nullable=False, server_default=""),
    sa.Column("state_changed_at", Timestamp, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Index("ix_work_items_tenant_partition", "tenant", "partition"),
    sa.Index("ix_work_items_tenant_poller", "tenant", "poller_id"),
    # rotate-key's scan: values sealed with a key other than the newest. Partial, so placing
    # the items without credentials (most of them) never touches it.
    sa.Index(
        "ix_work_items_credentials_key_id",
        "credentials_key_id",
        postgresql_where=sa.text("credentials_key_id IS NOT NULL"),
        sqlite_where=sa.text("credentials_key_id IS NOT NULL"),
    ),
)
