"""Profiler overhead over a whole run (a benchmark: prints, never asserts).

Runs the same config three ways, alternating (the order rotates each repeat, after an uncounted
warm-up run), in this process: no hooks; ``ProfilerHooks`` with the
default schedule (skip 1, wait 1, warm-up 1, active 2, repeat 1: two profiled steps per run);
``ProfilerHooks(enabled=False)`` (stage timings and summary only). Prints the median wall time of
each and the overhead relative to no hooks. Target: profiling <= 3% of a whole run's wall time.
The always-on instrumentation itself (stage timer, memory snapshots) is the engine's and is
measured by ``benchmarks/bench_instrumentation.py``.

Usage: ``python benchmarks/bench_overhead.py [--steps 20] [--repeats 3] [--config smoke]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default="smoke")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    from rlhfkit.config import load_config
    from rlhfkit.profiler import ProfilerHooks
    from rlhfkit.runner import run_training

    cfg = load_config(args.config, [f"train.steps_per_epoch={args.steps}", "train.num_epochs=1", "train.device=cpu",
                                    *args.overrides])
    walls: dict[str, list[float]] = {"none": [], "profiler (default schedule)": [], "timings only": []}
    extra: list[float] = []
    modes = list(walls)
    with tempfile.TemporaryDirectory() as tmp:
        # one-time process costs (oneDNN kernel generation, tokenizer and lexicon loads) would
        # otherwise all land on whichever run comes first
        warm = cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps_per_epoch": 3})})
        t0 = time.perf_counter()
        run_training(warm, out_dir=None, hooks=[ProfilerHooks(output_dir=tmp, schedule=(0, 0, 1, 1, 1))])
        print(f"{'warm-up (3 steps, profiled)':<30} {time.perf_counter() - t0:8.2f} s (not counted)", flush=True)
        for r in range(args.repeats):
            for mode in modes[r % len(modes):] + modes[:r % len(modes)]:  # rotate the order each repeat
                hooks = []
                if mode.startswith("profiler"):
                    hooks = [ProfilerHooks(output_dir=tmp)]
                elif mode == "timings only":
                    hooks = [ProfilerHooks(output_dir=tmp, enabled=False)]
                t0 = time.perf_counter()
                run_training(cfg, out_dir=None, hooks=hooks)
                walls[mode].append(time.perf_counter() - t0)
                if mode.startswith("profiler"):
                    extra.append(hooks[0].profile_seconds)
                print(f"{mode:<30} {walls[mode][-1]:8.2f} s", flush=True)
    base = statistics.median(walls["none"])
    print(f"\n{'mode':<30}{'median wall s':>14}{'overhead':>10}   ({args.steps} steps x {args.repeats}, {cfg.name})")
    for mode, xs in walls.items():
        med = statistics.median(xs)
        print(f"{mode:<30}{med:>14.2f}{100 * (med - base) / base:>+9.1f}%")
    print(f"trace export + analysis inside the profiled runs: median {statistics.median(extra):.2f} s "
          f"({100 * statistics.median(extra) / base:.1f}% of the no-hooks wall time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
