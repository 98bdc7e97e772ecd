"""GET /api/runs/{id}/profile and /memory/estimate against the real app: a profiled embedded run's
own profile_summary.json comes back typed (stages in pipeline order, bottlenecks, top operators,
NaN as null); an unprofiled run is a clear 404; the memory estimate is rlhfkit.memopt's for the
run's config, and an external run without a RunConfig is a 409."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rlhfkit.config import validate_config
from rlhfkit.memopt import estimate_memory, plan_from_config
from tests.integration.conftest import tiny, wait_status

pytestmark = pytest.mark.integration

PROFILED = {"profile.enabled": True, "profile.skip_first": 0, "profile.wait": 0, "profile.warmup": 1,
            "profile.active": 1}


def test_profiled_run_serves_its_summary_and_bottlenecks(make_client: Any, sqlite_url: str, tmp_path: Path) -> None:
    client = make_client(sqlite_url, artifacts_dir=tmp_path / "artifacts")
    run = client.post("/api/runs", json={"preset": "smoke", "overrides": tiny(3, **PROFILED), "name": "prof"}).json()
    plain = client.post("/api/runs", json={"preset": "smoke", "overrides": tiny(2), "name": "plain"}).json()
    for r in (run, plain):
        assert wait_status(client, r["id"], ("succeeded", "failed"), 180)["status"] == "succeeded"

    res = client.get(f"/api/runs/{run['id']}/profile")
    assert res.status_code == 200, res.text
    body = res.json()
    arts = {a["name"]: a for a in client.get(f"/api/runs/{run['id']}/artifacts").json()}
    assert body["artifact"] in arts and arts[body["artifact"]]["kind"] == "profile_summary"
    raw = json.loads(client.get(arts[body["artifact"]]["url"]).text)  # Python's json reads NaN too
    assert body["steps"] == raw["steps"] == 3
    assert body["step_time_s"] == pytest.approx(raw["step_time"]["mean"])
    stages = [s["stage"] for s in body["stages"]]
    assert stages[:2] == ["generation", "scoring"] and "update" in stages  # pipeline order, top level only
    for s in body["stages"]:
        assert s["mean_s"] == pytest.approx(raw["stages"][s["stage"]]["mean"])
    assert sum(s["mean_s"] for s in body["stages"]) == pytest.approx(body["step_time_s"] * body["coverage"])
    # sub-stages only the trace sees sit in their own table, against their parent over the same profiled steps
    traced = {s["stage"]: s for s in body["traced"]}
    assert {"update", "update/forward", "update/backward"} <= set(traced) and body["traced_steps"] >= 1
    assert not {s["stage"] for s in body["substages"]} & set(traced)
    kids = [s for name, s in traced.items() if name.startswith("update/")]
    assert sum(s["mean_s"] for s in kids) <= traced["update"]["mean_s"] * 1.001
    assert sum(s["share"] for s in kids) <= 1.001
    assert body["bottlenecks"] and all(f["finding"] and f["evidence"] and f["try"] for f in body["bottlenecks"])
    assert body["bottlenecks"] == raw["bottlenecks"]
    gen_ops = body["top_ops"]["generation"]
    assert gen_ops and gen_ops == sorted(gen_ops, key=lambda o: -o["self_us"]) and gen_ops[0]["calls"] > 0

    res = client.get(f"/api/runs/{plain['id']}/profile")
    assert res.status_code == 404 and "profile.enabled" in res.json()["detail"]
    assert client.get("/api/runs/nope/profile").status_code == 404


def test_memory_estimate_is_the_memory_models_for_the_runs_config(idle_client: Any) -> None:
    run = idle_client.post("/api/runs", json={"preset": "smoke", "overrides": tiny(), "name": "est"}).json()
    est = estimate_memory(plan_from_config(validate_config(run["config"]), device="cpu"))
    res = idle_client.get(f"/api/runs/{run['id']}/memory/estimate")
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["run_id"] == run["id"] and body["device"] == "cpu" and "RSS" in body["measured_as"]
    assert body["peak_mb"] == pytest.approx(est.peak / 2**20, abs=0.01) and body["peak_stage"] == est.peak_stage
    assert body["update_phase"] == est.update_phase
    models = {m["model"]: m for m in body["models"]}
    assert set(models) == {"policy", "value", "reference", "reward"} | set(est.models)  # + policy_packed on CPU
    assert set(est.models) - {"policy", "value", "reference", "reward"} <= {"policy_packed"}
    assert models["policy"]["optimizer_mb"] == pytest.approx(2 * models["policy"]["weights_mb"], rel=1e-3)  # AdamW
    assert models["reference"]["grads_mb"] == 0
    assert sum(m["total_mb"] for m in body["models"]) == pytest.approx(body["persistent_mb"], abs=0.05)
    for st in body["stages"]:
        assert st["peak_mb"] == pytest.approx(body["persistent_mb"] + body["overhead_mb"]
                                              + sum(st["parts_mb"].values()), abs=0.05)
    cuda = idle_client.get(f"/api/runs/{run['id']}/memory/estimate", params={"device": "cuda"}).json()
    assert cuda["device"] == "cuda" and "max_memory_allocated" in cuda["measured_as"]
    assert {m["model"] for m in cuda["models"]} == {"policy", "value", "reference", "reward"}  # no CPU packing
    assert idle_client.get(f"/api/runs/{run['id']}/memory/estimate", params={"device": "tpu"}).status_code == 422

    ext = idle_client.post("/api/runs/external", json={"name": "ext", "source": "trl", "config": {"lr": 1e-5}}).json()
    res = idle_client.get(f"/api/runs/{ext['id']}/memory/estimate")
    assert res.status_code == 409 and "RunConfig" in res.json()["detail"]
