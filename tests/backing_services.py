"""Where the test suite finds PostgreSQL and Redis, and how to tell a person to start them."""

from __future__ import annotations

import os

import psycopg
import redis

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"

HOW_TO_START = {
    "PostgreSQL": "docker compose up -d postgres   (or: pg_ctlcluster --skip-systemctl-redirect "
    "$(ls /etc/postgresql) main start)",
    "Redis": "docker compose up -d redis   (or: redis-server --daemonize yes --port 6379)",
}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def admin_database_url() -> str:
    """The server the suite creates its own database on (``TEST_DATABASE_URL``)."""
    return os.environ.get("TEST_DATABASE_URL", DEFAULT_DATABASE_URL)


def redis_url() -> str:
    return os.environ.get("TEST_REDIS_URL", DEFAULT_REDIS_URL)


def libpq_url(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://", 1)


def postgres_problem() -> str | None:
    try:
        with psycopg.connect(libpq_url(admin_database_url()), connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]


def redis_problem() -> str | None:
    try:
        redis.Redis.from_url(redis_url(), socket_connect_timeout=3).ping()
        return None
    except redis.RedisError as exc:
        return str(exc)


def problems() -> dict[str, str]:
    found = {"PostgreSQL": postgres_problem(), "Redis": redis_problem()}
    return {name: problem for name, problem in found.items() if problem}
