"""Engine checks on a CUDA machine (run by scripts/gpu_check.sh; a few minutes on one GPU).

What it checks and prints:
1. the smoke preset on CUDA (fp32, 12 steps, no warm-start to save time): the run finishes, KL reported;
2. per-stage wall time and CUDA memory (allocated / reserved / peak, reset per stage) and NVML
   utilisation, as the engine reports them in its events;
3. bf16 autocast on the GPT-2-small shape (gpu_optimized preset, shortened): the run finishes
   and per-stage peak memory is reported;
4. the critic-free family on CUDA: the smoke preset with ``algorithm=grpo`` (G = 4, fp32) and the
   GPT-2-small bf16 shape with ``algorithm=grpo`` (64 prompts x G = 4): the runs finish, no value
   head is built, per-stage time and memory as in 2.
Writes ${OUT:-profiles}/gpu_engine.json.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlhfkit.config import load_config  # noqa: E402
from rlhfkit.runner import run_training  # noqa: E402
from rlhfkit.sinks import MemorySink  # noqa: E402


def summarize(mem: MemorySink) -> dict[str, Any]:
    timings = mem.of_type("timings")[1:]  # skip the first step (CUDA warm-up)
    memory = mem.of_type("memory")
    stages: dict[str, float] = {}
    for t in timings:
        for k, v in t.stages.items():
            stages[k] = stages.get(k, 0.0) + v / max(1, len(timings))
    peak = {k: max((m.stages[k].peak_mb or 0.0) for m in memory if k in m.stages) for k in memory[-1].stages}
    util = [s.gpu_util for m in memory for s in m.stages.values() if s.gpu_util is not None]
    return {
        "mean_step_s": sum(t.step_time for t in timings) / max(1, len(timings)),
        "tokens_per_s": sum(t.tokens for t in timings) / max(1e-9, sum(t.step_time for t in timings)),
        "stage_mean_s": {k: round(v, 4) for k, v in stages.items()},
        "stage_peak_mb": {k: round(v, 1) for k, v in peak.items()},
        "nvml_util_max": max(util) if util else None,
        "models_mb": memory[-1].models,
    }


SUMMARY_KEYS = ("status", "eval_reward_start", "eval_reward_end", "final_kl")
SMOKE = {"train.device": "cuda", "train.steps_per_epoch": 12, "model.warm_start": False}
GPT2_SMALL_BF16 = {"train.steps_per_epoch": 4, "train.eval_every": 0, "train.eval_prompts": 64, "ppo.batch_size": 64,
                   "ppo.mini_batch_size": 32, "train.checkpoint_every": 0}
GRPO = {"algorithm": "grpo", "generation.samples_per_prompt": 4}
RUNS: dict[str, tuple[str, dict[str, Any]]] = {
    "smoke_fp32": ("smoke", SMOKE),
    "gpt2_small_bf16": ("gpu_optimized", GPT2_SMALL_BF16),
    "smoke_grpo_fp32": ("smoke", {**SMOKE, **GRPO}),
    # one optimizer step on the whole rollout (64 prompts x G 4), as TRL's GRPOTrainer with num_iterations=1
    "gpt2_small_bf16_grpo": ("gpu_optimized", {**GPT2_SMALL_BF16, **GRPO, "ppo.mini_batch_size": 64,
                                               "ppo.ppo_epochs": 1}),
}


def main() -> int:
    out = Path(os.environ.get("OUT") or "profiles")
    out.mkdir(parents=True, exist_ok=True)
    assert torch.cuda.is_available(), "no CUDA device"
    report: dict[str, Any] = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    for name, (preset, overrides) in RUNS.items():
        mem = MemorySink()
        t0 = time.perf_counter()
        s = run_training(load_config(preset, overrides), sinks=[mem], out_dir=None)
        report[name] = {"wall_s": round(time.perf_counter() - t0, 1),
                        **{k: s[k] for k in SUMMARY_KEYS if k in s}, **summarize(mem)}
        print(name, json.dumps(report[name], indent=1), flush=True)
    (out / "gpu_engine.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
