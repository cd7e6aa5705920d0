"""Persistence: SQLAlchemy Core tables, alembic migrations and repositories."""
