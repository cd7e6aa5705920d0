"""Alembic environment: runs on the connection that store.database hands it."""

from __future__ import annotations

from alembic import context

import srcore.store.ingest_tables  # noqa: F401  (registers its tables on the metadata)
from srcore.store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
