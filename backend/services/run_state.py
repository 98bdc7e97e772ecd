"""Run-state folding, the last step of ingest: new events update the run's row — last seq and
step, the latest value of every metric, status and the details a ``run_started`` carries.

Pure with respect to the database: it changes the ``Run`` object the caller's session holds and
commits nothing, so the fold goes into the same transaction as the events it reads.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

from backend.core.registry import presumed_lost
from backend.models import Run
from rlhfkit.events import (
    STATUS_OF_TERMINAL_EVENT,
    TERMINAL_STATUSES,
    EvalEvent,
    Event,
    MetricsEvent,
    RunCancelled,
    RunFailed,
    RunFinished,
    RunStarted,
    steps_done_after,
)
from rlhfkit.metrics import M


def finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _ts(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def latest_finite(updates: list[dict[str, float]]) -> dict[str, float]:
    """The last finite value of every key over ``updates`` (in order)."""
    last: dict[str, float] = {}
    for values in updates:  # dict.update runs in C; non-finite values are repaired below (rare)
        last.update(values)
    bad = [k for k, v in last.items() if not finite(v)]
    for k in bad:
        del last[k]
        for values in reversed(updates):
            v = values.get(k)
            if v is not None and finite(v):
                last[k] = v
                break
    return {k: float(v) for k, v in last.items()}


def _start(run: Run, ev: RunStarted) -> None:
    if run.status == "queued":
        run.status = "running"
    run.started_at = run.started_at or _ts(ev.ts)
    run.total_steps = ev.total_steps if ev.total_steps is not None else run.total_steps
    run.seed = ev.seed if ev.seed is not None else run.seed
    run.versions = ev.versions or run.versions
    run.git_commit = ev.git_commit or run.git_commit
    if not run.config and ev.config:
        run.config = ev.config


def _finish(run: Run, ev: RunFinished | RunFailed | RunCancelled) -> None:
    """A terminal event sets the final status once — or overrides the reaper's provisional
    "worker lost" verdict, since the worker was alive after all."""
    if run.status in TERMINAL_STATUSES and not presumed_lost(run):
        return
    run.status = STATUS_OF_TERMINAL_EVENT[ev.type]
    run.finished_at = _ts(ev.ts)
    if isinstance(ev, RunFinished):
        run.summary = ev.summary
        run.error = None
    elif isinstance(ev, RunFailed):
        run.error = ev.error
    else:
        run.error = None
        run.summary = {"status": "cancelled", "reason": ev.reason}


def fold_events(run: Run, new: list[Event]) -> bool:
    """Fold new events (seq order, at least one) into the run row (the last completed step from
    ``rlhfkit.events.steps_done_after``). True when viewers of the runs
    list should hear about it: the status changed, or the run's details arrived (``run_started``)."""
    before = run.status
    updates: list[dict[str, float]] = []  # metric values in event order; the last finite one is "latest"
    steps: list[int] = []
    started = False
    for ev in new:
        done = steps_done_after(ev.type, ev.step, ev.values if isinstance(ev, MetricsEvent) else ())
        if done:  # None: not a step's event; 0: the evaluation before the first step
            steps.append(done - 1)  # the index of the last completed step (RunPublic.steps_done - 1)
        if isinstance(ev, MetricsEvent):
            updates.append(ev.values)
        elif isinstance(ev, EvalEvent):
            if finite(ev.reward_mean):
                updates.append({M.EVAL_REWARD: ev.reward_mean})
        elif isinstance(ev, RunStarted):
            _start(run, ev)
            started = True
        elif isinstance(ev, (RunFinished, RunFailed, RunCancelled)):
            _finish(run, ev)
    run.latest = {**(run.latest or {}), **latest_finite(updates)}
    if steps:
        run.last_step = max(steps) if run.last_step is None else max(run.last_step, max(steps))
    run.last_seq = max(run.last_seq, new[-1].seq)
    return started or run.status != before
