"""What the always-on instrumentation costs: the same PPO steps with every sink vs none.

Usage::

    .venv/bin/python benchmarks/bench_instrumentation.py                 # smoke preset, 12 steps each
    .venv/bin/python benchmarks/bench_instrumentation.py --steps 30 --set ppo.batch_size=64

Two trainers with identical config and seed are built in one process:

* **all**: JSONL file + console progress (to ``/dev/null``, one line per step) + in-memory sinks,
  the :class:`~rlhfkit.instrument.StageRecorder` with memory tracking (RSS high-water reset and
  read per stage on CPU; CUDA/NVML counters on a GPU), and the system sampler's thread
  (:class:`~rlhfkit.system.SystemSampler`, at ``--system-interval`` seconds: 1 by default, ten times
  the default rate, to make its cost visible);
* **none**: no sinks, ``StageRecorder(track_memory=False)`` — stage wall-clock timing only, which
  the loop needs for its own ``perf/tokens_per_sec`` metric.

Their steps alternate (all, none, all, none, ...) so machine load hits both alike. Two figures are
printed: the difference of median step times (honest but noisy: on a shared 2-core machine step
times vary by several percent), and a direct measurement — the seconds actually spent inside the
sinks' ``emit`` plus the StageRecorder's memory-tracking overhead per stage, as a share of the step.
The direct figure is the one to hold against the 1% budget; the A/B figure checks it is not missing
anything big. Both variants compute the per-stage FLOPs/MFU metrics (part of the step's metrics);
their cost per step is printed on its own line, as is the sampler thread's time per sample.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from rlhfkit import GPT2Policy, PPOTrainer
from rlhfkit.config import load_config
from rlhfkit.instrument import StageRecorder
from rlhfkit.rewards import build_reward
from rlhfkit.sinks import ConsoleSink, JsonlSink, MemorySink
from rlhfkit.system import SystemSampler


class TimedSink:
    """Forwards to ``inner`` and adds the time spent in ``emit`` to ``self.seconds``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seconds = 0.0

    def emit(self, event: Any) -> None:
        t0 = time.perf_counter()
        self.inner.emit(event)
        self.seconds += time.perf_counter() - t0

    def close(self) -> None:
        self.inner.close()


def build(config: Any, instrumented: bool, out: Path) -> tuple[PPOTrainer, list[TimedSink]]:
    policy = GPT2Policy.from_run_config(config.model, config.generation, seed=config.seed)
    reward = build_reward(config.reward, policy.tokenizer)
    sinks: list[TimedSink] = []
    if instrumented:
        devnull = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - lives as long as the process
        sinks = [TimedSink(JsonlSink(out / "events.jsonl")), TimedSink(ConsoleSink(stream=devnull, every=1)),
                 TimedSink(MemorySink())]
    trainer = PPOTrainer(policy, reward, config=config, sinks=sinks)
    trainer._setup()  # builds the reference, optimizer and the StageRecorder
    if not instrumented:
        trainer.recorder = StageRecorder(trainer.device, trainer.hooks, track_memory=False)
    # time the per-step event block (monitor rules, event construction, emission) in both variants
    inner = trainer._emit_step
    spent: list[float] = []

    def emit_step(*a: Any, **kw: Any) -> None:
        t0 = time.perf_counter()
        inner(*a, **kw)
        spent.append(time.perf_counter() - t0)

    trainer._emit_step = emit_step  # type: ignore[method-assign]
    trainer.emit_step_seconds = spent  # type: ignore[attr-defined]
    trainer.perf = _TimedPerf(trainer.perf)  # type: ignore[assignment]
    return trainer, sinks


