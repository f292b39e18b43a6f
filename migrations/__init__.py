"""Alembic migrations; ``cardpipe migrate`` runs them (PostgreSQL and SQLite)."""
