"""Scratch PostgreSQL databases and Redis key prefixes for the service benchmarks (created, then dropped)."""

from __future__ import annotations

import secrets


def create_database(admin_url: str) -> tuple[str, str]:
    """Create a uniquely named database; returns (name, SQLAlchemy URL for it)."""
    import psycopg

    name = f"rlhfkit_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    return name, url


def drop_scratch(admin_url: str, name: str, redis_client: object, prefix: str) -> None:
    """Delete the Redis keys under ``prefix`` and drop the database ``name``."""
    import psycopg

    for key in redis_client.scan_iter(match=f"{prefix}:*", count=1000):  # type: ignore[attr-defined]
        redis_client.delete(key)  # type: ignore[attr-defined]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
