"""The Make knobs the README promises: `make train_smoke BATCH_SIZE=16 KL_COEF=0.1 STEPS=2` (and the same as
environment variables) runs with those values, and the run folder gets its train.log."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
# A fast tiny run; `-o install` and RLHFKIT: use this interpreter instead of building the Makefile's venv.
FAST = ("--set model.warm_start=false --set model.max_length=40 --set generation.max_new_tokens=8 "
        "--set train.eval_prompts=8 --set train.eval_every=0 --set ppo.ppo_epochs=1 --set train.device=cpu")


def _make(tmp: Path, *assignments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = ["make", "--no-print-directory", "-C", str(ROOT), "-o", "install", "train_smoke",
           f"RLHFKIT={sys.executable} -m rlhfkit.cli", f"OUT={tmp}", f"ARGS=--run-id knobs {FAST}", *assignments]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=full_env)


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_train_smoke_knobs_reach_the_run_config(tmp_path: Path) -> None:
    proc = _make(tmp_path, "BATCH_SIZE=16", "KL_COEF=0.1", "STEPS=2", "VERBOSE=1")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    run = tmp_path / "knobs"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["ppo"]["batch_size"] == 16 and cfg["ppo"]["kl_coef"] == 0.1
    assert cfg["train"]["steps_per_epoch"] == 2 and cfg["train"]["num_epochs"] == 1
    log = (run / "train.log").read_text()
    assert "step 1/2" in log and "step 2/2" in log  # a line per step in the run's own log
    assert "step 1/2" in proc.stderr  # VERBOSE=1: every step on the console too
    # make report: the newest run folder under OUT, as one HTML file beside its events
    rep = subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "-o", "install", "report",
                          f"RLHFKIT={sys.executable} -m rlhfkit.cli", f"OUT={tmp_path}"],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert rep.returncode == 0, rep.stderr[-2000:]
    assert '<svg class="chart"' in (run / "report.html").read_text()


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_environment_variables_work_like_make_variables(tmp_path: Path) -> None:
    proc = _make(tmp_path, "STEPS=1", env={"BATCH_SIZE": "16", "GRAD_ACCUM_STEPS": "4", "LEARNING_RATE": "5e-6",
                                           "SEED": "7", "LOG_LEVEL": "DEBUG"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    cfg = yaml.safe_load((tmp_path / "knobs" / "config.yaml").read_text())
    assert cfg["ppo"]["batch_size"] == 16 and cfg["ppo"]["grad_accum_steps"] == 4
    assert cfg["ppo"]["learning_rate"] == pytest.approx(5e-6) and cfg["seed"] == 7
    assert " DEBUG " in (tmp_path / "knobs" / "train.log").read_text()


def test_a_bad_knob_exits_2_naming_the_field(tmp_path: Path) -> None:
    proc = _make(tmp_path, "MINI_BATCH_SIZE=5")
    assert proc.returncode != 0
    assert "ppo.mini_batch_size" in proc.stderr
