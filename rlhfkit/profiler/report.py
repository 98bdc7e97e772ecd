"""Per-stage summary and the bottleneck report in words, each line with its measured evidence.

The summary is built from the trainer's own stage timings (``on_stage_end`` seconds, device
synchronised at stage boundaries) over every profiled-or-not step, so it costs nothing and covers
the whole run; "other" is the step time no stage covers (bookkeeping between stages, metrics,
events). The report reads the summary, the operator statistics of the trace
(:func:`rlhfkit.profiler.trace.op_stats`) and the run config.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from rlhfkit.metrics import STAGES


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else math.nan


def summarize(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-stage mean, p50, p95 (seconds), share of step time and tokens/s.

    ``steps``: ``{"step", "step_time", "tokens", "stages": {stage: seconds}}`` per PPO step.
    Stages that did not run in a step (evaluation) count as 0 s in that step, so the means add up
    to the mean step time.
    """
    if not steps:
        return {"steps": 0, "stages": {}}
    n = len(steps)
    step_times = [float(s["step_time"]) for s in steps]
    mean_step = float(np.mean(step_times))
    tokens = [float(s.get("tokens", 0)) for s in steps]
    names = [st for st in STAGES if any(st in s["stages"] for s in steps)]
    names += sorted({k for s in steps for k in s["stages"]} - set(names))
    out: dict[str, Any] = {"steps": n, "step_time": {"mean": mean_step, "p50": _pct(step_times, 50),
                                                     "p95": _pct(step_times, 95)},
                           "tokens_per_step": float(np.mean(tokens)),
                           "tokens_per_sec": float(np.sum(tokens) / np.sum(step_times)), "stages": {}}
    top_sum = 0.0
    for st in names:
        xs = [float(s["stages"].get(st, 0.0)) for s in steps]
        ran = [float(s["stages"][st]) for s in steps if st in s["stages"]]
        mean = float(np.mean(xs))
        if "/" not in st:
            top_sum += mean
        out["stages"][st] = {
            "mean": mean, "p50": _pct(ran, 50), "p95": _pct(ran, 95), "runs": len(ran),
            "share": mean / mean_step if mean_step else math.nan,
            "tokens_per_sec": float(np.sum(tokens) / np.sum(xs)) if np.sum(xs) > 0 else math.nan,
        }
    out["stage_sum"] = top_sum
    out["other"] = mean_step - top_sum
    out["coverage"] = top_sum / mean_step if mean_step else math.nan
    return out


def format_summary(summary: dict[str, Any]) -> str:
    if not summary.get("steps"):
        return "no steps recorded"
    st = summary["step_time"]
    lines = [f"Per-stage wall time over {summary['steps']} steps (seconds; device synchronised at stage "
             f"boundaries; tokens/s = generated tokens / stage time)",
             f"{'stage':<20}{'mean':>9}{'p50':>9}{'p95':>9}{'share':>8}{'tokens/s':>11}"]
    for name, s in summary["stages"].items():
        label = ("  " + name) if "/" in name else name
        lines.append(f"{label:<20}{s['mean']:>9.4f}{s['p50']:>9.4f}{s['p95']:>9.4f}{100 * s['share']:>7.1f}%"
                     f"{s['tokens_per_sec']:>11.0f}")
    lines.append(f"{'other (between)':<20}{summary['other']:>9.4f}{'':>18}{100 * summary['other'] / st['mean']:>7.1f}%")
    lines.append(f"{'step':<20}{st['mean']:>9.4f}{st['p50']:>9.4f}{st['p95']:>9.4f}{'100.0%':>8}"
                 f"{summary['tokens_per_sec']:>11.0f}")
    lines.append(f"stages add up to {100 * summary['coverage']:.1f}% of the measured step time")
    return "\n".join(lines)


