"""Every Redis key the backend and the worker share, built and parsed in one place.

The prefix (``RLHFKIT_REDIS_PREFIX``, default ``rlhfkit``) lets several deployments, or several
test sessions, share one Redis. Per run (Celery mode):

- ``<prefix>:run:<id>:events``    the run's event stream (worker XADDs, backend consumes)
- ``<prefix>:run:<id>:heartbeat`` refreshed by the worker while it executes the run (TTL)
- ``<prefix>:run:<id>:finished``  set once the run's terminal event is in its stream
- ``<prefix>:run:<id>:cancel``    set by the backend to ask the worker to stop between steps

Shared: ``<prefix>:streams`` (the set of event streams to consume), ``<prefix>:streams:new`` (a
stream announcing each new event stream at once) and ``<prefix>:celery:`` (Celery's own keys).
The backend reads every event stream as the consumer group :data:`CONSUMER_GROUP`.
"""

from __future__ import annotations

from dataclasses import dataclass

_RUN = "run"
_EVENTS = "events"
CONSUMER_GROUP = "rlhfkit-backend"  # the backend's Redis consumer group on every event stream


@dataclass(frozen=True)
class RedisKeys:
    """The keys of one deployment (one prefix)."""

    prefix: str = "rlhfkit"

    def key(self, *parts: object) -> str:
        """``<prefix>:part:part``: the prefix is never forgotten."""
        return ":".join([self.prefix, *(str(p) for p in parts)])

    # ---- per run
    def stream(self, run_id: str) -> str:
        return self.key(_RUN, run_id, _EVENTS)

    def heartbeat(self, run_id: str) -> str:
        return self.key(_RUN, run_id, "heartbeat")

    def finished(self, run_id: str) -> str:
        return self.key(_RUN, run_id, "finished")

    def cancel(self, run_id: str) -> str:
        return self.key(_RUN, run_id, "cancel")

    # ---- shared
    @property
    def streams(self) -> str:
        return self.key("streams")

    @property
    def announce(self) -> str:
        return self.key("streams", "new")

    @property
    def celery(self) -> str:
        """Celery's ``global_keyprefix`` (broker and result backend)."""
        return self.key("celery") + ":"

    # ---- parsing
    def run_id_of_stream(self, key: bytes | str) -> str:
        """The run id in an event stream's key (bytes as redis-py returns them, or str)."""
        k = key.decode() if isinstance(key, bytes) else key
        head, tail = f"{self.prefix}:{_RUN}:", f":{_EVENTS}"
        if not (k.startswith(head) and k.endswith(tail)) or len(k) <= len(head) + len(tail):
            raise ValueError(f"not an event stream key of prefix {self.prefix!r}: {k!r}")
        return k[len(head):-len(tail)]
