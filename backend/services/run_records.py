"""Reading a run's stored records back for the API: events after a cursor (polling replay and the
live socket's replay), the typed per-step rows (timings, memory, alerts, eval samples) and the
readiness checks. The write side of the same tables is :mod:`backend.services.ingest`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, text

from backend.core.db import Database
from backend.models import Alert, EvalSample, EventRow, MemorySnapshot, Run, StageTiming
from backend.schemas import AlertPublic, MemoryPublic, SamplePublic, TimingPublic


def events_after(*, db: Database, run_id: str, after: int, limit: int, types: Sequence[str] | None = None,
                 before: int | None = None) -> list[dict[str, Any]]:
    """Stored events with ``after < seq`` (and ``seq < before``), in seq order, at most ``limit``;
    each is the event's JSON object (its ``seq`` is the next cursor)."""
    with db.session() as s:
        stmt = select(EventRow.payload).where(EventRow.run_id == run_id, EventRow.seq > after)
        if before is not None:
            stmt = stmt.where(EventRow.seq < before)
        if types:
            stmt = stmt.where(EventRow.type.in_(types))
        return list(s.scalars(stmt.order_by(EventRow.seq).limit(limit)))


def run_status(*, db: Database, run_id: str) -> str | None:
    """The run's status, None for an unknown run."""
    with db.session() as s:
        return s.scalar(select(Run.status).where(Run.id == run_id))


def _rows(db: Database, model: Any, run_id: str, limit: int) -> list[Any]:
    with db.session() as s:
        return list(s.scalars(select(model).where(model.run_id == run_id).order_by(model.step, model.id).limit(limit)))


def timings(*, db: Database, run_id: str, limit: int) -> list[TimingPublic]:
    return [TimingPublic.model_validate(r, from_attributes=True) for r in _rows(db, StageTiming, run_id, limit)]


def memory(*, db: Database, run_id: str, limit: int) -> list[MemoryPublic]:
    return [MemoryPublic.model_validate(r, from_attributes=True) for r in _rows(db, MemorySnapshot, run_id, limit)]


def alerts(*, db: Database, run_id: str, limit: int) -> list[AlertPublic]:
    return [AlertPublic.model_validate(r, from_attributes=True) for r in _rows(db, Alert, run_id, limit)]


def samples(*, db: Database, run_id: str, limit: int) -> list[SamplePublic]:
    return [SamplePublic.model_validate(r, from_attributes=True) for r in _rows(db, EvalSample, run_id, limit)]


def database_check(*, db: Database) -> str:
    """``ok`` when the database answers a query, else the error's type."""
    try:
        with db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return "ok"
    except Exception as exc:
        return f"error: {type(exc).__name__}"
