"""Acceptance 1, 2, 3 and 7 with real Celery worker processes, Redis Streams and PostgreSQL.

The backend runs in-process (TestClient, Celery mode); workers are real ``celery -A worker.app
worker`` processes started with the same environment a deployment uses.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import REDIS_URL, Proc, service_env, tiny, wait_for, wait_status
from tests.integration.test_run_lifecycle import assert_complete_run, read_until_terminal

pytestmark = pytest.mark.integration
HEARTBEAT_TIMEOUT_S = 3.0  # stated timeout: a lost worker's run is failed within this + the reaper interval


@pytest.fixture
def celery_setup(pg_url: str, redis_prefix: str, tmp_path: Path, make_client: Any,
                 start_worker: Callable[..., Proc]) -> dict[str, Any]:
    queue = f"{redis_prefix}-q-{secrets.token_hex(3)}"
    env = service_env(database_url=pg_url, redis_prefix=redis_prefix, queue=queue, artifacts=tmp_path / "artifacts")
    client = make_client(pg_url, redis_url=REDIS_URL, redis_prefix=redis_prefix, queue=queue,
                         heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S, reaper_interval_s=0.5,
                         consumer_name=f"backend-{secrets.token_hex(3)}")
    return {"env": env, "queue": queue, "client": client, "start_worker": start_worker, "prefix": redis_prefix}


def test_submit_run_to_success_with_celery_worker(celery_setup: dict[str, Any]) -> None:
    client = celery_setup["client"]
    celery_setup["start_worker"](celery_setup["env"], queue=celery_setup["queue"])
    run = client.post("/api/runs", json={"preset": "smoke", "overrides": tiny(3)}).json()
    assert run["status"] == "queued" and run["queue"] == celery_setup["queue"]
    with client.websocket_connect(f"/api/runs/{run['id']}/live") as ws:
        events = read_until_terminal(ws)
    assert events[-1]["type"] == "run_finished", events[-1]
    wait_status(client, run["id"], ("succeeded",), 10)
    assert_complete_run(client, run["id"], events, steps=3)
    assert client.get(f"/api/runs/{run['id']}").json()["worker"].startswith("w1@")
    assert client.get("/readyz").json()["checks"] == {"database": "ok", "redis": "ok", "consumer": "ok"}


def test_cancel_while_queued_and_while_running_with_celery(celery_setup: dict[str, Any], redis_client: Any) -> None:
    client = celery_setup["client"]
    celery_setup["start_worker"](celery_setup["env"], queue=celery_setup["queue"])
    first = client.post("/api/runs", json={"preset": "smoke", "overrides": tiny(200)}).json()
    wait_status(client, first["id"], ("running",), 60)
    second = client.post("/api/runs", json={"preset": "smoke", "overrides": tiny(3)}).json()  # waits: worker busy

    r = client.post(f"/api/runs/{second['id']}/cancel")
    assert r.json()["status"] == "cancelled"

    wait_for(lambda: client.get(f"/api/runs/{first['id']}").json()["last_step"] is not None, 120, 0.2, "first step")
    client.post(f"/api/runs/{first['id']}/cancel")
    run = wait_status(client, first["id"], ("cancelled", "succeeded", "failed"), 120)
    assert run["status"] == "cancelled", run
    events = client.get(f"/api/runs/{first['id']}/events", params={"limit": 10_000}).json()["events"]
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert events[-1]["type"] == "run_cancelled" and any(e["type"] == "metrics" for e in events)

    # the revoked/cancelled queued run never starts, even after the worker is free again

    def second_stays_cancelled() -> bool:
        r2 = client.get(f"/api/runs/{second['id']}").json()
        assert r2["status"] == "cancelled" and r2["started_at"] is None
        return not redis_client.exists(f"{celery_setup['prefix']}:run:{first['id']}:heartbeat")

    wait_for(second_stays_cancelled, 30, 0.2, "worker to go idle")
    assert client.get(f"/api/runs/{second['id']}/events").json()["events"] == []


def test_worker_killed_mid_run_is_marked_failed(celery_setup: dict[str, Any]) -> None:
    client = celery_setup["client"]
    worker = celery_setup["start_worker"](celery_setup["env"], queue=celery_setup["queue"])
    run = client.post("/api/runs", json={"preset": "smoke", "overrides": tiny(200)}).json()
    wait_for(lambda: (client.get(f"/api/runs/{run['id']}").json()["last_step"] or -1) >= 1, 120, 0.2, "two steps")
    before = client.get(f"/api/runs/{run['id']}/events", params={"limit": 10_000}).json()["events"]
    worker.kill9()
    t_kill = time.monotonic()
    failed = wait_status(client, run["id"], ("failed",), HEARTBEAT_TIMEOUT_S + 10)
    elapsed = time.monotonic() - t_kill
    assert "worker lost" in failed["error"]
    assert elapsed <= HEARTBEAT_TIMEOUT_S + 2, f"marked failed {elapsed:.1f} s after the kill"
    after = client.get(f"/api/runs/{run['id']}/events", params={"limit": 10_000}).json()["events"]
    assert [e["seq"] for e in after][: len(before)] == [e["seq"] for e in before], "nothing received is lost"
    assert [e["seq"] for e in after] == list(range(len(after)))


def test_two_workers_run_two_runs_at_once(celery_setup: dict[str, Any]) -> None:
    """Scale-out: two worker processes (own CUDA_VISIBLE_DEVICES, one shared queue) against one
    PostgreSQL; two runs submitted together execute at the same time, one per worker."""
    client = celery_setup["client"]
    for i in range(2):
        celery_setup["start_worker"](celery_setup["env"], queue=celery_setup["queue"], name=f"gpu{i}", gpu=str(i))
    runs = [client.post("/api/runs", json={"preset": "smoke", "overrides": tiny(4), "name": f"scale-{i}"}).json()
            for i in range(2)]
    done = [wait_status(client, r["id"], ("succeeded", "failed", "cancelled"), 180) for r in runs]
    assert [d["status"] for d in done] == ["succeeded", "succeeded"], [d["error"] for d in done]
    assert {d["worker"].split("@")[0] for d in done} == {"gpu0", "gpu1"}
    a, b = done
    overlap = min(a["finished_at"], b["finished_at"]) > max(a["started_at"], b["started_at"])
    assert overlap, "the two runs executed concurrently"
    for d in done:
        series = client.get(f"/api/runs/{d['id']}/metrics", params={"keys": "reward/mean"}).json()["series"]
        assert set(range(4)) <= set(series["reward/mean"]["steps"])
