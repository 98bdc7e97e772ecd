"""Acceptance 4 and 5: a backend restarted mid-run persists every event the worker produced
meanwhile, exactly once; a WebSocket client that reconnects with its cursor gets every event
exactly once."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from websockets.sync.client import connect

from tests.integration.conftest import Proc, service_env, tiny, wait_for

pytestmark = pytest.mark.integration


def test_backend_killed_mid_run_persists_every_event_once(
        pg_url: str, redis_prefix: str, tmp_path: Path, start_worker: Callable[..., Proc],
        start_backend: Callable[..., Proc]) -> None:
    queue = f"{redis_prefix}-restart-{secrets.token_hex(3)}"
    env = service_env(database_url=pg_url, redis_prefix=redis_prefix, queue=queue, artifacts=tmp_path / "artifacts",
                      RLHFKIT_CONSUMER_NAME="backend-restart", RLHFKIT_HEARTBEAT_TIMEOUT_S="30")
    backend = start_backend(env)
    url = backend.meta["url"]
    start_worker(env, queue=queue)
    # long enough to be still running when the backend dies, on a fast CPU too: 8 tiny steps (~37 ms
    # each on a Zen 5 core) could end between step 0 showing through the API and the kill
    run = httpx.post(f"{url}/api/runs", json={"preset": "smoke", "overrides": tiny(60)}).json()
    wait_for(lambda: (httpx.get(f"{url}/api/runs/{run['id']}").json()["last_step"] or -1) >= 0, 120, 0.2, "step 0")
    backend.kill9()  # no graceful shutdown: whatever was read but not committed stays pending in the stream
    stream = f"{redis_prefix}:run:{run['id']}:events"
    import redis

    r = redis.Redis.from_url(env["REDIS_URL"])
    n0 = r.xlen(stream)
    wait_for(lambda: r.xlen(stream) > n0 + 3, 120, 0.2, "the worker to keep producing while the backend is down")
    backend = start_backend(env, port=backend.meta["port"])
    done = wait_for(lambda: (lambda x: x if x["status"] in ("succeeded", "failed") else None)(
        httpx.get(f"{url}/api/runs/{run['id']}").json()), 180, 0.3, "run to finish")
    assert done["status"] == "succeeded", done
    events = httpx.get(f"{url}/api/runs/{run['id']}/events", params={"limit": 10_000}).json()["events"]
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(len(seqs))), "every event exactly once"
    assert len(seqs) == r.xlen(stream), "as many stored events as the worker produced"
    steps = sorted(e["step"] for e in events if e["type"] == "metrics")
    assert set(range(60)) <= set(steps)
    import psycopg

    with psycopg.connect(pg_url.replace("+psycopg", "")) as conn:
        chunks = conn.execute("SELECT c.series_id, c.steps FROM metric_chunks c "
                              "JOIN metric_series s ON s.id = c.series_id WHERE s.run_id = %s", (run["id"],)).fetchall()
        points = [(sid, step) for sid, blob in chunks for step in np.frombuffer(blob, dtype="<i4").tolist()]
        assert points and len(points) == len(set(points)), "no duplicated metric points"
    r.close()


def _ws_collect(url: str, cursor: int, stop_after: int | None, until_type: str = "run_finished",
                timeout: float = 60) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    with connect(f"{url}?cursor={cursor}", open_timeout=10, close_timeout=2) as ws:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(ws.recv(timeout=timeout))
            if msg["type"] == "heartbeat":
                continue
            out.append(msg)
            if msg["type"] == until_type or (stop_after is not None and len(out) >= stop_after):
                return out
    pytest.fail("WebSocket stream did not finish in time")


def test_run_that_ends_while_the_backend_is_down_is_not_reported_lost(
        pg_url: str, redis_prefix: str, tmp_path: Path, start_worker: Callable[..., Proc],
        start_backend: Callable[..., Proc]) -> None:
    """The worker finishes (heartbeat gone) before any backend has read its ending: the reaper must
    leave the run to the consumer, which then records it as succeeded with every event."""
    import redis

    from backend.core.config import Settings
    from backend.core.db import Database
    from backend.services.live import LiveHub
    from backend.services.reaper import HeartbeatReaper

    queue = f"{redis_prefix}-ends-{secrets.token_hex(3)}"
    env = service_env(database_url=pg_url, redis_prefix=redis_prefix, queue=queue, artifacts=tmp_path / "artifacts",
                      RLHFKIT_CONSUMER_NAME="backend-ends")  # heartbeat timeout 3 s, reaper every 0.5 s
    backend = start_backend(env)
    url = backend.meta["url"]
    start_worker(env, queue=queue)
    run = httpx.post(f"{url}/api/runs", json={"preset": "smoke", "overrides": tiny(3)}).json()
    wait_for(lambda: httpx.get(f"{url}/api/runs/{run['id']}").json()["status"] == "running", 120, 0.1, "running")
    backend.kill9()
    r = redis.Redis.from_url(env["REDIS_URL"])
    heartbeat = f"{redis_prefix}:run:{run['id']}:heartbeat"
    wait_for(lambda: not r.exists(heartbeat), 120, 0.2, "the worker to finish the run")
    time.sleep(3.5)  # longer than the heartbeat timeout since the run started and since its last beat

    settings = Settings(database_url=pg_url, redis_url=env["REDIS_URL"], redis_prefix=redis_prefix,
                        heartbeat_timeout_s=3.0)
    db = Database(pg_url)
    try:
        assert HeartbeatReaper(settings=settings, db=db, hub=LiveHub(), redis_client=r).check() == []
    finally:
        db.dispose()
    start_backend(env, port=backend.meta["port"])
    done = wait_for(lambda: (lambda x: x if x["status"] != "running" else None)(
        httpx.get(f"{url}/api/runs/{run['id']}").json()), 60, 0.2, "the run's ending to be read")
    assert done["status"] == "succeeded", done
    events = httpx.get(f"{url}/api/runs/{run['id']}/events", params={"limit": 10_000}).json()["events"]
    assert [e["seq"] for e in events] == list(range(r.xlen(f"{redis_prefix}:run:{run['id']}:events")))
    assert events[-1]["type"] == "run_finished"
    r.close()


def test_websocket_reconnect_with_cursor_gets_every_event_exactly_once(
        sqlite_url: str, tmp_path: Path, start_backend: Callable[..., Proc]) -> None:
    """A producer uploads 3,000 events in small batches while a viewer disconnects after every few
    hundred events and reconnects with the last seq it saw."""
    env = service_env(database_url=sqlite_url, redis_prefix="unused", queue="unused", artifacts=tmp_path / "a")
    env.pop("REDIS_URL")
    backend = start_backend(env)
    url = backend.meta["url"]
    run = httpx.post(f"{url}/api/runs/external", json={"name": "ws", "source": "external"}).json()
    total = 3000

    def produce() -> None:
        with httpx.Client(base_url=url) as c:
            for start in range(0, total, 50):
                evs = [{"type": "metrics", "seq": s, "step": s, "ts": time.time(), "values": {"reward/mean": s / total}}
                       for s in range(start, min(total, start + 50))]
                if start + 50 >= total:
                    evs.append({"type": "run_finished", "seq": total, "ts": time.time()})
                assert c.post(f"/api/runs/{run['id']}/events", json={"events": evs}).status_code == 200
                time.sleep(0.002)  # pacing of a real producer, not synchronisation

    producer = threading.Thread(target=produce)
    ws_url = url.replace("http", "ws") + f"/api/runs/{run['id']}/live"
    seen: list[dict[str, Any]] = []
    cursor = -1
    producer.start()
    while not seen or seen[-1]["type"] != "run_finished":
        part = _ws_collect(ws_url, cursor, stop_after=337)
        seen.extend(part)
        cursor = seen[-1]["seq"]
    producer.join()
    assert [e["seq"] for e in seen] == list(range(total + 1)), "no gaps, no duplicates across reconnects"
