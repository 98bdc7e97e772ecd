"""Bulk writing, the storage step of ingest: one batch of validated, deduplicated events becomes
event rows, typed rows (timings, memory, alerts, eval samples, artifacts) and packed metric
chunks with their rollups, in the caller's transaction.

Dialect-specific on purpose, because this is where ingest spends its time: on PostgreSQL a small
(live) batch goes as array statements in one pipelined round trip and a large one through
``COPY`` (binary for the packed metric arrays); on SQLite everything is an ``executemany``.
Only :mod:`backend.services.ingest` calls this module (tests/unit/test_layering.py checks it).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any

from sqlalchemy import case, func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from backend.core.db import Database
from backend.models import (
    ROLLUP_WIDTHS,
    Alert,
    Artifact,
    EvalSample,
    EventRow,
    MemorySnapshot,
    MetricSeries,
    StageTiming,
    metric_chunks,
    metric_rollups,
)
from backend.services import pg_bulk
from backend.services import points as pts_ops
from backend.services.event_validation import Parsed
from backend.services.run_state import finite
from rlhfkit.events import (
    AlertEvent,
    ArtifactEvent,
    EvalEvent,
    Event,
    MemoryEvent,
    MetricsEvent,
    TimingsEvent,
)

COPY_MIN_EVENTS = 64  # PostgreSQL: batches from this size go through COPY, smaller ones through a pipeline
SERIES_CACHE_SIZE = 100_000  # (run, metric key) -> series id pairs kept, least recently used dropped


class _SeriesIds:
    """Series ids of recently written metric keys: a bounded LRU, so a long-lived server that has
    seen many runs does not keep every run's keys forever."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._ids: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._lock = threading.Lock()  # the stream writer, the embedded pump and REST threads share it

    def get(self, run_id: str, keys: set[str]) -> dict[str, int]:
        with self._lock:
            out = {}
            for k in keys:
                i = self._ids.get((run_id, k))
                if i is not None:
                    self._ids.move_to_end((run_id, k))
                    out[k] = i
            return out

    def put(self, run_id: str, ids: dict[str, int]) -> None:
        with self._lock:
            for k, i in ids.items():
                self._ids[(run_id, k)] = i
            while len(self._ids) > self.size:
                self._ids.popitem(last=False)

    def forget(self, run_id: str) -> None:
        with self._lock:
            for k in [k for k in self._ids if k[0] == run_id]:
                del self._ids[k]

    def __len__(self) -> int:
        return len(self._ids)


series_cache = _SeriesIds(SERIES_CACHE_SIZE)


def forget_run(run_id: str) -> None:
    """Drop cached series ids of a deleted run."""
    series_cache.forget(run_id)


def series_ids(db: Database, run_id: str, new: list[Parsed]) -> dict[str, int]:
    """Integer id of every metric key in the batch, creating series rows (committed on their own,
    so a rolled-back batch never leaves a cached id behind)."""
    keys = {k for ev, _ in new if isinstance(ev, MetricsEvent) for k in ev.values}
    found = series_cache.get(run_id, keys)
    missing = [k for k in keys if k not in found]
    if missing:
        with db.session() as s:
            fresh = {k: i for k, i in s.execute(select(MetricSeries.key, MetricSeries.id).where(
                MetricSeries.run_id == run_id, MetricSeries.key.in_(missing)))}
            absent = [k for k in missing if k not in fresh]
            if absent:
                s.execute(insert_ignore(db, MetricSeries, ["run_id", "key"]),
                          [{"run_id": run_id, "key": k} for k in absent])
                s.commit()
                fresh.update({k: i for k, i in s.execute(select(MetricSeries.key, MetricSeries.id).where(
                    MetricSeries.run_id == run_id, MetricSeries.key.in_(absent)))})
        series_cache.put(run_id, fresh)
        found.update(fresh)
    return found


def insert_ignore(db: Database, model: Any, conflict: list[str]) -> Any:
    """``INSERT ... ON CONFLICT (conflict) DO NOTHING`` in the database's dialect."""
    insert_ = pg_insert if db.is_postgres else sqlite_insert
    return insert_(model).on_conflict_do_nothing(index_elements=conflict)


def insert_events_one_by_one(session: Session, db: Database, run_id: str, new: list[Parsed]) -> list[Parsed]:
    """The slow, exact path after a race with another process: insert each event row unless its
    seq is stored already; return the events that went in."""
    events = EventRow.__table__
    stored = []
    for ev, text in new:
        # RETURNING tells which rows went in (the row count of an ignored insert is -1 through the ORM)
        inserted = session.execute(insert_ignore(db, events, ["run_id", "seq"]).values(
            run_id=run_id, seq=ev.seq, type=ev.type, step=ev.step, ts=ev.ts, payload=ev.model_dump(mode="json"))
            .returning(events.c.seq)).scalar()
        if inserted is not None:
            stored.append((ev, text))
    return stored


