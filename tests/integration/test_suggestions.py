"""GET /api/runs/{id}/suggestions against the real app: ranked candidates for a native run within a
memory budget, each with a full config that validates; clear errors for unknown runs, external runs
without a RunConfig, and bad parameters."""

from __future__ import annotations

from typing import Any

import pytest

from rlhfkit.config import load_config, validate_config
from tests.integration.conftest import tiny

pytestmark = pytest.mark.integration


def _queued_run(client: Any) -> dict[str, Any]:
    res = client.post("/api/runs", json={"preset": "smoke", "overrides": tiny(), "name": "sugg"})
    assert res.status_code == 201, res.text
    return res.json()  # type: ignore[no-any-return]


def test_native_run_gets_ranked_candidates_within_the_budget(idle_client: Any) -> None:
    run = _queued_run(idle_client)
    res = idle_client.get(f"/api/runs/{run['id']}/suggestions", params={"budget_gb": 0.5, "top": 8})
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["run_id"] == run["id"] and body["budget_gb"] == 0.5 and body["device"] == "cpu"
    cands = body["candidates"]
    for group in ("same_math", "changes_algorithm"):  # each group ranked on its own
        ranked = [c for c in cands if c["group"] == group]
        assert 1 <= len(ranked) <= 8
        fits = [c["fits"] for c in ranked]
        assert fits == sorted(fits, reverse=True), "fitting candidates come first"
        assert ranked[0]["fits"], ranked
        assert ranked[0]["predicted_peak_mb"] <= body["budget_gb"] * 1024
        rates = [c["predicted_tokens_per_sec"] for c in ranked if c["fits"]]
        assert all(b <= a * 1.03 for a, b in zip(rates, rates[1:], strict=False)), rates  # ties within ~2%
    for c in cands:
        cfg = validate_config(c["config"])
        assert c["predicted_peak_mb"] > 0 and c["predicted_tokens_per_sec"] > 0
        assert c["title"]
        for key, value in c["overrides"].items():  # only changed keys, and the config carries them
            section, field = key.split(".")
            assert getattr(getattr(cfg, section), field) == value
            assert run["config"][section][field] != value


def test_defaults_are_the_runs_device_and_four_gib_on_cpu(idle_client: Any) -> None:
    run = _queued_run(idle_client)
    body = idle_client.get(f"/api/runs/{run['id']}/suggestions").json()
    assert body["device"] == "cpu" and body["budget_gb"] == 4.0
    assert 1 <= len(body["candidates"]) <= 10  # up to 5 per group
    cuda = idle_client.get(f"/api/runs/{run['id']}/suggestions", params={"device": "cuda"}).json()
    assert cuda["device"] == "cuda" and cuda["budget_gb"] == 16.0


def test_unknown_run_is_404(idle_client: Any) -> None:
    res = idle_client.get("/api/runs/doesnotexist/suggestions")
    assert res.status_code == 404
    assert "not found" in res.json()["detail"]


def test_external_run_without_a_run_config_is_409(idle_client: Any) -> None:
    ext = idle_client.post("/api/runs/external", json={"name": "trl-run", "source": "trl",
                                                       "config": {"learning_rate": 1e-5, "batch_size": 8}}).json()
    res = idle_client.get(f"/api/runs/{ext['id']}/suggestions")
    assert res.status_code == 409
    assert "RunConfig" in res.json()["detail"] and "trl" in res.json()["detail"]


def test_external_run_that_carries_a_run_config_gets_suggestions(idle_client: Any) -> None:
    cfg = load_config("smoke").model_dump(mode="json")
    ext = idle_client.post("/api/runs/external", json={"name": "tracked", "config": cfg}).json()
    res = idle_client.get(f"/api/runs/{ext['id']}/suggestions", params={"budget_gb": 2, "device": "cpu", "top": 2})
    assert res.status_code == 200, res.text
    assert len(res.json()["candidates"]) == 4  # top=2 per group


@pytest.mark.parametrize("params", [{"budget_gb": 0}, {"budget_gb": -1}, {"budget_gb": 5000},
                                    {"budget_gb": "lots"}, {"device": "tpu"}, {"top": 0}])
def test_bad_parameters_are_422(idle_client: Any, params: dict[str, Any]) -> None:
    run = _queued_run(idle_client)
    res = idle_client.get(f"/api/runs/{run['id']}/suggestions", params=params)
    assert res.status_code == 422, res.text
    assert res.json()["detail"][0]["loc"][:2] == ["query", next(iter(params))]


