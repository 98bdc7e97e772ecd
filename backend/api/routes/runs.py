"""Run routes: registry CRUD, ingest, metrics and the per-run resources. HTTP only — the work is
in ``backend.services``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, status
from fastapi.responses import FileResponse
from sqlalchemy import select

from backend.api.deps import RunDep, ServicesDep
from backend.models import Alert, EvalSample, EventRow, MemorySnapshot, StageTiming
from backend.schemas import (
    AlertPublic,
    ArtifactPublic,
    ComparePublic,
    CompareRun,
    EventsIngest,
    EventsPage,
    ExternalRunCreate,
    IngestResult,
    MemoryEstimatePublic,
    MemoryPublic,
    MetricsPublic,
    ProfilePublic,
    RunCreate,
    RunPublic,
    RunRerun,
    RunsPublic,
    SamplePublic,
    SuggestionsPublic,
    TimingPublic,
)
from backend.services import artifacts as artifact_service
from backend.services import runs as run_service
from backend.services import suggestions as suggestion_service
from backend.services.ingest import ingest_events
from backend.services.metrics import query_series
from backend.services.runs import public_dict, to_public
from rlhfkit.events import INT32_MAX, RUN_STATUSES, SEQ_MAX, RunSource


def no_nul_in_params(request: Request) -> None:
    """422 for a NUL character in a path or query parameter (PostgreSQL cannot compare text with one)."""
    bad = [["path", k] for k, v in request.path_params.items() if isinstance(v, str) and "\x00" in v]
    bad += [["query", k] for k, v in request.query_params.multi_items() if "\x00" in v]
    if bad:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [
            {"loc": loc, "msg": "must not contain NUL (\\u0000) characters", "type": "value_error"} for loc in bad])


router = APIRouter(prefix="/api/runs", tags=["runs"], dependencies=[Depends(no_nul_in_params)])

SortKey = Literal["created_at", "-created_at", "name", "-name", "status", "-status"]
MaxPoints = Annotated[int, Query(ge=2, le=100_000, description="Downsample above this many points per key")]


def _keys(keys: list[str] | None) -> list[str] | None:
    """Accept ?keys=a&keys=b and ?keys=a,b."""
    if not keys:
        return None
    out = [k.strip() for item in keys for k in item.split(",") if k.strip()]
    return out or None


@router.post("", status_code=status.HTTP_201_CREATED, response_model=RunPublic,
             summary="Submit a run (preset and/or config + overrides)")
def create_run(body: RunCreate, services: ServicesDep) -> RunPublic:
    run = run_service.create_run(db=services.db, executor=services.executor, hub=services.hub, body=body,
                                 default_queue=services.settings.queue)
    return to_public(run)


@router.get("", response_model=RunsPublic, summary="List runs (filters, sort, cursor pagination)")
def list_runs(
    services: ServicesDep,
    status_: Annotated[list[str] | None, Query(alias="status", description="queued, running, succeeded, failed, "
                                                "cancelled (repeat or comma-separate)")] = None,
    tag: Annotated[str | None, Query(max_length=200)] = None,
    source: RunSource | None = None,
    q: Annotated[str | None, Query(max_length=200, description="Substring of name or id")] = None,
    sort: SortKey = "-created_at",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> RunsPublic:
    statuses = _keys(status_)
    bad = [x for x in statuses or [] if x not in RUN_STATUSES]
    if bad:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [{
            "loc": ["query", "status"], "msg": f"unknown status {bad[0]!r}; allowed: {', '.join(RUN_STATUSES)}",
            "type": "literal_error"}])
    try:
        rows, total, nxt = run_service.list_runs(db=services.db, status=statuses, tag=tag,
                                                 source=source, q=q, sort=sort, limit=limit, cursor=cursor)
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            [{"loc": ["query", "cursor"], "msg": str(exc), "type": "value_error"}]) from None
    return RunsPublic(data=[to_public(r) for r in rows], count=total, next_cursor=nxt)


@router.post("/external", status_code=status.HTTP_201_CREATED, response_model=RunPublic,
             summary="Register a run that executes elsewhere (TRL, OpenRLHF, scripts)")
def create_external_run(body: ExternalRunCreate, services: ServicesDep) -> RunPublic:
    return to_public(run_service.create_external_run(db=services.db, hub=services.hub, body=body))


@router.get("/compare", response_model=ComparePublic, summary="Metrics of several runs side by side")
def compare_runs(
    services: ServicesDep,
    ids: Annotated[list[str], Query(description="Run ids (repeat or comma-separate)")],
    keys: Annotated[list[str] | None, Query(description="Metric keys (repeat or comma-separate)")] = None,
    max_points: MaxPoints = 1000,
) -> ComparePublic:
    run_ids = _keys(ids) or []
    if not run_ids or len(run_ids) > 20:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            [{"loc": ["query", "ids"], "msg": "give 1 to 20 run ids", "type": "value_error"}])
    out = []
    for rid in run_ids:
        try:
            run = run_service.get_run(db=services.db, run_id=rid)
        except LookupError:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"run {rid!r} not found") from None
        out.append(CompareRun(run=to_public(run), series=query_series(services.db, rid, _keys(keys), max_points=max_points)))
    return ComparePublic(runs=out)


@router.get("/{run_id}", response_model=RunPublic)
def read_run(run: RunDep) -> RunPublic:
    return to_public(run)


@router.post("/{run_id}/cancel", response_model=RunPublic,
             summary="Cancel: queued runs at once, running ones after the current step")
def cancel_run(run: RunDep, services: ServicesDep) -> RunPublic:
    return to_public(run_service.request_cancel(db=services.db, executor=services.executor, hub=services.hub,
                                                run_id=run.id))


@router.delete("/{run_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a finished run and its data")
def delete_run(run: RunDep, services: ServicesDep) -> None:
    run_service.delete_run(db=services.db, artifacts_dir=services.settings.artifacts_dir, run_id=run.id)


@router.post("/{run_id}/rerun", status_code=status.HTTP_201_CREATED, response_model=RunPublic,
             summary="Submit a new run with the same config (optional overrides)")
def rerun_run(run: RunDep, services: ServicesDep, body: Annotated[RunRerun | None, Body()] = None) -> RunPublic:
    new = run_service.rerun(db=services.db, executor=services.executor, hub=services.hub, run_id=run.id,
                            body=body or RunRerun(), default_queue=services.settings.queue)
    return to_public(new)


@router.post("/{run_id}/events", response_model=IngestResult, summary="Ingest events (idempotent on seq)")
def post_events(run: RunDep, body: EventsIngest, services: ServicesDep) -> IngestResult:
    outcome = ingest_events(services.db, run.id, body.events)
    services.hub.publish_events(run.id, outcome.accepted)
    if outcome.status_changed and outcome.run is not None:
        services.hub.publish_status(public_dict(outcome.run))
    return IngestResult(accepted=len(outcome.accepted), duplicates=outcome.duplicates,
                        conflicting_seqs=outcome.conflicts, last_seq=outcome.last_seq)


@router.get("/{run_id}/events", response_model=EventsPage, summary="Stored events with seq > after (polling replay)")
def get_events(
    run: RunDep, services: ServicesDep,
    after: Annotated[int, Query(ge=-1, le=SEQ_MAX, description="Cursor: the last seq you have")] = -1,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    types: Annotated[list[str] | None, Query(description="Only these event types")] = None,
) -> EventsPage:
    with services.db.session() as s:
        stmt = select(EventRow.payload, EventRow.seq).where(EventRow.run_id == run.id, EventRow.seq > after)
        wanted = _keys(types)
        if wanted:
            stmt = stmt.where(EventRow.type.in_(wanted))
        rows = s.execute(stmt.order_by(EventRow.seq).limit(limit)).all()
    return EventsPage(events=[r[0] for r in rows], next_cursor=rows[-1][1] if rows else after, status=run.status)  # type: ignore[arg-type]


@router.get("/{run_id}/metrics", response_model=MetricsPublic, summary="Metric series, downsampled keeping min/max")
def get_metrics(
    run: RunDep, services: ServicesDep,
    keys: Annotated[list[str] | None, Query(description="Metric keys (repeat or comma-separate); default all")] = None,
    max_points: MaxPoints = 1000,
    start: Annotated[int | None, Query(ge=0, le=INT32_MAX, description="First step (inclusive)")] = None,
    end: Annotated[int | None, Query(ge=0, le=INT32_MAX, description="Last step (inclusive)")] = None,
) -> MetricsPublic:
    return MetricsPublic(run_id=run.id, series=query_series(services.db, run.id, _keys(keys), max_points=max_points,
                                                           start=start, end=end))


def _rows(services: ServicesDep, model: Any, run_id: str, limit: int) -> list[Any]:
    with services.db.session() as s:
        return list(s.scalars(select(model).where(model.run_id == run_id).order_by(model.step, model.id).limit(limit)))


Limit = Annotated[int, Query(ge=1, le=100_000)]


@router.get("/{run_id}/timings", response_model=list[TimingPublic], summary="Per-step stage timings (seconds)")
def get_timings(run: RunDep, services: ServicesDep, limit: Limit = 10_000) -> list[TimingPublic]:
    return [TimingPublic.model_validate(r, from_attributes=True) for r in _rows(services, StageTiming, run.id, limit)]


@router.get("/{run_id}/memory", response_model=list[MemoryPublic], summary="Per-step memory snapshots (MB)")
def get_memory(run: RunDep, services: ServicesDep, limit: Limit = 10_000) -> list[MemoryPublic]:
    return [MemoryPublic.model_validate(r, from_attributes=True) for r in _rows(services, MemorySnapshot, run.id, limit)]


@router.get("/{run_id}/alerts", response_model=list[AlertPublic], summary="Stability alerts")
def get_alerts(run: RunDep, services: ServicesDep, limit: Limit = 10_000) -> list[AlertPublic]:
    return [AlertPublic.model_validate(r, from_attributes=True) for r in _rows(services, Alert, run.id, limit)]


@router.get("/{run_id}/samples", response_model=list[SamplePublic], summary="Eval prompt/response samples")
def get_samples(run: RunDep, services: ServicesDep, limit: Limit = 1000) -> list[SamplePublic]:
    return [SamplePublic.model_validate(r, from_attributes=True) for r in _rows(services, EvalSample, run.id, limit)]


@router.get("/{run_id}/suggestions", response_model=SuggestionsPublic,
            summary="Config suggestions: predicted peak memory and throughput within a budget",
            responses={409: {"description": "The run's config is not an rlhfkit RunConfig (external runs)"}})
def get_suggestions(
    run: RunDep, services: ServicesDep,
    budget_gb: Annotated[float | None, Query(gt=0, le=4096, description="Memory budget in GiB (default: 4 on CPU "
                                             "runs; on CUDA runs the GPU's memory when recorded, else 16)")] = None,
    device: Annotated[Literal["cpu", "cuda"] | None, Query(description="Default: the run's device")] = None,
    top: Annotated[int, Query(ge=1, le=50, description="How many candidates, best first")] = 5,
) -> SuggestionsPublic:
    # a sync route: FastAPI runs it in its threadpool, so the 1-4 s search does not block the event loop
    return suggestion_service.suggest_for_run(db=services.db, run=run, budget_gb=budget_gb, device=device, top=top)


@router.get("/{run_id}/artifacts", response_model=list[ArtifactPublic],
            summary="Every file of the run: config, events, metrics and alerts CSV, profiles, traces, checkpoints")
def get_artifacts(run: RunDep, services: ServicesDep) -> list[ArtifactPublic]:
    return artifact_service.list_artifacts(db=services.db, artifacts_dir=services.settings.artifacts_dir, run_id=run.id)


@router.get("/{run_id}/artifacts/{name:path}", summary="Download an artifact",
            responses={200: {"content": {"application/octet-stream": {}}}, 404: {"description": "Unknown artifact"}})
def download_artifact(run: RunDep, name: str, services: ServicesDep) -> FileResponse:
    path = artifact_service.artifact_file(db=services.db, artifacts_dir=services.settings.artifacts_dir,
                                         run_id=run.id, name=name)
    return FileResponse(path, filename=path.name)


@router.get("/{run_id}/profile", response_model=ProfilePublic, response_model_by_alias=True,
            summary="The profiler's per-stage summary, top operators and bottleneck report",
            responses={404: {"description": "Unknown run, or the run was not profiled"}})
def get_profile(run: RunDep, services: ServicesDep) -> ProfilePublic:
    return artifact_service.profile_report(db=services.db, artifacts_dir=services.settings.artifacts_dir,
                                          run_id=run.id)


@router.get("/{run_id}/memory/estimate", response_model=MemoryEstimatePublic,
            summary="Predicted memory per model and stage (analytic model) for the run's config",
            responses={409: {"description": "The run's config is not an rlhfkit RunConfig (external runs)"}})
def get_memory_estimate(
    run: RunDep, services: ServicesDep,
    device: Annotated[Literal["cpu", "cuda"] | None, Query(description="Default: the run's device")] = None,
) -> MemoryEstimatePublic:
    return suggestion_service.memory_estimate(db=services.db, run=run, device=device)
