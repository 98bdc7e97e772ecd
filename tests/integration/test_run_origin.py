"""A run launched from a config suggestion keeps where it came from (``origin``: the source run, the
suggestion's number, its predicted peak and tokens/s), and ``GET /api/runs/{id}/origin`` sets that
prediction against what the run measured, on the prediction's footing. SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.conftest import tiny, wait_status

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def client(request: pytest.FixtureRequest, make_client: Any) -> Any:
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    return make_client(url)  # embedded mode: runs execute in a local process


def test_run_launched_from_a_suggestion_shows_predicted_against_measured(client: Any) -> None:
    source = client.post("/api/runs/external", json={"name": "source", "config": {}}).json()
    origin = {"run_id": source["id"], "index": 1, "group": "same_math",
              "predicted_peak_mb": 250.0, "predicted_tokens_per_sec": 400.0}
    res = client.post("/api/runs", json={"preset": "smoke", "overrides": tiny(steps=2), "name": "from-sugg",
                                         "origin": origin})
    assert res.status_code == 201, res.text
    run = res.json()
    assert run["origin"] == origin
    assert client.get(f"/api/runs/{run['id']}").json()["origin"] == origin
    done = wait_status(client, run["id"], ("succeeded", "failed"), timeout=120)
    assert done["status"] == "succeeded", done.get("error")

    check = client.get(f"/api/runs/{run['id']}/origin").json()
    assert check["origin"] == origin
    peak, tps = check["measured_peak_mb"], check["measured_tokens_per_sec"]
    assert peak is not None and peak > 0, check["measured_note"]
    assert tps == pytest.approx(done["summary"]["tokens_per_sec"], rel=1e-2)
    assert check["peak_error_pct"] == pytest.approx((250.0 - peak) / peak * 100, abs=0.2)
    assert check["tokens_per_sec_error_pct"] == pytest.approx((400.0 - tps) / tps * 100, abs=0.2)
    assert "process baseline" in check["measured_note"]


def test_a_run_not_launched_from_a_suggestion_has_no_origin(client: Any) -> None:
    run = client.post("/api/runs/external", json={"name": "plain", "config": {}}).json()
    assert run["origin"] is None
    res = client.get(f"/api/runs/{run['id']}/origin")
    assert res.status_code == 404 and "not launched from a config suggestion" in res.json()["detail"]


@pytest.mark.parametrize(("field", "value"), [("index", -1), ("predicted_peak_mb", -5), ("run_id", ""),
                                              ("group", "faster"),
                                              # JSON's true/false and "12" are not numbers (schemathesis)
                                              ("index", True), ("index", "1"), ("predicted_tokens_per_sec", False),
                                              ("predicted_peak_mb", "12")])
def test_a_bad_origin_is_422_naming_the_field(client: Any, field: str, value: Any) -> None:
    origin: dict[str, Any] = {"run_id": "abc", "index": 1, field: value}
    res = client.post("/api/runs", json={"preset": "smoke", "overrides": tiny(steps=2), "origin": origin})
    assert res.status_code == 422, res.text
    assert field in res.text
