"""Memory model calibration and suggest-config ranking, measured (a benchmark: prints, never asserts).

1. Predicted peak (rlhfkit.memopt) vs measured RSS growth on CPU for several shapes, each measured in
   a fresh interpreter (``MALLOC_MMAP_THRESHOLD_=65536`` so RSS follows live bytes; the default-malloc
   number is printed beside it). Target: within 15%.
2. ``suggest_config(default, budget_gb=2)``: the top candidates' real throughput (tokens/s over a
   few steps after the first, median of round-robin repeats), to check that the one ranked first
   is the fastest that was tried.
3. Closing the loop, as the Suggestions tab and a run launched from it do: a measured run of the
   smoke preset (its response lengths, since runs stop at EOS, and its tokens/s, which anchor the
   ranking model to this CPU), then the top *same-math* suggestion for it on CPU (4 GiB budget), its
   predicted tokens/s and peak (growth above the process baseline) against what a separate run of it
   measures; the error in percent of the measurement (targets: 15% for tokens/s, 10% for memory),
   beside the model's own unanchored figure and the one that counts max_new_tokens per response.

Usage: ``python benchmarks/bench_memopt.py [--quick] [--only loop] [--top 3] [--steps 4] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SHAPES = [
    ("tiny-shape L4 D256 V1599 B32 mb16", {"model.size": "custom", "model.n_layer": 4, "model.n_embd": 256,
                                            "model.n_head": 4, "ppo.batch_size": 32, "ppo.mini_batch_size": 16}),
    ("L4 D256 V8000 B32 mb32", {"model.size": "custom", "model.n_layer": 4, "model.n_embd": 256, "model.n_head": 4,
                                "model.vocab_size": 8000, "ppo.batch_size": 32, "ppo.mini_batch_size": 32}),
    ("L6 D384 V4000 B16 R48", {"model.size": "custom", "model.n_layer": 6, "model.n_embd": 384, "model.n_head": 6,
                               "model.vocab_size": 4000, "ppo.batch_size": 16, "ppo.mini_batch_size": 16,
                               "generation.max_new_tokens": 48}),
    ("L8 D512 V8000 B32 mb16 ckpt", {"model.size": "custom", "model.n_layer": 8, "model.n_embd": 512,
                                     "model.n_head": 8, "model.vocab_size": 8000, "ppo.batch_size": 32,
                                     "ppo.mini_batch_size": 16, "model.gradient_checkpointing": True}),
    ("L8 D512 V8000 B64 mb32 accum2", {"model.size": "custom", "model.n_layer": 8, "model.n_embd": 512,
                                       "model.n_head": 8, "model.vocab_size": 8000, "ppo.batch_size": 64,
                                       "ppo.mini_batch_size": 32, "ppo.grad_accum_steps": 2}),
]
BASE = {"model.warm_start": False, "model.max_length": 96, "train.device": "cpu", "train.eval_prompts": 8,
        "ppo.ppo_epochs": 1, "generation.max_new_tokens": 16, "generation.stop_at_eos": False}


def calibration(n: int) -> list[dict]:
    from rlhfkit.config import load_config
    from rlhfkit.memopt import estimate_memory, measure, plan_from_config

    rows = []
    print(f"{'shape':<34}{'predicted':>10}{'measured':>10}{'error':>8}{'default malloc':>16}   (MiB, CPU RSS growth)")
    for name, ov in SHAPES[:n]:
        cfg = load_config("smoke", {**BASE, **ov})
        pred = estimate_memory(plan_from_config(cfg, device="cpu")).peak / 2**20
        os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
        m = measure(cfg, steps=2)
        del os.environ["MALLOC_MMAP_THRESHOLD_"]
        d = measure(cfg, steps=2)
        err = (pred - m.growth_mb) / m.growth_mb
        print(f"{name:<34}{pred:>10.1f}{m.growth_mb:>10.1f}{100 * err:>+7.1f}%{d.growth_mb:>16.1f}", flush=True)
        rows.append({"shape": name, "predicted_mb": round(pred, 1), "measured_mb": m.growth_mb,
                     "default_malloc_mb": d.growth_mb, "rel_error": round(err, 4)})
    return rows


def ranking(top: int, steps: int, repeats: int) -> list[dict]:
    from rlhfkit.config import load_config
    from rlhfkit.memopt import measure
    from rlhfkit.memopt.suggest import suggest_config

    # one PPO epoch per step keeps this short (the peak does not depend on the number of epochs)
    cfg = load_config("default", {"train.device": "cpu", "model.warm_start": False, "train.eval_prompts": 16,
                                  "ppo.ppo_epochs": 1})
    cands = [c for c in suggest_config(cfg, budget_gb=2, device="cpu", top=50) if c.fits]
    # the best plus the best of each distinct batch size / checkpointing choice, so the comparison spans knobs
    picked, seen = [], set()
    for c in cands:
        key = (c.overrides["ppo.batch_size"], c.overrides["model.gradient_checkpointing"])
        if key not in seen:
            picked.append(c)
            seen.add(key)
        if len(picked) >= top:
            break
    rows = []
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"  # RSS follows live bytes, as in the calibration
    # round-robin repeats (A B C A B C ...): drift of a shared machine hits every candidate alike
    meas: dict[int, list[Any]] = {i: [] for i in range(len(picked))}
    for _ in range(repeats):
        for i, c in enumerate(picked):
            meas[i].append(measure(c.config, steps=steps))
    print(f"\n{'rank':>4} {'batch':>5} {'mini':>5} {'ckpt':>5} {'pred tok/s':>11} {'meas tok/s':>11} "
          f"{'(min-max)':>13} {'pred MiB':>9} {'meas MiB':>9}   ({repeats} x {steps} steps, median)")
    for i, c in enumerate(picked):
        tps = [m.tokens_per_sec or 0.0 for m in meas[i]]
        rank, o = cands.index(c), c.overrides
        print(f"{rank:>4} {o['ppo.batch_size']:>5} {o['ppo.mini_batch_size']:>5} "
              f"{'on' if o['model.gradient_checkpointing'] else 'off':>5} {c.tokens_per_sec:>11.0f} "
              f"{statistics.median(tps):>11.0f} {f'{min(tps):.0f}-{max(tps):.0f}':>13} {c.peak_mb:>9.0f} "
              f"{max(m.growth_mb for m in meas[i]):>9.0f}", flush=True)
        rows.append({"rank": rank, "overrides": o, "pred_tokens_per_sec": c.tokens_per_sec,
                     "meas_tokens_per_sec": statistics.median(tps), "meas_tokens_per_sec_all": tps,
                     "pred_mb": c.peak_mb, "meas_mb": max(m.growth_mb for m in meas[i])})
    best = max(rows, key=lambda r: r["meas_tokens_per_sec"])
    first = rows[0]
    gap = 100 * (first["meas_tokens_per_sec"] / best["meas_tokens_per_sec"] - 1)
    print(f"ranked first: rank {first['rank']}, {gap:+.1f}% against the fastest measured (rank {best['rank']})")
    return rows


def closing_the_loop(steps: int, repeats: int, budget_gb: float = 4.0) -> dict[str, Any]:
    from rlhfkit.config import load_config
    from rlhfkit.memopt import measure
    from rlhfkit.memopt.suggest import MeasuredRun, suggest_groups

    cfg = load_config("smoke", {"train.device": "cpu"})
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"  # RSS follows live bytes, as in the calibration
    # the finished run the Suggestions tab has: its response lengths are what the prediction counts
    current = measure(cfg, steps=steps)
    lengths = (MeasuredRun(mean=current.response_mean, longest=current.response_longest or current.response_mean,
                           source="a measured smoke run") if current.response_mean else None)
    # what the Suggestions tab of that run shows: lengths and its tokens/s (the anchor); then the model alone
    found = replace(lengths, tokens_per_sec=current.tokens_per_sec) if lengths else None
    unmeasured = suggest_groups(cfg, budget_gb, "cpu", top_per_group=1)
    model_only = suggest_groups(cfg, budget_gb, "cpu", top_per_group=1, measured=lengths)
    groups = suggest_groups(cfg, budget_gb, "cpu", top_per_group=1, measured=found)
    if not groups.same_math:
        print("\nno same-math suggestion for the smoke preset: nothing to close the loop on")
        return {}
    top = groups.same_math[0]
    top_r = next((c for c in unmeasured.same_math if c.overrides == top.overrides), unmeasured.same_math[0])
    top_m = next((c for c in model_only.same_math if c.overrides == top.overrides), model_only.same_math[0])
    runs = [measure(top.config, steps=steps) for _ in range(repeats)]
    del os.environ["MALLOC_MMAP_THRESHOLD_"]
    tps = statistics.median(m.tokens_per_sec or 0.0 for m in runs)
    mem = max(m.growth_mb for m in runs)
    tps_err = 100 * (top.tokens_per_sec - tps) / tps if tps else float("nan")
    mem_err = 100 * (top.peak_mb - mem) / mem if mem else float("nan")
    base = cfg.model_dump(mode="json")
    changes = ", ".join(f"{k}={v}" for k, v in top.overrides.items() if base[k.split(".")[0]].get(k.split(".")[1]) != v)
    print(f"\nclosing the loop: top same-math suggestion for smoke on CPU ({budget_gb:g} GiB): {changes or '-'}")
    print(f"{'':<26}{'predicted':>10}{'measured':>10}{'error':>9}{'target':>8}   ({repeats} x {steps} steps)")
    r_err = 100 * (top_r.tokens_per_sec - tps) / tps if tps else float("nan")
    m_err = 100 * (top_m.tokens_per_sec - tps) / tps if tps else float("nan")
    print(f"{'tokens/s':<26}{top.tokens_per_sec:>10.0f}{tps:>10.0f}{tps_err:>+8.1f}%{'15%':>8}   "
          f"(the Suggestions tab's figure: the model's ratio to row 0 x row 0's measured {current.tokens_per_sec or 0:.0f})")
    print(f"{'tokens/s, model alone':<26}{top_m.tokens_per_sec:>10.0f}{tps:>10.0f}{m_err:>+8.1f}%{'':>8}   "
          f"(its own CPU rate; counting the measured mean response, {current.response_mean} of "
          f"{cfg.generation.max_new_tokens} tokens)")
    print(f"{'tokens/s at max_new_tokens':<26}{top_r.tokens_per_sec:>10.0f}{tps:>10.0f}{r_err:>+8.1f}%{'':>8}   "
          f"(without a measured run: every response at {cfg.generation.max_new_tokens} tokens)")
    print(f"{'row 0 (smoke), model alone':<26}{model_only.current.tokens_per_sec:>10.0f}"
          f"{current.tokens_per_sec or 0:>10.0f}   (the anchor: a separate run of the current config)")
    print(f"{'peak MiB (growth)':<26}{top.peak_mb:>10.0f}{mem:>10.0f}{mem_err:>+8.1f}%{'10%':>8}", flush=True)
    return {"overrides": top.overrides, "pred_tokens_per_sec": top.tokens_per_sec, "meas_tokens_per_sec": tps,
            "pred_tokens_per_sec_at_max_new_tokens": top_r.tokens_per_sec,
            "measured_response_mean": current.response_mean, "measured_response_longest": current.response_longest,
            "pred_tokens_per_sec_model_alone": top_m.tokens_per_sec, "tokens_per_sec_error_pct_model_alone": round(m_err, 1),
            "current_pred_tokens_per_sec": model_only.current.tokens_per_sec,
            "current_meas_tokens_per_sec": current.tokens_per_sec,
            "tokens_per_sec_error_pct": round(tps_err, 1), "pred_mb": top.peak_mb, "meas_mb": mem,
            "memory_error_pct": round(mem_err, 1), "steps": steps, "repeats": repeats}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="three shapes, two candidates")
    ap.add_argument("--top", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4, help="PPO steps per measurement (the first is not timed)")
    ap.add_argument("--repeats", type=int, default=3, help="measurements per candidate, round-robin")
    ap.add_argument("--only", choices=["calibration", "ranking", "loop"], default=None,
                    help="run one section (default: all three)")
    ap.add_argument("--out", default="profiles/bench_memopt.json")
    args = ap.parse_args()
    repeats = 1 if args.quick else args.repeats
    result: dict[str, Any] = {}
    if args.only in (None, "calibration"):
        result["calibration"] = calibration(3 if args.quick else len(SHAPES))
    if args.only in (None, "ranking"):
        result["ranking"] = ranking(2 if args.quick else args.top, args.steps, repeats)
    if args.only in (None, "loop"):
        result["closing_the_loop"] = closing_the_loop(args.steps, repeats)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
