"""A throwaway PostgreSQL database for one benchmark run, created and dropped on the server
that ``TEST_DATABASE_URL`` (or the default) names."""

from __future__ import annotations

import uuid

import psycopg
from sqlalchemy.engine import make_url


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def scratch_database(admin_url: str, prefix: str) -> str:
    """Create ``<prefix>_<random>``; returns its SQLAlchemy URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, url: str) -> None:
    name = make_url(url).database
    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
