"""The official ``mlflow`` client (``mlflow-skinny``) reporting into a live backend process.

* ``start_run``, ``log_params``, ``log_metrics`` over 100 steps with TRL's names, ``set_tag``,
  ``end_run``: a registry run with source ``mlflow``, the params as its config, canonical metric
  names with their steps, status succeeded, listed on the runs page, and the stability monitor's
  alert on the collapsing entropy — on SQLite and on PostgreSQL.
* A tiny ``transformers.Trainer`` with ``report_to="mlflow"`` (a GPT-2 built in code) lands as a
  succeeded run with its loss under our canonical name.
* What the client does with an unknown run and a changed param (MLflow's error codes).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from rlhfkit.metrics import M
from tests.integration.conftest import Proc

mlflow = pytest.importorskip("mlflow")
from mlflow.exceptions import MlflowException  # noqa: E402

pytestmark = pytest.mark.slow


def _embedded_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RLHFKIT_", "MLFLOW_"))}
    env.pop("REDIS_URL", None)  # embedded mode: no Redis, no Celery
    env.update({"DATABASE_URL": database_url, "RLHFKIT_ARTIFACTS_DIR": str(tmp_path / "artifacts"),
                "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": "1"})
    return env


@pytest.fixture
def tracking(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Point the mlflow client at a URL; no run stays active after the test."""
    for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    # the fluent API remembers the last set_experiment() across servers; each test starts without one
    monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)

    def _use(url: str) -> None:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        mlflow.set_tracking_uri(url)

    yield _use
    while mlflow.active_run() is not None:
        mlflow.end_run()


@pytest.fixture(params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, start_backend: Callable[..., Proc], tmp_path: Path) -> Proc:
    url = request.getfixturevalue("pg_url") if request.param == "postgresql" else f"sqlite:///{tmp_path / 'r.db'}"
    return start_backend(_embedded_env(url, tmp_path))


def test_client_run_lands_as_a_registry_run_with_config_canonical_names_status_and_alerts(
        server: Proc, tracking: Callable[[str], None]) -> None:
    base = server.meta["url"]
    tracking(base)
    mlflow.set_experiment("ppo-from-mlflow")  # get-by-name (404), then create
    run = mlflow.start_run(run_name="trl-ppo-mlflow")
    run_id = run.info.run_id
    params = {"learning_rate": "1e-05", "batch_size": "8", "model": "tiny-gpt2"}
    mlflow.log_params(params)
    for step in range(100):
        entropy = 2.0 * math.exp(-step / 20)  # collapses below the 0.3 nats/token floor near step 38
        mlflow.log_metrics({"env/reward_mean": 0.01 * step, "objective/kl": 0.05 * step,
                            "policy/entropy_avg": entropy, "custom/thing": float(step)}, step=step)
    mlflow.set_tag("team", "rl")
    mlflow.end_run()

    api = httpx.Client(base_url=base, timeout=10)
    got = api.get(f"/api/runs/{run_id}").json()
    assert got["source"] == "mlflow"
    assert got["name"] == "trl-ppo-mlflow"
    assert got["status"] == "succeeded"
    assert got["config"] == params
    assert "team=rl" in got["tags"]
    series = api.get(f"/api/runs/{run_id}/metrics",
                     params={"keys": f"{M.REWARD_MEAN},{M.KL_K1},{M.ENTROPY},custom/thing"}).json()["series"]
    for key in (M.REWARD_MEAN, M.KL_K1, M.ENTROPY, "custom/thing"):
        assert series[key]["steps"] == list(range(100)), key
    assert series[M.KL_K1]["values"][-1] == pytest.approx(0.05 * 99)
    alerts = api.get(f"/api/runs/{run_id}/alerts").json()
    assert any(a["metric"] == M.ENTROPY and a["rule"].startswith("entropy") for a in alerts), alerts
    listed = api.get("/api/runs", params={"source": "mlflow"}).json()["data"]
    assert [r["id"] for r in listed] == [run_id]

    # and the client reads it back the way MLflow would show it
    back = mlflow.get_run(run_id)
    assert back.info.status == "FINISHED"
    assert back.data.params == params
    assert back.data.tags["team"] == "rl"
    assert back.data.metrics[M.REWARD_MEAN] == pytest.approx(0.99)
    found = mlflow.search_runs(experiment_names=["ppo-from-mlflow"], filter_string="tags.team = 'rl'",
                               output_format="list")
    assert [r.info.run_id for r in found] == [run_id]


