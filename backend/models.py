"""Run registry tables (SQLAlchemy 2.x).

``events`` keeps every event verbatim (the source of truth, unique on ``(run_id, seq)`` so replays
and re-uploads are idempotent). The typed tables beside it (metric points, timings, memory, alerts,
eval samples, artifacts) are derived from the events at ingest time so the API can answer chart
queries with an index range scan instead of parsing JSON.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

JsonType = JSON().with_variant(JSONB(), "postgresql")
BigId = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER PRIMARY KEY only


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), index=True)
    source: Mapped[str] = mapped_column(String(16), default="native")
    config: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    seed: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    tags: Mapped[list[str]] = mapped_column(JsonType, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    git_commit: Mapped[str | None] = mapped_column(String(64), nullable=True)
    versions: Mapped[dict[str, str]] = mapped_column(JsonType, default=dict)
    total_steps: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=-1)
    latest: Mapped[dict[str, float]] = mapped_column(JsonType, default=dict)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JsonType, nullable=True)
    queue: Mapped[str | None] = mapped_column(String(100), nullable=True)
    task_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    parent_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the run this one re-runs
    origin: Mapped[dict[str, Any] | None] = mapped_column(JsonType, nullable=True)  # the suggestion it came from
    # other runs executed beside it and over which of its steps (backend.services.embedded)
    shared_device: Mapped[dict[str, Any] | None] = mapped_column(JsonType, nullable=True)


class EventRow(Base):
    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("run_id", "seq", name="uq_events_run_seq"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(String(32))
    step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    ts: Mapped[float] = mapped_column(Float)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)  # plain json on PostgreSQL: cheaper to ingest than jsonb


class MetricSeries(Base):
    """One metric key of one run. Points refer to it by a small integer, which keeps the points
    index narrow: ingest into PostgreSQL is ~3x faster than with (run_id, key) text in every row."""

    __tablename__ = "metric_series"
    __table_args__ = (UniqueConstraint("run_id", "key", name="uq_metric_series_run_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(200))


# Metric points, stored as chunks: one row holds the points of one series that arrived in one ingest
# batch, as packed little-endian arrays (``steps`` int32, ``vals`` and ``wall_times`` float64; see
# ``backend.services.points``). A batch of 10,000 logged steps of 30 metrics is 30 rows, not 300,000:
# PostgreSQL spends its ingest time on rows and index entries, not on bytes (measured on a 2-core box:
# COPY of 600,000 point rows with their (series_id, step) index ~0.9 s; the same points as 60 chunk
# rows, binary COPY included, ~0.06 s). ``first_step``/``last_step`` bound the chunk's steps (points inside are in arrival order);
# the index serves "one series over a step range" and ``max(last_step)`` of a series. A live run at
# one step per batch writes one-point chunks: as many rows as before, no worse.
# On PostgreSQL the blobs are stored uncompressed (``STORAGE EXTERNAL``, set by the migration):
# compressing them cost more ingest time than the bytes it saved.
# No FOREIGN KEY on purpose (PostgreSQL checks one per row with a trigger); series rows are created
# before their points and deleted after them (services).
metric_chunks = Table(
    "metric_chunks",
    Base.metadata,
    Column("series_id", Integer, nullable=False),
    Column("first_step", Integer, nullable=False),
    Column("last_step", Integer, nullable=False),
    Column("n", Integer, nullable=False),
    Column("steps", LargeBinary, nullable=False),
    Column("vals", LargeBinary, nullable=False),
    Column("wall_times", LargeBinary, nullable=False),
    Index("ix_metric_chunks_series_last_first", "series_id", "last_step", "first_step"),
)


# Pre-aggregated buckets of ``width`` steps per series (widths in ROLLUP_WIDTHS), maintained at
# ingest: a chart of a million points reads ~10,000 rollup rows instead of a million points.
ROLLUP_WIDTHS = (100, 10_000)
metric_rollups = Table(
    "metric_rollups",
    Base.metadata,
    Column("series_id", Integer, primary_key=True),
    Column("width", Integer, primary_key=True),
    Column("bucket", Integer, primary_key=True),  # step // width
    Column("first_step", Integer, nullable=False),
    Column("n", Integer, nullable=False),
    Column("sum", Float, nullable=False),
    Column("min", Float, nullable=False),
    Column("min_step", Integer, nullable=False),
    Column("max", Float, nullable=False),
    Column("max_step", Integer, nullable=False),
)


class StageTiming(Base):
    __tablename__ = "timings"
    __table_args__ = (Index("ix_timings_run_step", "run_id", "step"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    stages: Mapped[dict[str, float]] = mapped_column(JsonType)
    step_time: Mapped[float] = mapped_column(Float)
    tokens: Mapped[int] = mapped_column(Integer, default=0)
    wall_time: Mapped[float] = mapped_column(Float)


class MemorySnapshot(Base):
    __tablename__ = "memory"
    __table_args__ = (Index("ix_memory_run_step", "run_id", "step"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    device: Mapped[str] = mapped_column(String(32))
    stages: Mapped[dict[str, Any]] = mapped_column(JsonType)
    models: Mapped[dict[str, float]] = mapped_column(JsonType)
    wall_time: Mapped[float] = mapped_column(Float)


class Alert(Base):
    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_run_step", "run_id", "step"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rule: Mapped[str] = mapped_column(String(100))
    severity: Mapped[str] = mapped_column(String(16))
    metric: Mapped[str | None] = mapped_column(String(200), nullable=True)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")
    suggestion: Mapped[str] = mapped_column(Text, default="")
    wall_time: Mapped[float] = mapped_column(Float)


class EvalSample(Base):
    __tablename__ = "eval_samples"
    __table_args__ = (Index("ix_eval_samples_run_step", "run_id", "step"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    prompt: Mapped[str] = mapped_column(Text)
    response: Mapped[str] = mapped_column(Text)
    reward: Mapped[float] = mapped_column(Float)
    wall_time: Mapped[float] = mapped_column(Float)


class Artifact(Base):
    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("run_id", "name", name="uq_artifacts_run_name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    name: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(32))
    path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    meta: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MlflowExperiment(Base):
    """An experiment as MLflow clients know it (runs that arrive through the MLflow-compatible
    tracking API, ``backend.services.mlflow``). Id 0 is MLflow's ``Default`` experiment."""

    __tablename__ = "mlflow_experiments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(500), unique=True)
    artifact_location: Mapped[str] = mapped_column(Text, default="")
    lifecycle_stage: Mapped[str] = mapped_column(String(16), default="active")
    tags: Mapped[dict[str, str]] = mapped_column(JsonType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MlflowRun(Base):
    """What MLflow knows of a registry run beyond the run row: its experiment, its key/value tags
    and the client's own start/end times (milliseconds, as MLflow reports them)."""

    __tablename__ = "mlflow_runs"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("mlflow_experiments.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(String(200), default="")
    tags: Mapped[dict[str, str]] = mapped_column(JsonType, default=dict)
    start_time: Mapped[int] = mapped_column(BigInteger)
    end_time: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
