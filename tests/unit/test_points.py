"""The vectorised point operations of the ingest path, each against a slow, obvious loop."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np

from backend.services import points


def _naive_rollups(rows: list[tuple[int, int, float]], widths: tuple[int, ...]) -> dict[tuple[int, int, int], list[Any]]:
    """Walk the points in order; a bucket's min/max step is where its min/max first occurred."""
    acc: dict[tuple[int, int, int], list[Any]] = {}
    for sid, step, v in rows:
        for w in widths:
            a = acc.get((sid, w, step // w))
            if a is None:
                acc[(sid, w, step // w)] = [step, 1, v, v, step, v, step]
                continue
            a[0] = min(a[0], step)
            a[1] += 1
            a[2] += v
            if v < a[3]:
                a[3], a[4] = v, step
            if v > a[5]:
                a[5], a[6] = v, step
    return acc


def _batch(seed: int, *, shuffle_steps: bool) -> tuple[list[tuple[int, float, dict[str, float]]], dict[str, int]]:
    rng = random.Random(seed)
    series = {"a": 7, "b": 3, "c": 11}
    steps = list(range(0, 900, 3))
    if shuffle_steps:
        rng.shuffle(steps)
    metrics = []
    for step in steps:
        values = {"a": float(rng.randint(0, 5)), "b": rng.random()}  # few distinct values: ties
        if step % 9 == 0:
            values["c"] = rng.random()
        if step % 50 == 0:
            values["b"] = math.nan
        metrics.append((step, 1000.0 + step, values))
    return metrics, series


def _naive_points(metrics: list[tuple[int, float, dict[str, float]]], series: dict[str, int]) -> list[tuple[int, int, float, float]]:
    return [(series[k], step, v, ts) for step, ts, values in metrics for k, v in values.items() if math.isfinite(v)]


def test_flatten_keeps_finite_points_grouped_by_series_in_event_order() -> None:
    metrics, series = _batch(0, shuffle_steps=True)
    pts = points.flatten(metrics, series)
    got = list(zip(pts.sid.tolist(), pts.step.tolist(), pts.val.tolist(), pts.ts.tolist(), strict=True))
    want = _naive_points(metrics, series)
    assert sorted(got) == sorted(want)
    for sid in series.values():
        assert [p for p in got if p[0] == sid] == [p for p in want if p[0] == sid]
    assert len(set(pts.sid.tolist())) == len(points._runs(pts.sid)), "each series is one contiguous run"


def test_chunks_round_trip_every_point() -> None:
    metrics, series = _batch(1, shuffle_steps=True)
    pts = points.flatten(metrics, series)
    rows = points.chunk_rows(pts)
    assert sorted(r["series_id"] for r in rows) == sorted(series.values())
    for r in rows:
        steps, vals = points.unpack([(r["steps"], r["vals"])])
        want = [(st, v) for sid, st, v, _ in _naive_points(metrics, series) if sid == r["series_id"]]
        assert list(zip(steps.tolist(), vals.tolist(), strict=True)) == want
        assert r["n"] == len(want) and r["first_step"] == min(steps) and r["last_step"] == max(steps)
        assert np.frombuffer(r["wall_times"], dtype="<f8").tolist() == [1000.0 + s for s in steps.tolist()]


def test_rollups_match_the_naive_fold_with_steps_in_and_out_of_order() -> None:
    for seed, shuffle in ((2, False), (3, True)):
        metrics, series = _batch(seed, shuffle_steps=shuffle)
        pts = points.flatten(metrics, series)
        got = {(r[0], r[1], r[2]): list(r[3:]) for r in points.rollups(pts, (10, 100))}
        rows = [(sid, st, v) for sid, st, v, _ in _naive_points(metrics, series)]
        # the naive fold walks series by series, like flatten's output order
        rows.sort(key=lambda r: r[0])
        want = _naive_rollups(rows, (10, 100))
        assert got.keys() == want.keys()
        for k, w in want.items():
            assert got[k][:2] == w[:2] and got[k][3:] == w[3:], k
            assert math.isclose(got[k][2], w[2], rel_tol=1e-12), k


def test_reduce_buckets_matches_a_loop_and_keeps_the_spike_step() -> None:
    rng = random.Random(4)
    steps = list(range(5000))
    rng.shuffle(steps)
    vals = [(-50.0 if s == 4321 else float(s % 10)) for s in steps]
    recs = points.reduce_buckets(np.array(steps), np.array(vals), 0, 4999, 100)
    want: dict[int, list[Any]] = {}
    for s, v in sorted(zip(steps, vals, strict=True)):
        b = s * 100 // 5000
        if b not in want:
            want[b] = [s, 1, v, v, s, v, s]
        else:
            points.merge(want[b], (s, 1, v, v, s, v, s))
    assert [list(r) for r in recs] == [want[b] for b in sorted(want)]
    spike = next(r for r in recs if r[3] == -50.0)
    assert spike[4] == 4321
