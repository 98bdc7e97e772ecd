"""Celery executor: native runs are queued as Celery tasks; cancel goes through Redis.

The run row is committed before it is enqueued by task name (the worker re-reads it; the backend
never imports the worker). Cancel sets the run's
cancel key, which the worker's ``should_stop`` reads between steps; a run cancelled while queued is
also revoked, and in any case the worker skips it because it can no longer claim it.
"""

from __future__ import annotations

import logging
from typing import Any

from backend.core.config import Settings
from backend.core.db import Database
from backend.core.queue import RunQueue
from backend.models import Run
from backend.services.live import LiveHub

_log = logging.getLogger(__name__)
CANCEL_KEY_TTL_S = 7 * 24 * 3600


class CeleryExecutor:
    mode = "celery"

    def __init__(self, *, settings: Settings, db: Database, hub: LiveHub, redis_client: Any) -> None:
        self.settings = settings
        self.db = db
        self.hub = hub
        self.redis = redis_client
        self.queue = RunQueue(settings)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def submit(self, run: Run) -> None:
        self.queue.enqueue(run.id, queue=run.queue, task_id=run.task_id)

    def cancel(self, run: Run) -> None:
        self.redis.set(self.settings.keys.cancel(run.id), b"1", ex=CANCEL_KEY_TTL_S)
        if run.status == "cancelled" and run.task_id:
            self.queue.revoke(run.task_id)