def store_batch(session: Session, db: Database, run_id: str, new: list[Parsed], series: dict[str, int], *,
                events_table: bool = True) -> list[tuple[int, str]]:
    """Insert the event rows (unless ``events_table`` is False: already inserted) and the typed
    rows; return ``(seq, json text)`` of each new event, what viewers are sent."""
    accepted: list[tuple[int, str]] = []
    metrics: list[tuple[int, float, dict[str, float]]] = []  # (step, ts, values) of each metrics event
    rows: dict[Any, list[dict[str, Any]]] = {StageTiming: [], MemorySnapshot: [], Alert: [], EvalSample: []}
    artifacts: list[dict[str, Any]] = []
    for ev, text in new:
        accepted.append((ev.seq, text if text is not None else ev.model_dump_json()))
        step = ev.step if ev.step is not None else 0
        if isinstance(ev, MetricsEvent):
            metrics.append((step, ev.ts, ev.values))
        elif isinstance(ev, TimingsEvent):
            rows[StageTiming].append(dict(run_id=run_id, step=step, stages=ev.stages, step_time=ev.step_time,
                                          tokens=ev.tokens, wall_time=ev.ts))
        elif isinstance(ev, MemoryEvent):
            rows[MemorySnapshot].append(dict(
                run_id=run_id, step=step, device=ev.device, wall_time=ev.ts, models=ev.models,
                stages={k: s.model_dump(exclude_none=True) for k, s in ev.stages.items()}))
        elif isinstance(ev, AlertEvent):
            rows[Alert].append(dict(
                run_id=run_id, step=ev.step, rule=ev.rule, severity=ev.severity, metric=ev.metric,
                value=ev.value if finite(ev.value) else None, threshold=ev.threshold if finite(ev.threshold) else None,
                message=ev.message, suggestion=ev.suggestion, wall_time=ev.ts))
        elif isinstance(ev, EvalEvent):
            rows[EvalSample].extend(dict(run_id=run_id, step=ev.step, prompt=s.prompt, response=s.response,
                                         reward=s.reward if finite(s.reward) else 0.0, wall_time=ev.ts)
                                    for s in ev.samples)
        elif isinstance(ev, ArtifactEvent):
            artifacts.append(dict(run_id=run_id, step=ev.step, name=ev.name, kind=ev.kind, path=ev.path,
                                  size_bytes=ev.size_bytes, meta=ev.meta))
    pipelined = db.is_postgres and len(new) < COPY_MIN_EVENTS
    with pg_bulk.pipeline(session, pipelined):
        if events_table:
            _insert_events(session, db, run_id, [ev for ev, _ in new], [text for _, text in accepted], pipelined)
        points = pts_ops.flatten(metrics, series)
        if points.size:
            _insert_chunks(session, db, pts_ops.chunk_rows(points), pipelined)
            update_rollups(session, db, pts_ops.rollups(points, ROLLUP_WIDTHS))
    for model, batch in rows.items():
        if batch:
            session.execute(insert(model), batch)
    for a in artifacts:  # re-registering an artifact name replaces it
        existing = session.scalar(select(Artifact).where(Artifact.run_id == run_id, Artifact.name == a["name"]))
        if existing is None:
            session.add(Artifact(**a))
        else:
            for k, v in a.items():
                setattr(existing, k, v)
    return accepted


def _insert_events(session: Session, db: Database, run_id: str, events: list[Event], texts: list[str],
                   pipelined: bool) -> None:
    if db.is_postgres:
        pg_bulk.insert_events(session, run_id, events, texts, pipelined=pipelined)
    else:
        session.execute(insert(EventRow), [
            dict(run_id=run_id, seq=ev.seq, type=ev.type, step=ev.step, ts=ev.ts, payload=json.loads(text))
            for ev, text in zip(events, texts, strict=True)])


def _insert_chunks(session: Session, db: Database, chunks: list[dict[str, Any]], pipelined: bool) -> None:
    if db.is_postgres:
        pg_bulk.insert_chunks(session, chunks, pipelined=pipelined)
    else:
        session.execute(insert(metric_chunks), chunks)


def update_rollups(session: Session, db: Database, rows: list[tuple[Any, ...]]) -> None:
    """Fold the batch's rollup rows (:func:`points.rollups`) into the stored step buckets (upsert:
    count, sum, min, max and the steps where min and max occurred; stored ones win ties)."""
    if db.is_postgres:
        pg_bulk.upsert_rollups(session, rows)
        return
    names = ("series_id", "width", "bucket", "first_step", "n", "sum", "min", "min_step", "max", "max_step")
    r = metric_rollups.c
    stmt = sqlite_insert(metric_rollups)
    ex = stmt.excluded
    session.execute(stmt.on_conflict_do_update(index_elements=["series_id", "width", "bucket"], set_={
        "first_step": func.min(r.first_step, ex.first_step),  # two-argument min/max are scalar in SQLite
        "n": r.n + ex.n,
        "sum": r.sum + ex.sum,
        "min_step": case((ex.min < r.min, ex.min_step), else_=r.min_step),
        "min": func.min(r.min, ex.min),
        "max_step": case((ex.max > r.max, ex.max_step), else_=r.max_step),
        "max": func.max(r.max, ex.max),
    }), [dict(zip(names, row, strict=True)) for row in rows])
