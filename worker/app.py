"""The Celery application (broker and result backend: Redis).

Settings come from the same environment as the backend (``REDIS_URL``, ``DATABASE_URL``,
``RLHFKIT_*``). Reliability choices: ``acks_late`` (a task is acknowledged only after it ran, so a
lost worker's message is redelivered), prefetch 1 (a busy worker never holds queued runs another
worker could start), ``-P solo`` with one worker process per GPU (``rlhfkit worker`` pins
``CUDA_VISIBLE_DEVICES``), named queues so runs can be routed to a GPU type.

Start: ``rlhfkit worker [--queues rlhfkit] [--gpus 0,1]`` or
``celery -A worker.app worker -P solo -Q rlhfkit``.
"""

from __future__ import annotations

from celery import Celery

from backend.core.config import Settings

TASK_NAME = "rlhfkit.run"
VISIBILITY_TIMEOUT_S = 6 * 3600  # an unacked run is redelivered after this (it then finds its run finished)


def make_celery(settings: Settings) -> Celery:
    url = settings.redis_url or "redis://127.0.0.1:6379/0"
    app = Celery("rlhfkit", broker=url, backend=url, include=["worker.tasks"])
    transport = {"global_keyprefix": f"{settings.redis_prefix}:celery:", "visibility_timeout": VISIBILITY_TIMEOUT_S}
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=settings.queue,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options=transport,
        result_backend_transport_options={"global_keyprefix": f"{settings.redis_prefix}:celery:"},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app


settings = Settings()
app = make_celery(settings)
