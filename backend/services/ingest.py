"""Event ingest: validate, deduplicate on ``(run_id, seq)``, store, derive typed rows, update the run.

Every path that brings events in — the REST ingest endpoint, the Redis Stream consumer and the
embedded executor — calls :func:`ingest_events`, so they behave the same. Within one process the
events of one run are ingested under a lock, so deduplication (pre-filter on the existing seqs,
backed by the unique constraint) is exact. Event rows go through ``COPY`` on PostgreSQL and
``executemany`` on SQLite; metric points become one packed chunk row per series and batch, their
rollups one upsert (``backend.services.points`` does the array work).
"""

from __future__ import annotations

import json
import logging
import math
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from psycopg.errors import IntegrityError as PgIntegrityError
from pydantic import ValidationError
from sqlalchemy import case, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.core.db import Database
from backend.core.registry import presumed_lost, run_lock
from backend.models import (
    ROLLUP_WIDTHS,
    Alert,
    Artifact,
    EvalSample,
    EventRow,
    MemorySnapshot,
    MetricSeries,
    Run,
    StageTiming,
    metric_chunks,
    metric_rollups,
)
from backend.services import points as pts_ops
from rlhfkit.events import (
    STATUS_OF_TERMINAL_EVENT,
    TERMINAL_STATUSES,
    AlertEvent,
    ArtifactEvent,
    EvalEvent,
    Event,
    MemoryEvent,
    MetricsEvent,
    RunCancelled,
    RunFailed,
    RunFinished,
    RunStarted,
    TimingsEvent,
    parse_event,
    steps_done_after,
)
from rlhfkit.metrics import M

_log = logging.getLogger(__name__)
COPY_MIN_EVENTS = 64  # PostgreSQL: batches from this size go through COPY, smaller ones through a pipeline


