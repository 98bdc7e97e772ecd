"""Embedded mode executor: runs execute in local child processes, events come back over a
multiprocessing queue and enter the same ingest path as everything else.

One scheduler thread starts queued runs while fewer than ``embedded_workers`` are running; one
pump thread drains the event queue in batches into the DB and the live hub. Child processes are
*spawned* (not forked) so they never inherit the server's threads, sockets or event loop. Cancel is
cooperative: the child's ``should_stop`` reads a shared flag between steps.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import queue
import threading
import time
from collections import defaultdict
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

from backend.core.config import Settings
from backend.core.db import Database
from backend.core.registry import run_lock, set_status
from backend.models import Run
from backend.services.ingest import ingest_and_publish
from backend.services.live import LiveHub
from backend.services.runs import RunNotFound, native_runs, public_dict
from rlhfkit.events import TERMINAL_STATUSES

_log = logging.getLogger(__name__)
PUMP_BATCH = 5000


class _QueueSink:
    """Child side: ships each event's JSON to the parent (pickling a str is cheap)."""

    def __init__(self, q: Any, run_id: str) -> None:
        self.q = q
        self.run_id = run_id

    def emit(self, event: Any) -> None:
        self.q.put(("event", self.run_id, event.model_dump_json()))

    def close(self) -> None:
        pass


def _child_main(run_id: str, config: dict[str, Any], out_dir: str, q: Any, stop: MpEvent) -> None:
    """Entry point of a run's process: the same start as a Celery worker's (the outcome is in the events)."""
    from rlhfkit.runner import execute_stored_run

    try:
        execute_stored_run(run_id, config, sinks=[_QueueSink(q, run_id)], out_dir=out_dir, should_stop=stop.is_set)
    finally:
        q.close()
        q.join_thread()  # every event is in the pipe before the process exits


