"""The terminal's end-of-run summary: a short table, without the rows that do not apply."""

from __future__ import annotations

import io
import math

from rlhfkit.events import EventEmitter, RunFinished
from rlhfkit.sinks import ConsoleSink


def test_the_final_summary_is_a_short_table_without_rows_that_do_not_apply() -> None:
    out = io.StringIO()
    summary = {"status": "succeeded", "run_id": "abc", "steps": 40, "wall_seconds": 13.21, "eval_reward_start": 0.012,
               "eval_reward_end": 0.69, "eval_reward_gain": 0.678, "final_kl": 0.1234, "final_kl_k3": 0.1,
               "final_kl_coef": 0.05, "final_reward_mean": 0.55, "tokens_per_sec": 1234.5, "alerts": 0,
               "device": "cpu", "gpu_total_mb": None, "run_dir": "runs/abc"}
    EventEmitter("abc", [ConsoleSink(stream=out)]).emit(RunFinished(summary=summary))
    lines = out.getvalue().splitlines()
    assert lines[0] == "succeeded in 13.2 s (40 steps on cpu)"
    assert "  eval reward   +0.012 -> +0.690  (gain +0.678)" in lines
    assert all(len(ln) < 80 for ln in lines), "no long wrapped line"
    assert "None" not in out.getvalue() and "gpu" not in out.getvalue().lower(), "no GPU row on a CPU run"
    assert any(ln.split() == ["tokens/s", "1234"] for ln in lines)


def test_a_run_without_evaluations_leaves_the_eval_row_out() -> None:
    out = io.StringIO()
    EventEmitter("x", [ConsoleSink(stream=out)]).emit(RunFinished(summary={
        "status": "succeeded", "steps": 2, "eval_reward_end": math.nan, "final_kl": 0.01}))
    assert "eval" not in out.getvalue() and "nan" not in out.getvalue()
