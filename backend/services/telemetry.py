"""The service's own numbers for Prometheus (``GET /metrics``, text exposition format).

Two kinds of numbers:

* **counted as they happen**, process-wide: events ingested (``rlhfkit_ingest_events_total``; its
  ``rate()`` is events/s) and the latency of each ingest batch (``rlhfkit_ingest_batch_seconds``),
  recorded by :func:`count_ingest` around :func:`backend.services.ingest.ingest_parsed`, the one
  function every ingest path (REST, stream consumer, embedded executor, MLflow API) goes through;
* **read at scrape time** by :class:`ServiceCollector`, so they are never stale: runs per status,
  Celery queue depth per queue, consumer lag per run stream (entries not yet acknowledged by the
  backend's consumer group: not yet delivered plus delivered but unacknowledged), WebSocket
  viewers, and for each *running* run its last step, reward mean, KL and tokens/s.

A scrape costs two small SQL queries and, in Celery mode, one Redis round trip per queue and per
live stream; running-run gauges are capped at :data:`MAX_RUN_GAUGES` runs.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, ParamSpec, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from backend.core.config import Settings
from backend.core.db import Database
from backend.core.keys import CONSUMER_GROUP
from backend.models import Run
from rlhfkit.events import ACTIVE_STATUSES, RUN_STATUSES
from rlhfkit.metrics import M

_log = logging.getLogger(__name__)
MAX_RUN_GAUGES = 500
# kombu's Redis transport keeps a queue's priorities 3, 6 and 9 in lists named queue + sep + priority
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")

INGEST_EVENTS = Counter("rlhfkit_ingest_events", "Events stored by ingest (new ones; duplicates not counted)",
                        registry=None)
INGEST_BATCHES = Histogram("rlhfkit_ingest_batch_seconds", "Wall time of one ingest batch (validate excluded, "
                           "store + commit included)", registry=None,
                           buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))

class _HasAccepted(Protocol):
    accepted: list[Any]


P = ParamSpec("P")
R = TypeVar("R", bound=_HasAccepted)


def count_ingest(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorate the ingest function: count the events it stored, time the batch."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        t0 = time.perf_counter()
        outcome = fn(*args, **kwargs)
        INGEST_BATCHES.observe(time.perf_counter() - t0)
        INGEST_EVENTS.inc(len(outcome.accepted))
        return outcome

    return wrapper


class Viewers(Protocol):
    def viewer_counts(self) -> dict[str, int]: ...


class ServiceCollector(Collector):
    """Gauges read from the registry, Redis and the live hub when Prometheus scrapes."""

    def __init__(self, *, settings: Settings, db: Database, hub: Viewers, redis: Any = None) -> None:
        self.settings = settings
        self.db = db
        self.hub = hub
        self.redis = redis

    def collect(self) -> Iterator[Metric]:
        yield from self._runs()
        viewers = GaugeMetricFamily("rlhfkit_websocket_viewers", "Open WebSocket connections by kind "
                                    "(run: one run's live events; status: the runs list)", labels=["kind"])
        for kind, n in self.hub.viewer_counts().items():
            viewers.add_metric([kind], n)
        yield viewers
        if self.redis is not None:
            yield from self._redis()

    def _runs(self) -> Iterator[Metric]:
        by_status = GaugeMetricFamily("rlhfkit_runs", "Runs in the registry by status", labels=["status"])
        gauges = {
            "step": GaugeMetricFamily("rlhfkit_run_step", "Last step a running run reported", labels=["run_id"]),
            M.REWARD_MEAN: GaugeMetricFamily("rlhfkit_run_reward_mean", f"Latest {M.REWARD_MEAN} of a running run",
                                             labels=["run_id"]),
            M.KL_K1: GaugeMetricFamily("rlhfkit_run_kl", f"Latest {M.KL_K1} (nats per sequence) of a running run",
                                       labels=["run_id"]),
            M.TOKENS_PER_SEC: GaugeMetricFamily("rlhfkit_run_tokens_per_second",
                                                f"Latest {M.TOKENS_PER_SEC} of a running run", labels=["run_id"]),
        }
        with self.db.session() as s:
            counts = dict(s.execute(select(Run.status, func.count()).group_by(Run.status)).tuples().all())
            running = s.execute(select(Run.id, Run.last_step, Run.latest).where(Run.status == "running")
                                .order_by(Run.created_at.desc()).limit(MAX_RUN_GAUGES)).tuples().all()
        for status in RUN_STATUSES:
            by_status.add_metric([status], counts.get(status, 0))
        yield by_status
        for run_id, last_step, latest in running:
            if last_step is not None:
                gauges["step"].add_metric([run_id], last_step)
            for key, family in gauges.items():
                value = (latest or {}).get(key)
                if key != "step" and isinstance(value, (int, float)):
                    family.add_metric([run_id], float(value))
        yield from gauges.values()

    def _redis(self) -> Iterator[Metric]:
        import redis

        depth = GaugeMetricFamily("rlhfkit_queue_depth", "Runs waiting in a Celery queue (messages in its lists)",
                                  labels=["queue"])
        lag = GaugeMetricFamily("rlhfkit_stream_lag_entries", "Entries of a run's event stream the backend's "
                                "consumer group has not acknowledged yet", labels=["stream", "run_id"])
        keys = self.settings.keys
        try:
            with self.db.session() as s:
                queues = {q for q in s.scalars(select(Run.queue).where(Run.status.in_(ACTIVE_STATUSES)).distinct())
                          if q}
            queues.add(self.settings.queue)
            pipe = self.redis.pipeline(transaction=False)
            ordered = sorted(queues)
            for q in ordered:
                for suffix in _PRIORITY_SUFFIXES:
                    pipe.llen(f"{keys.celery}{q}{suffix}")
            lengths = pipe.execute()
            for i, q in enumerate(ordered):
                depth.add_metric([q], sum(lengths[i * 4:(i + 1) * 4]))
            for raw in sorted(self.redis.smembers(keys.streams)):
                stream = raw.decode() if isinstance(raw, bytes) else str(raw)
                n = self._unacknowledged(stream)
                if n is not None:
                    try:
                        run_id = keys.run_id_of_stream(stream)
                    except ValueError:
                        run_id = ""
                    lag.add_metric([stream, run_id], n)
        except redis.RedisError as exc:
            _log.warning("metrics: Redis unavailable (%s); queue depth and lag left out", exc)
            return
        yield depth
        yield lag

    def _unacknowledged(self, stream: str) -> int | None:
        import redis

        try:
            groups = self.redis.xinfo_groups(stream)
        except redis.ResponseError:  # the stream is gone (retired and expired)
            return None
        for g in groups:
            name = g.get("name")
            if (name.decode() if isinstance(name, bytes) else name) == CONSUMER_GROUP:
                undelivered = g.get("lag")
                if undelivered is None:  # Redis cannot tell (entries deleted mid-stream): count from the ids
                    undelivered = 0
                return int(undelivered) + int(g.get("pending") or 0)
        return int(self.redis.xlen(stream))  # no consumer group yet: nothing was read


def exposition(collector: ServiceCollector) -> bytes:
    """The text a scrape returns: the counters of this process and the collector's gauges."""
    registry = CollectorRegistry(auto_describe=False)
    for c in (INGEST_EVENTS, INGEST_BATCHES, collector):
        registry.register(c)
    return generate_latest(registry)
