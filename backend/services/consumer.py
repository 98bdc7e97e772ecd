"""Redis Stream consumer: every worker event reaches the DB, then the WebSocket viewers.

Workers XADD to ``<prefix>:run:<id>:events``, register the key in ``<prefix>:streams`` and announce
it on ``<prefix>:streams:new`` (read in the same blocking call, so a new run is picked up at once). The
consumer reads all registered streams through one consumer group (``XREADGROUP``), ingests each batch
(idempotent on ``(run_id, seq)``), and only then ``XACK``s it — so a backend killed between the
read and the commit leaves the entries pending, and on restart the same consumer name reads its
pending entries again (``XREADGROUP ... 0``), and ``XAUTOCLAIM`` takes over entries a vanished
consumer left behind. A stream is retired (removed from the set, expired) once its run is finished,
every entry is acknowledged and its last entry is the run's terminal event — or, for a worker that
died without one, once nothing arrived for ``RETIRE_IDLE_S``. A stream that receives entries is
consumed until its terminal event: the worker adds its stream to the set again with every batch,
so even a stream retired too early (or lost in a Redis restarted empty) is picked up again.

One bad event never holds back the others: an entry that does not validate, or that the
database refuses, is rejected on its own — logged, counted (``rejected``) and stored in its place
as an ``error`` log event that says why, so the run's sequence has no hole and its viewers see it.

Redis restarted empty loses the consumer groups: a ``NOGROUP`` answer makes the consumer forget
what it knew and create the groups again. ``health()`` says whether it is consuming (``/readyz``).

Two threads form a pipeline: this module's reader reads and validates the next batch (Redis,
JSON: Python work) while the writer (:mod:`backend.services.stream_writer`) stores the previous one
through ``ingest_and_publish`` and acknowledges it after the commit.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import redis

from backend.core.config import Settings
from backend.core.db import Database
from backend.core.keys import CONSUMER_GROUP
from backend.models import Run
from backend.services.event_validation import parse_each
from backend.services.live import LiveHub
from backend.services.stream_writer import StreamWriter
from rlhfkit.events import TERMINAL_STATUSES, TERMINAL_TYPES

_log = logging.getLogger(__name__)
GROUP = CONSUMER_GROUP
READ_COUNT = 10_000
CLAIM_IDLE_MS = 30_000
RETIRE_EXPIRE_S = 3600
DISCOVER_INTERVAL_S = 0.1  # how often the set of streams is re-read (one SMEMBERS)
MAINTENANCE_INTERVAL_S = 2.0  # XAUTOCLAIM of abandoned entries, retiring finished streams
RETIRE_IDLE_S = 300.0  # a finished run's stream without a terminal event is retired after this long idle
STALE_AFTER_S = 10.0  # health(): a reader loop that has not completed a read for this long is not consuming


class StreamConsumer:
    def __init__(self, *, settings: Settings, db: Database, hub: LiveHub, redis_client: Any) -> None:
        self.settings = settings
        self.db = db
        self.hub = hub
        self.r: Any = redis_client
        self.keys = settings.keys
        self.consumer = settings.consumer_name
        self.announce = self.keys.announce.encode()
        self._streams: dict[Any, float] = {}  # key -> monotonic time of its last entry
        self._streams_lock = threading.Lock()  # the writer retires streams while the reader lists them
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rlhfkit-stream-consumer", daemon=True)
        self._writer = StreamWriter(db=db, hub=hub, stop=self._stop, run_of=self.keys.run_id_of_stream, ack=self._ack,
                                    on_stored=self._stored, on_unknown_run=self._retire)
        self._invalid = 0  # entries that did not validate
        self._last_read = time.monotonic()  # the reader's last completed XREADGROUP
        self._last_error: str | None = None

    @property
    def ingested(self) -> int:
        """Events stored so far."""
        return self._writer.ingested

    @property
    def rejected(self) -> int:
        """Entries replaced by an error log event (invalid, or refused by the database)."""
        return self._invalid + self._writer.rejected

    def health(self) -> str:
        """``ok`` while the reader completes reads; otherwise why it does not (for ``/readyz``)."""
        if not self._thread.is_alive() or not self._writer.thread.is_alive():
            return "error: consumer thread stopped"
        idle = time.monotonic() - self._last_read
        if idle > STALE_AFTER_S:
            return f"error: no read for {idle:.0f} s ({self._last_error or 'unknown'})"
        return "ok"

    def start(self) -> None:
        self._writer.thread.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._writer.put(None)  # the writer stores what was read (unacknowledged leftovers are re-read on start)
        self._writer.thread.join(timeout=10)

    # ---- reader: Redis and validation
    def _run(self) -> None:
        last_refresh = last_maintenance = 0.0
        announced = False
        while not self._stop.is_set():
            try:
                if not announced:
                    self._create_group(self.announce, "$")
                    announced = True
                now = time.monotonic()
                if now - last_refresh > DISCOVER_INTERVAL_S:  # streams of sinks that announce nothing
                    self._refresh(maintenance=now - last_maintenance > MAINTENANCE_INTERVAL_S)
                    last_refresh = time.monotonic()
                    if now - last_maintenance > MAINTENANCE_INTERVAL_S:
                        last_maintenance = last_refresh
                with self._streams_lock:
                    streams = dict.fromkeys([*self._streams, self.announce], ">")
                resp = self.r.xreadgroup(GROUP, self.consumer, streams, count=READ_COUNT, block=100)
                self._last_read = time.monotonic()
                for key, entries in resp or []:
                    if key in (self.announce, self.announce.decode()):  # bytes, or str with decode_responses
                        self.r.xack(key, GROUP, *[eid for eid, _ in entries])
                        self._refresh(maintenance=False)  # the new stream is read by the next call
                        last_refresh = time.monotonic()
                    else:
                        self._submit(key, entries)
            except redis.ResponseError as exc:
                self._last_error = str(exc)
                if "NOGROUP" in str(exc):
                    # Redis lost its data (restarted without persistence): create every group again
                    _log.warning("stream consumer: %s; creating the consumer groups again", exc)
                    announced = False
                    with self._streams_lock:
                        self._streams.clear()
                    last_refresh = 0.0
                else:
                    _log.warning("stream consumer: %s; retrying", exc)
                    self._stop.wait(1.0)
            except redis.RedisError as exc:
                self._last_error = f"{type(exc).__name__}: {exc}"
                _log.warning("stream consumer: %s; retrying", exc)
                self._stop.wait(1.0)
            except Exception as exc:
                self._last_error = f"{type(exc).__name__}: {exc}"
                _log.exception("stream consumer error; retrying")
                self._stop.wait(1.0)

    def _refresh(self, maintenance: bool = True) -> None:
        keys = set(self.r.smembers(self.keys.streams))
        for key in keys - set(self._streams):
            self._create_group(key, "0")
            self.r.persist(key)  # a retired stream that came back: undo its expiry
            with self._streams_lock:
                self._streams[key] = time.monotonic()
            self._drain_pending(key)
        for key in list(self._streams):
            if key not in keys:
                with self._streams_lock:
                    self._streams.pop(key, None)
            elif maintenance:
                self._claim_abandoned(key)
                self._maybe_retire(key)

    def _create_group(self, key: Any, first_id: str) -> None:
        try:
            self.r.xgroup_create(key, GROUP, id=first_id, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _drain_pending(self, key: Any) -> None:
        """Entries delivered to this consumer name before a restart but never acknowledged."""
        start = "0"
        while True:
            resp = self.r.xreadgroup(GROUP, self.consumer, {key: start}, count=READ_COUNT)
            entries = resp[0][1] if resp else []
            if not entries:
                return
            start = entries[-1][0]  # they stay pending until the writer acknowledges them
            self._submit(key, entries)

    def _claim_abandoned(self, key: Any) -> None:
        """Entries another consumer read and never acknowledged (it died)."""
        start = "0-0"
        while True:
            res = self.r.xautoclaim(key, GROUP, self.consumer, min_idle_time=CLAIM_IDLE_MS, start_id=start,
                                    count=READ_COUNT)
            start, entries = res[0], res[1]
            entries = [e for e in entries if e and e[1]]
            if entries:
                self._submit(key, entries)
            if not entries or start in (b"0-0", "0-0"):
                return

    def _maybe_retire(self, key: Any) -> None:
        """Stop consuming a stream whose run is finished and fully acknowledged, and which ended
        with the run's terminal event (or has been idle for ``RETIRE_IDLE_S``)."""
        idle = time.monotonic() - self._streams.get(key, 0.0)
        if idle < 2.0:
            return
        run_id = self.keys.run_id_of_stream(key)
        with self.db.session() as s:
            run = s.get(Run, run_id)
            status = None if run is None else run.status
        if status is not None and status not in TERMINAL_STATUSES:
            return
        if int(self.r.xpending(key, GROUP)["pending"]) != 0:
            return
        if status is None or idle > RETIRE_IDLE_S or _ends_with_terminal(self.r.xrevrange(key, count=1)):
            self._retire(key)

    def _retire(self, key: Any) -> None:
        self.r.srem(self.keys.streams, key)
        self.r.expire(key, RETIRE_EXPIRE_S)
        with self._streams_lock:
            self._streams.pop(key, None)

    def _submit(self, key: Any, entries: list[Any]) -> None:
        """Validate a batch and queue it for the writer (blocks while the writer is behind); an
        invalid entry is replaced by an error log event."""
        ids = [eid for eid, _ in entries]
        data = [fields.get(b"e", b"{}") for _, fields in entries if fields]  # a trimmed entry has no fields
        parsed, rejected = parse_each(data, self.keys.run_id_of_stream(key))
        self._invalid += rejected
        self._writer.put((key, ids, parsed))

    def _ack(self, key: Any, ids: list[Any]) -> None:
        if ids:
            self.r.xack(key, GROUP, *ids)

    def _stored(self, key: Any) -> None:
        with self._streams_lock:
            if key in self._streams:
                self._streams[key] = time.monotonic()


def _ends_with_terminal(last: list[Any]) -> bool:
    """Whether the stream's last entry (``XREVRANGE key + - COUNT 1``) is a terminal event."""
    if not last or not last[0][1]:
        return not last  # an empty stream has nothing more to deliver
    try:
        return json.loads(last[0][1].get(b"e", b"{}")).get("type") in TERMINAL_TYPES  # type: ignore[no-any-return]
    except (ValueError, AttributeError):
        return False
