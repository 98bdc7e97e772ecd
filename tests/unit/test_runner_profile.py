"""A run with profile.enabled carries its profile as artifacts (trace, speedscope, summary)."""

from __future__ import annotations

import json
from pathlib import Path

from rlhfkit.config import load_config
from rlhfkit.runner import run_training
from rlhfkit.sinks import MemorySink
from tests.utils import fast_overrides


def test_profiled_run_emits_profile_artifacts(tmp_path: Path) -> None:
    cfg = load_config("smoke", fast_overrides(**{"train.steps_per_epoch": 4, "profile.enabled": True,
                                                 "profile.skip_first": 0, "profile.wait": 0}))
    mem = MemorySink()
    run_training(cfg, run_id="prof", sinks=[mem], out_dir=tmp_path)
    arts = {e.kind: e for e in mem.of_type("artifact")}
    assert {"trace", "speedscope"} <= set(arts), sorted(arts)
    for kind in ("trace", "speedscope"):
        path = Path(arts[kind].path)
        assert path.exists() and path.stat().st_size == arts[kind].size_bytes
        assert path.parent == tmp_path / "prof"  # beside events.jsonl, where the service finds it
    speedscope = json.loads(Path(arts["speedscope"].path).read_text())
    assert speedscope["profiles"] and speedscope["shared"]["frames"]
    assert mem.events[-1].type == "run_finished"
