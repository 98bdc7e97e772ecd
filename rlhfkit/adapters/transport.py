"""Getting an external run's events to the server without ever slowing or failing training.

:class:`RemoteSink` is an event sink (:class:`rlhfkit.events.Sink`) with two halves:

* ``emit`` (the training thread) appends the event as one JSON line to
  ``<out_dir>/<run_id>/events.jsonl`` and flushes it. That is all it does: no network, no lock
  held for more than one ``write``. The file is the durable record of the run and the send queue.
* A daemon thread tails that file and uploads new lines in batches (``POST /api/runs/{id}/events``),
  creating the run first (``POST /api/runs/external``). When the server is unreachable it warns
  once, keeps every event in the file, and retries with exponential back-off; when the server
  returns it catches up from where it stopped. ``close`` lets it drain until done, the first
failed request, or ``close_timeout``.

Why the file and not an in-memory queue: an in-memory queue must either block training or drop
events when the server is down for long; the file never does either, and what is in it is
exactly what ``rlhfkit import PATH`` uploads later. The in-memory part is bounded by design: at
most one batch of ``batch_size`` lines is held at a time. The server deduplicates on
``(run_id, seq)``, so events that were already uploaded live are counted as duplicates on import,
and every event lands exactly once.

``remote.json`` next to the file records which server run the file belongs to, so an import
continues the same run instead of creating a second one.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from rlhfkit.events import Event

_log = logging.getLogger("rlhfkit.adapters")

EVENTS_FILE = "events.jsonl"
REMOTE_FILE = "remote.json"
DEFAULT_SERVER_ENV = "RLHFKIT_SERVER"
TOKEN_ENV = "RLHFKIT_TOKEN"


class IngestAPI(Protocol):
    """What the sender needs from :class:`rlhfkit.client.Client`."""

    def create_external_run(self, name: str, source: str = "external", config: dict[str, Any] | None = None,
                            tags: list[str] | None = None, *, seed: int | None = None,
                            total_steps: int | None = None) -> Any: ...

    def post_events(self, run_id: str, events: list[dict[str, Any]]) -> Any: ...


ClientFactory = Callable[[str, str | None], IngestAPI]


def default_client(server: str, token: str | None) -> IngestAPI:
    """The service's typed client (imported lazily: the engine never needs it)."""
    from rlhfkit.client import Client

    client: IngestAPI = Client(server, token=token, timeout=10.0)
    return client


def server_from_env(server: str | None = None, token: str | None = None) -> tuple[str | None, str | None]:
    """``server``/``token`` if given, else ``RLHFKIT_SERVER``/``RLHFKIT_TOKEN`` (unset server = offline)."""
    return (server or os.environ.get(DEFAULT_SERVER_ENV) or None, token or os.environ.get(TOKEN_ENV) or None)


@dataclass
class RunMeta:
    """What ``POST /api/runs/external`` needs to create the run."""

    name: str
    source: str = "external"
    config: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    seed: int | None = None
    total_steps: int | None = None


def _run_id_of(created: Any) -> str:
    if isinstance(created, dict):
        return str(created["id"])
    return str(created.id)


