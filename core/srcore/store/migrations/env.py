"""Alembic environment: runs on the connection that store.database hands it."""

from __future__ import annotations

from alembic import context

# Each module registers its tables on the shared metadata (what autogenerate compares).
import srcore.store.alert_tables
import srcore.store.device_tables
import srcore.store.ingest_tables
import srcore.store.stats_tables  # noqa: F401
from srcore.store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
