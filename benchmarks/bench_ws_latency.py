"""Worker -> browser latency with many WebSocket viewers of one run.

A real backend process (``rlhfkit serve``, Celery mode: Redis Streams + PostgreSQL) and N viewers connected
to ``/api/runs/{id}/live``. A producer process emits metrics events through the worker's Redis
sink at a training-loop-like rate; each viewer records ``receive time - event ts`` (same machine,
same clock). Peers: the issue's target is p99 <= 50 ms on loopback with 100 viewers.

    python benchmarks/bench_ws_latency.py [--viewers 100] [--events 300] [--rate 50]

Creates and drops its own database and Redis keys. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def produce(args: argparse.Namespace) -> int:
    import redis

    from rlhfkit.events import EventEmitter, MetricsEvent
    from worker.redis_sink import RedisStreamSink

    sink = RedisStreamSink(redis.Redis.from_url(args.redis), args.produce, prefix=args.prefix)
    em = EventEmitter(args.produce, [sink])
    period = 1.0 / args.rate
    nxt = time.perf_counter()
    for step in range(args.events):
        em.emit(MetricsEvent(step=step, values={f"m/{i}": float(i) for i in range(30)}))
        nxt += period
        time.sleep(max(0.0, nxt - time.perf_counter()))
    sink.close()
    return 0


async def viewer(url: str, n_events: int, lat: list[float], ready: asyncio.Event, counter: list[int]) -> None:
    from websockets.asyncio.client import connect

    async with connect(url, max_size=None, open_timeout=60) as ws:
        counter[0] += 1
        if counter[0] == counter[1]:
            ready.set()
        got = 0
        while got < n_events:
            msg = json.loads(await ws.recv())
            if msg.get("type") != "metrics":
                continue
            lat.append(time.time() - msg["ts"])
            got += 1


async def run_viewers(url: str, n: int, n_events: int, start_producer: object) -> list[list[float]]:
    lats: list[list[float]] = [[] for _ in range(n)]
    ready = asyncio.Event()
    counter = [0, n]
    tasks = [asyncio.create_task(viewer(url, n_events, lats[i], ready, counter)) for i in range(n)]
    await asyncio.wait_for(ready.wait(), 120)
    proc = start_producer()  # type: ignore[operator]
    await asyncio.wait_for(asyncio.gather(*tasks), 600)
    proc.wait()
    return lats


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--viewers", type=int, default=100)
    ap.add_argument("--events", type=int, default=300, help="metrics events the producer emits")
    ap.add_argument("--rate", type=float, default=50.0, help="events per second")
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--produce", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--prefix", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.produce:
        return produce(args)

    import httpx
    import redis

    from benchmarks.scratch_stores import create_database, drop_scratch

    dbname, url = create_database(args.pg)
    prefix = f"rlhfkit_bench_{secrets.token_hex(4)}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "DATABASE_URL": url, "REDIS_URL": args.redis, "RLHFKIT_REDIS_PREFIX": prefix,
           "RLHFKIT_QUEUE": f"{prefix}-q", "PYTHONPATH": str(ROOT)}
    # started as `rlhfkit serve` starts it (same uvicorn options)
    backend = subprocess.Popen([sys.executable, "-c", "import sys; from rlhfkit.cli import main; sys.exit(main())",
                                "serve", "--port", str(port), "--log-level", "warning"], cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    r = redis.Redis.from_url(args.redis)
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        run = httpx.post(f"{base}/api/runs/external", json={"name": "latency"}).json()
        ws_url = f"ws://127.0.0.1:{port}/api/runs/{run['id']}/live"

        def start_producer() -> subprocess.Popen[bytes]:
            return subprocess.Popen([sys.executable, __file__, "--produce", run["id"], "--prefix", prefix,
                                     "--redis", args.redis, "--events", str(args.events), "--rate", str(args.rate)],
                                    env=env)

        lats = asyncio.run(run_viewers(ws_url, args.viewers, args.events, start_producer))
        flat = sorted(x for lst in lats for x in lst)
        pct = lambda q: flat[min(len(flat) - 1, int(len(flat) * q))] * 1e3  # noqa: E731
        print(f"\nWorker -> WebSocket latency: {args.viewers} viewers of one run, {args.events} metrics events "
              f"at {args.rate:g}/s ({len(flat):,} deliveries)\n")
        print(f"{'path':<58} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        print(f"{'rlhfkit: sink -> Redis Stream -> backend (DB commit) -> WS':<58} {pct(.5):>8.1f} {pct(.9):>8.1f} "
              f"{pct(.99):>8.1f} {flat[-1] * 1e3:>8.1f}")
        print(f"{'target from the issue':<58} {'':>8} {'':>8} {'50.0':>8}")
        print(f"\nmean {statistics.mean(flat) * 1e3:.1f} ms; latency = receive time - event ts "
              "(ts is stamped when the training loop emits)")
        return 0
    finally:
        backend.terminate()
        try:
            backend.wait(10)
        except subprocess.TimeoutExpired:
            backend.kill()
            backend.wait(10)
        drop_scratch(args.pg, dbname, r, prefix)


if __name__ == "__main__":
    sys.exit(main())