def test_groups_come_with_row_zero_and_shared_notes(idle_client: Any) -> None:
    run = _queued_run(idle_client)
    body = idle_client.get(f"/api/runs/{run['id']}/suggestions", params={"budget_gb": 4, "top": 3}).json()
    cur = body["current"]
    assert cur["config"] == run["config"] and cur["predicted_peak_mb"] > 0 and cur["predicted_tokens_per_sec"] > 0
    assert cur["measured_peak_mb"] is None and "no memory snapshots" in cur["measured_note"]  # queued: not run yet
    groups = [c["group"] for c in body["candidates"]]
    assert groups == sorted(groups, key=lambda g: g != "same_math"), "same math first, then the algorithm changes"
    assert {"same_math", "changes_algorithm"} == set(groups)
    assert groups.count("same_math") <= 3 and groups.count("changes_algorithm") <= 3
    for c in body["candidates"]:
        assert c["tokens_per_sec_ratio"] == pytest.approx(c["predicted_tokens_per_sec"] / cur["predicted_tokens_per_sec"],
                                                          rel=1e-2)
        assert c["peak_change_pct"] == pytest.approx((c["predicted_peak_mb"] / cur["predicted_peak_mb"] - 1) * 100,
                                                     abs=0.5)
        same = c["group"] == "same_math"
        assert same == (not c["changes"])
        if same:  # identical updates: the rollout batch and the minibatch count stay
            assert "ppo.batch_size" not in c["overrides"]
        assert all(n not in c["notes"] for n in body["notes"]), "shared notes appear once, not per row"
    assert any("growth above the process baseline" in n for n in body["notes"])
    assert "growth above the process baseline" in body["memory_footing"]
    # the algorithm group offers a shorter and a longer response cap, each saying what it changes
    R0 = run["config"]["generation"]["max_new_tokens"]
    lengths = {c["overrides"]["generation.max_new_tokens"]: c for c in body["candidates"]
               if "generation.max_new_tokens" in c["overrides"]}
    assert set(lengths) == {R0 // 2, 2 * R0}, lengths
    for R, c in lengths.items():
        assert c["group"] == "changes_algorithm" and list(c["overrides"]) == ["generation.max_new_tokens"]
        assert c["title"] == f"response cap {R} tokens" and c["config"]["generation"]["max_new_tokens"] == R
    assert "responses may be cut shorter: the reward sees different text" in lengths[R0 // 2]["changes"][0]
    assert "responses may run longer: the reward sees different text" in lengths[2 * R0]["changes"][0]


def test_finished_run_reports_measured_memory_on_the_predictions_footing(idle_client: Any) -> None:
    """A real tiny run, ingested: row 0's measured peak is the RSS high-water less the run's process
    baseline — the growth the model predicts — not the absolute RSS, which holds the interpreter."""
    from rlhfkit.config import apply_overrides
    from rlhfkit.runner import run_training
    from rlhfkit.sinks import MemorySink

    cfg = validate_config(apply_overrides(load_config("smoke").model_dump(mode="json"), tiny(steps=2)))
    ext = idle_client.post("/api/runs/external", json={"name": "measured", "config": cfg.model_dump(mode="json")}).json()
    sink = MemorySink()
    run_training(cfg, run_id=ext["id"], sinks=[sink], out_dir=None)
    events = [e.model_dump(mode="json") for e in sink.events]
    res = idle_client.post(f"/api/runs/{ext['id']}/events", json={"events": events})
    assert res.status_code == 200, res.text
    body = idle_client.get(f"/api/runs/{ext['id']}/suggestions", params={"device": "cpu"}).json()
    cur = body["current"]
    finished = next(e for e in events if e["type"] == "run_finished")
    baseline = finished["summary"]["memory_baseline_mb"]
    absolute = max(st.get("rss_peak_mb") or st["rss_mb"] for e in events if e["type"] == "memory"
                   for st in e["stages"].values())
    assert baseline > 0 and absolute > baseline
    assert cur["measured_peak_mb"] == pytest.approx(absolute - baseline, abs=0.2)
    assert cur["measured_peak_mb"] < absolute, "the absolute RSS is not the prediction's footing"
    assert cur["measured_tokens_per_sec"] == pytest.approx(finished["summary"]["tokens_per_sec"], rel=1e-2)
    assert "process baseline" in cur["measured_note"]
    # its tokens/s anchor the ranking model to this machine: row 0 shows them, the ratios stay the model's
    assert cur["predicted_tokens_per_sec"] == pytest.approx(cur["measured_tokens_per_sec"], rel=1e-2)
    assert any(f"anchored to run {ext['name']}" in n for n in body["notes"]), body["notes"]
    assert not any("ranking model: compare rows" in n for n in body["notes"])
    cuda = idle_client.get(f"/api/runs/{ext['id']}/suggestions", params={"device": "cuda", "budget_gb": 16}).json()
    assert not any("anchored" in n for n in cuda["notes"]), "a CPU run's speed says nothing about a GPU"
    print("predicted", cur["predicted_peak_mb"], "measured growth", cur["measured_peak_mb"], "absolute", absolute)
