"""Redis faults in Celery mode, against a ``redis-server`` of the test's own that it stops and
restarts, real Celery worker processes and PostgreSQL.

* Redis down for longer than the heartbeat timeout: a worker that is alive proves it when Redis
  returns, so the run ends ``succeeded`` with every event the worker emitted stored exactly once.
* Redis restarted empty (no AOF): the backend recreates its consumer groups and the worker
  re-registers its stream, so consuming resumes within seconds without restarting anything.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import REDIS_URL, OwnRedis, Proc, service_env, tiny, wait_for, wait_status

pytestmark = pytest.mark.integration
HEARTBEAT_TIMEOUT_S = 3.0


def _setup(pg_url: str, tmp_path: Path, own_redis: OwnRedis, make_client: Any,
           start_worker: Callable[..., Proc]) -> tuple[Any, str]:
    prefix = f"rlhfkit_fault_{secrets.token_hex(3)}"
    queue = f"{prefix}-q"
    env = service_env(database_url=pg_url, redis_prefix=prefix, queue=queue, artifacts=tmp_path / "artifacts",
                      REDIS_URL=own_redis.url, RLHFKIT_HEARTBEAT_TIMEOUT_S=str(HEARTBEAT_TIMEOUT_S))
    client = make_client(pg_url, redis_url=own_redis.url, redis_prefix=prefix, queue=queue,
                         heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S, reaper_interval_s=0.5,
                         consumer_name=f"backend-{secrets.token_hex(3)}", artifacts_dir=tmp_path / "artifacts")
    start_worker(env, queue=queue)
    return client, prefix


def _emitted(tmp_path: Path, run_id: str) -> list[dict[str, Any]]:
    """Every event the worker emitted, from the run's own events.jsonl (written beside the stream)."""
    lines = (tmp_path / "artifacts" / run_id / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _stored(client: Any, run_id: str) -> list[dict[str, Any]]:
    return client.get(f"/api/runs/{run_id}/events", params={"limit": 10_000}).json()["events"]  # type: ignore[no-any-return]


def test_redis_down_longer_than_the_heartbeat_timeout_loses_no_run_and_no_event(
        pg_url: str, tmp_path: Path, own_redis: OwnRedis, make_client: Any,
        start_worker: Callable[..., Proc]) -> None:
    client, _ = _setup(pg_url, tmp_path, own_redis, make_client, start_worker)
    run = client.post("/api/runs", json={"preset": "smoke", "overrides": tiny(60)}).json()
    wait_for(lambda: (client.get(f"/api/runs/{run['id']}").json()["last_step"] or -1) >= 1, 120, 0.2, "two steps")
    own_redis.stop()  # clean shutdown: the AOF keeps every key
    time.sleep(3 * HEARTBEAT_TIMEOUT_S + 1)  # every heartbeat key has expired by the time Redis is back
    assert client.get("/readyz").status_code == 503
    own_redis.start()
    done = wait_status(client, run["id"], ("succeeded", "failed", "cancelled"), 240)
    assert done["status"] == "succeeded", done
    assert done["error"] is None
    emitted = _emitted(tmp_path, run["id"])
    stored = _stored(client, run["id"])
    assert [e["seq"] for e in stored] == [e["seq"] for e in emitted] == list(range(len(emitted))), \
        "every emitted event stored exactly once"
    assert stored[-1]["type"] == "run_finished"
    assert client.get("/readyz").json()["checks"]["consumer"] == "ok"


def test_redis_restarted_empty_mid_run_resumes_consuming_without_a_restart(
        pg_url: str, tmp_path: Path, own_redis: OwnRedis, make_client: Any,
        start_worker: Callable[..., Proc]) -> None:
    """Everything in Redis is gone (no AOF): the consumer groups, the set of streams, the unread
    entries, the heartbeat. The backend must consume the worker's later events within 10 s."""
    own_redis.appendonly = False
    client, prefix = _setup(pg_url, tmp_path, own_redis, make_client, start_worker)
    run = client.post("/api/runs", json={"preset": "smoke", "overrides": tiny(60)}).json()
    wait_for(lambda: (client.get(f"/api/runs/{run['id']}").json()["last_step"] or -1) >= 1, 120, 0.2, "two steps")
    import redis

    r = redis.Redis.from_url(own_redis.url)
    # A key nobody else writes proves the restart was empty. (The run's stream key cannot: the worker
    # retries its XADDs and may re-create the stream before this test's first command after start().)
    sentinel = f"{prefix}:test-sentinel"
    r.set(sentinel, "before the restart")
    r.close()
    own_redis.stop(empty=True)
    stored_before = client.get(f"/api/runs/{run['id']}").json()["last_seq"]
    own_redis.start()
    t_back = time.monotonic()
    r = redis.Redis.from_url(own_redis.url)
    assert not r.exists(sentinel), "Redis came back empty"
    # a new entry in the stream (the worker re-created it) must be stored within 10 s
    wait_for(lambda: r.xlen(f"{prefix}:run:{run['id']}:events") > 0, 60, 0.05, "the worker to write again")
    t_first = time.monotonic()
    first_new = json.loads(r.xrange(f"{prefix}:run:{run['id']}:events", count=1)[0][1][b"e"])["seq"]
    wait_for(lambda: client.get(f"/api/runs/{run['id']}").json()["last_seq"] >= first_new, 10, 0.1,
             "the backend to store the worker's events after the empty restart")
    resumed_s = time.monotonic() - t_first
    done = wait_status(client, run["id"], ("succeeded", "failed", "cancelled"), 240)
    emitted = _emitted(tmp_path, run["id"])
    stored = {e["seq"] for e in _stored(client, run["id"])}
    lost = [e["seq"] for e in emitted if e["seq"] not in stored]
    print(f"\nempty restart: consuming resumed {resumed_s:.1f} s after the worker's first new entry "
          f"({time.monotonic() - t_back:.1f} s after Redis was back); stored {len(stored)} of {len(emitted)} "
          f"events (lost seqs {lost[:5]}{'...' if len(lost) > 5 else ''}, {len(lost)} in all: the entries "
          f"still unread in the stream after seq {stored_before}); the run ended {done['status']}")
    assert done["status"] == "succeeded", done
    assert all(s > stored_before for s in lost), "nothing stored before the restart is lost"
    assert client.get("/readyz").json()["checks"]["consumer"] == "ok"
    r.close()


def test_poison_event_is_rejected_alone_and_never_holds_back_the_others(
        pg_url: str, redis_prefix: str, make_client: Any, redis_client: Any) -> None:
    """An eval event whose text has a NUL (PostgreSQL cannot store it) arrives in a stream between
    valid events: the valid ones are stored, the bad one is stored as an error log event saying why."""
    client = make_client(pg_url, redis_url=REDIS_URL, redis_prefix=redis_prefix,
                         queue=f"{redis_prefix}-poison", consumer_name=f"b-{secrets.token_hex(3)}")
    run = client.post("/api/runs/external", json={"name": "poison"}).json()
    key = f"{redis_prefix}:run:{run['id']}:events"
    events = [
        {"type": "metrics", "seq": 0, "step": 0, "ts": time.time(), "values": {"reward/mean": 0.5}},
        {"type": "eval", "seq": 1, "step": 0, "ts": time.time(), "reward_mean": 0.1,
         "samples": [{"prompt": "hello\u0000world", "response": "ok", "reward": 0.1}]},
        {"type": "metrics", "seq": 2, "step": 1, "ts": time.time(), "values": {"reward/mean": 0.6}},
        {"type": "run_finished", "seq": 3, "step": 1, "ts": time.time(), "summary": {}},
    ]
    pipe = redis_client.pipeline()
    for ev in events:
        pipe.xadd(key, {"e": json.dumps(ev)})
    pipe.sadd(f"{redis_prefix}:streams", key)
    pipe.execute()
    done = wait_status(client, run["id"], ("succeeded",), 20)
    assert done["latest"]["reward/mean"] == 0.6
    stored = _stored(client, run["id"])
    assert [e["seq"] for e in stored] == [0, 1, 2, 3]
    assert [e["type"] for e in stored] == ["metrics", "log", "metrics", "run_finished"]
    assert stored[1]["level"] == "error" and "eval event rejected" in stored[1]["message"]
    assert "samples.0.prompt" in stored[1]["message"] and "NUL" in stored[1]["message"]
    assert client.app.state.stream_consumer.rejected == 1
