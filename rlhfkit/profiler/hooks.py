"""``ProfilerHooks``: torch.profiler around PPO steps, exported as run artifacts.

Attach with ``trainer.add_hooks(ProfilerHooks(output_dir="profiles"))`` (or
``run_training(..., hooks=[...])``). The hooks

* time every stage of every step from the trainer's ``on_stage_end`` callbacks (free: the trainer
  measures them anyway) — the per-stage summary covers the whole run;
* run ``torch.profiler`` (CPU, plus CUDA when a GPU is used) on the steps its schedule selects
  (``skip_first, wait, warmup, active, repeat``), with shapes / memory / Python stacks on request;
* after each active window write the Chrome/Perfetto trace, the collapsed stacks, a speedscope
  file and the top operators per stage; at the end the per-stage summary, the bottleneck report and
  a predicted-vs-measured memory report. Every file is announced as an ``artifact`` event, so the
  service and UI list it with no extra work.

**Per-stage selection** (``stages=["generation"]``): the profiler records whole steps and the
exports keep only the events inside the selected stages' ``record_function`` ranges. Starting and
stopping the profiler at every stage boundary would pay its start-up and trace post-processing
cost several times per step and split one step into many traces; recording the step once keeps one
timeline, costs the same during the selected stage, and the filter makes the files as small as a
stage-only recording. Timings and the summary always cover every stage.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rlhfkit.metrics import STAGES, SUB_STAGES, M, stage_sort_key
from rlhfkit.profiler import report as rep
from rlhfkit.profiler import trace as tr

_log = logging.getLogger(__name__)
ALL_RANGES: tuple[str, ...] = STAGES + SUB_STAGES + ("update/forward", "update/backward", "update/optimizer")
Schedule = tuple[int, int, int, int, int]


class ProfilerHooks:
    """Profile a PPO run: traces, flame graphs, per-stage summary and bottleneck report.

    Args:
        output_dir: where files go; each run writes ``output_dir/<run_id>/``.
        stages: profile only these stages (e.g. ``["generation"]`` or ``["update"]``); None = all.
        schedule: ``(skip_first, wait, warmup, active, repeat)`` of ``torch.profiler.schedule``
            in PPO steps; ``repeat=0`` repeats until the run ends.
        record_shapes, profile_memory, with_stack: passed to ``torch.profiler.profile``.
        top_k: operators listed per stage.
        enabled: False keeps only the (free) stage timings and summary, no torch.profiler.
        profile_gpu: False records CPU activity only, even on a GPU run (no CUDA kernels in the
            trace; CUPTI stays off). None: the ``PROFILE_GPU`` environment variable (default true).
    """

    def __init__(self, output_dir: str | Path = "profiles", stages: Sequence[str] | None = None,
                 schedule: Schedule = (1, 1, 1, 2, 1), record_shapes: bool = False, profile_memory: bool = False,
                 with_stack: bool = False, top_k: int = 15, enabled: bool = True,
                 profile_gpu: bool | None = None) -> None:
        unknown = set(stages or ()) - set(ALL_RANGES)
        if unknown:
            raise ValueError(f"unknown stage(s) {sorted(unknown)}; allowed: {', '.join(ALL_RANGES)}")
        if len(schedule) != 5 or min(schedule) < 0 or schedule[3] < 1:
            raise ValueError("schedule is (skip_first, wait, warmup, active, repeat) with active >= 1")
        self.output_dir = Path(output_dir)
        self.stages = tuple(stages) if stages else None
        self.schedule = schedule
        self.record_shapes = record_shapes
        self.profile_memory = profile_memory
        self.with_stack = with_stack
        self.top_k = top_k
        self.enabled = enabled
        if profile_gpu is None:
            profile_gpu = os.environ.get("PROFILE_GPU", "true").strip().lower() not in ("0", "false", "no", "off")
        self.profile_gpu = profile_gpu
        self.steps: list[dict[str, Any]] = []
        self.artifacts: list[Path] = []
        self.traces: list[Path] = []
        self.op_evidence: dict[str, dict[str, float]] = {}
        self.top_ops: dict[str, list[dict[str, Any]]] = {}
        self.substages: dict[str, dict[str, float]] = {}
        self.memory_peak: dict[str, dict[str, float]] = {}
        self.summary: dict[str, Any] = {}
        self.findings: list[dict[str, str]] = []
        self.trainer: Any = None
        self.run_dir: Path = self.output_dir
        self._prof: torch.profiler.profile | None = None
        self._cur: dict[str, float] | None = None
        self._step = -1
        self._first_step: int | None = None  # our step at torch.profiler's ProfilerStep#0
        self.profile_seconds = 0.0  # wall time spent exporting and analysing traces

    # ------------------------------------------------------------------ trainer hooks
    def on_train_begin(self, trainer: Any) -> None:
        self.trainer = trainer
        self.run_dir = self.output_dir / str(getattr(trainer, "run_id", "run"))
        self.run_dir.mkdir(parents=True, exist_ok=True)

    def _start(self, first_step: int) -> None:
        """Start torch.profiler at the first trained step, not at ``on_train_begin``: torch opens
        ``ProfilerStep#0`` at ``start()``, so starting earlier put the evaluation before the first
        step inside step 0's range. Its step ``k`` is our step ``first_step + k`` (a resumed run);
        the exports renumber them."""
        activities = [torch.profiler.ProfilerActivity.CPU]
        if self.profile_gpu and getattr(getattr(self.trainer, "device", None), "type", "cpu") == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        skip_first, wait, warmup, active, repeat = self.schedule
        self._first_step = first_step
        self._prof = torch.profiler.profile(
            activities=activities,
            schedule=torch.profiler.schedule(skip_first=skip_first, wait=wait, warmup=warmup, active=active,
                                             repeat=repeat),
            on_trace_ready=self._on_trace_ready, record_shapes=self.record_shapes,
            profile_memory=self.profile_memory, with_stack=self.with_stack)
        self._prof.start()

    def on_step_begin(self, step: int) -> None:
        self._cur = {}
        self._step = step
        if self.enabled and self._prof is None and self._first_step is None:
            self._start(step)

    def on_stage_end(self, stage: str, step: int, seconds: float) -> None:
        if self._cur is not None:  # evaluation before the first / after the last step is not a step
            self._cur[stage] = self._cur.get(stage, 0.0) + seconds

    def on_step_end(self, step: int, metrics: dict[str, float]) -> None:
        step_time = float(metrics.get(M.STEP_TIME, 0.0))
        tokens = float(metrics.get(M.TOKENS_PER_SEC, 0.0)) * step_time
        self.steps.append({"step": step, "step_time": step_time, "tokens": round(tokens),
                           "stages": dict(self._cur or {})})
        self._cur = None
        self._record_memory()
        if self._prof is not None:
            self._prof.step()

    def on_train_end(self, trainer: Any, summary: dict[str, Any]) -> None:
        if self._prof is not None:
            self._prof.stop()
            self._prof = None
        self.finish()

    # ------------------------------------------------------------------ exports
    def _on_trace_ready(self, prof: torch.profiler.profile) -> None:
        try:
            self._export(prof)
        except Exception:  # a broken export must never kill training
            _log.exception("profile export failed at step %s; training continues", self._step)

    def _export(self, prof: torch.profiler.profile) -> None:
        t0 = time.perf_counter()
        step = self._step
        raw = self.run_dir / f"trace_step{step}.json"
        prof.export_chrome_trace(str(raw))
        trace = tr.load_trace(raw)
        if self.stages is not None or self._first_step:
            trace = tr.renumber_steps(trace, self._first_step or 0)
            if self.stages is not None:
                trace = tr.filter_trace(trace, self.stages, ALL_RANGES)
            raw.write_text(json.dumps(trace))
        events = tr.complete_events(trace)
        roots = tr.build_trees(events)
        # the flame graphs: one "rlhfkit step N" frame per profiled step (an active window of two
        # steps used to appear as one frame named after its last step holding both)
        by_step = tr.label_steps(roots)
        stacks = self.run_dir / f"stacks_step{step}.txt"
        stacks.write_text("\n".join(tr.collapsed_stacks(by_step)) + "\n")
        ss = self.run_dir / f"speedscope_step{step}.json"
        ss.write_text(json.dumps(tr.speedscope(by_step, name=tr.window_name(roots))))
        self.top_ops = tr.top_ops_per_stage(trace, ALL_RANGES, self.top_k, roots=roots)
        self.op_evidence = {st: tr.op_stats(trace, st, ALL_RANGES, roots=roots) for st in STAGES}
        self.substages = _substage_times(events)
        self.traces.append(raw)
        self._announce(raw, "trace", step)
        self._announce(ss, "speedscope", step)
        self._announce(stacks, "other", step, {"format": "collapsed stacks (flamegraph.pl)"})
        self.profile_seconds += time.perf_counter() - t0

    def _record_memory(self) -> None:
        rec = getattr(self.trainer, "recorder", None)
        for stage, stat in (getattr(rec, "memory", None) or {}).items():
            cur = self.memory_peak.setdefault(stage, {})
            for k in ("peak_mb", "rss_peak_mb", "rss_mb", "allocated_mb", "reserved_mb"):
                v = getattr(stat, k, None)
                if v is not None:
                    cur[k] = max(cur.get(k, 0.0), float(v))

    def finish(self) -> dict[str, Any]:
        """Write the summary, report and memory report (called by ``on_train_end``)."""
        t0 = time.perf_counter()
        self.summary = rep.summarize(self.steps)
        # the trace's times: sub-stages, and their parents over the same profiled steps
        self.summary["substages_profiled"] = {k: v for k, v in self.substages.items() if "/" in k}
        self.summary["stages_profiled"] = {k: v for k, v in self.substages.items() if "/" not in k}
        self.summary["top_ops"] = self.top_ops
        cfg = getattr(self.trainer, "config", None)
        device = getattr(getattr(self.trainer, "device", None), "type", "cpu")
        self.findings = rep.bottleneck_report(self.summary, self.op_evidence, cfg, device) if cfg is not None else []
        self.summary["bottlenecks"] = self.findings
        self.summary["profiled_stages"] = list(self.stages or STAGES)
        self.summary["schedule"] = dict(zip(("skip_first", "wait", "warmup", "active", "repeat"), self.schedule,
                                            strict=True))
        self.summary["traces"] = [str(p) for p in self.traces]
        path = self.run_dir / "profile_summary.json"
        path.write_text(json.dumps(self.summary, indent=1, default=str))
        txt = self.run_dir / "profile_report.txt"
        txt.write_text(self.text_report() + "\n")
        self._announce(path, "profile_summary", None)
        self._announce(txt, "profile_summary", None, {"format": "text"})
        if cfg is not None:
            self._write_mem_report(cfg, device)
        self.profile_seconds += time.perf_counter() - t0
        return self.summary

    def _write_mem_report(self, cfg: Any, device: str) -> None:
        try:
            from rlhfkit.memopt.model import MiB, estimate_memory, plan_from_config

            est = estimate_memory(plan_from_config(cfg, device="cuda" if device == "cuda" else "cpu"))
        except Exception as exc:  # the report must never fail a run
            est_d: dict[str, Any] = {"error": f"{type(exc).__name__}: {exc}"}
        else:
            est_d = est.to_dict()
            est_d["models_measured_mb"] = dict(getattr(self.trainer, "model_mb", {}) or {})
            est_d["stage_measured_mb"] = self.memory_peak
            est_d["note"] = ("CUDA: peak_mb = max_memory_allocated per stage (compare with stage_peak_mb). CPU: "
                             "rss_peak_mb is the absolute process RSS high-water; the prediction is the growth "
                             "over the RSS before models were built (see `rlhfkit mem-report`).")
            est_d["predicted_peak_mb"] = round(est.peak / MiB, 1)
        path = self.run_dir / "mem_report.json"
        path.write_text(json.dumps(est_d, indent=1, default=str))
        self._announce(path, "mem_report", None)

    def _announce(self, path: Path, kind: str, step: int | None, meta: dict[str, Any] | None = None) -> None:
        self.artifacts.append(path)
        emitter = getattr(self.trainer, "emitter", None)
        if emitter is None:
            return
        from rlhfkit.events import ArtifactEvent

        name = f"profiles/{path.name}"
        emitter.emit(ArtifactEvent(step=step, name=name, kind=kind, path=str(path.resolve()),
                                   size_bytes=path.stat().st_size, meta=meta or {}))

    def text_report(self) -> str:
        parts = [rep.format_summary(self.summary)]
        if self.substages:
            parts.append("Sub-stages (profiled steps, mean seconds per step): "
                         + ", ".join(f"{k} {v['mean']:.4f}" for k, v in self.substages.items()))
        if self.top_ops:
            lines = ["Top operators per stage (self time over the profiled steps):"]
            for st in sorted(self.top_ops, key=stage_sort_key):  # stages, each followed by its sub-stages
                ops = [o for o in self.top_ops[st][:5] if o["self_us"] >= 50]  # "0.0 ms" rows say nothing
                if not ops:
                    continue
                label = f"{st} (outside sub-stages)" if st in ("scoring", "update") else st
                lines.append(f"  {label}: " + "; ".join(f"{o['op']} {o['self_us'] / 1e3:.1f} ms x{o['calls']}"
                                                         for o in ops))
            parts.append("\n".join(lines))
        parts.append(rep.format_report(self.findings))
        return "\n\n".join(parts)


def _substage_times(events: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean seconds per profiled step of each stage and sub-stage range, from the trace: the stages
    too, so a sub-stage is compared with its parent over the same (profiled) steps."""
    steps = {e["name"] for e in events if str(e.get("name", "")).startswith("ProfilerStep#")}
    n = max(1, len(steps))
    acc: dict[str, float] = {}
    for e in events:
        name = str(e.get("name", ""))
        if name in ALL_RANGES and e.get("cat") == "user_annotation":
            acc[name] = acc.get(name, 0.0) + float(e["dur"]) / 1e6
    return {k: {"mean": v / n, "profiled_steps": float(n)} for k, v in sorted(acc.items())}


__all__ = ["ALL_RANGES", "ProfilerHooks"]
