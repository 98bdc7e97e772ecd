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

Two threads form a pipeline: the reader reads and validates the next batch (Redis, JSON: Python
work) while the writer stores the previous one (mostly waiting on PostgreSQL, GIL released). A
small queue between them keeps batches in read order; acknowledging stays the writer's job, after
the commit.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from typing import Any

import psycopg
import redis
import sqlalchemy.exc

from backend.core.config import Settings
from backend.core.db import Database
from backend.models import Run
from backend.services.ingest import IngestError, RunNotFound, ingest_parsed, parse_events
from backend.services.live import LiveHub
from backend.services.runs import public_dict
from rlhfkit.events import TERMINAL_STATUSES, TERMINAL_TYPES, LogEvent

_log = logging.getLogger(__name__)
GROUP = "rlhfkit-backend"
READ_COUNT = 10_000
CLAIM_IDLE_MS = 30_000
RETIRE_EXPIRE_S = 3600
DISCOVER_INTERVAL_S = 0.1  # how often the set of streams is re-read (one SMEMBERS)
MAINTENANCE_INTERVAL_S = 2.0  # XAUTOCLAIM of abandoned entries, retiring finished streams
PIPELINE_DEPTH = 2  # validated batches waiting for the writer
WRITE_ATTEMPTS = 5  # then the batch is left pending: XAUTOCLAIM re-delivers it after CLAIM_IDLE_MS
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
        # (stream key, entry ids, validated events) in read order; None tells the writer to finish
        self._batches: queue.Queue[tuple[Any, list[Any], list[Any]] | None] = queue.Queue(PIPELINE_DEPTH)
        self._thread = threading.Thread(target=self._run, name="rlhfkit-stream-consumer", daemon=True)
        self._writer = threading.Thread(target=self._write_loop, name="rlhfkit-stream-writer", daemon=True)
        self.ingested = 0
        self.rejected = 0  # entries replaced by an error log event (invalid, or refused by the database)
        self._last_read = time.monotonic()  # the reader's last completed XREADGROUP
        self._last_error: str | None = None

    def health(self) -> str:
        """``ok`` while the reader completes reads; otherwise why it does not (for ``/readyz``)."""
        if not self._thread.is_alive() or not self._writer.is_alive():
            return "error: consumer thread stopped"
        idle = time.monotonic() - self._last_read
        if idle > STALE_AFTER_S:
            return f"error: no read for {idle:.0f} s ({self._last_error or 'unknown'})"
        return "ok"

    def start(self) -> None:
        self._writer.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._put(None)  # the writer stores what was read (unacknowledged leftovers are re-read on start)
        self._writer.join(timeout=10)

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
        """Validate a batch and queue it for the writer (blocks while the writer is behind)."""
        run_id = self.keys.run_id_of_stream(key)
        ids = [eid for eid, _ in entries]
        data = [fields.get(b"e", b"{}") for _, fields in entries if fields]  # a trimmed entry has no fields
        try:
            parsed = parse_events(data, run_id)
        except IngestError:
            parsed = []
            for d in data:
                try:
                    parsed += parse_events([d], run_id)
                except IngestError as exc:
                    err = exc.errors[0]
                    field = ".".join(str(x) for x in err["loc"][3:]) or "event"
                    parsed.append((self._rejected(key, d, f"invalid {field}: {err['msg']}"), None))
        self._put((key, ids, parsed))

    def _rejected(self, key: Any, raw: Any, reason: str) -> Any:
        """The ``error`` log event stored in place of a rejected entry (same seq and step when known)."""
        self.rejected += 1
        seq, step, etype = -1, None, "?"
        try:
            data = raw if isinstance(raw, dict) else json.loads(raw)
            if isinstance(data.get("seq"), int) and 0 <= data["seq"] <= 2**62:
                seq = data["seq"]
            if isinstance(data.get("step"), int) and abs(data["step"]) < 2**31:
                step = data["step"]
            etype = str(data.get("type", "?"))[:32]
        except (ValueError, AttributeError, TypeError):
            pass
        _log.error("event on %s rejected (seq %s, type %s): %s", key, seq, etype, reason)
        return LogEvent(run_id=self.keys.run_id_of_stream(key), seq=seq, step=step, ts=time.time(), level="error",
                        message=f"{etype} event rejected: {reason}"[:10_000].replace("\x00", "\\u0000"))

    def _put(self, item: tuple[Any, list[Any], list[Any]] | None) -> None:
        while True:
            try:
                self._batches.put(item, timeout=1.0)
                return
            except queue.Full:
                if not self._writer.is_alive():
                    return

    # ---- writer: DB, acknowledgement, fan-out
    def _write_loop(self) -> None:
        finish = False
        while not finish:
            items = [self._batches.get()]
            while True:  # whatever queued up while the last batch was written goes in together
                try:
                    items.append(self._batches.get_nowait())
                except queue.Empty:
                    break
            finish = None in items
            for key, ids, parsed in _merge_consecutive([i for i in items if i is not None]):
                self._write(key, ids, parsed)

    def _write(self, key: Any, ids: list[Any], parsed: list[Any]) -> None:
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                self._store(key, ids, parsed)
                return
            except _REFUSED_VALUES as exc:  # the database refuses some value: find it, store the rest
                _log.warning("stream writer: %s refused a batch (%s); storing its events one by one", key, exc)
                try:
                    self._store_each(key, ids, parsed)
                    return
                except Exception:
                    _log.exception("stream writer error on %s (attempt %d of %d)", key, attempt, WRITE_ATTEMPTS)
            except Exception:  # DB or Redis down: retry; a batch that keeps failing stays pending
                _log.exception("stream writer error on %s (attempt %d of %d)", key, attempt, WRITE_ATTEMPTS)
                if self._stop.wait(1.0):
                    return

    def _store_each(self, key: Any, ids: list[Any], parsed: list[Any]) -> None:
        """One event per transaction; one the database refuses becomes an error log event."""
        for ev, text in parsed:
            try:
                self._store(key, [], [(ev, text)])
            except _REFUSED_VALUES as exc:
                raw = ev.model_dump(mode="json")
                try:
                    self._store(key, [], [(self._rejected(key, raw, f"refused by the database: {exc}"[:2000]), None)])
                except _REFUSED_VALUES:
                    _log.exception("event seq %s on %s could not be stored even as an error; dropped", ev.seq, key)
        if ids:
            self.r.xack(key, GROUP, *ids)

    def _store(self, key: Any, ids: list[Any], parsed: list[Any]) -> None:
        run_id = self.keys.run_id_of_stream(key)
        try:
            outcome = ingest_parsed(self.db, run_id, parsed, writer=True)
        except RunNotFound:
            _log.warning("events for unknown run %s dropped", run_id)
            self.r.xack(key, GROUP, *ids)
            self._retire(key)
            return
        if ids:
            self.r.xack(key, GROUP, *ids)  # only after the commit: a crash before this re-delivers
        with self._streams_lock:
            if key in self._streams:
                self._streams[key] = time.monotonic()
        self.ingested += len(outcome.accepted)
        self.hub.publish_events(run_id, outcome.accepted)
        if outcome.status_changed and outcome.run is not None:
            self.hub.publish_status(public_dict(outcome.run))


