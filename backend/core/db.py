"""Database engine, sessions and migrations.

The same code runs on SQLite (embedded mode, tests) and PostgreSQL (deployments). SQLite gets WAL
journaling and a busy timeout so the API can read while the ingest thread writes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def make_engine(url: str, *, pre_ping: bool = True, pool_size: int = 10) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=pre_ping)


class Database:
    """An engine plus a session factory; one per process."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        # The stream writer's own small pool, without pre-ping: on PostgreSQL the ping costs three
        # round trips per checkout, as much as the rest of a live event's transaction. A connection
        # that went stale fails its batch; the writer retries it on a fresh one.
        self.writer_engine = self.engine if url.startswith("sqlite") else make_engine(url, pre_ping=False, pool_size=2)
        self.writer_sessionmaker = sessionmaker(self.writer_engine, expire_on_commit=False)

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessionmaker() as s:
            yield s

    @contextmanager
    def writer_session(self) -> Iterator[Session]:
        with self.writer_sessionmaker() as s:
            yield s

    def dispose(self) -> None:
        self.engine.dispose()
        if self.writer_engine is not self.engine:
            self.writer_engine.dispose()


def run_migrations(url: str) -> None:
    """Bring the schema to the newest Alembic revision (idempotent; called at start-up)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, "head")
