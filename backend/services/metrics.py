"""Metric queries with server-side downsampling that keeps spikes.

Below ``max_points`` the raw points come back. Above it, the step range is cut into
``max_points`` equal buckets and each bucket reports its first step, mean, min and max — and the
steps where the min and the max occurred — so a one-step reward collapse still shows, at its exact
step, when a million points are reduced to a thousand.

Where the data comes from: over a whole series, the per-series rollups maintained at ingest
(buckets of 100 or 10,000 steps: ~10,000 rows for a million points) are merged in Python; for a
``start``/``end`` window, or a series too short for rollups, the raw points of the window are
reduced (in Python up to ``PY_REDUCE_LIMIT`` points, otherwise by one SQL ``GROUP BY`` that gives
min/max values without their steps).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from backend.core.db import Database
from backend.models import ROLLUP_WIDTHS, MetricSeries, metric_points, metric_rollups
from backend.schemas import Series
from rlhfkit.metrics import METRICS

PY_REDUCE_LIMIT = 300_000
MIN_ROLLUP_ROWS_PER_POINT = 4  # use a rollup width only if it leaves >= 4 rollup rows per output point


def run_keys(db: Database, run_id: str) -> list[str]:
    with db.session() as s:
        return sorted(s.scalars(select(MetricSeries.key).where(MetricSeries.run_id == run_id)))


def query_series(db: Database, run_id: str, keys: list[str] | None, *, max_points: int = 1000,
                 start: int | None = None, end: int | None = None) -> dict[str, Series]:
    keys = keys or run_keys(db, run_id)
    return {k: _series(db, run_id, k, max_points=max_points, start=start, end=end) for k in keys}


class _Buckets:
    """Merge (first_step, n, sum, min, min_step, max, max_step) records into equal step buckets."""

    def __init__(self, lo: int, hi: int, n_buckets: int) -> None:
        self.lo, self.span, self.nb = lo, hi - lo + 1, n_buckets
        self.acc: dict[int, list[Any]] = {}

    def add(self, first: int, n: int, total: float, vmin: float, smin: int, vmax: float, smax: int) -> None:
        b = (first - self.lo) * self.nb // self.span
        a = self.acc.get(b)
        if a is None:
            self.acc[b] = [first, n, total, vmin, smin, vmax, smax]
            return
        if first < a[0]:
            a[0] = first
        a[1] += n
        a[2] += total
        if vmin < a[3]:
            a[3], a[4] = vmin, smin
        if vmax > a[5]:
            a[5], a[6] = vmax, smax

    def series(self, key: str, total_points: int, unit: str | None) -> Series:
        rows = [self.acc[b] for b in sorted(self.acc)]
        return Series(key=key, steps=[r[0] for r in rows], values=[r[2] / r[1] for r in rows],
                      min=[r[3] for r in rows], min_step=[r[4] for r in rows],
                      max=[r[5] for r in rows], max_step=[r[6] for r in rows],
                      total_points=total_points, downsampled=True, unit=unit)


def _series(db: Database, run_id: str, key: str, *, max_points: int, start: int | None, end: int | None) -> Series:
    spec = METRICS.get(key)
    unit = spec.unit if spec else None
    empty = Series(key=key, steps=[], values=[], total_points=0, downsampled=False, unit=unit)
    pts, ru = metric_points.c, metric_rollups.c
    with db.session() as s:
        sid = s.scalar(select(MetricSeries.id).where(MetricSeries.run_id == run_id, MetricSeries.key == key))
        if sid is None:
            return empty
        if start is None and end is None:
            # the narrowest rollup gives the exact count and step range without touching the points
            n, lo = s.execute(select(func.sum(ru.n), func.min(ru.first_step))
                              .where(ru.series_id == sid, ru.width == ROLLUP_WIDTHS[0])).one()
            n = int(n or 0)
            if n == 0:
                return empty
            if n > max_points:
                hi = s.scalar(select(func.max(pts.step)).where(pts.series_id == sid))
                span = int(hi) - int(lo) + 1
                for w in reversed(ROLLUP_WIDTHS):
                    if span // w >= max_points * MIN_ROLLUP_ROWS_PER_POINT:
                        acc = _Buckets(int(lo), int(hi), max_points)
                        for row in s.execute(select(ru.first_step, ru.n, ru.sum, ru.min, ru.min_step, ru.max,
                                                    ru.max_step).where(ru.series_id == sid, ru.width == w)):
                            acc.add(*row)
                        return acc.series(key, n, unit)
        conds: list[Any] = [pts.series_id == sid]
        if start is not None:
            conds.append(pts.step >= start)
        if end is not None:
            conds.append(pts.step <= end)
        n, lo, hi = s.execute(select(func.count(), func.min(pts.step), func.max(pts.step)).where(*conds)).one()
        n = int(n or 0)
        if n <= max_points:
            raw = s.execute(select(pts.step, pts.value).where(*conds).order_by(pts.step)).all()
            return Series(key=key, steps=[r[0] for r in raw], values=[r[1] for r in raw], total_points=n,
                          downsampled=False, unit=unit)
        if n <= PY_REDUCE_LIMIT:
            acc = _Buckets(int(lo), int(hi), max_points)
            for step, v in s.execute(select(pts.step, pts.value).where(*conds)):
                acc.add(step, 1, v, v, step, v, step)
            return acc.series(key, n, unit)
        span = int(hi) - int(lo) + 1
        bucket = ((pts.step - int(lo)) * max_points // span).label("b")  # floor division on every dialect
        rows = s.execute(
            select(bucket, func.min(pts.step), func.avg(pts.value), func.min(pts.value), func.max(pts.value))
            .where(*conds).group_by(bucket).order_by(bucket)).all()
    return Series(key=key, steps=[int(r[1]) for r in rows], values=[float(r[2]) for r in rows],
                  min=[float(r[3]) for r in rows], max=[float(r[4]) for r in rows],
                  total_points=n, downsampled=True, unit=unit)
