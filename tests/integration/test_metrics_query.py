"""Metrics queries: downsampling keeps spikes at their exact step, windows and compare work, on
SQLite and PostgreSQL, through the real ingest endpoint."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("backend_db", ["sqlite", "postgres"])
def test_downsampling_keeps_the_outlier_step(backend_db: str, make_client: Any, request: pytest.FixtureRequest) -> None:
    client = make_client(request.getfixturevalue("sqlite_url" if backend_db == "sqlite" else "pg_url"))
    run = client.post("/api/runs/external", json={"name": "spiky", "source": "trl"}).json()
    n, spike_step = 6000, 4321
    events = [{"type": "metrics", "seq": i, "step": i, "ts": 1.0 + i,
               "values": {"reward/mean": (-50.0 if i == spike_step else (i % 10) / 10), "kl/k1": 0.1}}
              for i in range(n)]
    for a in range(0, n, 2000):  # three requests, as an adapter would send them
        assert client.post(f"/api/runs/{run['id']}/events", json={"events": events[a:a + 2000]}).json()["accepted"] == 2000
    res = client.get(f"/api/runs/{run['id']}/metrics", params={"keys": "reward/mean", "max_points": 100}).json()
    s = res["series"]["reward/mean"]
    assert s["downsampled"] and s["total_points"] == n and len(s["steps"]) <= 100 and s["unit"] == "reward"
    i = s["min"].index(-50.0)
    assert s["min_step"][i] == spike_step, "the spike is reported at its exact step"
    assert max(s["max"]) == pytest.approx(0.9)

    window = client.get(f"/api/runs/{run['id']}/metrics",
                        params={"keys": "reward/mean", "start": 4300, "end": 4339, "max_points": 100}).json()
    w = window["series"]["reward/mean"]
    assert not w["downsampled"] and w["steps"] == list(range(4300, 4340))
    assert w["values"][spike_step - 4300] == -50.0

    zoom = client.get(f"/api/runs/{run['id']}/metrics",
                      params={"keys": "reward/mean", "start": 1000, "end": 5999, "max_points": 50}).json()
    z = zoom["series"]["reward/mean"]
    assert z["downsampled"] and z["total_points"] == 5000 and min(z["min"]) == -50.0

    raw = client.get(f"/api/runs/{run['id']}/metrics", params={"keys": "kl/k1", "max_points": 10_000}).json()
    assert raw["series"]["kl/k1"]["steps"] == list(range(n))

    other = client.post("/api/runs/external", json={"name": "flat"}).json()
    client.post(f"/api/runs/{other['id']}/events", json={"events": [
        {"type": "metrics", "seq": i, "step": i, "values": {"reward/mean": 1.0}} for i in range(10)]})
    cmp = client.get("/api/runs/compare", params={"ids": f"{run['id']},{other['id']}", "keys": "reward/mean",
                                                  "max_points": 100}).json()
    assert [r["run"]["id"] for r in cmp["runs"]] == [run["id"], other["id"]]
    assert cmp["runs"][1]["series"]["reward/mean"]["values"] == [1.0] * 10
    assert set(client.get(f"/api/runs/{run['id']}/metrics").json()["series"]) == {"reward/mean", "kl/k1"}
