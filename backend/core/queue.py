"""The run queue: the Celery app configuration both sides share, the task's name, and the producer.

The backend enqueues a run by task *name* (``send_task``), so it never imports the worker; the
worker (``worker.app``) builds its app with the same :func:`make_celery` and registers the task
under :data:`TASK_NAME`. Reliability choices: ``acks_late`` (a task is acknowledged only after it
ran, so a lost worker's message is redelivered), prefetch 1 (a busy worker never holds queued runs
another worker could start), named queues so runs can be routed to a GPU type.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from backend.core.config import Settings
from backend.core.keys import RedisKeys

if TYPE_CHECKING:
    from celery import Celery

_log = logging.getLogger(__name__)
TASK_NAME = "rlhfkit.run"
VISIBILITY_TIMEOUT_S = 6 * 3600  # an unacked run is redelivered after this (it then finds its run finished)


def make_celery(settings: Settings, *, include: Sequence[str] = ()) -> Celery:
    """A Celery app on ``settings.redis_url`` with our key prefix; ``include``: task modules (worker side)."""
    from celery import Celery

    url = settings.redis_url or "redis://127.0.0.1:6379/0"
    app = Celery("rlhfkit", broker=url, backend=url, include=list(include))
    celery_prefix = RedisKeys(settings.redis_prefix).celery
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=settings.queue,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options={"global_keyprefix": celery_prefix, "visibility_timeout": VISIBILITY_TIMEOUT_S},
        result_backend_transport_options={"global_keyprefix": celery_prefix},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app


class RunQueue:
    """Producer side: puts run ids on the queue by task name and revokes them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.celery = make_celery(settings)

    def enqueue(self, run_id: str, *, queue: str | None = None, task_id: str | None = None) -> None:
        self.celery.send_task(TASK_NAME, args=[run_id], queue=queue or self.settings.queue, task_id=task_id or run_id)

    def revoke(self, task_id: str) -> None:
        """Best effort: a worker skips a run it can no longer claim anyway."""
        try:
            self.celery.control.revoke(task_id)
        except Exception as exc:
            _log.warning("revoke of %s failed: %s", task_id, exc)
