"""``GET /metrics`` read the way Prometheus reads it (``prometheus_client``'s text parser), against
real Redis streams and a real consumer.

Events are written to a run's stream by the worker's own ``RedisStreamSink`` while no backend
consumes: the lag gauge counts them. Then a backend with its consumer starts: the lag drops to
zero, the ingest counter rises by exactly the number of events, and the running run's gauges show
its step and reward.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from backend.core.config import Settings
from backend.core.db import run_migrations
from backend.main import create_app
from rlhfkit.events import EventEmitter, MetricsEvent, RunStarted
from rlhfkit.metrics import M
from tests.integration.conftest import REDIS_URL, wait_for
from worker.redis_sink import RedisStreamSink

pytestmark = pytest.mark.slow


def scrape(client: Any, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of one scrape, through the official text parser."""
    r = client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_ingest_counter_and_stream_lag_move_when_events_flow(
        tmp_path: Path, redis_prefix: str, redis_client: Any) -> None:
    db_url = f"sqlite:///{tmp_path / 'r.db'}"
    run_migrations(db_url)
    settings = dict(database_url=db_url, redis_url=REDIS_URL, redis_prefix=redis_prefix,
                    queue=f"{redis_prefix}-q-{secrets.token_hex(3)}", artifacts_dir=tmp_path / "artifacts",
                    allowed_hosts="testserver", migrate=False)
    # an app whose lifespan never runs: it answers scrapes but consumes nothing
    idle = TestClient(create_app(Settings(**settings, consumer_name="idle")))
    run = idle.post("/api/runs/external", json={"name": "streamed", "source": "external"}).json()
    before = scrape(idle)
    ingested_before = before[("rlhfkit_ingest_events_total", ())]
    assert before[("rlhfkit_runs", (("status", "running"),))] == 1
    assert before[("rlhfkit_queue_depth", (("queue", settings["queue"]),))] == 0

    sink = RedisStreamSink(redis_client, run["id"], prefix=redis_prefix)
    emitter = EventEmitter(run["id"], [sink])
    emitter.emit(RunStarted(name="streamed", source="external"))
    for step in range(9):
        emitter.emit(MetricsEvent(step=step, values={M.REWARD_MEAN: 0.1 * step, M.KL_K1: 0.5}))
    assert sink.flush(10)
    stream = f"{redis_prefix}:run:{run['id']}:events"
    lag_key = ("rlhfkit_stream_lag_entries", (("run_id", run["id"]), ("stream", stream)))
    assert scrape(idle)[lag_key] == 10

    with TestClient(create_app(Settings(**settings, consumer_name="consumer"))) as live:
        wait_for(lambda: scrape(live).get(lag_key) == 0, 30, 0.2, "the consumer to acknowledge every entry")
        after = scrape(live)
    assert after[("rlhfkit_ingest_events_total", ())] == ingested_before + 10
    assert after[("rlhfkit_ingest_batch_seconds_count", ())] > before[("rlhfkit_ingest_batch_seconds_count", ())]
    assert after[("rlhfkit_run_step", (("run_id", run["id"]),))] == 8
    assert after[("rlhfkit_run_reward_mean", (("run_id", run["id"]),))] == pytest.approx(0.8)
    assert after[("rlhfkit_run_kl", (("run_id", run["id"]),))] == 0.5
    assert ("rlhfkit_websocket_viewers", (("kind", "run"),)) in after
    sink.close()


def test_metrics_need_the_token_when_tokens_are_set(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'r.db'}"
    with TestClient(create_app(Settings(database_url=db_url, api_tokens="s3cret", artifacts_dir=tmp_path / "a",
                                        allowed_hosts="testserver"))) as client:
        assert client.get("/metrics").status_code == 401
        samples = scrape(client, authorization="Bearer s3cret")
        assert samples[("rlhfkit_runs", (("status", "queued"),))] == 0
        assert not any(name == "rlhfkit_queue_depth" for name, _ in samples)  # embedded mode: no Celery queues
