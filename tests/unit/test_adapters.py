"""Adapters without a server: name mapping, the local-file-first transport, import, track(), OpenRLHF.

A fake ingest API stands in for the service here (it deduplicates on ``(run_id, seq)`` like the
real one); tests/integration/test_adapters_*.py run the same paths against a real backend process.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any

import pytest

from rlhfkit.adapters import track
from rlhfkit.adapters.cli import import_events
from rlhfkit.adapters.mapping import map_metrics
from rlhfkit.adapters.openrlhf import RLHFKitLogger, TensorBoardFollower, patch_openrlhf, split_timings
from rlhfkit.adapters.track import Run
from rlhfkit.adapters.transport import REMOTE_FILE, RemoteSink, RunMeta
from rlhfkit.events import MetricsEvent, parse_event
from rlhfkit.metrics import M
from rlhfkit.sinks import MemorySink


class FakeAPI:
    """In-memory stand-in for the ingest endpoints; ``down`` makes every call fail like a dead server."""

    def __init__(self) -> None:
        self.runs: dict[str, dict[str, Any]] = {}
        self.events: dict[tuple[str, int], dict[str, Any]] = {}
        self.posts = 0
        self.down = False
        self.lock = threading.Lock()

    def create_external_run(self, name: str, source: str = "external", config: dict[str, Any] | None = None,
                            tags: list[str] | None = None, **extra: Any) -> dict[str, Any]:
        if self.down:
            raise ConnectionError("connection refused")
        rid = f"srv{len(self.runs) + 1}"
        self.runs[rid] = {"id": rid, "name": name, "source": source, "config": config or {}}
        return self.runs[rid]

    def post_events(self, run_id: str, events: list[dict[str, Any]]) -> dict[str, int]:
        if self.down:
            raise ConnectionError("connection refused")
        with self.lock:
            self.posts += 1
            new = 0
            for e in events:
                key = (run_id, int(e["seq"]))
                if key not in self.events:
                    self.events[key] = e
                    new += 1
            return {"accepted": new, "duplicates": len(events) - new, "last_seq": max(s for _, s in self.events)}

    def seqs(self, run_id: str) -> list[int]:
        return sorted(s for r, s in self.events if r == run_id)


def factory(api: FakeAPI) -> Any:
    return lambda server, token: api


def wait_for(cond: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


# -- mapping --------------------------------------------------------------------------------
def test_grpo_log_record_maps_to_canonical_names_and_keeps_unknown_keys() -> None:
    logs = {"loss": -0.4, "grad_norm": 1.5, "learning_rate": 1e-3, "reward": 5.0, "reward_std": 3.4, "kl": 0.01,
            "entropy": 2.8, "clip_ratio/region_mean": 0.0, "completions/mean_length": 6.2, "step_time": 0.13,
            "rewards/reward_len/mean": 5.0, "frac_reward_zero_std": 0.0, "epoch": 0.06, "note": "text", "x": None}
    out = map_metrics(logs)
    assert out[M.TOTAL_LOSS] == -0.4 and out[M.GRAD_NORM] == 1.5 and out[M.LEARNING_RATE] == 1e-3
    assert out[M.REWARD_MEAN] == 5.0 and out[M.REWARD_STD] == 3.4 and out[M.KL_PER_TOKEN] == 0.01
    assert out[M.ENTROPY] == 2.8 and out[M.POLICY_CLIPFRAC] == 0.0 and out[M.RESPONSE_LEN] == 6.2
    assert out[M.STEP_TIME] == 0.13
    assert out["rewards/reward_len/mean"] == 5.0 and out[M.FRAC_ZERO_STD] == 0.0 and out["epoch"] == 0.06
    assert "note" not in out and "x" not in out


def test_ppo_trainer_keys_map_and_collisions_keep_both_numbers() -> None:
    logs = {"objective/kl": 3.0, "objective/entropy": 40.0, "policy/entropy_avg": 2.5, "objective/scores": 0.7,
            "objective/rlhf_reward": 0.4, "policy/clipfrac_avg": 0.1, "loss/value_avg": 0.3, "val/ratio": 1.01,
            "val/num_eos_tokens": 12.0, "lr": 3e-6}
    out = map_metrics(logs)
    # policy/entropy_avg is the per-token entropy; objective/entropy (a per-sequence sum) keeps its own name
    assert out[M.ENTROPY] == 2.5 and out["objective/entropy"] == 40.0
    assert out[M.KL_K1] == 3.0 and out[M.REWARD_MEAN] == 0.7 and out[M.SCORE_MEAN] == 0.4
    assert out[M.POLICY_CLIPFRAC] == 0.1 and out[M.VALUE_LOSS] == 0.3 and out[M.RATIO_MEAN] == 1.01
    assert out["val/num_eos_tokens"] == 12.0  # a count, not the EOS fraction
    # TRL 0.11 logs the reward twice; the first alias wins and the other stays visible
    old = map_metrics({"ppo/mean_scores": 1.0, "env/reward_mean": 1.5})
    assert old == {M.REWARD_MEAN: 1.5, "ppo/mean_scores": 1.0}


def test_openrlhf_tensorboard_tags_map_with_and_without_train_prefix() -> None:
    out = map_metrics({"train/policy_loss": 0.1, "train/kl": 0.02, "train/reward": 0.5, "train/ppo_clip_ratio": 0.2,
                       "train/response_length": 99.0, "train/unknown_thing": 1.0}, strip_prefix="train/")
    assert out == {M.POLICY_LOSS: 0.1, M.KL_PER_TOKEN: 0.02, M.REWARD_MEAN: 0.5, M.POLICY_CLIPFRAC: 0.2,
                   M.RESPONSE_LEN: 99.0, "train/unknown_thing": 1.0}


# -- transport -----------------------------------------------------------------------------
def _metrics_event(seq: int) -> MetricsEvent:
    return MetricsEvent(run_id="local", seq=seq, ts=1.0, step=seq, values={"reward/mean": float(seq)})


def test_sink_uploads_in_order_and_records_the_server_run(tmp_path: Path) -> None:
    api = FakeAPI()
    sink = RemoteSink(tmp_path / "r1", RunMeta("n"), server="http://srv", client_factory=factory(api))
    for i in range(25):
        sink.emit(_metrics_event(i))
    sink.close()
    assert api.seqs("srv1") == list(range(25))
    assert all(e["run_id"] == "srv1" for e in api.events.values())
    assert json.loads((tmp_path / "r1" / REMOTE_FILE).read_text()) == {"server": "http://srv", "run_id": "srv1"}
    assert len((tmp_path / "r1" / "events.jsonl").read_text().splitlines()) == 25


def test_server_down_never_blocks_emit_and_catches_up_when_back(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    api = FakeAPI()
    api.down = True
    caplog.set_level(logging.WARNING, logger="rlhfkit.adapters")
    sink = RemoteSink(tmp_path / "r", RunMeta("n"), server="http://srv", max_backoff=0.2, client_factory=factory(api))
    t0 = time.perf_counter()
    for i in range(200):
        sink.emit(_metrics_event(i))
    per_emit = (time.perf_counter() - t0) / 200
    assert per_emit < 0.005  # a local append, never a network wait
    wait_for(lambda: sink.online is False)
    assert "cannot reach the rlhfkit server" in caplog.text and "rlhfkit import" in caplog.text
    api.down = False
    wait_for(lambda: api.seqs("srv1") == list(range(200)))
    sink.close()


def test_close_with_server_down_returns_fast_and_says_how_to_import(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    api = FakeAPI()
    api.down = True
    caplog.set_level(logging.WARNING, logger="rlhfkit.adapters")
    sink = RemoteSink(tmp_path / "r", RunMeta("n"), server="http://srv", close_timeout=10, client_factory=factory(api))
    sink.emit(_metrics_event(0))
    wait_for(lambda: sink.online is False)
    t0 = time.perf_counter()
    sink.close()
    assert time.perf_counter() - t0 < 3.0
    assert f"rlhfkit import {tmp_path / 'r'}" in caplog.text


def test_import_after_partial_upload_stores_each_event_exactly_once(tmp_path: Path) -> None:
    api = FakeAPI()
    run = Run("partial", out_dir=tmp_path, server="http://srv", monitor=False, client_factory=factory(api))
    with run:
        for step in range(5):
            run.log({"reward": step}, step=step)
        wait_for(lambda: len(api.seqs("srv1")) == 6)  # run_started + 5 metrics
        api.down = True  # the server goes away mid-run
        for step in range(5, 10):
            run.log({"reward": step}, step=step)
    lines = run.events_path.read_text().splitlines()
    assert len(lines) == 12 and len(api.seqs("srv1")) == 6
    api.down = False
    first = import_events(run.events_path, api, "http://srv")
    assert first["run_id"] == "srv1" and first["accepted"] == 6 and first["duplicates"] == 6
    again = import_events(run.events_path, api, "http://srv")
    assert again["accepted"] == 0 and again["duplicates"] == 12
    assert api.seqs("srv1") == list(range(12)) and len(api.runs) == 1


def test_import_of_an_offline_run_creates_it_from_run_started(tmp_path: Path) -> None:
    with track("offline", config={"lr": 1e-3}, out_dir=tmp_path, source="external", monitor=False) as run:
        run.log({"reward/mean": 1.0})
    api = FakeAPI()
    res = import_events(run.events_path, api, "http://srv")
    assert res["accepted"] == 3 and api.runs["srv1"]["name"] == "offline" and api.runs["srv1"]["config"] == {"lr": 1e-3}


# -- track() -------------------------------------------------------------------------------
def test_track_emits_run_metrics_alerts_and_finish(tmp_path: Path) -> None:
    mem = MemorySink()
    with track("my-run", config={"lr": 1e-4}, out_dir=tmp_path, sinks=[mem],
               warning_thresholds={"entropy_min": 5.0}) as run:
        alerts = run.log({"objective/kl": 0.1, "entropy": 1.0, "reward": 0.5}, step=0)
        run.log({"reward": 0.6})  # step defaults to the next one
    types_ = [e.type for e in mem.events]
    assert types_[0] == "run_started" and types_[-1] == "run_finished"
    assert [a.rule for a in alerts] == ["entropy_collapse"] and "alert" in types_
    assert mem.metric(M.REWARD_MEAN) == [0.5, 0.6] and mem.of_type("metrics")[1].step == 1
    assert [e.seq for e in mem.events] == list(range(len(mem.events)))
    on_disk = [parse_event(line) for line in run.events_path.read_text().splitlines()]
    assert [e.type for e in on_disk] == types_


def test_track_reports_an_exception_as_run_failed_and_reraises(tmp_path: Path) -> None:
    mem = MemorySink()
    with pytest.raises(RuntimeError, match="boom"), track("f", out_dir=tmp_path, sinks=[mem]) as run:
        run.log({"reward": 1.0})
        raise RuntimeError("boom")
    failed = mem.events[-1]
    assert failed.type == "run_failed" and "boom" in failed.error


def test_nan_metric_raises_an_alert_and_is_left_out_of_the_metrics_event(tmp_path: Path) -> None:
    mem = MemorySink()
    with track("nan", out_dir=tmp_path, sinks=[mem]) as run:
        alerts = run.log({"reward": float("nan"), "kl": 0.1}, step=0)
    assert alerts[0].rule == "nan_inf"
    assert mem.of_type("metrics")[0].values == {M.KL_PER_TOKEN: 0.1}


# -- OpenRLHF ----------------------------------------------------------------------------------
def test_timing_scalars_become_stage_timings() -> None:
    stages, total = split_timings({"timing/generation": 3.0, "train/timing/ppo_train": 2.0,
                                   "timing/make_experience": 1.0, "timing/weight_sync": 0.5, "train/kl": 0.1})
    assert stages == {"generation": 3.0, "update": 2.0, "scoring": 1.0, "weight_sync": 0.5} and total is None


def test_drop_in_logger_maps_openrlhf_logs(tmp_path: Path) -> None:
    args = types.SimpleNamespace(wandb_run_name="ppo-qwen", seed=42, actor_learning_rate=5e-7)
    logger = RLHFKitLogger(args, out_dir=tmp_path)
    logger.log_train(1, {"policy_loss": 0.2, "kl": 0.01, "reward": 0.3, "critic_loss": 0.5,
                         "timing/generation": 4.0, "generated_samples": ["text", 0.3]})
    logger.close()
    events: list[Any] = [parse_event(line) for line in logger.run.events_path.read_text().splitlines()]
    started, metrics, timings = events[0], events[1], events[2]
    assert started.type == "run_started" and started.name == "ppo-qwen" and started.source == "openrlhf"
    assert started.config["actor_learning_rate"] == 5e-7
    assert metrics.values == {M.POLICY_LOSS: 0.2, M.KL_PER_TOKEN: 0.01, M.REWARD_MEAN: 0.3, M.VALUE_LOSS: 0.5,
                              "train/timing/generation": 4.0}
    assert timings.type == "timings" and timings.stages == {"generation": 4.0}
    assert events[-1].type == "run_finished"


def test_patch_openrlhf_replaces_the_wandb_logger(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("openrlhf.utils.logging_utils")
    fake.WandbLogger = object  # type: ignore[attr-defined]
    for name in ("openrlhf", "openrlhf.utils"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "openrlhf.utils.logging_utils", fake)
    assert patch_openrlhf() == ["openrlhf.utils.logging_utils"]
    assert fake.WandbLogger is RLHFKitLogger  # type: ignore[attr-defined]


def test_follower_reads_growing_event_files(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(tmp_path / "tb"))
    mem = MemorySink()
    run = Run("tb", out_dir=tmp_path / "runs", sinks=[mem], monitor=False)
    follower = TensorBoardFollower(tmp_path / "tb", run)
    writer.add_scalar("train/kl", 0.5, 1)
    writer.add_scalar("train/reward", 1.5, 1)
    writer.flush()
    assert follower.poll() == 2
    writer.add_scalar("train/kl", 0.75, 2)  # float32-exact values
    writer.flush()
    assert follower.poll() == 1 and follower.poll() == 0
    writer.close()
    assert [(e.step, e.values) for e in mem.of_type("metrics")] == [(1, {M.KL_PER_TOKEN: 0.5, M.REWARD_MEAN: 1.5}),
                                                                    (2, {M.KL_PER_TOKEN: 0.75})]


def test_cli_registers_the_adapter_commands() -> None:
    from rlhfkit.cli import build_parser

    parser = build_parser()
    ns = parser.parse_args(["import", "runs/abc"])
    assert ns.handler.__name__ == "cmd_import"
    ns = parser.parse_args(["ingest-tensorboard", "logs", "--source", "openrlhf", "--idle-timeout", "5"])
    assert ns.handler.__name__ == "cmd_ingest_tensorboard" and ns.idle_timeout == 5


# -- TRL callback without a trainer loop ------------------------------------------------------
class _FakeTrainer:
    def __init__(self, fail: bool) -> None:
        self.callbacks: list[Any] = []
        self.fail = fail
        self.extra = "passes through"

    def add_callback(self, cb: Any) -> None:
        self.callbacks.append(cb)

    def train(self) -> str:
        from transformers import TrainerControl, TrainerState, TrainingArguments

        args = TrainingArguments(output_dir=self.out, report_to="none", use_cpu=True)
        state = TrainerState(max_steps=2)
        for cb in self.callbacks:
            cb.on_train_begin(args, state, TrainerControl())
        for step in (1, 2):
            for cb in self.callbacks:
                cb.on_step_begin(args, state, TrainerControl())
            state.global_step = step
            for cb in self.callbacks:
                cb.on_step_end(args, state, TrainerControl())
                cb.on_log(args, state, TrainerControl(), logs={"loss": 0.5, "grad_norm": 1.0, "epoch": 0.1})
            if self.fail:
                raise ValueError("diverged")
        for cb in self.callbacks:
            cb.on_log(args, state, TrainerControl(), logs={"train_runtime": 1.5, "train_loss": 0.4})
            cb.on_train_end(args, state, TrainerControl())
        return "done"

    out = ""


@pytest.mark.parametrize("fail", [False, True])
def test_trl_adapter_reports_steps_summary_and_failures(tmp_path: Path, fail: bool) -> None:
    from rlhfkit.adapters import TRLAdapter

    base = _FakeTrainer(fail)
    base.out = str(tmp_path)
    mem = MemorySink()
    adapter = TRLAdapter(base_trainer=base, sinks=[mem], out_dir=tmp_path / "events")
    assert adapter.extra == "passes through"
    if fail:
        with pytest.raises(ValueError, match="diverged"):
            adapter.train()
    else:
        assert adapter.train() == "done"
    kinds = [e.type for e in mem.events]
    started: Any = mem.events[0]
    assert kinds[0] == "run_started" and started.source == "trl" and started.config["trainer"] == "trainer"
    assert {"timings", "memory", "metrics"} <= set(kinds)
    assert mem.metric(M.TOTAL_LOSS)[0] == 0.5 and mem.of_type("metrics")[0].values["epoch"] == 0.1
    last: Any = mem.events[-1]
    if fail:
        assert last.type == "run_failed" and "diverged" in last.error
    else:
        assert last.type == "run_finished" and last.summary["train_runtime"] == 1.5
        assert last.summary["global_step"] == 2 and "train_runtime" not in mem.of_type("metrics")[-1].values


def test_a_run_left_open_is_reported_failed_when_the_process_exits(tmp_path: Path) -> None:
    script = (f"from rlhfkit.adapters import track\n"
              f"run = track('left-open', out_dir={str(tmp_path)!r}, monitor=False)\n"
              f"run.log({{'reward': 1.0}})\n")  # no finish(), no with-block
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    (events_file,) = tmp_path.glob("*/events.jsonl")
    last = json.loads(events_file.read_text().splitlines()[-1])
    assert last["type"] == "run_failed" and "exited before" in last["error"]


def test_a_half_written_line_waits_for_its_newline(tmp_path: Path) -> None:
    from rlhfkit.adapters.transport import read_lines

    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"seq": 0}\n{"seq": 1}\n{"se')
    lines, offset = read_lines(path, 0, 100)
    assert lines == ['{"seq": 0}', '{"seq": 1}'] and offset == 22
    with path.open("ab") as fh:
        fh.write(b'q": 2}\n')
    assert read_lines(path, offset, 100) == (['{"seq": 2}'], path.stat().st_size)


def test_import_finds_runs_below_a_directory(tmp_path: Path) -> None:
    from rlhfkit.adapters.cli import find_event_files

    for name in ("a", "b"):
        with track(name, out_dir=tmp_path / "trl-output" / "rlhfkit", monitor=False) as run:
            run.log({"reward": 1.0})
    assert len(find_event_files(tmp_path / "trl-output")) == 2
    assert find_event_files(tmp_path / "missing") == []
