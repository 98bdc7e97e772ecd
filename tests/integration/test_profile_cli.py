"""The three CLI commands end to end on smoke-sized runs (CPU, no services needed)."""

from __future__ import annotations

import json
from pathlib import Path

from rlhfkit.cli import main

FAST = ["--set", "model.warm_start=false", "--set", "model.max_length=40", "--set", "generation.max_new_tokens=8",
        "--set", "ppo.batch_size=8", "--set", "ppo.mini_batch_size=4", "--set", "ppo.ppo_epochs=1",
        "--set", "train.eval_prompts=8", "--set", "train.device=cpu"]


def test_profile_writes_trace_speedscope_and_summary(tmp_path: Path, capsys) -> None:
    rc = main(["profile", "--config", "smoke", "--out", str(tmp_path), "--steps", "3", "--schedule", "0,0,1,1,1",
               "--json", *FAST])
    assert rc == 0
    out = capsys.readouterr().out
    assert "Per-stage wall time" in out and "Bottlenecks" in out
    info = json.loads(out.strip().splitlines()[-1])
    names = {Path(p).name for p in info["files"]}
    assert {"trace_step1.json", "speedscope_step1.json", "profile_summary.json", "mem_report.json"} <= names
    assert abs(info["coverage"] - 1) <= 0.05


def test_mem_report_prints_breakdown(tmp_path: Path, capsys) -> None:
    assert main(["mem-report", "--config", "smoke", "--out", str(tmp_path), "--no-measure", *FAST]) == 0
    out = capsys.readouterr().out
    for word in ("policy", "reference", "optimizer", "kv_cache", "Predicted peak"):
        assert word in out
    assert json.loads((tmp_path / "mem_report.json").read_text())["predicted"]["peak_mb"] > 0


def test_suggest_config_writes_yaml(tmp_path: Path, capsys) -> None:
    assert main(["suggest-config", "--config", "default", "--budget-gb", "2", "--device", "cpu",
                 "--out", str(tmp_path)]) == 0
    assert (tmp_path / "suggested_config.yaml").exists()
    assert main(["train", "--config", str(tmp_path / "suggested_config.yaml"), "--print-config"]) == 0


def test_bad_input_exits_2(tmp_path: Path) -> None:
    assert main(["suggest-config", "--config", "default", "--budget-gb", "-1", "--out", str(tmp_path)]) == 2
    assert main(["profile", "--config", "smoke", "--schedule", "x", "--out", str(tmp_path)]) == 2
    assert main(["mem-report", "--config", "smoke", "--set", "ppo.nope=1", "--out", str(tmp_path)]) == 2
    assert main(["profile", "--config", "smoke", "--stages", "rollout", "--out", str(tmp_path), *FAST]) == 2