# errors that say "this value cannot be stored" (retrying cannot help), as opposed to "the
# database is unreachable"; SQLAlchemy wraps the driver's errors, our COPY/pipeline paths do not
_REFUSED_VALUES = (sqlalchemy.exc.DataError, sqlalchemy.exc.IntegrityError, psycopg.DataError,
                   psycopg.IntegrityError, ValueError, OverflowError)


def _ends_with_terminal(last: list[Any]) -> bool:
    """Whether the stream's last entry (``XREVRANGE key + - COUNT 1``) is a terminal event."""
    if not last or not last[0][1]:
        return not last  # an empty stream has nothing more to deliver
    try:
        return json.loads(last[0][1].get(b"e", b"{}")).get("type") in TERMINAL_TYPES  # type: ignore[no-any-return]
    except (ValueError, AttributeError):
        return False


def _merge_consecutive(items: list[tuple[Any, list[Any], list[Any]]]) -> list[tuple[Any, list[Any], list[Any]]]:
    """Join neighbouring batches of the same stream (their order is kept): a writer that fell behind
    catches up with one transaction instead of one per batch."""
    out: list[tuple[Any, list[Any], list[Any]]] = []
    for key, ids, parsed in items:
        if out and out[-1][0] == key:
            out[-1][1].extend(ids)
            out[-1][2].extend(parsed)
        else:
            out.append((key, list(ids), list(parsed)))
    return out
