"""Heartbeat reaper (Celery mode): a run whose worker stopped beating is marked failed.

A worker refreshes ``<prefix>:run:<id>:heartbeat`` with a TTL of ``heartbeat_timeout_s``
(default 30 s) every third of it. When the key has expired — the worker was killed, lost its
machine or its network — the run becomes ``failed`` with the error "worker lost", within
``heartbeat_timeout_s + reaper_interval_s`` of the last beat. Events already received are kept.
A worker that finished writes ``<prefix>:run:<id>:finished`` after its terminal event reached the
stream and before its beat stops, so a run whose ending the consumer has not read yet (a busy or
restarting backend) is never mistaken for a lost one.

A missing key only counts when Redis has been up for a whole timeout: while Redis is down no
worker can beat, and a Redis that comes back (from its AOF, or empty) has no fresh key until each
worker's next beat. So the reaper measures Redis's uptime (its own ``uptime_in_seconds`` and how
long this process has reached it without an error) and leaves every run alone until that exceeds
the timeout. Should a run be declared lost anyway (a network partition between the worker and
Redis), the verdict is not final: a heartbeat seen again puts the run back to ``running``, and
its terminal event, when it arrives, sets its final status (``backend.services.ingest``).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from backend.core.config import Settings
from backend.core.db import Database
from backend.core.registry import WORKER_LOST, revive_lost_run, set_status
from backend.services.live import LiveHub
from backend.services.runs import native_runs, public_dict, runs_presumed_lost

_log = logging.getLogger(__name__)
REVIVE_WINDOW = timedelta(days=1)  # runs failed as "worker lost" this recently are watched for a late beat


class HeartbeatReaper:
    def __init__(self, *, settings: Settings, db: Database, hub: LiveHub, redis_client: Any) -> None:
        self.settings = settings
        self.db = db
        self.hub = hub
        self.redis = redis_client
        self._outage = False  # the last check could not reach Redis (or the DB)
        self._outage_ended = float("-inf")  # monotonic time of the first good check after an outage
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
            except Exception as exc:
                self._outage = True  # heartbeat gaps measured so far do not count
                _log.warning("reaper check failed: %s", exc)

    def redis_uptime(self) -> float:
        """Seconds Redis has been up without interruption, as far as this process can tell."""
        server_uptime = float(self.redis.info("server")["uptime_in_seconds"])
        now = time.monotonic()
        if self._outage:
            self._outage, self._outage_ended = False, now
        return min(server_uptime, now - self._outage_ended)

    def check(self) -> list[str]:
        """Mark lost runs failed and revive "lost" runs that beat again; returns the ids marked lost."""
        timeout = self.settings.heartbeat_timeout_s
        uptime = self.redis_uptime()
        now = datetime.now(timezone.utc)
        running = native_runs(db=self.db, status="running")
        for run_id in runs_presumed_lost(db=self.db, since=now - REVIVE_WINDOW):
            if self.redis.exists(self.settings.keys.heartbeat(run_id)):
                revived = revive_lost_run(self.db, run_id)
                if revived is not None:
                    _log.warning("run %s: its worker beats again; running", run_id)
                    self.hub.publish_status(public_dict(revived))
        if uptime < timeout:
            return []  # a worker alive through the outage has not had a whole timeout to beat yet
        lost = []
        for run in running:
            keys = self.settings.keys
            if self.redis.exists(keys.heartbeat(run.id), keys.finished(run.id)):
                continue  # alive, or done with its terminal event waiting in the stream for the consumer
            started = run.started_at or run.created_at
            if (now - started).total_seconds() < timeout:
                continue  # just claimed; its first beat may not be visible yet
            changed = set_status(self.db, run.id, "failed", only_from=("running",),
                                 error=f"{WORKER_LOST}: no heartbeat from {run.worker or 'the worker'} "
                                       f"for {timeout:g} s")
            if changed is not None:
                lost.append(run.id)
                _log.warning("run %s: worker lost", run.id)
                self.hub.publish_status(public_dict(changed))
        return lost
