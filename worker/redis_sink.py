"""Redis Stream sink: a run's events go to ``<prefix>:run:<id>:events`` without slowing the loop.

``emit`` costs the training loop one ``deque.append`` (plus waking the sender when the buffer was
empty; about a microsecond): serialisation
and network I/O happen on a background thread that pipelines ``XADD``s (``MAXLEN ~`` keeps the
stream bounded; trimming is approximate so it stays O(1)). If Redis is unreachable the thread
keeps the events and retries with back-off; the loop never blocks. ``close()`` flushes what is
left (bounded by ``close_timeout``).

The stream key is also added to ``<prefix>:streams`` so a backend that starts later (or restarts)
knows which streams to consume, and announced on the ``<prefix>:streams:new`` stream, which a
running backend blocks on: a new run's first events are read at once, not at its next poll of the set.
The ``SADD`` goes with every batch (one O(1) command in the same pipeline), so the stream is
registered again after anything that removed it — a Redis restarted empty, a backend that retired
the stream while Redis was down; after a failed send the stream is announced again too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from backend.core.keys import RedisKeys

_log = logging.getLogger(__name__)


class RedisStreamSink:
    """Buffers events in memory; a daemon thread XADDs them in pipelined batches."""

    def __init__(self, redis: Any, run_id: str, *, prefix: str = "rlhfkit", maxlen: int = 200_000,
                 batch: int = 1000, interval: float = 0.02, close_timeout: float = 60.0) -> None:
        self.redis = redis
        self.run_id = run_id
        self.keys = RedisKeys(prefix)
        self.key = self.keys.stream(run_id)
        self.prefix = prefix
        self.maxlen = maxlen
        self.batch = batch
        self.interval = interval
        self.close_timeout = close_timeout
        self.sent = 0
        self.errors = 0
        self._buf: deque[Any] = deque()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._registered = False
        self._thread = threading.Thread(target=self._loop, name=f"rlhfkit-redis-sink-{run_id}", daemon=True)
        self._thread.start()

    # ---- training-loop side
    def emit(self, event: Any) -> None:
        wake = not self._buf  # first event after a flush: wake the sender now (latency), not in `interval`
        self._buf.append(event)
        if wake:
            self._wake.set()

    # ---- background side
    def _loop(self) -> None:
        backoff = 0.05
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self._flush()
                backoff = 0.05
            except Exception as exc:  # Redis down or a network blip: keep the events, retry
                self.errors += 1
                self._registered = False  # announce the stream again once Redis answers
                if self.errors in (1, 10, 100) or self.errors % 1000 == 0:
                    _log.warning("redis sink for run %s: %s (retrying, %d buffered)", self.run_id, exc, len(self._buf))
                if self._closing.is_set() and self._deadline_passed():
                    return
                time.sleep(backoff)
                backoff = min(2.0, backoff * 2)
                continue
            if self._closing.is_set() and not self._buf:
                return

    def _flush(self) -> None:
        if not self._registered:
            pipe = self.redis.pipeline(transaction=False)
            pipe.sadd(self.keys.streams, self.key)
            pipe.xadd(self.keys.announce, {"k": self.key}, maxlen=1000, approximate=True)
            pipe.execute()
            self._registered = True
        while self._buf:
            n = min(len(self._buf), self.batch)
            items = [self._buf[i] for i in range(n)]
            pipe = self.redis.pipeline(transaction=False)
            pipe.sadd(self.keys.streams, self.key)
            for ev in items:
                data = ev if isinstance(ev, (str, bytes)) else ev.model_dump_json()
                pipe.xadd(self.key, {"e": data}, maxlen=self.maxlen, approximate=True)
            pipe.execute()
            for _ in range(n):
                self._buf.popleft()
            self.sent += n

    def _deadline_passed(self) -> bool:
        return time.monotonic() > self._close_deadline

    def flush(self, timeout: float = 30.0) -> bool:
        """Block until the buffer is empty (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        while self._buf and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.005)
        return not self._buf

    @property
    def pending(self) -> int:
        """Events emitted but not yet in the stream (after :meth:`close`: those that never got there)."""
        return len(self._buf)

    def close(self) -> None:
        """Send what is buffered, retrying up to ``close_timeout``."""
        self._close_deadline = time.monotonic() + self.close_timeout
        self._closing.set()
        self._wake.set()
        self._thread.join(self.close_timeout + 1)
        if self._buf:
            _log.error("redis sink for run %s: %d events could not be sent", self.run_id, len(self._buf))

    _close_deadline: float = float("inf")
