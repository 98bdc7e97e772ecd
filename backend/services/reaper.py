"""Heartbeat reaper (Celery mode): a run whose worker stopped beating is marked failed.

A worker refreshes ``<prefix>:run:<id>:heartbeat`` with a TTL of ``heartbeat_timeout_s``
(default 30 s) every third of it. When the key has expired — the worker was killed, lost its
machine or its network — the run becomes ``failed`` with the error "worker lost", within
``heartbeat_timeout_s + reaper_interval_s`` of the last beat. Events already received are kept.
A worker that finished writes ``<prefix>:run:<id>:finished`` after its terminal event reached the
stream and before its beat stops, so a run whose ending the consumer has not read yet (a busy or
restarting backend) is never mistaken for a lost one.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone
from typing import Any

from backend.core.config import Settings
from backend.core.db import Database
from backend.core.registry import set_status
from backend.services.live import LiveHub
from backend.services.runs import native_runs, public_dict

_log = logging.getLogger(__name__)


class HeartbeatReaper:
    def __init__(self, *, settings: Settings, db: Database, hub: LiveHub, redis_client: Any) -> None:
        self.settings = settings
        self.db = db
        self.hub = hub
        self.redis = redis_client
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rlhfkit-reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.settings.reaper_interval_s):
            try:
                self.check()
            except Exception:
                _log.exception("reaper check failed")

    def check(self) -> list[str]:
        """Mark lost runs failed; returns their ids."""
        timeout = self.settings.heartbeat_timeout_s
        now = datetime.now(timezone.utc)
        running = native_runs(db=self.db, status="running")
        lost = []
        for run in running:
            keys = self.settings.keys
            if self.redis.exists(keys.heartbeat(run.id), keys.finished(run.id)):
                continue  # alive, or done with its terminal event waiting in the stream for the consumer
            started = run.started_at or run.created_at
            if (now - started).total_seconds() < timeout:
                continue  # just claimed; its first beat may not be visible yet
            changed = set_status(self.db, run.id, "failed", only_from=("running",),
                                 error=f"worker lost: no heartbeat from {run.worker or 'the worker'} "
                                       f"for {timeout:g} s")
            if changed is not None:
                lost.append(run.id)
                _log.warning("run %s: worker lost", run.id)
                self.hub.publish_status(public_dict(changed))
        return lost