class IngestError(ValueError):
    """Some events do not validate; ``errors`` is in FastAPI's 422 ``detail`` shape."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        super().__init__(f"{len(errors)} invalid event field(s)")


class RunNotFound(LookupError):
    pass


@dataclass
class IngestOutcome:
    accepted: list[tuple[int, str]] = field(default_factory=list)  # (seq, JSON text) of new events, seq order
    duplicates: int = 0
    conflicts: list[int] = field(default_factory=list)  # seqs sent twice in one batch with different content
    last_seq: int = -1
    status_changed: bool = False
    run: Run | None = None


def _drop_null_metrics(item: Any) -> Any:
    """JSON has no NaN: pydantic writes NaN/inf metric values as null. Drop them (they cannot be
    charted) instead of rejecting the whole event; the stability monitor reports them as alerts."""
    data = json.loads(item) if isinstance(item, (str, bytes)) else item
    if isinstance(data, dict) and isinstance(data.get("values"), dict):
        data = {**data, "values": {k: v for k, v in data["values"].items() if v is not None}}
    return data


def parse_events(raw: list[Any], run_id: str) -> list[tuple[Event, str | None]]:
    """Validate a batch; every error names the event index and field (FastAPI's loc shape).

    Returns each event with its JSON text when the input was JSON text already stamped for this
    run (the Redis stream, the embedded queue), so it is stored and fanned out without re-dumping."""
    out: list[tuple[Event, str | None]] = []
    errors: list[dict[str, Any]] = []
    for i, item in enumerate(raw):
        text = item.decode() if isinstance(item, bytes) else item if isinstance(item, str) else None
        try:
            try:
                ev = item if hasattr(item, "type") and hasattr(item, "seq") else parse_event(item)
            except ValidationError as first:
                if not any(e["type"] == "float_type" and e.get("input") is None for e in first.errors()):
                    raise
                ev = parse_event(_drop_null_metrics(item))
                text = None
        except ValidationError as exc:
            for err in exc.errors():
                errors.append({"loc": ["body", "events", i, *err["loc"]], "msg": err["msg"], "type": err["type"]})
            continue
        except ValueError as exc:  # malformed JSON text from a stream
            errors.append({"loc": ["body", "events", i], "msg": str(exc), "type": "json_invalid"})
            continue
        if ev.run_id != run_id or ev.seq < 0:
            text = None
        ev.run_id = run_id
        out.append((ev, text))
    if errors:
        raise IngestError(errors)
    return out


def ingest_events(db: Database, run_id: str, raw: list[Any]) -> IngestOutcome:
    """Store a batch of events for one run; idempotent on ``(run_id, seq)``."""
    return ingest_parsed(db, run_id, parse_events(raw, run_id))


def ingest_parsed(db: Database, run_id: str, parsed: list[tuple[Event, str | None]], *,
                  writer: bool = False) -> IngestOutcome:
    """:func:`ingest_events` for a batch :func:`parse_events` already validated (the stream consumer
    parses the next batch while this one is being written). ``writer``: use the stream writer's
    connections (no pre-ping; the caller retries a failed batch)."""
    with run_lock(run_id), (db.writer_session() if writer else db.session()) as session:
        run = session.get(Run, run_id)
        if run is None:
            raise RunNotFound(run_id)
        # events without a seq (hand-written uploads) get the next free numbers
        next_seq = run.last_seq + 1
        for ev, _ in parsed:
            if ev.seq < 0:
                ev.seq = next_seq
            next_seq = max(next_seq, ev.seq + 1)
        by_seq: dict[int, tuple[Event, str | None]] = {}
        conflicts: set[int] = set()
        for pair in parsed:
            kept = by_seq.setdefault(pair[0].seq, pair)
            if kept is not pair and kept[0] != pair[0]:
                conflicts.add(pair[0].seq)  # the first one is kept; the caller is told
        dup = len(parsed) - len(by_seq)
        if by_seq and min(by_seq) <= run.last_seq:  # (seqs above last_seq cannot be stored yet)
            lo, hi = min(by_seq), max(by_seq)
            existing = set(session.scalars(
                select(EventRow.seq).where(EventRow.run_id == run_id, EventRow.seq >= lo, EventRow.seq <= hi)))
            dup += len(existing)
            for s in existing:
                by_seq.pop(s, None)
        new = [by_seq[s] for s in sorted(by_seq)]
        outcome = IngestOutcome(duplicates=dup, conflicts=sorted(conflicts))
        if new:
            series = _series_ids(db, run_id, new)
            try:
                outcome.accepted = _store(session, db, run_id, new, series)
                outcome.status_changed = _update_run(session, run, [ev for ev, _ in new])
                session.commit()
            except (IntegrityError, PgIntegrityError):  # another process stored some meanwhile: slow, exact path
                session.rollback()
                _log.info("ingest race on run %s; retrying with ON CONFLICT", run_id)
                out = _ingest_conflict_safe(db, run_id, new, dup, series)
                out.conflicts = sorted(conflicts)
                return out
        outcome.last_seq = run.last_seq
        outcome.run = run
        return outcome


_series_cache: dict[tuple[str, str], int] = {}


def forget_run(run_id: str) -> None:
    """Drop cached series ids of a deleted run."""
    for k in [k for k in _series_cache if k[0] == run_id]:
        _series_cache.pop(k, None)


def _series_ids(db: Database, run_id: str, new: list[tuple[Event, str | None]]) -> dict[str, int]:
    """Integer id of every metric key in the batch, creating series rows (committed on their own,
    so a rolled-back batch never leaves a cached id behind)."""
    keys = {k for ev, _ in new if isinstance(ev, MetricsEvent) for k in ev.values}
    missing = [k for k in keys if (run_id, k) not in _series_cache]
    if missing:
        with db.session() as s:
            rows = s.execute(select(MetricSeries.key, MetricSeries.id)
                             .where(MetricSeries.run_id == run_id, MetricSeries.key.in_(missing))).all()
            found = {k: i for k, i in rows}
            absent = [k for k in missing if k not in found]
            if absent:
                s.execute(_insert_ignore(db, MetricSeries, ["run_id", "key"]),
                          [{"run_id": run_id, "key": k} for k in absent])
                s.commit()
                rows = s.execute(select(MetricSeries.key, MetricSeries.id)
                                 .where(MetricSeries.run_id == run_id, MetricSeries.key.in_(absent))).all()
                found.update({k: i for k, i in rows})
        for k, i in found.items():
            _series_cache[(run_id, k)] = i
    return {k: _series_cache[(run_id, k)] for k in keys}


def _ingest_conflict_safe(db: Database, run_id: str, new: list[tuple[Event, str | None]], dup: int,
                          series: dict[str, int]) -> IngestOutcome:
    with db.session() as session:
        run = session.get(Run, run_id)
        assert run is not None
        stored = []
        events = EventRow.__table__
        for ev, text in new:
            # RETURNING tells which rows went in (the row count of an ignored insert is -1 through the ORM)
            inserted = session.execute(_insert_ignore(db, events, ["run_id", "seq"]).values(
                run_id=run_id, seq=ev.seq, type=ev.type, step=ev.step, ts=ev.ts, payload=ev.model_dump(mode="json"))
                .returning(events.c.seq)).scalar()
            if inserted is not None:
                stored.append((ev, text))
            else:
                dup += 1
        accepted = _store(session, db, run_id, stored, series, events_table=False)
        changed = _update_run(session, run, [ev for ev, _ in stored]) if stored else False
        session.commit()
        return IngestOutcome(accepted=accepted, duplicates=dup, last_seq=run.last_seq, status_changed=changed, run=run)


def _insert_ignore(db: Database, model: Any, conflict: list[str]) -> Any:
    if db.is_postgres:
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(model).on_conflict_do_nothing(index_elements=conflict)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(model).on_conflict_do_nothing(index_elements=conflict)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _copy_text(v: Any) -> str:
    """One value in PostgreSQL COPY text format."""
    if v is None:
        return "\\N"
    if isinstance(v, float):
        return repr(v)
    t = str(v).replace("\\", "\\\\")
    if "\t" in t or "\n" in t or "\r" in t:  # never in compact JSON: checking is cheaper than replacing
        t = t.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return t


def _store(session: Session, db: Database, run_id: str, new: list[tuple[Event, str | None]],
           series: dict[str, int], *, events_table: bool = True) -> list[tuple[int, str]]:
    """Insert the event rows and the typed rows; return ``(seq, json text)`` of each new event."""
    accepted: list[tuple[int, str]] = []
    metrics: list[tuple[int, float, dict[str, float]]] = []  # (step, ts, values) of each metrics event
    timings: list[dict[str, Any]] = []
    memory: list[dict[str, Any]] = []
    alerts: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    artifacts: list[dict[str, Any]] = []
    for ev, text in new:
        accepted.append((ev.seq, text if text is not None else ev.model_dump_json()))
        step = ev.step if ev.step is not None else 0
        if isinstance(ev, MetricsEvent):
            metrics.append((step, ev.ts, ev.values))
        elif isinstance(ev, TimingsEvent):
            timings.append(dict(run_id=run_id, step=step, stages=ev.stages, step_time=ev.step_time,
                                tokens=ev.tokens, wall_time=ev.ts))
        elif isinstance(ev, MemoryEvent):
            memory.append(dict(run_id=run_id, step=step, device=ev.device, wall_time=ev.ts,
                               stages={k: s.model_dump(exclude_none=True) for k, s in ev.stages.items()},
                               models=ev.models))
        elif isinstance(ev, AlertEvent):
            alerts.append(dict(run_id=run_id, step=ev.step, rule=ev.rule, severity=ev.severity, metric=ev.metric,
                               value=ev.value if _finite(ev.value) else None,
                               threshold=ev.threshold if _finite(ev.threshold) else None,
                               message=ev.message, suggestion=ev.suggestion, wall_time=ev.ts))
        elif isinstance(ev, EvalEvent):
            samples.extend(dict(run_id=run_id, step=ev.step, prompt=s.prompt, response=s.response,
                                reward=s.reward if _finite(s.reward) else 0.0, wall_time=ev.ts) for s in ev.samples)
        elif isinstance(ev, ArtifactEvent):
            artifacts.append(dict(run_id=run_id, step=ev.step, name=ev.name, kind=ev.kind, path=ev.path,
                                  size_bytes=ev.size_bytes, meta=ev.meta))
    pipelined = db.is_postgres and len(new) < COPY_MIN_EVENTS
    with _pipeline(session, pipelined):
        if events_table:
            _insert_events(session, db, run_id, [ev for ev, _ in new], [text for _, text in accepted], pipelined)
        points = pts_ops.flatten(metrics, series)
        if points.size:
            _insert_chunks(session, db, pts_ops.chunk_rows(points), pipelined)
            _update_rollups(session, db, pts_ops.rollups(points, ROLLUP_WIDTHS))
    for model, rows in ((StageTiming, timings), (MemorySnapshot, memory), (Alert, alerts), (EvalSample, samples)):
        if rows:
            session.execute(insert(model), rows)
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
    if pipelined:  # a live batch: one INSERT of arrays, queued in the pipeline
        with _driver(session).cursor() as cur:
            cur.execute(_PG_EVENT_INSERT, [run_id, [ev.seq for ev in events], [ev.type for ev in events],
                                           [ev.step for ev in events], [ev.ts for ev in events], texts])
    elif db.is_postgres:
        _copy(session, "COPY events (run_id, seq, type, step, ts, payload) FROM STDIN", "".join(
            f"{run_id}\t{ev.seq}\t{ev.type}\t{_copy_text(ev.step)}\t{ev.ts!r}\t{_copy_text(text)}\n"
            for ev, text in zip(events, texts, strict=True)))
    else:
        session.execute(insert(EventRow), [
            dict(run_id=run_id, seq=ev.seq, type=ev.type, step=ev.step, ts=ev.ts, payload=json.loads(text))
            for ev, text in zip(events, texts, strict=True)])


def _insert_chunks(session: Session, db: Database, chunks: list[dict[str, Any]], pipelined: bool) -> None:
    if pipelined:
        with _driver(session).cursor() as cur:
            cur.execute(_PG_CHUNK_INSERT, [[c[k] for c in chunks] for k in chunks[0]])
    elif db.is_postgres:  # binary COPY: the packed arrays go over as they are
        _copy(session, "COPY metric_chunks (series_id, first_step, last_step, n, steps, vals, wall_times) "
                       "FROM STDIN (FORMAT BINARY)", _copy_binary_chunks(chunks))
    else:
        session.execute(insert(metric_chunks), chunks)


def _update_rollups(session: Session, db: Database, rows: list[tuple[Any, ...]]) -> None:
    """Fold the batch's rollup rows (:func:`points.rollups`) into the stored step buckets (upsert:
    count, sum, min, max and the steps where min and max occurred; stored ones win ties)."""
    if db.is_postgres:
        # one statement with array parameters: constant SQL (prepared once), one round trip
        with _driver(session).cursor() as cur:
            cur.execute(_PG_ROLLUP_UPSERT, [list(c) for c in zip(*rows, strict=True)])  # arrays as binary (%b)
        return
    names = ("series_id", "width", "bucket", "first_step", "n", "sum", "min", "min_step", "max", "max_step")
    r = metric_rollups.c
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

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


_PG_ROLLUP_UPSERT = """
INSERT INTO metric_rollups AS r (series_id, width, bucket, first_step, n, "sum", "min", min_step, "max", max_step)
SELECT * FROM unnest(%b::int[], %b::int[], %b::int[], %b::int[], %b::int[], %b::float8[], %b::float8[], %b::int[],
                     %b::float8[], %b::int[])
