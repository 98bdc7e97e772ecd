"""Downloads of a run for use outside rlhfkit: metrics as CSV/Parquet and the HTML report. HTTP only —
the work is in :mod:`backend.services.export`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import Response

from backend.api.deps import DbDep, RunDep, SettingsDep
from backend.services import export as export_service

router = APIRouter(prefix="/api/runs", tags=["runs"])


def _attachment(filename: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{filename}"'}


@router.get("/{run_id}/export", summary="The run's metrics as one table (the columns of its metrics.csv)",
            response_class=Response,
            responses={200: {"content": {"text/csv": {}, "application/vnd.apache.parquet": {}},
                             "description": "step, then every training metric key (sorted); one row per step"},
                       501: {"description": "Parquet needs pyarrow on the server"}})
def export_metrics(
    run: RunDep, db: DbDep,
    format: Annotated[export_service.ExportFormat, Query(description="csv or parquet")] = "csv",  # noqa: A002
) -> Response:
    try:
        body = export_service.export_metrics(db=db, run_id=run.id, fmt=format)
    except export_service.ExportUnavailable as exc:
        raise HTTPException(status.HTTP_501_NOT_IMPLEMENTED, str(exc)) from None
    return Response(body, media_type=export_service.MEDIA_TYPES[format],
                    headers=_attachment(f"{run.id}-metrics.{format}"))


@router.get("/{run_id}/report", summary="The run's self-contained HTML report (as `rlhfkit report` writes it)",
            response_class=Response, responses={200: {"content": {"text/html": {}}}})
def download_report(run: RunDep, db: DbDep, settings: SettingsDep) -> Response:
    html = export_service.report_html(db=db, artifacts_dir=settings.artifacts_dir, run_id=run.id,
                                      name=run.name, status=run.status)
    return Response(html, media_type="text/html; charset=utf-8", headers=_attachment(f"{run.id}-report.html"))
