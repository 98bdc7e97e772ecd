"""Acceptance 1 and 2 in embedded mode: submit -> queued -> running -> succeeded, every step's
metrics in the DB and on the WebSocket, on SQLite and on PostgreSQL; cancel while queued and while
running."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.conftest import tiny, wait_for, wait_status

pytestmark = pytest.mark.integration

TERMINAL = ("run_finished", "run_failed", "run_cancelled")


def read_until_terminal(ws: Any) -> list[dict[str, Any]]:
    events = []
    while True:
        msg = ws.receive_json()
        if msg["type"] == "heartbeat":
            continue
        events.append(msg)
        if msg["type"] in TERMINAL:
            return events


def assert_complete_run(client: Any, run_id: str, ws_events: list[dict[str, Any]], steps: int) -> None:
    seqs = [e["seq"] for e in ws_events]
    assert seqs == list(range(len(seqs))), "WebSocket events must arrive in order, without gaps or duplicates"
    ws_metric_steps = sorted({e["step"] for e in ws_events if e["type"] == "metrics"})
    assert set(range(steps)) <= set(ws_metric_steps)
    run = client.get(f"/api/runs/{run_id}").json()
    assert run["status"] == "succeeded", run
    assert run["started_at"] and run["finished_at"]
    assert run["last_seq"] == seqs[-1]
    assert {"reward/mean", "kl/k1"} <= set(run["latest"])
    series = client.get(f"/api/runs/{run_id}/metrics", params={"keys": "reward/mean,kl/k1"}).json()["series"]
    for key in ("reward/mean", "kl/k1"):
        assert set(range(steps)) <= set(series[key]["steps"]), f"{key}: every step is stored"
        assert series[key]["unit"]
    stored = client.get(f"/api/runs/{run_id}/events", params={"limit": 10_000}).json()["events"]
    assert [e["seq"] for e in stored] == seqs, "the DB holds exactly what the WebSocket showed"
    timings = client.get(f"/api/runs/{run_id}/timings").json()
    assert [t["step"] for t in timings] == list(range(steps))
    assert set(timings[0]["stages"]) >= {"generation", "update"}


@pytest.mark.parametrize("backend_db", ["sqlite", "postgres"])
def test_submit_run_to_success_embedded(backend_db: str, make_client: Any, request: pytest.FixtureRequest) -> None:
    db_url = request.getfixturevalue("sqlite_url" if backend_db == "sqlite" else "pg_url")
    client = make_client(db_url)
    with client.websocket_connect("/api/live") as status_ws:
        r = client.post("/api/runs", json={"preset": "smoke", "overrides": tiny(3), "name": f"e2e-{backend_db}"})
        assert r.status_code == 201, r.text
        run = r.json()
        assert run["status"] == "queued"
        with client.websocket_connect(f"/api/runs/{run['id']}/live?cursor=-1") as ws:
            events = read_until_terminal(ws)
        statuses = []
        while "succeeded" not in statuses:
            msg = status_ws.receive_json()
            if msg["type"] == "run_status" and msg["run"]["id"] == run["id"]:
                statuses.append(msg["run"]["status"])
    assert statuses[0] == "queued" and "running" in statuses and statuses[-1] == "succeeded", statuses
    assert events[0]["type"] == "run_started" and events[-1]["type"] == "run_finished"
    assert_complete_run(client, run["id"], events, steps=3)
    assert client.delete(f"/api/runs/{run['id']}").status_code == 204
    assert client.get(f"/api/runs/{run['id']}").status_code == 404


def test_cancel_while_queued_and_while_running_embedded(make_client: Any, sqlite_url: str) -> None:
    client = make_client(sqlite_url, embedded_workers=1)
    first = client.post("/api/runs", json={"preset": "smoke", "overrides": tiny(200)}).json()
    second = client.post("/api/runs", json={"preset": "smoke", "overrides": tiny(3)}).json()
    wait_status(client, first["id"], ("running",), 60)

    # queued: cancelled at once, never runs
    r = client.post(f"/api/runs/{second['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert client.delete(f"/api/runs/{first['id']}").status_code == 409, "a running run cannot be deleted"

    # running: stops between steps and keeps what it produced
    wait_for(lambda: client.get(f"/api/runs/{first['id']}").json()["last_step"] is not None, 120, 0.2,
             "the first step's metrics")
    assert client.post(f"/api/runs/{first['id']}/cancel").json()["cancel_requested"] is True
    run = wait_status(client, first["id"], ("cancelled", "succeeded", "failed"), 120)
    assert run["status"] == "cancelled"
    assert run["last_step"] is not None and run["last_step"] < 199
    events = client.get(f"/api/runs/{first['id']}/events", params={"limit": 10_000}).json()["events"]
    assert events[0]["type"] == "run_started" and events[-1]["type"] == "run_cancelled"
    assert any(e["type"] == "metrics" for e in events)
    assert client.post(f"/api/runs/{first['id']}/cancel").status_code == 409, "already finished"

    assert client.get(f"/api/runs/{second['id']}").json()["status"] == "cancelled"
    assert client.get(f"/api/runs/{second['id']}/events").json()["events"] == []
