"""Adapters against a real backend process (SQLite): TRL GRPO runs and OpenRLHF TensorBoard logs.

* A GRPOTrainer (current TRL, tiny GPT-2 built in code, function reward, CPU) with ``TRLAdapter``:
  the run, its canonical metrics, stage timings and a forced alert appear through the API.
* The backend is stopped mid-training: training finishes normally, the events are in the local
  JSON Lines file, and ``rlhfkit import`` uploads every event exactly once.
* ``rlhfkit ingest-tensorboard --source openrlhf`` follows a log directory that grows during the
  test and stores exactly the points the event files hold.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from rlhfkit.adapters.cli import import_events
from rlhfkit.adapters.mapping import map_metrics
from rlhfkit.client import Client
from rlhfkit.metrics import M

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``rlhfkit serve`` on a free port with its own SQLite file; can be stopped and started again."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "DATABASE_URL": f"sqlite:///{workdir / 'rlhfkit.db'}",
                    "RLHFKIT_ARTIFACTS_DIR": str(workdir / "artifacts")}
        self.env.pop("REDIS_URL", None)
        self.env.pop("RLHFKIT_API_TOKENS", None)
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        if importlib.util.find_spec("rlhfkit.cli_service") is not None:
            return [str(BIN / "rlhfkit"), "serve", "--port", str(self.port)]
        # until `rlhfkit serve` lands, the same app through uvicorn
        return [sys.executable, "-m", "uvicorn", "backend.main:app", "--port", str(self.port), "--log-level", "warning"]

    def start(self) -> None:
        self.proc = subprocess.Popen(self.command(), cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=open(self.workdir / "server.log", "ab"))  # noqa: SIM115
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.workdir / "server.log").read_text()[-2000:]
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError("backend did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("srv"))
    srv.start()
    yield srv
    srv.stop()


def _example() -> Any:
    spec = importlib.util.spec_from_file_location("trl_integration", ROOT / "examples" / "trl_integration.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _all_events(client: Client, run_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    after = -1
    while True:
        page = client.get_events(run_id, after=after, limit=1000)
        if not page["events"]:
            return events
        events.extend(page["events"])
        after = page["next_cursor"]


def test_grpo_run_metrics_timings_and_alert_appear_through_the_api(server: Server, tmp_path: Path) -> None:
    from rlhfkit.adapters import TRLAdapter

    ex = _example()
    trainer = TRLAdapter(base_trainer=ex.build_grpo_trainer(tmp_path, max_steps=3), server=server.url,
                         name="grpo-live", warning_thresholds={"entropy_min": 10.0},  # entropy ~3 < 10: alert
                         enable_profiling=True, profile_schedule=(0, 1, 1))
    trainer.train()
    assert trainer.run is not None
    client = Client(server.url)
    run = client.get_run(trainer.run.id)
    assert run["name"] == "grpo-live" and run["source"] == "trl" and run["status"] == "succeeded"
    assert run["config"]["trainer"] == "grpo"
    series = client.metrics(run["id"], keys=[M.REWARD_MEAN, M.KL_PER_TOKEN, M.ENTROPY, M.GRAD_NORM])["series"]
    for key in (M.REWARD_MEAN, M.KL_PER_TOKEN, M.ENTROPY, M.GRAD_NORM):
        assert series[key]["steps"] == [1, 2, 3], key
    alerts = client.alerts(run["id"])
    assert any(a["rule"] == "entropy_collapse" and a["metric"] == M.ENTROPY for a in alerts)
    timings = client.timings(run["id"])
    assert [t["step"] for t in timings] == [1, 2, 3]
    for t in timings:  # the step's wall time split into pipeline stages
        assert set(t["stages"]) == {"generation", "scoring", "update"}
        assert sum(t["stages"].values()) == pytest.approx(t["step_time"], rel=0.05)
    assert len(client.memory(run["id"])) == 3
    artifacts = client.artifacts(run["id"])  # the native profiler's files
    kinds = sorted(a["kind"] for a in artifacts)
    assert kinds.count("trace") == 1 and "speedscope" in kinds and "profile_summary" in kinds
    assert all(a["size_bytes"] > 0 for a in artifacts)


def test_backend_stopped_mid_training_then_import_uploads_every_event_once(tmp_path: Path) -> None:
    from transformers import TrainerCallback

    from rlhfkit.adapters import TRLAdapter

    srv = Server(tmp_path / "srv")
    srv.workdir.mkdir()
    srv.start()

    class StopServerAfterStep2(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 2:
                time.sleep(0.5)  # let the sender deliver the first steps
                srv.stop()

    ex = _example()
    base = ex.build_grpo_trainer(tmp_path / "out", max_steps=5, callbacks=[StopServerAfterStep2()])
    trainer = TRLAdapter(base_trainer=base, server=srv.url, name="grpo-offline")
    t0 = time.monotonic()
    result = trainer.train()  # finishes normally although the server is gone
    assert result.global_step == 5 and time.monotonic() - t0 < 60
    assert trainer.run is not None
    run_dir, run_id = trainer.run.run_dir, trainer.run.id
    lines = trainer.run.events_path.read_text().splitlines()
    assert json.loads(lines[-1])["type"] == "run_finished"

    srv.start()
    client = Client(srv.url)
    before = len(_all_events(client, run_id))
    assert 0 < before < len(lines)  # the live upload stopped part-way
    out = subprocess.run([str(BIN / "rlhfkit"), "import", str(run_dir), "--server", srv.url, "--json"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["run_id"] == run_id and res["accepted"] == len(lines) - before and res["duplicates"] == before
    again = import_events(run_dir / "events.jsonl", client, srv.url)  # importing twice is harmless
    assert again["accepted"] == 0 and again["duplicates"] == len(lines)
    stored = _all_events(client, run_id)
    assert [e["seq"] for e in stored] == list(range(len(lines)))
    assert client.get_run(run_id)["status"] == "succeeded"
    srv.stop()


# OpenRLHF's PPO logs_dict keys (openrlhf/trainer/ray/ppo_actor.py, ppo_critic.py, experience info),
# written by its TensorboardLogger as "train/<key>"; timing names as in the adapters issue.
OPENRLHF_KEYS = ("policy_loss", "actor_lr", "entropy_loss", "ppo_clip_ratio", "ppo_kl", "kl", "reward", "return",
                 "response_length", "total_length", "critic_loss", "values", "critic_lr",
                 "timing/generation", "timing/ppo_train")


def test_ingest_tensorboard_follows_a_growing_openrlhf_logdir(server: Server, tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    logdir = tmp_path / "tb" / "ppo-run"
    logdir.mkdir(parents=True)
    proc = subprocess.Popen([str(BIN / "rlhfkit"), "ingest-tensorboard", str(logdir), "--source", "openrlhf",
                             "--server", server.url, "--poll-interval", "0.2", "--idle-timeout", "4",
                             "--out-dir", str(tmp_path / "runs"), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    assert proc.stderr is not None
    assert "following" in proc.stderr.readline()  # the follower is up, polling an empty directory
    written: dict[int, dict[str, float]] = {}
    rng = np.random.default_rng(0)
    writer = SummaryWriter(log_dir=str(logdir))
    for step in range(1, 9):
        for key in OPENRLHF_KEYS:
            value = float(np.float32(rng.normal()))  # TensorBoard stores float32
            writer.add_scalar(f"train/{key}", value, step)
            written.setdefault(step, {})[f"train/{key}"] = value
        writer.flush()
        if step == 4:
            writer.close()  # a second file appears, like a restarted job
            writer = SummaryWriter(log_dir=str(logdir))
        time.sleep(0.3)
    last_write = time.time()
    writer.close()
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    res = json.loads(stdout)
    assert res["points"] == len(OPENRLHF_KEYS) * 8

    client = Client(server.url)
    run = client.get_run(res["run_id"])
    assert run["source"] == "openrlhf" and run["status"] == "succeeded"
    expected: dict[str, list[tuple[int, float]]] = {}
    for step, logs in written.items():
        for name, value in map_metrics(logs, strip_prefix="train/").items():
            expected.setdefault(name, []).append((step, value))
    series = client.metrics(run["id"], keys=sorted(expected), max_points=1000)["series"]
    got = {k: list(zip(s["steps"], s["values"], strict=True)) for k, s in series.items() if s["steps"]}
    assert got == expected
    assert M.POLICY_LOSS in got and M.KL_PER_TOKEN in got and M.REWARD_MEAN in got and M.APPROX_KL in got
    # streamed while the directory grew: the first points were stored before the last write
    events = _all_events(client, run["id"])
    first_metrics_ts = min(e["ts"] for e in events if e["type"] == "metrics")
    assert first_metrics_ts < last_write - 1.0
    timings = client.timings(run["id"])
    assert [t["stages"] for t in timings] == [
        {"generation": written[s]["train/timing/generation"], "update": written[s]["train/timing/ppo_train"]}
        for s in range(1, 9)]


@pytest.mark.parametrize("script, runs", [("trl_integration.py", 1), ("openrlhf_integration.py", 2)])
def test_examples_run_as_written_and_report_to_the_server(server: Server, tmp_path: Path, script: str,
                                                          runs: int) -> None:
    before = {r["id"] for r in Client(server.url).list_runs(limit=200)["data"]}
    out = subprocess.run([sys.executable, str(ROOT / "examples" / script), "--server", server.url,
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    new = [r for r in Client(server.url).list_runs(limit=200)["data"] if r["id"] not in before]
    assert len(new) == runs and all(r["status"] == "succeeded" for r in new)


VERL_SCALARS = {  # verl's exact names (ray_trainer.py / metric_utils.py) -> ours
    "actor/entropy": M.ENTROPY, "actor/pg_loss": M.POLICY_LOSS, "actor/pg_clipfrac": M.POLICY_CLIPFRAC,
    "actor/ppo_kl": M.APPROX_KL, "actor/grad_norm": M.GRAD_NORM, "actor/lr": M.LEARNING_RATE,
    "critic/score/mean": M.REWARD_MEAN, "critic/score/max": M.REWARD_MAX, "critic/rewards/mean": M.SCORE_MEAN,
    "critic/vf_loss": M.VALUE_LOSS, "critic/advantages/mean": M.ADV_MEAN, "response_length/mean": M.RESPONSE_LEN,
    "timing_per_token_ms/gen": M.TIME_PER_TOKEN_GENERATION, "perf/mfu/actor": M.MFU_UPDATE,
    "training/rollout_probs_diff_mean": M.MISMATCH_PROBS_DIFF_MEAN,
}
VERL_TIMINGS = {"timing_s/gen": 1.5, "timing_s/old_log_prob": 0.25, "timing_s/ref": 0.5, "timing_s/adv": 0.125,
                "timing_s/update_actor": 2.0, "timing_s/step": 4.5}


def test_ingest_tensorboard_lands_verl_names_on_canonical_names_and_stage_timings(
        server: Server, tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    logdir = tmp_path / "tb" / "verl-run"
    writer = SummaryWriter(log_dir=str(logdir))
    for step in range(1, 4):
        for i, key in enumerate(VERL_SCALARS):
            writer.add_scalar(key, 0.5 * i + step, step)  # exact in float32
        for key, seconds in VERL_TIMINGS.items():
            writer.add_scalar(key, seconds * step, step)
    writer.close()
    out = subprocess.run([str(BIN / "rlhfkit"), "ingest-tensorboard", str(logdir), "--source", "verl", "--once",
                          "--server", server.url, "--out-dir", str(tmp_path / "runs"), "--json"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    run_id = json.loads(out.stdout)["run_id"]
    client = Client(server.url)
    run = client.get_run(run_id)
    assert "verl" in run["tags"]
    series = client.metrics(run_id, keys=sorted(VERL_SCALARS.values()), max_points=1000)["series"]
    for i, (verl_name, ours) in enumerate(VERL_SCALARS.items()):
        assert series[ours]["steps"] == [1, 2, 3], verl_name
        assert series[ours]["values"] == [0.5 * i + s for s in (1, 2, 3)], verl_name
    timings = client.timings(run_id)
    assert [(t["step"], t["stages"], t["step_time"]) for t in timings] == [
        (s, {"generation": 1.5 * s, "scoring": 0.75 * s, "advantages": 0.125 * s, "update": 2.0 * s}, 4.5 * s)
        for s in (1, 2, 3)]
