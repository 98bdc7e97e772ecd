"""The stream consumer's writer thread: stores validated batches, then acknowledges them.

:class:`~backend.services.consumer.StreamConsumer`'s reader thread reads and validates the next
batch while this thread stores the previous one (mostly waiting on the database, GIL released).
A small queue between them keeps batches in read order. Every batch goes through
:func:`~backend.services.ingest.ingest_and_publish` (store, then fan out) and is acknowledged only
after that commit, so a backend killed in between leaves the entries pending for re-delivery.

A batch the database refuses (a value it cannot store) is written again one event per
transaction; the refused event is stored as an ``error`` log event in its place. A batch that
fails for any other reason (database or Redis down) is retried, then left pending.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import psycopg
import sqlalchemy.exc

from backend.core.db import Database
from backend.services.event_validation import Parsed, rejected_event
from backend.services.ingest import ingest_and_publish
from backend.services.live import LiveHub
from backend.services.runs import RunNotFound

_log = logging.getLogger(__name__)
PIPELINE_DEPTH = 2  # validated batches waiting for the writer
WRITE_ATTEMPTS = 5  # then the batch is left pending: XAUTOCLAIM re-delivers it after the claim idle time

# (stream key, entry ids, validated events); None tells the writer to finish
Batch = tuple[Any, list[Any], list[Parsed]]

# errors that say "this value cannot be stored" (retrying cannot help), as opposed to "the
# database is unreachable"; SQLAlchemy wraps the driver's errors, our COPY/pipeline paths do not
_REFUSED_VALUES = (sqlalchemy.exc.DataError, sqlalchemy.exc.IntegrityError, psycopg.DataError,
                   psycopg.IntegrityError, ValueError, OverflowError)


class StreamWriter:
    """``ack(key, ids)`` acknowledges entries; ``run_of(key)`` names a stream's run; ``on_stored(key)``
    and ``on_unknown_run(key)`` tell the reader what happened to a stream's batch."""

    def __init__(self, *, db: Database, hub: LiveHub, stop: threading.Event, run_of: Callable[[Any], str],
                 ack: Callable[[Any, list[Any]], None], on_stored: Callable[[Any], None],
                 on_unknown_run: Callable[[Any], None]) -> None:
        self.db = db
        self.hub = hub
        self._stop = stop
        self._run_of = run_of
        self._ack = ack
        self._on_stored = on_stored
        self._on_unknown_run = on_unknown_run
        self._batches: queue.Queue[Batch | None] = queue.Queue(PIPELINE_DEPTH)
        self.thread = threading.Thread(target=self._loop, name="rlhfkit-stream-writer", daemon=True)
        self.ingested = 0
        self.rejected = 0  # events the database refused, stored as error log events

    def put(self, item: Batch | None) -> None:
        """Queue a batch in read order (blocks while the writer is behind); None: finish."""
        while True:
            try:
                self._batches.put(item, timeout=1.0)
                return
            except queue.Full:
                if not self.thread.is_alive():
                    return

    def _loop(self) -> None:
        finish = False
        while not finish:
            items = [self._batches.get()]
            while True:  # whatever queued up while the last batch was written goes in together
                try:
                    items.append(self._batches.get_nowait())
                except queue.Empty:
                    break
            finish = None in items
            for key, ids, parsed in _merge_consecutive([i for i in items if i is not None]):
                self._write(key, ids, parsed)

    def _write(self, key: Any, ids: list[Any], parsed: list[Parsed]) -> None:
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                self._store(key, ids, parsed)
                return
            except _REFUSED_VALUES as exc:  # the database refuses some value: find it, store the rest
                _log.warning("stream writer: %s refused a batch (%s); storing its events one by one", key, exc)
                try:
                    self._store_each(key, ids, parsed)
                    return
                except Exception:
                    _log.exception("stream writer error on %s (attempt %d of %d)", key, attempt, WRITE_ATTEMPTS)
            except Exception:  # DB or Redis down: retry; a batch that keeps failing stays pending
                _log.exception("stream writer error on %s (attempt %d of %d)", key, attempt, WRITE_ATTEMPTS)
                if self._stop.wait(1.0):
                    return

    def _store_each(self, key: Any, ids: list[Any], parsed: list[Parsed]) -> None:
        """One event per transaction; one the database refuses becomes an error log event."""
        for ev, text in parsed:
            try:
                self._store(key, [], [(ev, text)])
            except _REFUSED_VALUES as exc:
                self.rejected += 1
                error = rejected_event(ev.run_id, ev.model_dump(mode="json"), f"refused by the database: {exc}"[:2000])
                try:
                    self._store(key, [], [(error, None)])
                except _REFUSED_VALUES:
                    _log.exception("event seq %s on %s could not be stored even as an error; dropped", ev.seq, key)
        if ids:
            self._ack(key, ids)

    def _store(self, key: Any, ids: list[Any], parsed: list[Parsed]) -> None:
        run_id = self._run_of(key)
        try:
            outcome = ingest_and_publish(db=self.db, hub=self.hub, run_id=run_id, events=parsed, parsed=True,
                                         writer=True)
        except RunNotFound:
            _log.warning("events for unknown run %s dropped", run_id)
            self._ack(key, ids)
            self._on_unknown_run(key)
            return
        if ids:
            self._ack(key, ids)  # only after the commit: a crash before this re-delivers
        self._on_stored(key)
        self.ingested += len(outcome.accepted)


def _merge_consecutive(items: list[Batch]) -> list[Batch]:
    """Join neighbouring batches of the same stream (their order is kept): a writer that fell behind
    catches up with one transaction instead of one per batch."""
    out: list[Batch] = []
    for key, ids, parsed in items:
        if out and out[-1][0] == key:
            out[-1][1].extend(ids)
            out[-1][2].extend(parsed)
        else:
            out.append((key, list(ids), list(parsed)))
    return out
