"""Run registry operations: create, list, read, cancel, delete, re-run, register external runs.

Keyword-only functions with typed returns; HTTP status codes live in the routes, which map the
exceptions defined here.
"""

from __future__ import annotations

import copy
import re
import shutil
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import and_, delete, func, or_, select, text
from sqlalchemy.orm import Session

from backend.core.db import Database
from backend.core.registry import WORKER_LOST, set_status
from backend.models import Artifact, Run
from backend.schemas import ExternalRunCreate, RunCreate, RunPublic, RunRerun
from backend.services.bulk_write import forget_run
from rlhfkit.config import RunConfig, apply_overrides, preset_data, total_steps, validate_config
from rlhfkit.events import ACTIVE_STATUSES, TERMINAL_STATUSES, new_run_id


class Conflict(RuntimeError):
    """The operation is not allowed in the run's current state (409)."""


class RunNotFound(LookupError):
    """No run with this id (404)."""


class Executor(Protocol):
    """Where native runs execute: local processes (embedded) or Celery workers."""

    mode: str

    def submit(self, run: Run) -> None: ...

    def cancel(self, run: Run) -> None: ...


class StatusPublisher(Protocol):
    def publish_status(self, run: dict[str, Any]) -> None: ...


def to_public(run: Run) -> RunPublic:
    return RunPublic.model_validate(run, from_attributes=True)


def public_dict(run: Run) -> dict[str, Any]:
    return to_public(run).model_dump(mode="json")


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def build_config(*, preset: str | None, config: dict[str, Any] | None, overrides: dict[str, Any],
                 name: str | None = None, tags: list[str] | None = None) -> RunConfig:
    """Preset, then config on top, then dotted overrides, then name/tags; raises ConfigError."""
    data = preset_data(preset) if preset else {}
    if config:
        data = _deep_merge(data, config)
    if overrides:
        data = apply_overrides(data, overrides)
    if name is not None:
        data["name"] = name
    if tags is not None:
        data["tags"] = list(tags)
    return validate_config(data)


def create_run(*, db: Database, executor: Executor, hub: StatusPublisher, body: RunCreate,
               default_queue: str, parent_id: str | None = None) -> Run:
    cfg = build_config(preset=body.preset, config=body.config, overrides=body.overrides, name=body.name, tags=body.tags)
    return _insert_native(db=db, executor=executor, hub=hub, cfg=cfg, queue=body.queue or default_queue,
                          parent_id=parent_id, origin=body.origin.model_dump() if body.origin else None)


def _insert_native(*, db: Database, executor: Executor, hub: StatusPublisher, cfg: RunConfig, queue: str,
                   parent_id: str | None, origin: dict[str, Any] | None = None) -> Run:
    run_id = new_run_id()
    run = Run(id=run_id, name=cfg.name, status="queued", source="native", config=cfg.model_dump(mode="json"),
              seed=cfg.seed, tags=list(cfg.tags), total_steps=total_steps(cfg), queue=queue, task_id=run_id,
              versions={}, latest={}, last_seq=-1, cancel_requested=False, parent_id=parent_id,
              origin=origin, created_at=datetime.now(timezone.utc))
    with db.session() as session:
        session.add(run)
        session.commit()
    # "queued" goes out before the submit: an executor that starts the run at once publishes
    # "running" from its own thread, and viewers must see the two in that order
    hub.publish_status(public_dict(run))
    executor.submit(run)  # enqueue only after the commit, so the worker finds the row
    return run


def rerun(*, db: Database, executor: Executor, hub: StatusPublisher, run_id: str, body: RunRerun,
          default_queue: str) -> Run:
    src = get_run(db=db, run_id=run_id)
    if src.source != "native":
        raise Conflict(f"run {run_id} came from {src.source}; only native runs can be re-run here")
    name = body.name or _rerun_name(db=db, name=src.name)
    cfg = build_config(preset=None, config=src.config, overrides=body.overrides, name=name)
    return _insert_native(db=db, executor=executor, hub=hub, cfg=cfg, queue=body.queue or src.queue or default_queue,
                          parent_id=src.id)


