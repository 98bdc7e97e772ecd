"""Event ingest: validate, deduplicate on ``(run_id, seq)``, store, fold into the run, publish.

:func:`ingest_and_publish` is the one way events enter the registry and the one place they are
published to viewers; the REST ingest route, the Redis Stream consumer and the embedded
executor all call it, so they behave the same. It runs the four steps, each in its own module:

1. validation — :mod:`backend.services.event_validation` (raw items -> typed events, or 422 errors);
2. deduplication and ordering — here, under the run's lock (:func:`backend.core.registry.run_lock`),
   so within one process the pre-filter on stored seqs is exact; the unique constraint catches a
   race with another process, and the batch is then written one event at a time;
3. bulk writing — :mod:`backend.services.bulk_write` (dialect-specific: ``COPY``/pipelines on
   PostgreSQL, ``executemany`` on SQLite; :mod:`backend.services.points` packs metric points);
4. run-state folding — :mod:`backend.services.run_state` (latest metrics, status), in the same
   transaction; then, after the commit, the new events and any status change go to the
   :class:`~backend.services.live.LiveHub`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from psycopg.errors import IntegrityError as PgIntegrityError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from backend.core.db import Database
from backend.core.registry import run_lock
from backend.models import EventRow, Run
from backend.services import bulk_write
from backend.services.event_validation import Parsed, parse_events
from backend.services.live import LiveHub
from backend.services.run_state import fold_events
from backend.services.runs import RunNotFound, public_dict
from backend.services.telemetry import count_ingest

_log = logging.getLogger(__name__)


@dataclass
class IngestOutcome:
    accepted: list[tuple[int, str]] = field(default_factory=list)  # (seq, JSON text) of new events, seq order
    duplicates: int = 0
    conflicts: list[int] = field(default_factory=list)  # seqs sent twice in one batch with different content
    last_seq: int = -1
    status_changed: bool = False
    run: Run | None = None


def ingest_and_publish(*, db: Database, hub: LiveHub, run_id: str, events: list[Any], parsed: bool = False,
                       writer: bool = False) -> IngestOutcome:
    """Store a batch of events for one run (idempotent on ``(run_id, seq)``), then send what is new
    to the run's viewers and a changed run to the runs list's viewers.

    ``events``: raw items (JSON text, dicts, event models) to validate — an invalid one raises
    :class:`~backend.services.event_validation.IngestError` and nothing is stored — or, with
    ``parsed``, pairs :func:`parse_events` already made (the stream consumer validates the next
    batch while this one is written). ``writer``: use the stream writer's connections (no
    pre-ping; the caller retries a failed batch). Raises :class:`RunNotFound` for an unknown run."""
    batch: list[Parsed] = events if parsed else parse_events(events, run_id)
    outcome = _ingest(db, run_id, batch, writer=writer)
    hub.publish_events(run_id, outcome.accepted)  # only after the commit: a viewer never sees an unstored event
    if outcome.status_changed and outcome.run is not None:
        hub.publish_status(public_dict(outcome.run))
    return outcome


@count_ingest
def _ingest(db: Database, run_id: str, parsed: list[Parsed], *, writer: bool) -> IngestOutcome:
    with run_lock(run_id), (db.writer_session() if writer else db.session()) as session:
        run = session.get(Run, run_id)
        if run is None:
            raise RunNotFound(run_id)
        new, dup, conflicts = _dedup(session, run, parsed)
        outcome = IngestOutcome(duplicates=dup, conflicts=conflicts)
        if new:
            series = bulk_write.series_ids(db, run_id, new)
            try:
                outcome.accepted = bulk_write.store_batch(session, db, run_id, new, series)
                outcome.status_changed = fold_events(run, [ev for ev, _ in new])
                session.commit()
            except (IntegrityError, PgIntegrityError):  # another process stored some meanwhile: slow, exact path
                session.rollback()
                _log.info("ingest race on run %s; retrying with ON CONFLICT", run_id)
                out = _ingest_one_by_one(db, run_id, new, dup, series)
                out.conflicts = conflicts
                return out
        outcome.last_seq = run.last_seq
        outcome.run = run
        return outcome


def _dedup(session: Any, run: Run, parsed: list[Parsed]) -> tuple[list[Parsed], int, list[int]]:
    """Number events without a seq, drop repeats within the batch and seqs already stored.
    Returns the new events in seq order, how many were duplicates, and the seqs sent twice with
    different content (the first is kept; the caller is told)."""
    next_seq = run.last_seq + 1  # events without a seq (hand-written uploads) get the next free numbers
    for ev, _ in parsed:
        if ev.seq < 0:
            ev.seq = next_seq
        next_seq = max(next_seq, ev.seq + 1)
    by_seq: dict[int, Parsed] = {}
    conflicts: set[int] = set()
    for pair in parsed:
        kept = by_seq.setdefault(pair[0].seq, pair)
        if kept is not pair and kept[0] != pair[0]:
            conflicts.add(pair[0].seq)
    dup = len(parsed) - len(by_seq)
    if by_seq and min(by_seq) <= run.last_seq:  # (seqs above last_seq cannot be stored yet)
        lo, hi = min(by_seq), max(by_seq)
        existing = set(session.scalars(
            select(EventRow.seq).where(EventRow.run_id == run.id, EventRow.seq >= lo, EventRow.seq <= hi)))
        dup += len(existing)
        for s in existing:
            by_seq.pop(s, None)
    return [by_seq[s] for s in sorted(by_seq)], dup, sorted(conflicts)


def _ingest_one_by_one(db: Database, run_id: str, new: list[Parsed], dup: int,
                       series: dict[str, int]) -> IngestOutcome:
    with db.session() as session:
        run = session.get(Run, run_id)
        assert run is not None
        stored = bulk_write.insert_events_one_by_one(session, db, run_id, new)
        accepted = bulk_write.store_batch(session, db, run_id, stored, series, events_table=False)
        changed = fold_events(run, [ev for ev, _ in stored]) if stored else False
        session.commit()
        return IngestOutcome(accepted=accepted, duplicates=dup + len(new) - len(stored), last_seq=run.last_seq,
                             status_changed=changed, run=run)
