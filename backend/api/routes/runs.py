"""Run routes: registry CRUD, ingest, metrics and the per-run resources. HTTP only — the work is
in ``backend.services``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request, status
from fastapi.responses import FileResponse
from pydantic import BeforeValidator, StringConstraints

from backend.api.deps import DbDep, ExecutorDep, HubDep, RunDep, SettingsDep
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
    OriginCheckPublic,
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
from backend.services import run_records
from backend.services import runs as run_service
from backend.services import suggestions as suggestion_service
from backend.services.ingest import ingest_and_publish
from backend.services.metrics import query_series
from backend.services.runs import MAX_OFFSET, to_public
from rlhfkit.events import INT32_MAX, NO_NUL_PATTERN, SEQ_MAX, EventType, RunSource, RunStatus


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


def _split_commas(value: Any) -> Any:
    """Accept ``?k=a&k=b`` and ``?k=a,b`` alike."""
    if isinstance(value, list):
        return [part for item in value for part in str(item).split(",")]
    return value


RunId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]  # what new_run_id makes
MetricKeys = Annotated[list[Annotated[str, StringConstraints(pattern=r"^[^,\x00]{1,200}$")]] | None,
                       BeforeValidator(_split_commas),
                       Query(description="Metric keys (repeat or comma-separate); default all")]
EventTypes = Annotated[list[EventType] | None, BeforeValidator(_split_commas),
                       Query(description="Only these event types (repeat or comma-separate)")]
Statuses = Annotated[list[RunStatus] | None, BeforeValidator(_split_commas),
                     Query(alias="status", description="Only runs in these states (repeat or comma-separate)")]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=RunPublic,
             summary="Submit a run (preset and/or config + overrides)")
def create_run(body: RunCreate, db: DbDep, executor: ExecutorDep, hub: HubDep, settings: SettingsDep) -> RunPublic:
    run = run_service.create_run(db=db, executor=executor, hub=hub, body=body, default_queue=settings.queue)
    return to_public(run)


@router.get("", response_model=RunsPublic, summary="List runs (filters, sort, cursor pagination)")
def list_runs(
    db: DbDep,
    status_: Statuses = None,
    tag: Annotated[str | None, Query(max_length=200, pattern=NO_NUL_PATTERN)] = None,
    source: RunSource | None = None,
    q: Annotated[str | None, Query(max_length=200, pattern=NO_NUL_PATTERN, description="Substring of name or id")] = None,
    sort: SortKey = "-created_at",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[int | None, Query(ge=0, le=MAX_OFFSET, description="next_cursor of the previous page")] = None,
) -> RunsPublic:
    rows, total, nxt = run_service.list_runs(db=db, status=status_ or None, tag=tag, source=source, q=q, sort=sort,
                                             limit=limit, cursor=cursor)
    return RunsPublic(data=[to_public(r) for r in rows], count=total, next_cursor=nxt)


@router.post("/external", status_code=status.HTTP_201_CREATED, response_model=RunPublic,
             summary="Register a run that executes elsewhere (TRL, OpenRLHF, scripts)")
def create_external_run(body: ExternalRunCreate, db: DbDep, hub: HubDep) -> RunPublic:
    return to_public(run_service.create_external_run(db=db, hub=hub, body=body))


@router.get("/compare", response_model=ComparePublic, summary="Metrics of several runs side by side")
def compare_runs(
    db: DbDep,
    ids: Annotated[list[RunId], BeforeValidator(_split_commas),
                   Query(min_length=1, max_length=20, description="1 to 20 run ids (repeat or comma-separate)")],
    keys: MetricKeys = None,
    max_points: MaxPoints = 1000,
) -> ComparePublic:
    out = []
    for rid in ids:
        try:
            run = run_service.get_run(db=db, run_id=rid)
        except LookupError:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"run {rid!r} not found") from None
        out.append(CompareRun(run=to_public(run), series=query_series(db, rid, keys or None, max_points=max_points)))
    return ComparePublic(runs=out)


@router.get("/{run_id}", response_model=RunPublic)
def read_run(run: RunDep) -> RunPublic:
    return to_public(run)


@router.post("/{run_id}/cancel", response_model=RunPublic,
             summary="Cancel: queued runs at once, running ones after the current step",
             responses={409: {"description": "The run has already finished"}})
def cancel_run(run: RunDep, db: DbDep, executor: ExecutorDep, hub: HubDep) -> RunPublic:
    return to_public(run_service.request_cancel(db=db, executor=executor, hub=hub, run_id=run.id))


@router.delete("/{run_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a finished run and its data",
               responses={409: {"description": "The run is queued or running (cancel it first)"}})
def delete_run(run: RunDep, db: DbDep, settings: SettingsDep) -> None:
    run_service.delete_run(db=db, artifacts_dir=settings.artifacts_dir, run_id=run.id)


@router.post("/{run_id}/rerun", status_code=status.HTTP_201_CREATED, response_model=RunPublic,
             summary="Submit a new run with the same config (optional overrides)",
             responses={409: {"description": "The run executed elsewhere (TRL, OpenRLHF, ...): only native runs "
                                             "can be re-run"}})
def rerun_run(run: RunDep, db: DbDep, executor: ExecutorDep, hub: HubDep, settings: SettingsDep,
              body: Annotated[RunRerun | None, Body()] = None) -> RunPublic:
    new = run_service.rerun(db=db, executor=executor, hub=hub, run_id=run.id, body=body or RunRerun(),
                            default_queue=settings.queue)
    return to_public(new)


@router.post("/{run_id}/events", response_model=IngestResult, summary="Ingest events (idempotent on seq)")
def post_events(run: RunDep, body: EventsIngest, db: DbDep, hub: HubDep) -> IngestResult:
    outcome = ingest_and_publish(db=db, hub=hub, run_id=run.id, events=body.events)
    return IngestResult(accepted=len(outcome.accepted), duplicates=outcome.duplicates,
                        conflicting_seqs=outcome.conflicts, last_seq=outcome.last_seq)


@router.get("/{run_id}/events", response_model=EventsPage, summary="Stored events with seq > after (polling replay)")
def get_events(
    run: RunDep, db: DbDep,
    after: Annotated[int, Query(ge=-1, le=SEQ_MAX, description="Cursor: the last seq you have")] = -1,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    types: EventTypes = None,
) -> EventsPage:
    events = run_records.events_after(db=db, run_id=run.id, after=after, limit=limit, types=types or None)
    return EventsPage(events=events, next_cursor=events[-1]["seq"] if events else after, status=run.status)  # type: ignore[arg-type]


@router.get("/{run_id}/metrics", response_model=MetricsPublic, summary="Metric series, downsampled keeping min/max")
def get_metrics(
    run: RunDep, db: DbDep,
    keys: MetricKeys = None,
    max_points: MaxPoints = 1000,
    start: Annotated[int | None, Query(ge=0, le=INT32_MAX, description="First step (inclusive)")] = None,
    end: Annotated[int | None, Query(ge=0, le=INT32_MAX, description="Last step (inclusive)")] = None,
) -> MetricsPublic:
    return MetricsPublic(run_id=run.id, series=query_series(db, run.id, keys or None, max_points=max_points,
                                                           start=start, end=end))


Limit = Annotated[int, Query(ge=1, le=100_000)]


@router.get("/{run_id}/timings", response_model=list[TimingPublic], summary="Per-step stage timings (seconds)")
def get_timings(run: RunDep, db: DbDep, limit: Limit = 10_000) -> list[TimingPublic]:
    return run_records.timings(db=db, run_id=run.id, limit=limit)


@router.get("/{run_id}/memory", response_model=list[MemoryPublic], summary="Per-step memory snapshots (MB)")
def get_memory(run: RunDep, db: DbDep, limit: Limit = 10_000) -> list[MemoryPublic]:
    return run_records.memory(db=db, run_id=run.id, limit=limit)


@router.get("/{run_id}/alerts", response_model=list[AlertPublic], summary="Stability alerts")
def get_alerts(run: RunDep, db: DbDep, limit: Limit = 10_000) -> list[AlertPublic]:
    return run_records.alerts(db=db, run_id=run.id, limit=limit)


@router.get("/{run_id}/samples", response_model=list[SamplePublic], summary="Eval prompt/response samples")
def get_samples(run: RunDep, db: DbDep, limit: Limit = 1000) -> list[SamplePublic]:
    return run_records.samples(db=db, run_id=run.id, limit=limit)


@router.get("/{run_id}/suggestions", response_model=SuggestionsPublic,
            summary="Config suggestions: predicted peak memory and throughput within a budget",
            responses={409: {"description": "The run's config is not an rlhfkit RunConfig (external runs)"}})
def get_suggestions(
    run: RunDep, db: DbDep,
    budget_gb: Annotated[float | None, Query(gt=0, le=4096, description="Memory budget in GiB (default: 4 on CPU "
                                             "runs; on CUDA runs the GPU's memory when recorded, else 16)")] = None,
    device: Annotated[Literal["cpu", "cuda"] | None, Query(description="Default: the run's device")] = None,
    top: Annotated[int, Query(ge=1, le=50, description="How many candidates, best first")] = 5,
) -> SuggestionsPublic:
    # a sync route: FastAPI runs it in its threadpool, so the 1-4 s search does not block the event loop
    return suggestion_service.suggest_for_run(db=db, run=run, budget_gb=budget_gb, device=device, top=top)


@router.get("/{run_id}/origin", response_model=OriginCheckPublic,
            summary="For a run launched from a config suggestion: predicted vs measured peak memory and tokens/s",
            responses={404: {"description": "The run was not launched from a suggestion"}})
def get_origin(run: RunDep, db: DbDep) -> OriginCheckPublic:
    check = suggestion_service.origin_check(db=db, run=run)
    if check is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"run {run.id} was not launched from a config suggestion")
    return check


@router.get("/{run_id}/artifacts", response_model=list[ArtifactPublic],
            summary="Every file of the run: config, events, metrics and alerts CSV, profiles, traces, checkpoints")
def get_artifacts(run: RunDep, db: DbDep, settings: SettingsDep) -> list[ArtifactPublic]:
    return artifact_service.list_artifacts(db=db, artifacts_dir=settings.artifacts_dir, run_id=run.id)


@router.get("/{run_id}/artifacts/{name:path}", summary="Download an artifact",
            responses={200: {"content": {"application/octet-stream": {}}}, 404: {"description": "Unknown artifact"}})
def download_artifact(run: RunDep, name: Annotated[str, Path(pattern=NO_NUL_PATTERN)], db: DbDep,
                      settings: SettingsDep) -> FileResponse:
    path = artifact_service.artifact_file(db=db, artifacts_dir=settings.artifacts_dir, run_id=run.id, name=name)
    return FileResponse(path, filename=path.name)


@router.get("/{run_id}/profile", response_model=ProfilePublic, response_model_by_alias=True,
            summary="The profiler's per-stage summary, top operators and bottleneck report",
            responses={404: {"description": "Unknown run, or the run was not profiled"}})
def get_profile(run: RunDep, db: DbDep, settings: SettingsDep) -> ProfilePublic:
    return artifact_service.profile_report(db=db, artifacts_dir=settings.artifacts_dir, run_id=run.id)


@router.get("/{run_id}/memory/estimate", response_model=MemoryEstimatePublic,
            summary="Predicted memory per model and stage (analytic model) for the run's config",
            responses={409: {"description": "The run's config is not an rlhfkit RunConfig (external runs)"}})
def get_memory_estimate(
    run: RunDep, db: DbDep,
    device: Annotated[Literal["cpu", "cuda"] | None, Query(description="Default: the run's device")] = None,
) -> MemoryEstimatePublic:
    return suggestion_service.memory_estimate(db=db, run=run, device=device)
