"""Metric points as arrays: flatten a batch of ``metrics`` events, pack per-series chunks, fold
rollups, and reduce a window into spike-keeping buckets — all vectorised with numpy.

The ingest of one batch used to walk every point in Python several times (build rows, format COPY
text, fold rollups); at 600,000 points per batch that was most of the consumer's time. Here a batch
becomes four flat arrays once — ``sid`` (series id), ``step``, ``val``, ``ts`` (wall time), one
entry per finite point — and everything else is array operations on them.

Packed chunk layout (``metric_chunks`` rows): ``steps`` int32, ``vals`` and ``wall_times`` float64,
little-endian, ``n`` entries each, in arrival order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

STEP_DTYPE = np.dtype("<i4")
FLOAT_DTYPE = np.dtype("<f8")

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


class Points(NamedTuple):
    """One entry per point: (P,) arrays."""

    sid: IntArray  # series id
    step: IntArray
    val: FloatArray
    ts: FloatArray  # wall time of the event that carried the point

    @property
    def size(self) -> int:
        return int(self.sid.shape[0])

    def take(self, index: npt.NDArray[Any]) -> Points:
        return Points(self.sid[index], self.step[index], self.val[index], self.ts[index])


def flatten(metrics: Iterable[tuple[int, float, dict[str, float]]], series: dict[str, int]) -> Points:
    """``(step, ts, values)`` of each metrics event -> the batch's finite points, grouped by series
    (series in first-seen order, each series' points in event order).

    Events that log the same keys (the usual case: every step logs the same metrics) form one
    (E, K) matrix, built by numpy from the value lists in one call."""
    groups: dict[tuple[str, ...], tuple[list[int], list[int], list[float], list[list[float]]]] = {}
    for i, (step, ts, values) in enumerate(metrics):
        keys = tuple(values)
        g = groups.get(keys)
        if g is None:
            g = groups[keys] = ([], [], [], [])
        g[0].append(i)
        g[1].append(step)
        g[2].append(ts)
        g[3].append(list(values.values()))
    parts: list[Points] = []
    event_index: list[npt.NDArray[Any]] = []
    for keys, (idx, steps, tss, rows) in groups.items():
        if not keys:
            continue
        e, k = len(steps), len(keys)
        m = np.array(rows, dtype=np.float64)  # (E, K)
        # series-major: column j of m is series keys[j] over the events, contiguous after .T.ravel()
        parts.append(Points(sid=np.repeat(np.array([series[key] for key in keys], dtype=np.int64), e),
                            step=np.tile(np.array(steps, dtype=np.int64), k),
                            val=m.T.ravel(),
                            ts=np.tile(np.array(tss, dtype=np.float64), k)))
        event_index.append(np.tile(np.array(idx), k))
    if not parts:
        return Points(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64), np.empty(0, np.float64))
    if len(parts) == 1:
        pts = parts[0]
    else:  # a series may appear in several groups: bring its points together, keep their order
        pts = Points(np.concatenate([p.sid for p in parts]), np.concatenate([p.step for p in parts]),
                     np.concatenate([p.val for p in parts]), np.concatenate([p.ts for p in parts]))
        pts = pts.take(np.lexsort((np.concatenate(event_index), pts.sid)))
    keep = np.isfinite(pts.val)
    return pts if keep.all() else pts.take(keep)


def _runs(*keys: IntArray) -> IntArray:
    """Start index of each run of equal consecutive ``keys`` tuples."""
    n = keys[0].shape[0]
    change = np.zeros(n, dtype=bool)
    if n:
        change[0] = True
        for k in keys:
            change[1:] |= k[1:] != k[:-1]
    return np.flatnonzero(change)


def chunk_rows(pts: Points) -> list[dict[str, Any]]:
    """One ``metric_chunks`` row per series of the batch (``pts`` grouped by series, as from :func:`flatten`)."""
    starts = _runs(pts.sid)
    ends = np.append(starts[1:], pts.size)
    step32 = pts.step.astype(STEP_DTYPE)
    val = pts.val.astype(FLOAT_DTYPE, copy=False)
    ts = pts.ts.astype(FLOAT_DTYPE, copy=False)
    lo = np.minimum.reduceat(pts.step, starts) if pts.size else pts.step
    hi = np.maximum.reduceat(pts.step, starts) if pts.size else pts.step
    return [dict(series_id=int(pts.sid[a]), first_step=int(lo[i]), last_step=int(hi[i]), n=int(b - a),
                 steps=step32[a:b].tobytes(), vals=val[a:b].tobytes(), wall_times=ts[a:b].tobytes())
            for i, (a, b) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True))]


def unpack(chunks: Iterable[Sequence[Any]]) -> tuple[IntArray, FloatArray]:
    """``(steps, vals)`` blobs of chunk rows -> concatenated (steps, values) arrays, in chunk order."""
    steps: list[npt.NDArray[Any]] = []
    vals: list[npt.NDArray[Any]] = []
    for s, v in chunks:
        steps.append(np.frombuffer(s, dtype=STEP_DTYPE))
        vals.append(np.frombuffer(v, dtype=FLOAT_DTYPE))
    if not steps:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    return np.concatenate(steps).astype(np.int64), np.concatenate(vals).astype(np.float64)


# (first_step, n, sum, min, min_step, max, max_step) of one bucket: the record rollups and
# downsampled series share
Record = tuple[int, int, float, float, int, float, int]


def _segment_records(keys: tuple[IntArray, ...], step: IntArray, val: FloatArray) -> tuple[IntArray, list[Record]]:
    """Reduce runs of equal consecutive ``keys`` tuples; returns each run's first index and record.
    The min (max) step is the first step, in array order, where the run's min (max) occurs."""
    starts = _runs(*keys)
    if not len(starts):
        return starts, []
    counts = np.diff(np.append(starts, len(step)))
    run_of = np.repeat(np.arange(len(starts)), counts)
    vmin = np.minimum.reduceat(val, starts)
    vmax = np.maximum.reduceat(val, starts)
    hits = []
    for extreme in (vmin, vmax):
        idx = np.flatnonzero(val == extreme[run_of])  # every run attains its extreme at least once
        hits.append(step[idx[_runs(run_of[idx])]])
    recs = list(zip(np.minimum.reduceat(step, starts).tolist(), counts.tolist(),
                    np.add.reduceat(val, starts).tolist(), vmin.tolist(), hits[0].tolist(),
                    vmax.tolist(), hits[1].tolist(), strict=True))
    return starts, recs


def merge(a: list[Any], b: Sequence[Any]) -> None:
    """Fold record ``b`` into record ``a`` (in place); on ties ``a``'s min/max step stays."""
    if b[0] < a[0]:
        a[0] = b[0]
    a[1] += b[1]
    a[2] += b[2]
    if b[3] < a[3]:
        a[3], a[4] = b[3], b[4]
    if b[5] > a[5]:
        a[5], a[6] = b[5], b[6]


def rollups(pts: Points, widths: Sequence[int]) -> list[tuple[Any, ...]]:
    """Rollup rows ``(series_id, width, bucket, first_step, n, sum, min, min_step, max, max_step)``,
    one per (series, width, step // width) the batch touches."""
    out: list[tuple[Any, ...]] = []
    for w in widths:
        bucket = pts.step // w
        # runs of (series, bucket); with increasing steps per series each run is a whole bucket
        starts, recs = _segment_records((pts.sid, bucket), pts.step, pts.val)
        keys = list(zip(pts.sid[starts].tolist(), bucket[starts].tolist(), strict=True))
        if len(set(keys)) == len(keys):
            out.extend((sid, w, b, *rec) for (sid, b), rec in zip(keys, recs, strict=True))
            continue
        acc: dict[tuple[int, int], list[Any]] = {}  # steps out of order: merge the runs of one bucket
        for key, rec in zip(keys, recs, strict=True):
            if key in acc:
                merge(acc[key], rec)
            else:
                acc[key] = list(rec)
        out.extend((sid, w, b, *rec) for (sid, b), rec in acc.items())
    return out


def reduce_buckets(step: IntArray, val: FloatArray, lo: int, hi: int, n_buckets: int) -> list[Record]:
    """Points (any order) -> records of ``n_buckets`` equal step buckets over ``[lo, hi]``, bucket order.
    Min/max steps are the first in step order (stable among equal steps)."""
    order = np.argsort(step, kind="stable")
    step, val = step[order], val[order]
    bucket = (step - lo) * n_buckets // (hi - lo + 1)
    return _segment_records((bucket,), step, val)[1]
