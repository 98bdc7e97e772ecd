"""Thin Celery tasks: take a run id, re-read the run, call the engine with a Redis Stream sink,
map the outcome to the run's status.

The worker claims a run with a conditional update (``queued -> running``), so a run cancelled while
queued, or redelivered after it already ran, is skipped. While the run executes a heartbeat key
with a TTL says this worker is alive; the backend marks runs whose heartbeat expired as failed
("worker lost"). The run's terminal event is flushed to its stream before the beat stops, and a
``finished`` key then says so: a run whose ending the backend has not read yet is not "lost".
Cancel is cooperative: ``should_stop`` reads the run's cancel key between steps.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from functools import lru_cache
from typing import Any

import redis
from celery import shared_task

from backend.core.config import Settings
from backend.core.db import Database
from backend.core.keys import RedisKeys
from backend.core.queue import TASK_NAME
from backend.core.registry import claim_run
from rlhfkit.runner import execute_stored_run
from worker.redis_sink import RedisStreamSink

_log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _db(url: str) -> Database:
    return Database(url)


@lru_cache(maxsize=1)
def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


# a finished run's marker outlives any backend restart; the consumer sets the final status from the stream
FINISHED_TTL_S = 24 * 3600


class Heartbeat:
    """Refreshes ``<prefix>:run:<id>:heartbeat`` (TTL = the timeout) every third of the timeout."""

    def __init__(self, r: redis.Redis, key: str, timeout_s: float, worker: str) -> None:
        self.r, self.key, self.timeout_s, self.worker = r, key, timeout_s, worker
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rlhfkit-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._beat()
        self._thread.start()
        return self

    def _beat(self) -> None:
        try:
            self.r.set(self.key, self.worker, px=max(1, int(self.timeout_s * 1000)))
        except redis.RedisError as exc:
            _log.warning("heartbeat failed: %s", exc)

    def _loop(self) -> None:
        while not self._stop.wait(self.timeout_s / 3):
            self._beat()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(redis.RedisError):
            self.r.delete(self.key)


def run_job(run_id: str, *, s: Settings, worker_name: str) -> dict[str, Any]:
    """Execute one run; returns a small summary for logs (results are not stored in Celery)."""
    db = _db(s.database_url)
    r = _redis(s.redis_url or "")
    keys = RedisKeys(s.redis_prefix)
    run = claim_run(db, run_id, worker=worker_name)
    if run is None:
        _log.info("run %s is not queued any more; skipping", run_id)
        return {"run_id": run_id, "skipped": True}
    sink = RedisStreamSink(r, run_id, prefix=s.redis_prefix, maxlen=s.stream_maxlen)
    ckey = keys.cancel(run_id)

    def should_stop() -> bool:
        try:
            return bool(r.exists(ckey))
        except redis.RedisError:
            return False

    with Heartbeat(r, keys.heartbeat(run_id), s.heartbeat_timeout_s, worker_name):
        try:
            status = execute_stored_run(run_id, run.config, sinks=[sink], should_stop=should_stop,
                                        out_dir=str(s.artifacts_dir.resolve()))
        finally:
            sink.close()  # the terminal event reaches the stream while this worker still beats
        if not sink.pending:  # ... and only then may the reaper leave the run to the consumer
            with contextlib.suppress(redis.RedisError):
                r.set(keys.finished(run_id), status, ex=FINISHED_TTL_S)
    return {"run_id": run_id, "status": status}


@shared_task(name=TASK_NAME, bind=True, acks_late=True)
def execute_run(self: Any, run_id: str) -> dict[str, Any]:
    from worker.app import settings

    worker_name = getattr(self.request, "hostname", None) or socket.gethostname()
    return run_job(run_id, s=settings(), worker_name=worker_name)