ON CONFLICT (series_id, width, bucket) DO UPDATE SET
  first_step = LEAST(r.first_step, EXCLUDED.first_step),
  n = r.n + EXCLUDED.n,
  "sum" = r."sum" + EXCLUDED."sum",
  min_step = CASE WHEN EXCLUDED."min" < r."min" THEN EXCLUDED.min_step ELSE r.min_step END,
  "min" = LEAST(r."min", EXCLUDED."min"),
  max_step = CASE WHEN EXCLUDED."max" > r."max" THEN EXCLUDED.max_step ELSE r.max_step END,
  "max" = GREATEST(r."max", EXCLUDED."max")
"""


_PGCOPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_CHUNK_HEAD = struct.Struct("!hiiiiiiiii")  # 7 fields: series_id, first_step, last_step, n (int4 each), steps length


def _copy_binary_chunks(chunks: list[dict[str, Any]]) -> bytes:
    """``metric_chunks`` rows in PostgreSQL's binary COPY format."""
    out = [_PGCOPY_HEADER]
    for c in chunks:
        out += [_CHUNK_HEAD.pack(7, 4, c["series_id"], 4, c["first_step"], 4, c["last_step"], 4, c["n"],
                                 len(c["steps"])), c["steps"],
                struct.pack("!i", len(c["vals"])), c["vals"], struct.pack("!i", len(c["wall_times"])), c["wall_times"]]
    out.append(b"\xff\xff")
    return b"".join(out)


