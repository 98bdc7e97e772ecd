"""The README's memory path end to end: `suggest-config` writes profiles/suggested_config.yaml and
`rlhfkit train --config profiles/suggested_config.yaml` runs that config as written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rlhfkit.cli import main

FAST = ["--set", "model.warm_start=false", "--set", "model.max_length=40", "--set", "generation.max_new_tokens=8",
        "--set", "train.eval_prompts=8", "--set", "train.eval_every=0", "--set", "ppo.ppo_epochs=1",
        "--set", "train.device=cpu", "--set", "train.steps_per_epoch=1"]


def test_train_runs_the_suggested_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["suggest-config", "--config", "smoke", "--budget-gb", "1", "--device", "cpu", *FAST]) == 0
    path = Path("profiles/suggested_config.yaml")
    suggested = yaml.safe_load(path.read_text())
    assert main(["train", "--config", str(path), "--out", "runs", "--run-id", "applied", "--quiet"]) == 0
    ran = yaml.safe_load((tmp_path / "runs" / "applied" / "config.yaml").read_text())
    for section in ("ppo", "model", "generation"):
        assert ran[section] == suggested[section], section  # the suggestion ran as written
    assert (tmp_path / "runs" / "applied" / "metrics.csv").read_text().count("\n") >= 2
