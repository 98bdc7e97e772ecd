"""Metrics query: 1,000,000 points of one key downsampled to 1,000, on PostgreSQL and SQLite.

Calls the backend's own query (``backend.services.metrics.query_series``), which merges the
per-series rollups maintained at ingest into buckets with each bucket's first step, mean, min and
max (and their steps), so a one-step spike survives the reduction (checked and printed). The issue's target: <= 100 ms.

    python benchmarks/bench_downsample.py [--points 1000000] [--max-points 1000] [--repeat 5]

Creates and drops its own database / temp file. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def load(url: str, n: int) -> tuple[object, str]:
    import numpy as np

    from backend.core.db import Database, run_migrations
    from backend.models import MetricSeries, Run

    run_migrations(url)
    db = Database(url)
    run_id = "ds" + secrets.token_hex(4)
    with db.session() as s:
        s.add(Run(id=run_id, name="downsample", status="succeeded", source="external", config={}, tags=[],
                  versions={}, latest={}, last_seq=-1, cancel_requested=False))
        s.flush()
        s.add(MetricSeries(run_id=run_id, key="reward/mean"))
        s.commit()
        from sqlalchemy import select

        sid = s.scalar(select(MetricSeries.id).where(MetricSeries.run_id == run_id))
    spike = n // 3
    values = np.array([((i % 1000) / 1000.0 if i != spike else 1e6) for i in range(n)])
    # the point chunks and their rollups as the ingest path writes them, in batches of 100,000
    from sqlalchemy import insert

    from backend.models import ROLLUP_WIDTHS, metric_chunks
    from backend.services import points
    from backend.services.bulk_write import update_rollups

    for a in range(0, n, 100_000):
        steps = np.arange(a, min(n, a + 100_000))
        batch = points.Points(sid=np.full(len(steps), sid), step=steps, val=values[steps], ts=np.zeros(len(steps)))
        with db.session() as s:
            s.execute(insert(metric_chunks), points.chunk_rows(batch))
            update_rollups(s, db, points.rollups(batch, ROLLUP_WIDTHS))  # type: ignore[arg-type]
            s.commit()
    return db, run_id


def bench(name: str, url: str, args: argparse.Namespace) -> tuple[str, list[float], bool, int]:
    from backend.services.metrics import query_series

    db, run_id = load(url, args.points)
    times = []
    kept = False
    n_out = 0
    for _ in range(args.repeat):
        t = time.perf_counter()
        series = query_series(db, run_id, ["reward/mean"], max_points=args.max_points)["reward/mean"]  # type: ignore[arg-type]
        times.append(time.perf_counter() - t)
        kept = max(series.max or []) == 1e6 and (series.max_step or [])[(series.max or []).index(1e6)] == args.points // 3
        n_out = len(series.steps)
    db.dispose()  # type: ignore[attr-defined]
    return name, times, kept, n_out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--max-points", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--skip-sqlite", action="store_true")
    args = ap.parse_args()

    import psycopg

    rows = []
    dbname = f"rlhfkit_bench_{secrets.token_hex(4)}"
    with psycopg.connect(args.pg, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    try:
        url = args.pg.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{dbname}"
        rows.append(bench("PostgreSQL", url, args))
    finally:
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory() as d:
            rows.append(bench("SQLite", f"sqlite:///{d}/bench.db", args))
    print(f"\nDownsampling {args.points:,} points of one key to max_points={args.max_points:,} "
          f"(best / median of {args.repeat})\n")
    print(f"{'database':<12} {'best ms':>9} {'median ms':>10} {'points out':>11} {'spike kept':>11} {'target':>8}")
    for name, times, kept, n_out in rows:
        print(f"{name:<12} {min(times) * 1e3:>9.1f} {statistics.median(times) * 1e3:>10.1f} {n_out:>11,} "
              f"{'yes' if kept else 'NO':>11} {'100 ms':>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