def _copy(session: Session, statement: str, data: str | bytes) -> None:
    """PostgreSQL COPY FROM STDIN of pre-formatted rows (the fastest bulk path)."""
    with _driver(session).cursor() as cur, cur.copy(statement) as cp:
        cp.write(data)


def _driver(session: Session) -> Any:
    """The session's psycopg connection (inside its current transaction)."""
    conn = session.connection().connection.driver_connection
    assert conn is not None
    return conn


@contextmanager
def _pipeline(session: Session, enabled: bool) -> Iterator[None]:
    """PostgreSQL, small batches: psycopg pipeline mode sends the event, chunk and rollup statements
    together and the server answers them together: one round trip instead of three. Large batches
    use COPY instead (not allowed in a pipeline; faster per row). Only our own psycopg statements
    go in: SQLAlchemy's executemany reads results a pipeline has not delivered yet."""
    if not enabled:
        yield
        return
    try:
        with _driver(session).pipeline():
            yield
    except BaseException:
        # psycopg may fail to leave pipeline mode after an error in the block (it logs "error
        # ignored exiting"): such a connection must never serve another transaction
        session.connection().invalidate()
        raise


# array parameters (one statement whatever the batch size), sent in binary (%b)
_PG_EVENT_INSERT = """
INSERT INTO events (run_id, seq, type, step, ts, payload)
SELECT %b, seq, type, step, ts, payload::json
FROM unnest(%b::bigint[], %b::text[], %b::int[], %b::float8[], %b::text[]) AS e(seq, type, step, ts, payload)
"""
_PG_CHUNK_INSERT = """
INSERT INTO metric_chunks (series_id, first_step, last_step, n, steps, vals, wall_times)
SELECT * FROM unnest(%b::int[], %b::int[], %b::int[], %b::int[], %b::bytea[], %b::bytea[], %b::bytea[])
"""


