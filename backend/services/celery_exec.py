"""Celery executor: native runs are queued as Celery tasks; cancel goes through Redis.

The run row is committed before ``send_task`` (the worker re-reads it). Cancel sets the run's
cancel key, which the worker's ``should_stop`` reads between steps; a run cancelled while queued is
also revoked, and in any case the worker skips it because it can no longer claim it.
"""

from __future__ import annotations

import logging
from typing import Any

from backend.core.config import Settings, cancel_key
from backend.core.db import Database
from backend.models import Run
from backend.services.live import LiveHub

_log = logging.getLogger(__name__)
CANCEL_KEY_TTL_S = 7 * 24 * 3600


class CeleryExecutor:
    mode = "celery"

    def __init__(self, *, settings: Settings, db: Database, hub: LiveHub, redis_client: Any) -> None:
        from worker.app import make_celery

        self.settings = settings
        self.db = db
        self.hub = hub
        self.redis = redis_client
        self.celery = make_celery(settings)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def submit(self, run: Run) -> None:
        from worker.app import TASK_NAME

        self.celery.send_task(TASK_NAME, args=[run.id], queue=run.queue or self.settings.queue,
                              task_id=run.task_id or run.id)

    def cancel(self, run: Run) -> None:
        self.redis.set(cancel_key(self.settings, run.id), b"1", ex=CANCEL_KEY_TTL_S)
        if run.status == "cancelled" and run.task_id:
            try:
                self.celery.control.revoke(run.task_id)
            except Exception as exc:  # best effort: the worker would skip it anyway
                _log.warning("revoke of %s failed: %s", run.task_id, exc)