_RERUN_SUFFIX = re.compile(r" \(rerun (\d+)\)$")


def _rerun_name(*, db: Database, name: str) -> str:
    """``<name> (rerun N)``: N one past the highest rerun of the same base name (a rerun of a rerun
    continues the series), so runs in the list tell themselves apart."""
    base = _RERUN_SUFFIX.sub("", name)
    prefix = f"{base} (rerun "
    with db.session() as s:
        names = s.scalars(select(Run.name).where(Run.name.startswith(prefix, autoescape=True)))
        taken = [int(m.group(1)) for n in names if n[len(base):] and (m := _RERUN_SUFFIX.fullmatch(n[len(base):]))]
    suffix = f" (rerun {max(taken, default=0) + 1})"
    return base[: 200 - len(suffix)] + suffix


def create_external_run(*, db: Database, hub: StatusPublisher, body: ExternalRunCreate) -> Run:
    now = datetime.now(timezone.utc)
    run = Run(id=new_run_id(), name=body.name, status="running", source=body.source, config=body.config,
              seed=body.seed, tags=list(body.tags), total_steps=body.total_steps, versions={}, latest={},
              last_seq=-1, cancel_requested=False, created_at=now, started_at=now, worker="external")
    with db.session() as session:
        session.add(run)
        session.commit()
    hub.publish_status(public_dict(run))
    return run


def get_run(*, db: Database, run_id: str, session: Session | None = None) -> Run:
    if session is not None:
        run = session.get(Run, run_id)
    else:
        with db.session() as s:
            run = s.get(Run, run_id)
    if run is None:
        raise RunNotFound(run_id)
    return run


SORTS: dict[str, tuple[Any, Any]] = {
    "created_at": (Run.created_at.asc(), Run.id.asc()),
    "-created_at": (Run.created_at.desc(), Run.id.desc()),
    "name": (Run.name.asc(), Run.id.asc()),
    "-name": (Run.name.desc(), Run.id.desc()),
    "status": (Run.status.asc(), Run.created_at.desc()),
    "-status": (Run.status.desc(), Run.created_at.desc()),
}


MAX_OFFSET = 2**31 - 1  # the largest cursor (an offset into the sorted list) the databases' OFFSET takes


def list_runs(*, db: Database, status: Sequence[str] | None = None, tag: str | None = None, source: str | None = None,
              q: str | None = None, sort: str = "-created_at", limit: int = 50,
              cursor: int | None = None) -> tuple[list[Run], int, int | None]:
    """A page of runs: the rows, how many match, and the cursor of the next page (None at the end).
    The cursor is the offset of the page's first row in the sorted list."""
    offset = cursor or 0
    conds: list[Any] = []
    if status:
        conds.append(Run.status.in_(status))
    if source:
        conds.append(Run.source == source)
    if q:  # a substring: LIKE's wildcards in it match themselves
        pat = "%" + q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        conds.append(or_(func.lower(Run.name).like(pat, escape="\\"), Run.id.like(pat, escape="\\")))
    with db.session() as session:
        if tag:
            if db.is_postgres:
                conds.append(text("runs.tags @> CAST(:tagjson AS jsonb)").bindparams(tagjson=f'["{_json_escape(tag)}"]'))
            else:
                conds.append(text("EXISTS (SELECT 1 FROM json_each(runs.tags) WHERE json_each.value = :tag)")
                             .bindparams(tag=tag))
        where = and_(*conds) if conds else None
        stmt = select(Run)
        count_stmt = select(func.count()).select_from(Run)
        if where is not None:
            stmt = stmt.where(where)
            count_stmt = count_stmt.where(where)
        total = int(session.scalar(count_stmt) or 0)
        rows = list(session.scalars(stmt.order_by(*SORTS[sort]).offset(offset).limit(limit)))
    nxt = offset + limit if offset + limit < total and offset + limit <= MAX_OFFSET else None
    return rows, total, nxt