def _ts(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def _latest_finite(updates: list[dict[str, float]]) -> dict[str, float]:
    """The last finite value of every key over ``updates`` (in order)."""
    last: dict[str, float] = {}
    for values in updates:  # dict.update runs in C; non-finite values are repaired below (rare)
        last.update(values)
    bad = [k for k, v in last.items() if not _finite(v)]
    for k in bad:
        del last[k]
        for values in reversed(updates):
            v = values.get(k)
            if v is not None and _finite(v):
                last[k] = v
                break
    return {k: float(v) for k, v in last.items()}


def _update_run(session: Session, run: Run, new: list[Event]) -> bool:
    """Fold new events into the run row: last seq, last completed step (``rlhfkit.events.steps_done_after``),
    latest metrics, status. True if status changed."""
    before = run.status
    latest = dict(run.latest or {})
    last_step = run.last_step
    updates: list[dict[str, float]] = []  # metric values in event order; the last finite one is "latest"
    steps: list[int] = []
    for ev in new:
        done = steps_done_after(ev.type, ev.step, ev.values if isinstance(ev, MetricsEvent) else ())
        if done:  # None: not a step's event; 0: the evaluation before the first step
            steps.append(done - 1)  # the index of the last completed step (RunPublic.steps_done - 1)
        if isinstance(ev, MetricsEvent):
            updates.append(ev.values)
        elif isinstance(ev, EvalEvent):
            if _finite(ev.reward_mean):
                updates.append({M.EVAL_REWARD: ev.reward_mean})
        elif isinstance(ev, RunStarted):
            if run.status == "queued":
                run.status = "running"
            run.started_at = run.started_at or _ts(ev.ts)
            run.total_steps = ev.total_steps if ev.total_steps is not None else run.total_steps
            run.seed = ev.seed if ev.seed is not None else run.seed
            run.versions = ev.versions or run.versions
            run.git_commit = ev.git_commit or run.git_commit
            if not run.config and ev.config:
                run.config = ev.config
        elif isinstance(ev, (RunFinished, RunFailed, RunCancelled)) and (
                run.status not in TERMINAL_STATUSES or presumed_lost(run)):
            run.status = STATUS_OF_TERMINAL_EVENT[ev.type]
            run.finished_at = _ts(ev.ts)
            if isinstance(ev, RunFinished):
                run.summary = ev.summary
                run.error = None
            elif isinstance(ev, RunFailed):
                run.error = ev.error
            else:
                run.error = None
                run.summary = {"status": "cancelled", "reason": ev.reason}
    latest.update(_latest_finite(updates))
    if steps:
        last_step = max(steps) if last_step is None else max(last_step, max(steps))
    run.latest = latest
    run.last_step = last_step
    run.last_seq = max(run.last_seq, new[-1].seq)
    started = any(isinstance(ev, RunStarted) for ev in new)  # the run's details (versions, steps) arrived
    return started or run.status != before