def read_remote(run_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((run_dir / REMOTE_FILE).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_remote(run_dir: Path, server: str, remote_id: str) -> None:
    tmp = run_dir / (REMOTE_FILE + ".tmp")
    tmp.write_text(json.dumps({"server": server, "run_id": remote_id}), encoding="utf-8")
    tmp.replace(run_dir / REMOTE_FILE)


MAX_BATCH_BYTES = 512 * 1024  # the server refuses bodies over 1 MiB


def read_lines(path: Path, offset: int, limit: int, max_bytes: int = MAX_BATCH_BYTES) -> tuple[list[str], int]:
    """Up to ``limit`` complete, non-empty lines of ``path`` from byte ``offset``, and the offset after them.

    Stops early once ``max_bytes`` are read (always returning at least one line). A last line
    without its newline is being written: it is left for the next call.
    """
    lines: list[str] = []
    start = offset
    with path.open("rb") as fh:
        fh.seek(offset)
        while len(lines) < limit and offset - start < max_bytes:
            raw = fh.readline()
            if not raw.endswith(b"\n"):
                break
            offset += len(raw)
            text = raw.decode("utf-8").strip()
            if text:
                lines.append(text)
    return lines, offset


class RemoteSink:
    """Sink: local JSON Lines (always) + background upload to the rlhfkit server (when configured).

    Args:
        run_dir: ``<out_dir>/<run_id>``; created if missing.
        meta: how to create the run on the server.
        server: base URL; None means offline (the file only).
        token: bearer token for the server.
        batch_size: events per upload request.
        flush_interval: seconds the sender waits for more events before sending a partial batch.
        max_backoff: cap of the exponential retry delay, seconds.
        close_timeout: how long ``close`` waits for the sender to drain before giving up.
        client_factory: builds the API client (tests inject fakes).
    """

    def __init__(self, run_dir: str | Path, meta: RunMeta, *, server: str | None = None, token: str | None = None,
                 batch_size: int = 200, flush_interval: float = 0.2, max_backoff: float = 30.0,
                 close_timeout: float = 10.0, client_factory: ClientFactory = default_client) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / EVENTS_FILE
        self.meta = meta
        self.server = server.rstrip("/") if server else None
        self.token = token
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_backoff = max_backoff
        self.close_timeout = close_timeout
        self._client_factory = client_factory
        self._fh: IO[str] | None = self.path.open("a", encoding="utf-8")
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        # Bytes of the file already uploaded. Starting at 0 re-sends lines an earlier process left
        # here; the server's (run_id, seq) deduplication makes that harmless.
        self._sent_offset = 0
        self.remote_id: str | None = None
        self.uploaded = 0
        self.duplicates = 0
        self.failures = 0
        self.online: bool | None = None  # None until the first attempt
        self._thread: threading.Thread | None = None
        if self.server:
            known = read_remote(self.run_dir)
            if known.get("server") == self.server:
                self.remote_id = str(known["run_id"])
            self._thread = threading.Thread(target=self._run, name="rlhfkit-sender", daemon=True)
            self._thread.start()

    # -- training thread -------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        line = event.model_dump_json(exclude_none=True) + "\n"
        with self._lock:
            if self._fh is None:
                return
            self._fh.write(line)
            self._fh.flush()
        self._wake.set()

    def close(self) -> None:
        """Stop accepting events, let the sender drain for up to ``close_timeout`` s, then warn if needed."""
        with self._lock:
            if self._fh is None:
                return
            self._fh.close()
            self._fh = None
        if self._thread is not None:
            self._stop.set()
            self._wake.set()
            self._thread.join(self.close_timeout + 1.0)
            left = self.pending_bytes()
            if left > 0:
                _log.warning(
                    "rlhfkit: %s could not take all events before exit; the rest are kept in %s. "
                    "Upload them with: rlhfkit import %s", self.server, self.path, self.run_dir)

    def pending_bytes(self) -> int:
        try:
            return self.path.stat().st_size - self._sent_offset
        except OSError:
            return 0

    # -- sender thread ---------------------------------------------------------------------
    def _run(self) -> None:
        assert self.server is not None
        try:
            client = self._client_factory(self.server, self.token)
        except Exception:  # a broken client must never reach training
            _log.exception("rlhfkit: cannot build the API client; events stay in %s", self.path)
            return
        delay = 0.0
        deadline: float | None = None
        while True:
            if self._stop.is_set() and deadline is None:
                # Draining at exit: send what is left until done, the first failure, or the timeout.
                deadline = time.monotonic() + self.close_timeout
            if deadline is not None and (time.monotonic() >= deadline or self.pending_bytes() <= 0):
                return
            if delay > 0 and deadline is None:
                self._stop.wait(delay)  # close() interrupts the back-off
            try:
                sent_any = self._send_some(client)
                if self.online is False:
                    _log.warning("rlhfkit: %s is reachable again; catching up from %s", self.server, self.path)
                self.online = True
                delay = 0.0
            except Exception as exc:
                self.failures += 1
                if self.online is not False:
                    _log.warning(
                        "rlhfkit: cannot reach the rlhfkit server at %s (%s). Training continues; events are "
                        "written to %s and sent when the server is back, or upload them later with: "
                        "rlhfkit import %s", self.server, _short(exc), self.path, self.run_dir)
                self.online = False
                if deadline is not None:
                    return  # draining at exit: one failure is enough, the file keeps the rest
                delay = min(self.max_backoff, max(0.5, delay * 2))
                continue
            if not sent_any and deadline is None:
                self._wake.wait(self.flush_interval)
                self._wake.clear()

    def _send_some(self, client: IngestAPI) -> bool:
        lines, end = read_lines(self.path, self._sent_offset, self.batch_size)
        if not lines:
            self._sent_offset = end
            return False
        if self.remote_id is None:  # registered on the first event, so run_started's fields are final
            created = client.create_external_run(name=self.meta.name, source=self.meta.source,
                                                 config=self.meta.config, tags=self.meta.tags,
                                                 seed=self.meta.seed, total_steps=self.meta.total_steps)
            self.remote_id = _run_id_of(created)
            write_remote(self.run_dir, self.server or "", self.remote_id)
            _log.info("rlhfkit: run %s registered at %s", self.remote_id, self.server)
        batch: list[dict[str, Any]] = []
        for text in lines:
            data = json.loads(text)
            data["run_id"] = self.remote_id
            batch.append(data)
        result = client.post_events(self.remote_id, batch)
        self._sent_offset = end
        if isinstance(result, dict):
            self.uploaded += int(result.get("accepted", 0))
            self.duplicates += int(result.get("duplicates", 0))
        return True


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) < 160 else text[:157] + "..."