def _json_escape(s: str) -> str:
    import json

    return json.dumps(s)[1:-1]


def request_cancel(*, db: Database, executor: Executor, hub: StatusPublisher, run_id: str) -> Run:
    """Queued: cancelled at once (and revoked). Running: stop requested; the run ends ``cancelled``
    after its current step. Finished runs: 409."""
    run = get_run(db=db, run_id=run_id)
    if run.status in TERMINAL_STATUSES:
        raise Conflict(f"run {run_id} already {run.status}")
    if run.status == "queued":
        changed = set_status(db, run_id, "cancelled", only_from=("queued",), cancel_requested=True,
                             summary={"status": "cancelled", "reason": "cancelled while queued"})
        if changed is not None:
            executor.cancel(changed)
            hub.publish_status(public_dict(changed))
            return changed
        run = get_run(db=db, run_id=run_id)  # it started meanwhile: fall through to a running cancel
    if run.source != "native":
        changed = set_status(db, run_id, "cancelled", only_from=ACTIVE_STATUSES, cancel_requested=True)
        run = changed or get_run(db=db, run_id=run_id)
        hub.publish_status(public_dict(run))
        return run
    with db.session() as session:
        r = session.get(Run, run_id)
        assert r is not None
        r.cancel_requested = True
        session.commit()
        run = r
    executor.cancel(run)
    hub.publish_status(public_dict(run))
    return run


def delete_run(*, db: Database, artifacts_dir: Path, run_id: str) -> None:
    run = get_run(db=db, run_id=run_id)
    if run.status in ACTIVE_STATUSES:
        raise Conflict(f"run {run_id} is {run.status}; cancel it first")
    with db.session() as session:
        # explicit deletes: SQLite enforces ON DELETE CASCADE only with the pragma, keep it obvious
        from backend.models import (
            Alert,
            EvalSample,
            EventRow,
            MemorySnapshot,
            MetricSeries,
            MlflowRun,
            StageTiming,
            metric_chunks,
            metric_rollups,
        )

        series = select(MetricSeries.id).where(MetricSeries.run_id == run_id).scalar_subquery()
        session.execute(delete(metric_chunks).where(metric_chunks.c.series_id.in_(series)))
        session.execute(delete(metric_rollups).where(metric_rollups.c.series_id.in_(series)))
        for model in (MetricSeries, EventRow, StageTiming, MemorySnapshot, Alert, EvalSample, Artifact, MlflowRun):
            session.execute(delete(model).where(model.run_id == run_id))  # type: ignore[attr-defined]
        session.execute(delete(Run).where(Run.id == run_id))
        session.commit()
    forget_run(run_id)
    run_dir = artifacts_dir / run_id
    if run_dir.is_dir() and run_dir.resolve().parent == artifacts_dir.resolve():
        shutil.rmtree(run_dir, ignore_errors=True)


def native_runs(*, db: Database, status: str) -> list[Run]:
    """Runs this service executes (not external ones) in ``status``, oldest first: what the reaper
    checks and what an embedded server resumes or fails at start."""
    with db.session() as session:
        return list(session.scalars(select(Run).where(Run.status == status, Run.source == "native")
                                    .order_by(Run.created_at)))


def runs_presumed_lost(*, db: Database, since: datetime) -> list[str]:
    """Ids of native runs the reaper failed as "worker lost" since ``since``: watched for a late
    heartbeat, which proves the worker was alive through an outage."""
    with db.session() as session:
        return list(session.scalars(select(Run.id).where(
            Run.status == "failed", Run.source == "native", Run.error.startswith(WORKER_LOST),
            Run.finished_at >= since)))
