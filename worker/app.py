"""The Celery application of a worker process (broker and result backend: Redis).

Settings come from the same environment as the backend (``REDIS_URL``, ``DATABASE_URL``,
``RLHFKIT_*``), read when Celery first asks for ``app`` — importing this module builds nothing.
The configuration is the backend's (:func:`backend.core.queue.make_celery`), so producer and
consumer agree on key prefix, queues and acknowledgement; this side adds the task module. Run it
with ``-P solo`` and one worker process per GPU (``rlhfkit worker`` pins ``CUDA_VISIBLE_DEVICES``).

Start: ``rlhfkit worker [--queues rlhfkit] [--gpus 0,1]`` or
``celery -A worker.app worker -P solo -Q rlhfkit``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from celery import Celery

from backend.core.config import Settings
from backend.core.queue import make_celery


@lru_cache(maxsize=1)
def settings() -> Settings:
    """This worker's settings, validated once (on first use, not at import)."""
    return Settings()


@lru_cache(maxsize=1)
def celery_app() -> Celery:
    return make_celery(settings(), include=["worker.tasks"])


def __getattr__(name: str) -> Any:
    """``worker.app.app``: what ``celery -A worker.app`` looks up."""
    if name == "app":
        return celery_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
