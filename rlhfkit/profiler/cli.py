"""``rlhfkit profile``, ``rlhfkit mem-report`` and ``rlhfkit suggest-config``.

Each prints a readable report and writes its files under ``--out`` (default ``profiles/``).
Exit codes follow :mod:`rlhfkit.cli`: 0 ok, 1 the run failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from rlhfkit.cli import EXIT_FAILED, EXIT_OK, usage_error


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", metavar="PATH|PRESET", default="smoke",
                   help="YAML config file or preset name (smoke, default, gpu_optimized, debug)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value by dotted key (repeatable)")
    p.add_argument("--out", default="profiles", help="directory for the reports")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line on stdout")


def _env_bool(name: str, default: str = "true") -> str:
    """``"true"``/``"false"`` from an environment variable (0/false/no/off read as false)."""
    text = os.environ.get(name, default).strip().lower()
    return "false" if text in ("0", "false", "no", "off") else "true"


def register(sub: Any) -> None:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = sub.add_parser("profile", help="profile a short PPO run: trace, flame graph, per-stage summary, bottlenecks",
                       formatter_class=fmt,
                       description="Run PPO steps under torch.profiler and write a Chrome trace, speedscope flame "
                                   "graph, collapsed stacks, per-stage summary and bottleneck report to OUT/RUN_ID/.")
    _config_args(p)
    p.add_argument("--steps", type=int, default=6, help="PPO steps to run (0 = the config's full length)")
    p.add_argument("--stages", default=None, help="comma-separated stages to keep in the trace (default: all)")
    p.add_argument("--schedule", default="1,1,1,2,1", help="skip_first,wait,warmup,active,repeat in steps")
    p.add_argument("--record-shapes", action="store_true")
    p.add_argument("--profile-memory", action="store_true")
    p.add_argument("--with-stack", action="store_true")
    p.add_argument("--profile-gpu", choices=("true", "false"), default=_env_bool("PROFILE_GPU"),
                   help="false: CPU activity only, even on a GPU run (env PROFILE_GPU)")
    p.add_argument("--runs", default=None, help="also keep the run's events.jsonl under this directory")
    p.set_defaults(handler=cmd_profile)

    p = sub.add_parser("mem-report", help="predicted memory per model and stage, measured against a short run",
                       formatter_class=fmt,
                       description="Print the analytic memory breakdown (weights, gradients, optimizer states, "
                                   "activations, logits, KV cache) and, unless --no-measure, the measured peak "
                                   "of a 2-step run in a fresh process.")
    _config_args(p)
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="device to model (default: the config's)")
    p.add_argument("--no-measure", action="store_true", help="only the analytic prediction")
    p.add_argument("--steps", type=int, default=2, help="steps of the measurement run")
    p.add_argument("--snapshot", action="store_true",
                   help="CUDA: also write a memory-history snapshot (open in pytorch.org/memory_viz)")
    p.set_defaults(handler=cmd_mem_report)

    p = sub.add_parser("suggest-config", help="the fastest configuration predicted to fit a memory budget",
                       formatter_class=fmt,
                       description="Search batch/minibatch sizes, gradient accumulation, gradient checkpointing, "
                                   "dtype and value-head placement; rank by predicted throughput; write "
                                   "OUT/suggested_config.yaml.")
    _config_args(p)
    p.add_argument("--budget-gb", type=float, required=True, help="memory budget in GiB")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None)
    p.add_argument("--top", type=int, default=10, help="candidates to list")
    p.add_argument("--headroom", type=float, default=0.1, help="fraction of the budget kept free")
    p.add_argument("--verify", action="store_true", help="measure the suggested config's peak with a 1-step run")
    p.set_defaults(handler=cmd_suggest)


def _load(args: argparse.Namespace) -> Any:
    from rlhfkit.config import load_config

    return load_config(args.config, args.overrides)  # ConfigError -> exit 2 in rlhfkit.cli.main


def cmd_profile(args: argparse.Namespace) -> int:
    from rlhfkit.profiler import ProfilerHooks
    from rlhfkit.profiler.hooks import ALL_RANGES

    cfg = _load(args)
    try:
        sched = tuple(int(x) for x in args.schedule.split(","))
    except ValueError:
        return usage_error(f"--schedule must be five integers, got {args.schedule!r}")
    stages = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages else None
    if args.steps < 0:
        return usage_error("--steps must be >= 0")
    if args.steps:
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"num_epochs": 1,
                                                                           "steps_per_epoch": args.steps})})
    try:
        hooks = ProfilerHooks(output_dir=args.out, stages=stages, schedule=sched,  # type: ignore[arg-type]
                              record_shapes=args.record_shapes, profile_memory=args.profile_memory,
                              with_stack=args.with_stack, profile_gpu=args.profile_gpu == "true")
    except ValueError as exc:
        return usage_error(f"{exc} (ranges: {', '.join(ALL_RANGES)})")
    from rlhfkit.runner import run_training

    try:
        result = run_training(cfg, out_dir=args.runs, hooks=[hooks])
    except Exception as exc:
        print(f"rlhfkit: profiling run failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(hooks.text_report())
    print(f"\nfiles in {hooks.run_dir}/: " + ", ".join(sorted({p.name for p in hooks.artifacts})))
    if args.json:
        print(json.dumps({"run_id": result.get("run_id"), "dir": str(hooks.run_dir),
                          "files": [str(p) for p in hooks.artifacts], "coverage": hooks.summary.get("coverage"),
                          "step_time": hooks.summary.get("step_time")}, default=str))
    return EXIT_OK


def cmd_mem_report(args: argparse.Namespace) -> int:
    from rlhfkit.memopt.model import MiB, estimate_memory, format_estimate, plan_from_config

    cfg = _load(args)
    plan = plan_from_config(cfg, device=args.device)
    est = estimate_memory(plan)
    print(format_estimate(est))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"config": cfg.name, "predicted": est.to_dict()}
    if not args.no_measure:
        if plan.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                return usage_error("--device cuda but no CUDA device here (use --no-measure)")
        m = _measure(cfg, args.steps, out / "memory_snapshot.pickle" if args.snapshot else None, args.device)
        result["measured"] = m.to_dict()
        pred = est.peak / MiB
        err = (pred - m.growth_mb) / m.growth_mb if m.growth_mb else float("nan")
        result["error"] = err
        what = "max_memory_allocated" if m.device == "cuda" else "RSS growth over the pre-build baseline"
        print(f"\nMeasured ({m.steps} steps, {what}):")
        print(f"{'stage':<12}{'predicted':>12}{'measured':>12}   (MiB)")
        growth = m.stage_growth_mb()
        for st in est.stages:
            if st in growth:
                print(f"{st:<12}{est.stage_peak(st) / MiB:>12.1f}{growth[st]:>12.1f}")
        print(f"{'peak':<12}{pred:>12.1f}{m.growth_mb:>12.1f}   error {100 * err:+.1f}%")
        if m.file_backed_growth_mb:
            print(f"(library code paged in during the run, {m.file_backed_growth_mb:.1f} MiB of file-backed pages, "
                  "is not counted: it depends on the page cache, not on the run)")
        if m.snapshot:
            print(f"memory snapshot: {m.snapshot} (drag into https://pytorch.org/memory_viz)")
    path = out / "mem_report.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    print(f"\nwrote {path}")
    if args.json:
        print(json.dumps(result, default=str))
    return EXIT_OK


def _measure(cfg: Any, steps: int, snapshot: Path | None, device: str | None) -> Any:
    from rlhfkit.memopt.measurement import measure

    if device is not None:
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"device": device})})
    # glibc keeps freed chunks below its (dynamic) mmap threshold in the heap, so the RSS of a
    # default process over-reports live memory by whatever it happens to retain. A fixed threshold
    # makes large tensors come from mmap and go back on free: RSS then follows live bytes.
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    return measure(cfg, steps=steps, snapshot_path=snapshot)


def cmd_suggest(args: argparse.Namespace) -> int:
    from rlhfkit.memopt.suggest import format_suggestions, suggest_config, suggest_groups

    if args.budget_gb <= 0:
        return usage_error("--budget-gb must be positive")
    if not 0 <= args.headroom < 1:
        return usage_error("--headroom must be in [0, 1)")
    cfg = _load(args)
    out = Path(args.out)
    yaml_path = out / "suggested_config.yaml"
    cands = suggest_config(cfg, args.budget_gb, device=args.device, headroom=args.headroom, top=args.top,
                           out_path=yaml_path)
    # the grouped view: row 0 = the config as it is, then same-math and algorithm-changing candidates
    print(format_suggestions(suggest_groups(cfg, args.budget_gb, device=args.device, headroom=args.headroom,
                                            top_per_group=max(1, args.top // 2))))
    (out / "suggestions.json").write_text(json.dumps([c.to_dict() for c in cands], indent=1))
    result: dict[str, Any] = {"path": str(yaml_path), "fits": bool(cands and cands[0].fits),
                              "best": cands[0].to_dict() if cands else None}
    if cands and cands[0].fits:
        print(f"\nwrote {yaml_path} (run it: rlhfkit train --config {yaml_path})")
    if args.verify and cands:
        best = cands[0].config
        best = best.model_copy(update={"ppo": best.ppo.model_copy(update={"ppo_epochs": 1})})
        m = _measure(best, 1, None, args.device)
        result["measured_mb"] = m.growth_mb
        print(f"measured peak of the suggestion: {m.growth_mb:.0f} MiB "
              f"({'under' if m.growth_mb <= args.budget_gb * 1024 else 'OVER'} the {args.budget_gb:g} GiB budget)")
    if args.json:
        print(json.dumps(result, default=str))
    return EXIT_OK if cands and cands[0].fits else EXIT_FAILED


__all__ = ["register"]
