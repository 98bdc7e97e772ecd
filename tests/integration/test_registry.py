"""Run registry: listing with filters, sort and cursor pagination; re-run; external runs."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.conftest import tiny

pytestmark = pytest.mark.integration


def test_list_filters_sort_and_paginate(idle_client: Any) -> None:
    c = idle_client
    native = [c.post("/api/runs", json={"preset": "smoke", "overrides": tiny(3), "name": f"sweep-{i}",
                                        "tags": ["sweep", f"lr{i}"]}).json() for i in range(5)]
    ext = c.post("/api/runs/external", json={"name": "trl-a", "source": "trl", "tags": ["sweep"]}).json()
    assert all(r["status"] == "queued" for r in native) and ext["status"] == "running"

    seen, cursor = [], None
    while True:
        page = c.get("/api/runs", params={"limit": 2, "tag": "sweep", **({"cursor": cursor} if cursor else {})}).json()
        assert page["count"] == 6
        seen += [r["id"] for r in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [ext["id"], *[r["id"] for r in reversed(native)]], "newest first, each run once"
    assert [r["id"] for r in c.get("/api/runs", params={"tag": "lr3"}).json()["data"]] == [native[3]["id"]]
    assert [r["id"] for r in c.get("/api/runs", params={"source": "trl"}).json()["data"]] == [ext["id"]]
    assert c.get("/api/runs", params={"status": "queued,running"}).json()["count"] == 6
    assert c.get("/api/runs", params={"status": "succeeded"}).json()["count"] == 0
    assert c.get("/api/runs", params={"q": "SWEEP-2"}).json()["data"][0]["id"] == native[2]["id"]
    names = [r["name"] for r in c.get("/api/runs", params={"sort": "name"}).json()["data"]]
    assert names == sorted(names)


def test_rerun_keeps_the_config_and_applies_overrides(idle_client: Any) -> None:
    c = idle_client
    src = c.post("/api/runs", json={"preset": "smoke", "overrides": tiny(3), "name": "base"}).json()
    assert src["config"]["ppo"]["batch_size"] == 4 and src["total_steps"] == 3
    again = c.post(f"/api/runs/{src['id']}/rerun", json={"overrides": {"train.steps_per_epoch": 5}}).json()
    assert again["parent_id"] == src["id"] and again["status"] == "queued"
    assert again["config"]["ppo"] == src["config"]["ppo"] and again["total_steps"] == 5
    bad = c.post(f"/api/runs/{src['id']}/rerun", json={"overrides": {"ppo.batch_size": 3}})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][:3] == ["body", "config", "ppo"]
    for run in (src, again):
        assert c.post(f"/api/runs/{run['id']}/cancel").json()["status"] == "cancelled"
        assert c.delete(f"/api/runs/{run['id']}").status_code == 204
    ext = c.post("/api/runs/external", json={"name": "ext"}).json()
    assert c.post(f"/api/runs/{ext['id']}/rerun").status_code == 409


def test_a_rerun_is_named_after_its_source_with_a_rerun_number(idle_client: Any) -> None:
    c = idle_client
    src = c.post("/api/runs", json={"preset": "smoke", "overrides": tiny(3), "name": "sweep lr"}).json()
    first = c.post(f"/api/runs/{src['id']}/rerun").json()
    second = c.post(f"/api/runs/{src['id']}/rerun").json()
    of_rerun = c.post(f"/api/runs/{first['id']}/rerun").json()  # numbered in the same series, not nested
    assert [first["name"], second["name"], of_rerun["name"]] == [
        "sweep lr (rerun 1)", "sweep lr (rerun 2)", "sweep lr (rerun 3)"]
    assert first["config"]["name"] == first["name"]
    named = c.post(f"/api/runs/{src['id']}/rerun", json={"name": "my own"}).json()
    assert named["name"] == "my own", "a name given is kept"
    for run in (src, first, second, of_rerun, named):
        c.post(f"/api/runs/{run['id']}/cancel")
