"""Metric queries with server-side downsampling that keeps spikes.

Below ``max_points`` the raw points come back. Above it, the step range is cut into
``max_points`` equal buckets and each bucket reports its first step, mean, min and max — and the
steps where the min and the max occurred — so a one-step reward collapse still shows, at its exact
step, when a million points are reduced to a thousand.

Where the data comes from: over a whole series, the per-series rollups maintained at ingest
(buckets of 100 or 10,000 steps: ~10,000 rows for a million points) are merged in Python; for a
``start``/``end`` window, or a series too short for rollups, the raw points of the window are
reduced with numpy from the packed point chunks that overlap it (``backend.services.points``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import func, select

from backend.core.db import Database
from backend.models import ROLLUP_WIDTHS, MetricSeries, metric_chunks, metric_rollups
from backend.schemas import Series
from backend.services.points import merge, reduce_buckets, unpack
from rlhfkit.metrics import METRICS

MIN_ROLLUP_ROWS_PER_POINT = 4  # use a rollup width only if it leaves >= 4 rollup rows per output point


def run_keys(db: Database, run_id: str) -> list[str]:
    with db.session() as s:
        return sorted(s.scalars(select(MetricSeries.key).where(MetricSeries.run_id == run_id)))


def query_series(db: Database, run_id: str, keys: list[str] | None, *, max_points: int = 1000,
                 start: int | None = None, end: int | None = None) -> dict[str, Series]:
    keys = keys or run_keys(db, run_id)
    return {k: _series(db, run_id, k, max_points=max_points, start=start, end=end) for k in keys}


class _Buckets:
    """Merge rollup records (first_step, n, sum, min, min_step, max, max_step) into equal step buckets."""

    def __init__(self, lo: int, hi: int, n_buckets: int) -> None:
        self.lo, self.span, self.nb = lo, hi - lo + 1, n_buckets
        self.acc: dict[int, list[Any]] = {}

    def add(self, *rec: Any) -> None:
        b = (rec[0] - self.lo) * self.nb // self.span
        a = self.acc.get(b)
        if a is None:
            self.acc[b] = list(rec)
        else:
            merge(a, rec)

    def series(self, key: str, total_points: int, unit: str | None) -> Series:
        return _downsampled(key, [self.acc[b] for b in sorted(self.acc)], total_points, unit)


def _downsampled(key: str, rows: Sequence[Sequence[Any]], total_points: int, unit: str | None) -> Series:
    return Series(key=key, steps=[r[0] for r in rows], values=[r[2] / r[1] for r in rows],
                  min=[r[3] for r in rows], min_step=[r[4] for r in rows],
                  max=[r[5] for r in rows], max_step=[r[6] for r in rows],
                  total_points=total_points, downsampled=True, unit=unit)


def _series(db: Database, run_id: str, key: str, *, max_points: int, start: int | None, end: int | None) -> Series:
    spec = METRICS.get(key)
    unit = spec.unit if spec else None
    empty = Series(key=key, steps=[], values=[], total_points=0, downsampled=False, unit=unit)
    ch, ru = metric_chunks.c, metric_rollups.c
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
                hi = s.scalar(select(func.max(ch.last_step)).where(ch.series_id == sid))
                span = int(hi) - int(lo) + 1
                for w in reversed(ROLLUP_WIDTHS):
                    if span // w >= max_points * MIN_ROLLUP_ROWS_PER_POINT:
                        acc = _Buckets(int(lo), int(hi), max_points)
                        for row in s.execute(select(ru.first_step, ru.n, ru.sum, ru.min, ru.min_step, ru.max,
                                                    ru.max_step).where(ru.series_id == sid, ru.width == w)):
                            acc.add(*row)
                        return acc.series(key, n, unit)
        conds: list[Any] = [ch.series_id == sid]
        if start is not None:
            conds.append(ch.last_step >= start)
        if end is not None:
            conds.append(ch.first_step <= end)
        steps, values = unpack(s.execute(select(ch.steps, ch.vals).where(*conds)).tuples())
    if start is not None or end is not None:  # chunks overlap the window; keep the points inside it
        inside = np.ones(len(steps), dtype=bool)
        if start is not None:
            inside &= steps >= start
        if end is not None:
            inside &= steps <= end
        steps, values = steps[inside], values[inside]
    n = len(steps)
    if n == 0:
        return empty
    if n <= max_points:
        order = np.argsort(steps, kind="stable")
        return Series(key=key, steps=steps[order].tolist(), values=values[order].tolist(), total_points=n,
                      downsampled=False, unit=unit)
    lo, hi = int(steps.min()), int(steps.max())
    return _downsampled(key, reduce_buckets(steps, values, lo, hi, max_points), n, unit)
