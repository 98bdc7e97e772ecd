"""MLflow-compatible tracking: what the official ``mlflow`` client sends, turned into registry runs.

Most training frameworks can already log to MLflow (transformers' ``MLflowCallback`` behind
``report_to="mlflow"``, TRL through it, verl's ``trainer.logger=['mlflow']``). Serving the part of
MLflow's tracking REST API those clients call (``/api/2.0/mlflow/...``) lets
``MLFLOW_TRACKING_URI=http://<host>:8000`` report into our registry with no adapter code.

How an MLflow run maps onto a registry run:

* ``runs/create`` registers a run with ``source="mlflow"`` and the client's name; its MLflow id *is*
  the registry id, and a ``run_started`` event opens its event log;
* params become the run's ``config`` (string values, as MLflow sends them; a param is write-once,
  as in MLflow, so re-logging a different value is refused);
* metrics become ``metrics`` events, one per step, keys mapped through the contract's peer aliases
  (:func:`rlhfkit.adapters.mapping.map_metrics`), ``step`` kept, and the stability monitor runs on
  them here, server-side, so our alerts fire for any framework;
* tags are kept as MLflow key/value tags (``mlflow_runs.tags``); ``mlflow.runName`` renames the
  run and user tags (not ``mlflow.*``) also appear as ``key=value`` registry tags;
* ``runs/update`` with a terminal status ends the run through the matching terminal event
  (FINISHED -> succeeded, FAILED -> failed, KILLED -> cancelled); RUNNING re-opens an ended run
  (``mlflow.start_run(run_id=...)`` resumes that way).

Everything goes through :func:`backend.services.ingest.ingest_and_publish`, so an MLflow run is stored,
deduplicated, charted and streamed to the UI exactly like a native one.

Errors are :class:`~backend.services.mlflow_parts.MlflowError` with MLflow's ``error_code`` names, which the client turns into
``MlflowException`` (a ``RESOURCE_DOES_NOT_EXIST`` from ``experiments/get-by-name`` is how
``mlflow.set_experiment`` learns that it must create one). The monitor's state (running medians)
lives in this process: after a server restart a run's rules start from a fresh window.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.core.db import Database
from backend.models import MlflowRun, Run
from backend.services.event_validation import IngestError
from backend.services.ingest import IngestOutcome, ingest_and_publish
from backend.services.live import LiveHub
from backend.services.mlflow_experiments import (
    create_experiment,
    experiment_id_of,
    experiment_row,
    get_experiment,
    get_experiment_by_name,
    search_experiments,
)
from backend.services.mlflow_parts import (
    MetricIn,
    MlflowError,
    invalid,
    matches,
    metric_events,
    monitors,
    parse_filter,
)
from backend.services.runs import public_dict
from rlhfkit.events import (
    INT32_MAX,
    TERMINAL_STATUSES,
    Event,
    RunCancelled,
    RunFailed,
    RunFinished,
    RunStarted,
    new_run_id,
)

# MLflow's RunStatus names -> registry statuses
STATUS_TO_REGISTRY: dict[str, str] = {
    "RUNNING": "running", "SCHEDULED": "queued", "FINISHED": "succeeded", "FAILED": "failed", "KILLED": "cancelled"}
REGISTRY_TO_STATUS: dict[str, str] = {
    "queued": "SCHEDULED", "running": "RUNNING", "succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}
SYSTEM_TAG_PREFIX = "mlflow."
RUN_NAME_TAG = "mlflow.runName"
MAX_PARAM_VALUE = 6000  # MLflow's own limit on a param value
MAX_TAG_VALUE = 8000
MAX_RESULTS = 50_000


# ----------------------------------------------------------------------------- runs

def _run_dict(run: Run, meta: MlflowRun) -> dict[str, Any]:
    status = REGISTRY_TO_STATUS.get(run.status, "RUNNING")
    info: dict[str, Any] = {
        "run_id": run.id, "run_uuid": run.id, "run_name": run.name, "experiment_id": str(meta.experiment_id),
        "user_id": meta.user_id, "status": status, "start_time": meta.start_time,
        "artifact_uri": "", "lifecycle_stage": "active"}
    if meta.end_time is not None:
        info["end_time"] = meta.end_time
    ts = int(time.time() * 1000)
    metrics = [{"key": k, "value": v, "timestamp": ts, "step": run.last_step or 0} for k, v in (run.latest or {}).items()]
    params = [{"key": k, "value": str(v)} for k, v in (run.config or {}).items()]
    tags = [{"key": k, "value": v} for k, v in (meta.tags or {}).items()]
    return {"info": info, "data": {"metrics": metrics, "params": params, "tags": tags}}


def _load(session: Session, run_id: str) -> tuple[Run, MlflowRun]:
    meta = session.get(MlflowRun, run_id)
    run = session.get(Run, run_id) if meta is not None else None
    if run is None or meta is None:
        raise MlflowError("RESOURCE_DOES_NOT_EXIST", f"Run {run_id!r} not found")
    return run, meta


def _registry_tags(tags: dict[str, str]) -> list[str]:
    return [f"{k}={v}"[:200] if v else k[:200] for k, v in tags.items() if not k.startswith(SYSTEM_TAG_PREFIX)]


def _check_tags(tags: Sequence[tuple[str, str]]) -> None:
    for i, (k, v) in enumerate(tags):
        if not k or len(k) > 250 or "\x00" in k:
            raise invalid(f"tags[{i}].key", f"{k[:50]!r} must be 1-250 characters without NUL")
        if len(v) > MAX_TAG_VALUE or "\x00" in v:
            raise invalid(f"tags[{i}].value", f"at most {MAX_TAG_VALUE} characters without NUL")


def create_run(*, db: Database, hub: LiveHub, experiment_id: str | None, user_id: str = "",
               start_time: int | None = None, tags: Sequence[tuple[str, str]] = (),
               run_name: str | None = None) -> dict[str, Any]:
    _check_tags(tags)
    tag_map = dict(tags)
    name = (run_name or tag_map.get(RUN_NAME_TAG) or "").strip()
    if len(name) > 200:
        raise invalid("run_name", "at most 200 characters")
    now = datetime.now(timezone.utc)
    run_id = new_run_id()
    name = name or f"mlflow-{run_id[:8]}"
    tag_map[RUN_NAME_TAG] = name
    with db.session() as s:
        exp = experiment_row(s, experiment_id if experiment_id not in (None, "") else 0)
        run = Run(id=run_id, name=name, status="running", source="mlflow", config={}, tags=_registry_tags(tag_map),
                  versions={}, latest={}, last_seq=-1, cancel_requested=False, created_at=now, started_at=now,
                  worker="mlflow")
        s.add(run)
        s.flush()  # the run row first: mlflow_runs refers to it
        s.add(MlflowRun(run_id=run_id, experiment_id=exp.id, user_id=(user_id or "")[:200], tags=tag_map,
                        start_time=start_time if start_time is not None else int(now.timestamp() * 1000)))
        s.commit()
    started = RunStarted(name=name, source="mlflow", ts=time.time(), config={},
                         versions={"mlflow_experiment": exp.name[:200]})
    _ingest(db, hub, run_id, [started])
    return get_run(db=db, run_id=run_id)


def get_run(*, db: Database, run_id: str) -> dict[str, Any]:
    with db.session() as s:
        run, meta = _load(s, run_id)
        return _run_dict(run, meta)


def update_run(*, db: Database, hub: LiveHub, run_id: str, status: str | None = None,
               end_time: int | None = None, run_name: str | None = None) -> dict[str, Any]:
    if status is not None and status not in STATUS_TO_REGISTRY:
        raise invalid("status", f"{status!r}; allowed: {', '.join(STATUS_TO_REGISTRY)}")
    if run_name is not None and len(run_name) > 200:
        raise invalid("run_name", "at most 200 characters")
    terminal: Event | None = None
    with db.session() as s:
        run, meta = _load(s, run_id)
        if run_name:
            run.name = run_name
            meta.tags = {**(meta.tags or {}), RUN_NAME_TAG: run_name}
        target = STATUS_TO_REGISTRY.get(status or "")
        if target in TERMINAL_STATUSES and run.status not in TERMINAL_STATUSES:
            meta.end_time = end_time if end_time is not None else int(time.time() * 1000)
            terminal = (RunFinished(summary=dict(run.latest or {})) if target == "succeeded"
                        else RunFailed(error="the MLflow client ended the run with status FAILED")
                        if target == "failed" else RunCancelled(reason="the MLflow client ended the run (KILLED)"))
            terminal.ts = time.time()
            terminal.step = run.last_step
        elif target == "running" and run.status in TERMINAL_STATUSES:  # mlflow.start_run(run_id=...) resumes
            run.status, run.finished_at, meta.end_time = "running", None, None
        s.commit()
        changed = terminal is None
        public = public_dict(run)
    if terminal is not None:
        _ingest(db, hub, run_id, [terminal])
        monitors.drop(run_id)
    elif changed:
        hub.publish_status(public)
    return get_run(db=db, run_id=run_id)


def search_runs(*, db: Database, experiment_ids: Sequence[str], filter: str = "", max_results: int = 1000,
                page_token: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """Runs of the experiments, newest first, filtered in Python (a few hundred runs per experiment)."""
    clauses = parse_filter(filter or "")
    if not 1 <= max_results <= MAX_RESULTS:
        raise invalid("max_results", f"must be between 1 and {MAX_RESULTS}")
    try:
        offset = int(page_token) if page_token else 0
    except ValueError:
        raise invalid("page_token", f"{page_token!r} is not a page token") from None
    ids = [experiment_id_of(e, "experiment_ids") for e in experiment_ids]
    with db.session() as s:
        rows = s.execute(select(Run, MlflowRun).join(MlflowRun, MlflowRun.run_id == Run.id)
                         .where(MlflowRun.experiment_id.in_(ids)).order_by(MlflowRun.start_time.desc())).all()
        found = [d for d in (_run_dict(r, m) for r, m in rows) if matches(d, clauses)]
    page = found[offset:offset + max_results]
    nxt = str(offset + max_results) if offset + max_results < len(found) else None
    return page, nxt


# ----------------------------------------------------------------------------- logging

def log_batch(*, db: Database, hub: LiveHub, run_id: str, metrics: Sequence[MetricIn] = (),
              params: Sequence[tuple[str, str]] = (), tags: Sequence[tuple[str, str]] = ()) -> None:
    """Params and tags onto the run row, metrics as one ``metrics`` event per step (+ alerts)."""
    _check_tags(tags)
    for i, (k, v) in enumerate(params):
        if not k or len(k) > 250 or "\x00" in k:
            raise invalid(f"params[{i}].key", f"{k[:50]!r} must be 1-250 characters without NUL")
        if len(v) > MAX_PARAM_VALUE or "\x00" in v:
            raise invalid(f"params[{i}].value", f"at most {MAX_PARAM_VALUE} characters without NUL")
    for i, m in enumerate(metrics):
        if not -INT32_MAX - 1 <= m.step <= INT32_MAX:
            raise invalid(f"metrics[{i}].step", f"{m.step} is outside the 32-bit range steps are stored in")
    status_public: dict[str, Any] | None = None
    with db.session() as s:
        run, meta = _load(s, run_id)
        if params:
            config = dict(run.config or {})
            for k, v in params:
                if k in config and str(config[k]) != v:
                    raise invalid("params", f"param {k!r} was already logged with value {config[k]!r}; "
                                             f"params are write-once (got {v!r})")
                config[k] = v
            run.config = config
        if tags:
            merged = {**(meta.tags or {}), **dict(tags)}
            meta.tags = merged
            run.tags = _registry_tags(merged)
            if merged.get(RUN_NAME_TAG) and merged[RUN_NAME_TAG][:200] != run.name:
                run.name = merged[RUN_NAME_TAG][:200]
        if params or tags:
            s.commit()
            status_public = public_dict(run)
    events = metric_events(run_id, metrics)
    if events:
        _ingest(db, hub, run_id, events)
    elif status_public is not None:
        hub.publish_status(status_public)


def _ingest(db: Database, hub: LiveHub, run_id: str, events: list[Event]) -> IngestOutcome:
    try:
        return ingest_and_publish(db=db, hub=hub, run_id=run_id, events=list(events))
    except IngestError as exc:
        first = exc.errors[0]
        raise invalid("metrics", f"{'.'.join(str(x) for x in first['loc'][2:])}: {first['msg']}") from None


__all__ = ["MetricIn", "MlflowError", "create_experiment", "create_run", "get_experiment", "get_experiment_by_name",
           "get_run", "log_batch", "search_experiments", "search_runs", "update_run"]