class _TimedPerf:
    """The trainer's PerfCounter, with the seconds each step's FLOP/MFU computation takes."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seconds: list[float] = []

    def step(self, *a: Any, **kw: Any) -> dict[str, float]:
        t0 = time.perf_counter()
        out: dict[str, float] = self.inner.step(*a, **kw)
        self.seconds.append(time.perf_counter() - t0)
        return out


def recorder_overhead(device: torch.device, n: int = 2000) -> float:
    """Seconds per stage that memory tracking adds to an empty stage (median of 5 batches of n)."""
    def per_stage(track: bool) -> float:
        rec = StageRecorder(device, (), track_memory=track)
        rec.begin_step(0)
        t0 = time.perf_counter()
        for _ in range(n):
            with rec.stage("generation"):
                pass
        return (time.perf_counter() - t0) / n

    diffs = []
    for _ in range(5):
        a, b = per_stage(True), per_stage(False)
        diffs.append(a - b)
    return max(0.0, statistics.median(diffs))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="smoke", help="preset name or YAML path (default: smoke)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="dotted override, repeatable")
    ap.add_argument("--steps", type=int, default=12, help="measured steps per variant")
    ap.add_argument("--warmup", type=int, default=2, help="unmeasured steps per variant")
    ap.add_argument("--system-interval", type=float, default=1.0, help="system sampler interval, s (default 1)")
    args = ap.parse_args(argv)

    overrides = ["train.device=cpu", "train.eval_every=0", "model.warm_start=false",
                 f"train.steps_per_epoch={args.steps + args.warmup}", *args.overrides]
    config = load_config(args.config, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        t_all, sinks = build(config, True, Path(tmp))
        t_none, _ = build(config, False, Path(tmp))
        sampler = SystemSampler(args.system_interval, emit=t_all.emit, step=lambda: t_all.global_step)
        sampler.start()
        step_all: list[float] = []
        step_none: list[float] = []
        emit_per_step: list[float] = []
        for step in range(args.warmup + args.steps):
            for trainer, times in ((t_all, step_all), (t_none, step_none)) if step % 2 == 0 else \
                    ((t_none, step_none), (t_all, step_all)):
                before = sum(s.seconds for s in sinks)
                t0 = time.perf_counter()
                trainer._ppo_step(step)  # the whole step: stages, metrics, event emission
                dt = time.perf_counter() - t0
                if step >= args.warmup:
                    times.append(dt)
                    if trainer is t_all:
                        emit_per_step.append(sum(s.seconds for s in sinks) - before)
        sampler.stop()
        for s in sinks:
            s.close()
        stages_per_step = len([k for k in t_all.recorder.timings if "/" not in k])
        per_stage = recorder_overhead(t_all.device)

    med_all, med_none = statistics.median(step_all), statistics.median(step_none)
    block_all = statistics.median(t_all.emit_step_seconds[args.warmup:])  # type: ignore[attr-defined]
    block_none = statistics.median(t_none.emit_step_seconds[args.warmup:])  # type: ignore[attr-defined]
    emit = statistics.median(emit_per_step)
    perf_step = statistics.median(t_all.perf.seconds[args.warmup:])  # type: ignore[attr-defined]
    wall = sum(step_all) + sum(step_none)
    sampler_per_step = sampler.seconds / max(1, sampler.samples) * sampler.samples / max(wall, 1e-9) * med_all
    direct = emit + per_stage * stages_per_step + perf_step + sampler_per_step
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"config {args.config} {' '.join(args.overrides)}: batch {config.ppo.batch_size}, "
          f"{config.generation.max_new_tokens} new tokens, {args.steps} measured steps per variant, "
          f"torch threads {torch.get_num_threads()}, load average {load}")
    print(f"{'variant':<34}{'median s/step':>15}{'min':>10}{'max':>10}")
    for name, xs in (("all sinks + memory tracking", step_all), ("no sinks, no memory tracking", step_none)):
        print(f"{name:<34}{statistics.median(xs):>15.4f}{min(xs):>10.4f}{max(xs):>10.4f}")
    print(f"A/B difference of medians: {100 * (med_all - med_none) / med_none:+.2f}% of step time"
          f" (noise: step times spread {100 * (max(step_none) - min(step_none)) / med_none:.0f}% min-to-max)")
    print(f"direct: sinks' emit {1000 * emit:.3f} ms/step + memory tracking {1e6 * per_stage:.0f} us/stage x "
          f"{stages_per_step} stages + FLOPs/MFU {1000 * perf_step:.3f} ms/step + system sampler "
          f"{1000 * sampler_per_step:.3f} ms/step = {1000 * direct:.3f} ms/step = {100 * direct / med_all:.3f}% of step "
          f"time (target <= 1%)")
    print(f"system sampler: {sampler.samples} samples every {args.system_interval:g} s, "
          f"{1000 * sampler.seconds / max(1, sampler.samples):.3f} ms each on its own thread")
    print(f"per-step event block (monitor + event construction + emit): {1000 * block_all:.3f} ms with all sinks,"
          f" {1000 * block_none:.3f} ms with none = {100 * block_all / med_all:.3f}% / {100 * block_none / med_none:.3f}%"
          f" of step time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
