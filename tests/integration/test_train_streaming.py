"""``rlhfkit train --server URL`` streams a terminal run to the dashboard live and keeps its local
folder; when the server goes away mid-run the run finishes locally, and ``rlhfkit import`` later
uploads what the server missed so that every event is stored exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import ROOT, Proc, free_port, service_env, tiny, wait_for

pytestmark = pytest.mark.integration


def train_cmd(out: Path, steps: int, *extra: str) -> list[str]:
    sets = [a for k, v in tiny(steps, **{"train.eval_every": 2}).items() for a in ("--set", f"{k}={v}")]
    return [sys.executable, "-m", "rlhfkit.cli", "train", "--config", "smoke", *sets, "--out", str(out),
            "--run-id", "local-run", *extra]


def stored_seqs(server: str, run_id: str) -> list[int]:
    events = httpx.get(f"{server}/api/runs/{run_id}/events", params={"limit": 10_000}, timeout=30).json()["events"]
    return [e["seq"] for e in events]


def test_train_streams_live_and_import_uploads_the_rest_exactly_once(
        sqlite_url: str, tmp_path: Path, start_backend: Callable[..., Proc]) -> None:
    env = service_env(database_url=sqlite_url, redis_prefix="unused", queue="unused", artifacts=tmp_path / "a")
    env.pop("REDIS_URL")
    port = free_port()
    backend = start_backend(env, port=port)
    server = str(backend.meta["url"])
    out = tmp_path / "runs"
    child_env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "RLHFKIT_SERVER": server}
    log = (tmp_path / "train.log").open("wb")
    train = subprocess.Popen(train_cmd(out, 30, "--quiet"), cwd=ROOT, env=child_env, stdout=log,
                             stderr=subprocess.STDOUT)
    try:
        # live: the run shows up on the server (RLHFKIT_SERVER, no flag) while it trains
        def streamed() -> dict | None:
            runs = httpx.get(f"{server}/api/runs", timeout=10).json()["data"]
            return runs[0] if runs and runs[0]["steps_done"] >= 2 else None

        run = wait_for(streamed, 120, 0.2, "the first steps on the server")
        assert run["status"] == "running" and run["total_steps"] == 30 and train.poll() is None
        backend.stop()  # the server goes away mid-run
        assert train.wait(300) == 0, (tmp_path / "train.log").read_text()[-3000:]
    finally:
        if train.poll() is None:
            train.kill()
        log.close()
    run_dir = out / "local-run"
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["type"] == "run_finished", "the run finished locally"
    assert {"config.yaml", "events.jsonl", "metrics.csv", "remote.json"} <= {p.name for p in run_dir.iterdir()}
    assert "rlhfkit import" in (tmp_path / "train.log").read_text(), "the user is told how to upload the rest"

    backend = start_backend(env, port=port, name="backend-again")
    before = stored_seqs(server, run["id"])
    assert 0 < len(before) < len(lines), "the server had part of the run"
    imp = subprocess.run([sys.executable, "-m", "rlhfkit.cli", "import", str(run_dir), "--json"], cwd=ROOT,
                         env=child_env, capture_output=True, text=True, timeout=120)
    assert imp.returncode == 0, imp.stderr
    res = json.loads(imp.stdout)
    assert res["run_id"] == run["id"], "the import continues the streamed run"
    assert (res["accepted"], res["duplicates"]) == (len(lines) - len(before), len(before))
    assert stored_seqs(server, run["id"]) == list(range(len(lines))), "every event exactly once"
    done = httpx.get(f"{server}/api/runs/{run['id']}", timeout=10).json()
    assert done["status"] == "succeeded" and done["steps_done"] == 30
    again = subprocess.run([sys.executable, "-m", "rlhfkit.cli", "import", str(run_dir), "--json"], cwd=ROOT,
                           env=child_env, capture_output=True, text=True, timeout=120)
    assert json.loads(again.stdout)["accepted"] == 0
    assert stored_seqs(server, run["id"]) == list(range(len(lines)))


def test_train_with_server_flag_streams_everything_and_keeps_local_files(
        sqlite_url: str, tmp_path: Path, start_backend: Callable[..., Proc]) -> None:
    env = service_env(database_url=sqlite_url, redis_prefix="unused", queue="unused", artifacts=tmp_path / "a")
    env.pop("REDIS_URL")
    server = str(start_backend(env).meta["url"])
    out = tmp_path / "runs"
    child_env = {k: v for k, v in os.environ.items() if k != "RLHFKIT_SERVER"}
    child_env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    done = subprocess.run(train_cmd(out, 3, "--server", server, "--quiet"), cwd=ROOT, env=child_env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = (out / "local-run" / "events.jsonl").read_text().splitlines()
    remote = json.loads((out / "local-run" / "remote.json").read_text())
    assert remote["server"] == server
    assert stored_seqs(server, remote["run_id"]) == list(range(len(lines)))
    run = httpx.get(f"{server}/api/runs/{remote['run_id']}", timeout=10).json()
    assert run["status"] == "succeeded" and run["steps_done"] == 3 and run["name"] == "smoke"