def test_client_errors_use_mlflow_codes(server: Proc, tracking: Callable[[str], None]) -> None:
    tracking(server.meta["url"])
    with pytest.raises(MlflowException) as missing:
        mlflow.get_run("0123456789abcdef")
    assert missing.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    with mlflow.start_run():
        mlflow.log_param("lr", "0.1")
        with pytest.raises(MlflowException) as changed:
            mlflow.log_param("lr", "0.2")
        assert changed.value.error_code == "INVALID_PARAMETER_VALUE"
        assert "lr" in changed.value.message


def test_transformers_trainer_reports_to_the_server_through_mlflow(
        start_backend: Callable[..., Proc], tmp_path: Path, tracking: Callable[[str], None],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    server = start_backend(_embedded_env(f"sqlite:///{tmp_path / 'r.db'}", tmp_path))
    base = server.meta["url"]
    tracking(base)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "hf-trainer")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=1, n_head=2))
    ids = torch.randint(0, 64, (16, 12))
    data = [{"input_ids": row, "labels": row} for row in ids]
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=6, per_device_train_batch_size=4,
                             logging_steps=1, learning_rate=1e-3, report_to=["mlflow"], run_name="hf-tiny",
                             save_strategy="no", use_cpu=True, disable_tqdm=True, dataloader_num_workers=0)
    Trainer(model=model, args=args, train_dataset=data).train()
    while mlflow.active_run() is not None:  # the callback leaves the run to the caller in some versions
        mlflow.end_run()

    api = httpx.Client(base_url=base, timeout=10)
    runs = api.get("/api/runs", params={"source": "mlflow"}).json()["data"]
    assert len(runs) == 1
    got = api.get(f"/api/runs/{runs[0]['id']}").json()
    assert got["name"] == "hf-tiny"
    assert got["status"] == "succeeded"
    assert got["config"]["learning_rate"] == "0.001"
    series = api.get(f"/api/runs/{got['id']}/metrics", params={"keys": f"{M.TOTAL_LOSS},{M.LEARNING_RATE}"}).json()
    assert series["series"][M.TOTAL_LOSS]["steps"] == [1, 2, 3, 4, 5, 6]
    assert len(series["series"][M.LEARNING_RATE]["steps"]) == 6


def test_unknown_fields_and_bad_values_are_4xx_naming_the_field(server: Proc) -> None:
    api = httpx.Client(base_url=server.meta["url"], timeout=10)
    r = api.post("/api/2.0/mlflow/runs/create", json={"experiment_id": "0", "run_name": "x", "new_field": 1})
    assert r.status_code == 200
    rid = r.json()["run"]["info"]["run_id"]
    r = api.post("/api/2.0/mlflow/runs/log-batch",
                 json={"run_id": rid, "metrics": [{"key": "a", "value": 1.0, "timestamp": 0, "step": 2**40}]})
    assert r.status_code == 400 and "metrics[0].step" in r.json()["message"]
    r = api.post("/api/2.0/mlflow/runs/update", json={"run_id": rid, "status": "DONE"})
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    r = api.post("/api/2.0/mlflow/runs/search", json={"experiment_ids": ["0"], "filter": "metrics.a > 1"})
    assert r.status_code == 400 and "filter" in r.json()["message"]
    r = api.get("/api/2.0/mlflow/experiments/get", params={"experiment_id": "abc"})
    assert r.status_code == 400 and "experiment_id" in r.json()["message"]
