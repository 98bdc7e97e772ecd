"""Predicted vs measured CUDA peak memory for a few shapes (run by scripts/gpu_check.sh).

For each case a fresh interpreter runs 2 PPO steps (``rlhfkit.memopt.measurement``) and reports
``max_memory_allocated`` per stage; the analytic model predicts the same quantity. Prints a table
and writes ``OUT/gpu_check.json``. Nothing is downloaded: models are random-initialised GPT-2 shapes
with the shipped tiny tokenizer, the vocabulary padded to GPT-2's 50257 where stated.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

CASES: list[tuple[str, dict[str, Any]]] = [
    ("tiny fp32 B64", {"ppo.batch_size": 64, "ppo.mini_batch_size": 16}),
    ("tiny fp32 B64 ref-on-host sampled-scores", {"ppo.batch_size": 64, "ppo.mini_batch_size": 16,
                                                  "model.reference_device": "cpu", "ppo.rollout_scores": "sampling"}),
    ("gpt2-small fp32 B32 mb8", {"model.size": "small", "model.vocab_size": 50257, "ppo.batch_size": 32,
                                 "ppo.mini_batch_size": 8, "generation.max_new_tokens": 32}),
    ("gpt2-small bf16 B64 mb16", {"model.size": "small", "model.vocab_size": 50257, "model.dtype": "bf16",
                                  "ppo.batch_size": 64, "ppo.mini_batch_size": 16, "generation.max_new_tokens": 32}),
    ("gpt2-small ckpt B64 mb32", {"model.size": "small", "model.vocab_size": 50257,
                                  "model.gradient_checkpointing": True, "ppo.batch_size": 64,
                                  "ppo.mini_batch_size": 32, "generation.max_new_tokens": 32}),
    ("gpt2-medium bf16 critic B32 mb8 accum2", {"model.size": "medium", "model.vocab_size": 50257,
                                                "model.dtype": "bf16", "model.shared_value_trunk": False,
                                                "ppo.batch_size": 32, "ppo.mini_batch_size": 8,
                                                "ppo.grad_accum_steps": 2, "generation.max_new_tokens": 32}),
    # critic-free (no value head, no value pass), first measured on CUDA 2026-12-04
    ("tiny fp32 grpo B16 G4", {"algorithm": "grpo", "generation.samples_per_prompt": 4, "ppo.batch_size": 16,
                               "ppo.mini_batch_size": 8}),
    ("gpt2-small bf16 grpo B16 G4 mb8", {"model.size": "small", "model.vocab_size": 50257, "model.dtype": "bf16",
                                         "algorithm": "grpo", "generation.samples_per_prompt": 4,
                                         "ppo.batch_size": 16, "ppo.mini_batch_size": 8,
                                         "generation.max_new_tokens": 32}),
]
# reward.kind=length: a lexicon/length reward holds no device memory either way, and needs no VADER.
COMMON = {"reward.kind": "length", "model.warm_start": False, "model.max_length": 96, "generation.stop_at_eos": False, "ppo.ppo_epochs": 1,
          "train.eval_prompts": 16, "train.eval_every": 0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="profiles")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--cases", type=int, default=len(CASES), help="run only the first N cases")
    ap.add_argument("--timeout", type=float, default=240, help="seconds per case")
    ap.add_argument("--recompute", metavar="JSON", help="no GPU: the model's prediction now vs the measurements "
                    "recorded in JSON (e.g. benchmarks/results/gpu_check.json)")
    args = ap.parse_args()
    if args.recompute:
        return recompute(Path(args.recompute))
    import torch

    from rlhfkit.config import load_config
    from rlhfkit.memopt import estimate_memory, measure, plan_from_config
    from rlhfkit.memopt.model import MiB

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible", file=sys.stderr)
        return 2
    rows = []
    t_all = time.perf_counter()
    print(f"{'case':<40}{'predicted':>11}{'measured':>11}{'error':>9}{'reserved':>10}{'tok/s':>9}  peak stage (MiB)")
    for name, ov in CASES[: args.cases]:
        cfg = load_config("smoke", {**COMMON, **ov, "train.device": args.device})
        est = estimate_memory(plan_from_config(cfg, device=args.device))
        t0 = time.perf_counter()
        try:
            m = measure(cfg, steps=2, timeout=args.timeout)
        except Exception as exc:  # keep going: one bad case should not hide the others
            print(f"{name:<40} FAILED: {str(exc)[-300:]}")
            rows.append({"case": name, "error": str(exc)[-2000:]})
            continue
        pred = est.peak / MiB
        err = (pred - m.growth_mb) / m.growth_mb
        stage = max(m.stage_peak_mb, key=lambda s: m.stage_peak_mb[s]) if m.stage_peak_mb else "-"
        print(f"{name:<40}{pred:>11.0f}{m.growth_mb:>11.0f}{100 * err:>+8.1f}%{(m.reserved_mb or 0):>10.0f}"
              f"{(m.tokens_per_sec or 0):>9.0f}  {stage} (predicted {est.peak_stage})")
        rows.append({"case": name, "overrides": ov, "predicted_mb": round(pred, 1), "measured_mb": m.growth_mb,
                     "rel_error": round(err, 4), "within_10pct": abs(err) <= 0.10,
                     "predicted_stages_mb": {s: round(est.stage_peak(s) / MiB, 1) for s in est.stages},
                     "measured_stages_mb": {s: round(v, 1) for s, v in m.stage_growth_mb().items()},
                     "reserved_mb": m.reserved_mb, "tokens_per_sec": m.tokens_per_sec,
                     "seconds": round(time.perf_counter() - t0, 1)})
    ok = [r for r in rows if "rel_error" in r]
    summary = {
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "cases": rows, "seconds": round(time.perf_counter() - t_all, 1),
        "within_10pct": sum(r["within_10pct"] for r in ok), "n": len(ok),
        "max_abs_error": max((abs(r["rel_error"]) for r in ok), default=None),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(summary, indent=1))
    print(f"\n{summary['within_10pct']}/{summary['n']} cases within 10%; max |error| "
          f"{100 * (summary['max_abs_error'] or 0):.1f}%; {summary['seconds']:.0f} s; wrote {out / 'gpu_check.json'}")
    return 0


def recompute_rows(recorded: dict[str, Any]) -> list[tuple[str, float, float, str]]:
    """(case, predicted MiB by today's model, measured MiB, peak stage) for each measured case of a
    recorded run (``gpu_check.json``). The recording in ``benchmarks/results`` (H200, 2026-12-04) was made with today's
    engine (rlhfkit.fastgpt2, fused AdamW); the H100 recording before it (git history) was not."""
    from rlhfkit.config import load_config
    from rlhfkit.memopt import estimate_memory, plan_from_config
    from rlhfkit.memopt.model import MiB

    rows = []
    for row in recorded["cases"]:
        if "measured_mb" not in row:
            continue
        cfg = load_config("smoke", {**COMMON, **row["overrides"], "train.device": "cuda"})
        est = estimate_memory(plan_from_config(cfg, device="cuda"))
        rows.append((row["case"], est.peak / MiB, float(row["measured_mb"]), f"{est.peak_stage}, {est.update_phase}"))
    return rows


def recompute(path: Path) -> int:
    """Predict the recorded cases with today's model (no GPU) and print them beside the measurements."""
    recorded = json.loads(path.read_text())
    print(f"recorded on {recorded['device']} (torch {recorded['torch']}); predictions recomputed here, no GPU")
    print(f"{'case':<40}{'then':>9}{'now':>9}{'measured':>10}{'error':>8}  peak stage, update phase")
    then = {r["case"]: r.get("predicted_mb", float("nan")) for r in recorded["cases"]}
    for case, pred, meas, stage in recompute_rows(recorded):
        print(f"{case:<40}{then[case]:>9.0f}{pred:>9.0f}{meas:>10.0f}{100 * (pred - meas) / meas:>+7.1f}%  {stage}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
