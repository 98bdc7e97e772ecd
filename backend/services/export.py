"""A run's data for use outside rlhfkit: its metrics as a table (CSV or Parquet) and its HTML report.

The table has the columns of the run folder's ``metrics.csv`` (what the trainer's stability monitor
exports): ``step``, then every training metric key in sorted order, one row per step, an empty
cell where a step did not log a key. Evaluation metrics (``eval/...``) arrive on their own events
and are left out, as in the folder. Values are the stored points themselves (float64, never the
downsampled series the charts get).

The report is :func:`rlhfkit.report.render_report` over the run's stored events, read into the same
:class:`~rlhfkit.runrecord.RunRecord` a run folder gives, so ``rlhfkit report RUN`` and the UI's
"Download report" button write the same file.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Literal

from sqlalchemy import select

from backend.core.db import Database
from backend.models import Artifact, EventRow, MetricSeries, metric_chunks
from backend.services.artifacts import ArtifactNotFound, artifact_file
from backend.services.points import unpack

ExportFormat = Literal["csv", "parquet"]
MEDIA_TYPES: dict[str, str] = {"csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet"}


class ExportUnavailable(RuntimeError):
    """The format needs a package this server does not have (pyarrow for Parquet)."""


NOT_EXPORTED = ("eval/", "system/")  # key prefixes metrics.csv does not hold


def metrics_table(db: Database, run_id: str) -> tuple[list[str], list[list[float | None]]]:
    """``(columns, rows)``: ``step`` and the sorted training metric keys; rows in step order. Left out,
    as in the run folder's metrics.csv: evaluations (``eval/*``) and the system sampler's series
    (``system/*``, sampled on its own clock, several per step)."""
    ch = metric_chunks.c
    table: dict[int, dict[str, float]] = {}
    with db.session() as s:
        series = [(sid, key) for sid, key in s.execute(select(MetricSeries.id, MetricSeries.key)
                                                       .where(MetricSeries.run_id == run_id)).all()
                  if not key.startswith(NOT_EXPORTED)]
        keys = sorted(k for _, k in series)
        for sid, key in series:
            steps, vals = unpack(s.execute(select(ch.steps, ch.vals).where(ch.series_id == sid)
                                           .order_by(ch.first_step)).tuples())
            for step, val in zip(steps.tolist(), vals.tolist(), strict=True):
                table.setdefault(step, {})[key] = val
    rows = [[float(step), *[table[step].get(k) for k in keys]] for step in sorted(table)]
    return ["step", *keys], rows


def to_csv(columns: list[str], rows: list[list[float | None]]) -> bytes:
    """The bytes ``csv.writer`` writes for ``metrics.csv`` (steps as integers, floats by ``repr``)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(columns)
    for row in rows:
        w.writerow([int(row[0]) if row[0] is not None else "", *["" if v is None else v for v in row[1:]]])
    return buf.getvalue().encode("utf-8")


def to_parquet(columns: list[str], rows: list[list[float | None]]) -> bytes:
    """One Parquet file: ``step`` int64, every metric float64 with nulls where a step did not log it."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - pyarrow is in the server extra
        raise ExportUnavailable("Parquet export needs pyarrow (pip install 'rlhfkit[server]')") from exc
    cols = list(zip(*rows, strict=True)) if rows else [() for _ in columns]
    arrays = [pa.array([int(v) for v in cols[0] if v is not None], type=pa.int64())]
    arrays += [pa.array(list(c), type=pa.float64()) for c in cols[1:]]
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_arrays(arrays, names=columns), buf)
    return buf.getvalue()


def export_metrics(*, db: Database, run_id: str, fmt: ExportFormat) -> bytes:
    columns, rows = metrics_table(db, run_id)
    return to_csv(columns, rows) if fmt == "csv" else to_parquet(columns, rows)


def report_html(*, db: Database, artifacts_dir: Path, run_id: str, name: str = "", status: str = "") -> str:
    """The run's self-contained HTML report (``rlhfkit report``) from its stored events and, when it
    was profiled, its profile summary and memory report artifacts."""
    from rlhfkit.report import render_report
    from rlhfkit.runrecord import record_from_events

    with db.session() as s:
        payloads = list(s.scalars(select(EventRow.payload).where(EventRow.run_id == run_id).order_by(EventRow.seq)))
        kinds = s.execute(select(Artifact.name, Artifact.kind).where(Artifact.run_id == run_id)
                          .order_by(Artifact.id.desc())).all()
    rec = record_from_events(payloads, run_id=run_id, source="the rlhfkit server")
    rec.name = rec.name or name
    rec.status = status or rec.status  # the registry's word (queued, running, worker lost...) wins
    for kind, attr in (("profile_summary", "profile_summary"), ("mem_report", "mem_report")):
        art = next((n for n, k in kinds if k == kind and n.endswith(".json")), None)
        if art is None:
            continue
        try:
            path = artifact_file(db=db, artifacts_dir=artifacts_dir, run_id=run_id, name=art)
            setattr(rec, attr, json.loads(path.read_text(encoding="utf-8")))
        except (ArtifactNotFound, OSError, ValueError):
            continue  # the report still has everything else
    return render_report(rec)


__all__ = ["MEDIA_TYPES", "ExportFormat", "ExportUnavailable", "export_metrics", "metrics_table", "report_html",
           "to_csv", "to_parquet"]