class EmbeddedExecutor:
    mode = "embedded"

    def __init__(self, *, settings: Settings, db: Database, hub: LiveHub) -> None:
        self.settings = settings
        self.db = db
        self.hub = hub
        self._ctx = mp.get_context("spawn")
        self._events: Any = None
        self._pending: queue.Queue[str] = queue.Queue()
        self._procs: dict[str, Any] = {}
        self._stops: dict[str, MpEvent] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._live: set[str] = set()  # runs whose process runs: launched, exit not yet handled by the pump
        self._live_lock = threading.Lock()

    # ---- lifecycle
    def start(self) -> None:
        self._events = self._ctx.Queue()
        # runs left "running" by a previous server process died with it
        for run in native_runs(db=self.db, status="running"):
            set_status(self.db, run.id, "failed", error="server restarted while the run was executing",
                       only_from=("running",))
        for run in native_runs(db=self.db, status="queued"):
            self._pending.put(run.id)
        for target, name in ((self._schedule, "rlhfkit-scheduler"), (self._pump, "rlhfkit-pump")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        for ev in self._stops.values():
            ev.set()
        deadline = time.monotonic() + 10
        for proc in list(self._procs.values()):
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.terminate()
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)

    # ---- executor protocol
    def submit(self, run: Run) -> None:
        self._pending.put(run.id)

    def cancel(self, run: Run) -> None:
        ev = self._stops.get(run.id)
        if ev is not None:
            ev.set()

    # ---- threads
    def _schedule(self) -> None:
        while not self._stop.is_set():
            self._reap()
            if len(self._procs) >= self.settings.embedded_workers:
                time.sleep(0.1)
                continue
            try:
                run_id = self._pending.get(timeout=0.1)
            except queue.Empty:
                continue
            try:
                self._launch(run_id)
            except Exception:
                _log.exception("could not start run %s", run_id)
                set_status(self.db, run_id, "failed", error="could not start the run process", only_from=("queued",))

    def _launch(self, run_id: str) -> None:
        run = set_status(self.db, run_id, "running", only_from=("queued",), worker="embedded")
        if run is None:
            return  # cancelled (or deleted) while queued
        if run.cancel_requested:
            return
        self.hub.publish_status(public_dict(run))
        stop = self._ctx.Event()
        out_dir = str(Path(self.settings.artifacts_dir).resolve())
        proc = self._ctx.Process(target=_child_main, args=(run_id, run.config, out_dir, self._events, stop),
                                 name=f"rlhfkit-run-{run_id}", daemon=True)
        proc.start()
        self._procs[run_id] = proc
        self._stops[run_id] = stop
        self._note_sharing(started=run_id)
        with self.db.session() as s:  # a cancel that raced the launch
            r = s.get(Run, run_id)
            if r is not None and r.cancel_requested:
                stop.set()

    def _reap(self) -> None:
        for run_id, proc in list(self._procs.items()):
            if proc.is_alive():
                continue
            proc.join()
            del self._procs[run_id]
            self._stops.pop(run_id, None)
            # after the child's own events (FIFO pipe), so the pump sees its terminal event first
            self._events.put(("exited", run_id, proc.exitcode))

    def _pump(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._events.get(timeout=0.2)
            except queue.Empty:
                continue
            except (EOFError, OSError):
                return
            items = [first]
            while len(items) < PUMP_BATCH:
                try:
                    items.append(self._events.get_nowait())
                except queue.Empty:
                    break
            self._handle(items)

    def _handle(self, items: list[tuple[str, str, Any]]) -> None:
        by_run: defaultdict[str, list[Any]] = defaultdict(list)
        exits: list[tuple[str, int]] = []
        for kind, run_id, data in items:
            if kind == "event":
                by_run[run_id].append(data)
            else:
                exits.append((run_id, data))
        for run_id, evs in by_run.items():
            try:
                ingest_and_publish(db=self.db, hub=self.hub, run_id=run_id, events=evs)
            except RunNotFound:
                continue
            except Exception:
                _log.exception("ingest failed for run %s", run_id)
        for run_id, code in exits:
            self._note_sharing(exited=run_id)  # after its last events: its last step is ingested
            with self.db.session() as s:
                run = s.get(Run, run_id)
                status = None if run is None else run.status
            if status is not None and status not in TERMINAL_STATUSES:
                changed = set_status(self.db, run_id, "failed", error=f"run process exited with code {code} "
                                     "before reporting a result", only_from=("running", "queued"))
                if changed is not None:
                    self.hub.publish_status(public_dict(changed))

    def _note_sharing(self, *, started: str | None = None, exited: str | None = None) -> None:
        """Update ``shared_device`` of every run whose company changed: the one that started or exited
        and those that ran beside it."""
        with self._live_lock:
            before = set(self._live)
            if started is not None:
                self._live.add(started)
            if exited is not None:
                self._live.discard(exited)
            touched = before | self._live
            if len(touched) < 2:
                return
            for run_id in sorted(touched):
                others = self._live - {run_id} if run_id in self._live else set()
                with run_lock(run_id), self.db.session() as s:
                    run = s.get(Run, run_id)
                    if run is None:
                        continue
                    device = str((run.config or {}).get("train", {}).get("device", "cpu"))
                    rec = update_sharing(run.shared_device, others, run.last_step, device)
                    if rec != run.shared_device:
                        run.shared_device = rec
                        s.commit()
                        self.hub.publish_status(public_dict(run))


def update_sharing(rec: dict[str, Any] | None, others: set[str], last_step: int | None,
                   device: str) -> dict[str, Any] | None:
    """A run's ``shared_device`` record after its company changed to ``others`` (its last completed
    step is ``last_step``): opened at its next step when others arrive, the others added while they
    come and go, closed at its last completed step when none is left. One span: a run that shared
    twice reports from the first shared step to the last."""
    next_step = 0 if last_step is None else last_step + 1
    if others:
        if rec is None:
            return {"device": device, "run_ids": sorted(others), "from_step": next_step, "to_step": None}
        return {**rec, "run_ids": sorted(set(rec["run_ids"]) | others), "to_step": None}
    if rec is not None and rec.get("to_step") is None:
        return {**rec, "to_step": max(int(rec["from_step"]), last_step if last_step is not None else 0)}
    return rec

