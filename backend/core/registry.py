"""Run-state changes the backend and the worker share: claim a queued run, set a run's status.

Status changes are conditional updates (``only_from`` guards races: a run cancelled while queued
cannot be claimed; a run that already finished is not marked lost). Within one process every
change to a run — these and event ingest — happens under that run's lock (:func:`run_lock`), so
the backend's own writers never interleave. Locks live only while some thread holds or waits on
them, so finished runs leave nothing behind.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import update

from backend.core.db import Database
from backend.models import Run
from rlhfkit.events import TERMINAL_STATUSES

# the reaper's verdict on a run whose heartbeat stopped
WORKER_LOST = "worker lost"


class _Lock:
    __slots__ = ("lock", "__weakref__")

    def __init__(self) -> None:
        self.lock = threading.Lock()


_locks: weakref.WeakValueDictionary[str, _Lock] = weakref.WeakValueDictionary()
_locks_guard = threading.Lock()


@contextmanager
def run_lock(run_id: str) -> Iterator[None]:
    """Serialise this process's changes to one run."""
    with _locks_guard:
        holder = _locks.get(run_id)
        if holder is None:
            holder = _locks[run_id] = _Lock()
    with holder.lock:  # `holder` keeps the entry alive until every user is done
        yield


def lock_count() -> int:
    """How many run locks exist now (for tests: they must not pile up)."""
    return len(_locks)


def set_status(db: Database, run_id: str, status: str, *, error: str | None = None,
               only_from: tuple[str, ...] | None = None, **fields: Any) -> Run | None:
    """Conditional status change (``only_from`` guards races); returns the run if it changed."""
    with run_lock(run_id), db.session() as session:
        values: dict[str, Any] = {"status": status, **fields}
        if error is not None:
            values["error"] = error
        if status in TERMINAL_STATUSES:
            values.setdefault("finished_at", datetime.now(timezone.utc))
        if status == "running":
            values.setdefault("started_at", datetime.now(timezone.utc))
        stmt = update(Run).where(Run.id == run_id)
        if only_from is not None:
            stmt = stmt.where(Run.status.in_(only_from))
        res = session.execute(stmt.values(**values))
        session.commit()
        if not getattr(res, "rowcount", 0):
            return None
        return session.get(Run, run_id)


def presumed_lost(run: Run) -> bool:
    """Failed by the reaper for a silent heartbeat: provisional, the run's own terminal event (or a
    heartbeat seen again, see backend.services.reaper) overrides it."""
    return run.status == "failed" and (run.error or "").startswith(WORKER_LOST)


def revive_lost_run(db: Database, run_id: str) -> Run | None:
    """A run failed as "worker lost" whose worker turned out alive goes back to ``running``."""
    with run_lock(run_id), db.session() as session:
        res = session.execute(update(Run).where(Run.id == run_id, Run.status == "failed",
                                                Run.error.startswith(WORKER_LOST))
                              .values(status="running", error=None, finished_at=None))
        session.commit()
        if not getattr(res, "rowcount", 0):
            return None
        return session.get(Run, run_id)


def claim_run(db: Database, run_id: str, *, worker: str) -> Run | None:
    """``queued -> running`` for ``worker``; None when the run is not queued any more (cancelled,
    deleted, or a redelivered task whose run already ran)."""
    return set_status(db, run_id, "running", only_from=("queued",), worker=worker)
