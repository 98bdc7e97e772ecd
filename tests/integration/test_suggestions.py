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
    assert 1 <= len(cands) <= 8
    fits = [c["fits"] for c in cands]
    assert fits == sorted(fits, reverse=True), "fitting candidates come first"
    first = cands[0]
    assert first["fits"], cands
    assert first["predicted_peak_mb"] <= body["budget_gb"] * 1024
    fitting = [c for c in cands if c["fits"]]
    rates = [c["predicted_tokens_per_sec"] for c in fitting]
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
    assert len(body["candidates"]) == 5
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
    assert len(res.json()["candidates"]) == 2


@pytest.mark.parametrize("params", [{"budget_gb": 0}, {"budget_gb": -1}, {"budget_gb": 5000},
                                    {"budget_gb": "lots"}, {"device": "tpu"}, {"top": 0}])
def test_bad_parameters_are_422(idle_client: Any, params: dict[str, Any]) -> None:
    run = _queued_run(idle_client)
    res = idle_client.get(f"/api/runs/{run['id']}/suggestions", params=params)
    assert res.status_code == 422, res.text
    assert res.json()["detail"][0]["loc"][:2] == ["query", next(iter(params))]
