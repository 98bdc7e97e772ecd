"""Schema migrations keep the data: metric points written under the row-per-point schema (0001)
are still there, point for point, after the upgrade to packed chunks, and after a downgrade."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text

from backend.core.db import MIGRATIONS_DIR, Database
from backend.services.metrics import query_series
from tests.integration.conftest import PG_ADMIN, _pg_available

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgres"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of its own (it goes down to the first revision and back)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrate.db'}"
        return
    import psycopg

    if not _pg_available():
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN}")
    name = f"rlhfkit_test_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _alembic(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def test_points_survive_the_upgrade_to_chunks_and_the_downgrade(empty_db: str) -> None:
    cfg = _alembic(empty_db)
    command.upgrade(cfg, "0001")
    engine = create_engine(empty_db)
    steps = [s for s in range(250) if s != 17]  # a gap, and more points than one query returns raw
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO runs (id, name, status, source, config, tags, created_at, versions, last_seq, "
                          "latest, cancel_requested) VALUES ('r1', 'old', 'succeeded', 'native', '{}', '[]', "
                          "'2026-01-01 00:00:00+00:00', '{}', -1, '{}', false)"))
        conn.execute(text("INSERT INTO metric_series (id, run_id, key) VALUES (5, 'r1', 'reward/mean')"))
        conn.execute(text("INSERT INTO metric_points (series_id, step, value, wall_time) VALUES (5, :s, :v, :t)"),
                     [{"s": s, "v": s / 10, "t": 1000.0 + s} for s in reversed(steps)])
    engine.dispose()

    command.upgrade(cfg, "head")
    db = Database(empty_db)
    series = query_series(db, "r1", ["reward/mean"], max_points=1000, start=0, end=10_000)["reward/mean"]
    assert series.steps == steps and series.values == [s / 10 for s in steps] and not series.downsampled
    db.dispose()

    command.downgrade(cfg, "0001")
    engine = create_engine(empty_db)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT step, value, wall_time FROM metric_points WHERE series_id = 5 "
                                 "ORDER BY step")).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [(s, s / 10, 1000.0 + s) for s in steps]