def bottleneck_report(summary: dict[str, Any], op_evidence: dict[str, dict[str, float]], config: Any,
                      device: str) -> list[dict[str, str]]:
    """Findings in words; every finding carries the measured numbers it rests on and what to try."""
    out: list[dict[str, str]] = []
    stages = {k: v for k, v in summary.get("stages", {}).items() if "/" not in k}
    if not stages:
        return out
    step = summary["step_time"]["mean"]
    dom, ds = max(stages.items(), key=lambda kv: kv[1]["mean"])
    out.append({"finding": f"{dom} dominates the step",
                "evidence": f"{dom}: {ds['mean']:.3f} s of {step:.3f} s per step ({100 * ds['share']:.0f}%); "
                            + ", ".join(f"{k} {100 * v['share']:.0f}%" for k, v in stages.items() if k != dom),
                "try": _advice_for(dom, config, device)})
    gen = op_evidence.get("generation") or {}
    g = stages.get("generation")
    if g and gen:
        R = config.generation.max_new_tokens
        B = config.ppo.batch_size
        per_token_ms = 1e3 * g["mean"] / max(1, R)
        calls_per_token = gen["aten_calls"] / max(1.0, gen["n_ranges"]) / max(1, R)
        matmul_share = gen["matmul_self_us"] / gen["wall_us"] if gen["wall_us"] else 0.0
        if device == "cuda" and gen.get("kernels"):
            busy = gen["kernel_us"] / gen["wall_us"]
            bound = "launch-bound" if busy < 0.5 or gen["mean_kernel_us"] < 20 else "compute-bound"
            ev = (f"{gen['kernels'] / max(1.0, gen['n_ranges']):.0f} kernels per step, mean {gen['mean_kernel_us']:.1f} µs; "
                  f"GPU busy {100 * busy:.0f}% of generation wall time; {per_token_ms:.2f} ms per token at batch {B}")
        else:
            bound = "launch-bound" if matmul_share < 0.5 else "compute-bound"
            ev = (f"{calls_per_token:.0f} aten operator calls per generated token, {per_token_ms:.2f} ms per token at "
                  f"batch {B}; matmuls are {100 * matmul_share:.0f}% of generation wall time")
        tip = ("larger generation batch (more rows per kernel), CUDA graphs / torch.compile of the decode step, "
               "fewer small ops per token" if bound == "launch-bound"
               else "bf16 on GPU, shorter max_new_tokens, or a smaller model for rollouts")
        out.append({"finding": f"generation is {bound}", "evidence": ev, "try": tip})
    u = stages.get("update")
    if u and config.ppo.ppo_epochs > 1 and u["share"] > 0.4:
        epochs = (f"ppo_epochs={config.ppo.ppo_epochs}, {u['mean'] / config.ppo.ppo_epochs:.3f} s per epoch; "
                  "each epoch costs about the same")
        if dom == "update":  # one finding, not the same one twice
            out[0]["evidence"] += f"; {epochs}"
        else:
            out.append({"finding": "the PPO update is a large share",
                        "evidence": f"update {100 * u['share']:.0f}% of the step with {epochs}",
                        "try": "fewer PPO epochs, or larger minibatches (fewer optimizer steps)"})
    sc = stages.get("scoring")
    if sc and not config.model.shared_value_trunk:
        out.append({"finding": "a separate critic costs an extra forward pass in scoring and update",
                    "evidence": f"scoring {sc['mean']:.3f} s per step ({100 * sc['share']:.0f}%)",
                    "try": "model.shared_value_trunk=true (value head on the policy trunk)"})
    if device == "cuda" and config.model.dtype == "fp32":
        out.append({"finding": "running in fp32 on a GPU",
                    "evidence": f"model.dtype=fp32; step {step:.3f} s",
                    "try": "model.dtype=bf16 (autocast; tensor-core matmuls, half the activation memory)"})
    if summary.get("coverage", 1.0) < 0.9:
        out.append({"finding": "time outside the named stages",
                    "evidence": f"stages cover {100 * summary['coverage']:.0f}% of the step; {summary['other']:.3f} s "
                                "between stages",
                    "try": "look for host syncs (.item(), .tolist()) and logging between stages in the trace"})
    return out


def _advice_for(stage: str, config: Any, device: str) -> str:
    return {
        "generation": "larger generation batch, KV cache (on by default), bf16 on GPU, shorter responses",
        "scoring": "shared value trunk, reference/reward on the same device, bf16 on GPU",
        "advantages": "this stage is pure tensor math: check for per-sample Python loops",
        "update": "fewer PPO epochs, larger minibatches (fewer optimizer steps), bf16 on GPU, "
                  "gradient checkpointing only if memory-bound",
        "evaluation": "evaluate less often (train.eval_every) or on fewer prompts",
    }.get(stage, "inspect the trace")


def format_report(findings: list[dict[str, str]]) -> str:
    lines = ["Bottlenecks (measured evidence in brackets):"]
    for i, f in enumerate(findings, 1):
        lines.append(f"{i}. {f['finding']} [{f['evidence']}]\n   try: {f['try']}")
    return "\n".join(lines)


__all__ = ["bottleneck_report", "format_report", "format_summary", "summarize"]
