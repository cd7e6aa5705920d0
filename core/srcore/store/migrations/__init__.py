"""Alembic migration scripts; run by `srcore migrate` and on server start."""
