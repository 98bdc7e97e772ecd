"""Measured memory per stage, for comparison with the analytic model.

A short real run (``rlhfkit.runner.run_training``, a couple of PPO steps, no files) is watched
through the trainer's own ``memory`` events, which hold per stage:

* on CUDA, ``max_memory_allocated`` reset at each stage start (``peak_mb``) — what the model
  predicts (tensor bytes; the caching allocator's reserve and the CUDA context are excluded);
* on CPU, the RSS high-water of the stage (``rss_peak_mb``; Linux resets ``VmHWM`` through
  ``/proc/self/clear_refs``). The measured quantity is the *growth* over the RSS the process had
  after importing torch and transformers and before building any model.

For clean numbers each measurement runs in a fresh interpreter (:func:`measure`), and freed heap is
handed back to the OS with ``malloc_trim`` before the first step, so garbage from model
construction does not count as the run's memory. On CUDA an optional
``torch.cuda.memory._record_memory_history`` snapshot (``.pickle``, open it in
https://pytorch.org/memory_viz) can be written alongside.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rlhfkit.hostmem import malloc_trim

MiB = 2**20


@dataclass
class Measurement:
    """Measured peak memory of a short run: per stage and overall (MiB)."""

    device: str
    steps: int
    baseline_mb: float  # CPU: RSS before building models; CUDA: memory_allocated before building
    stage_peak_mb: dict[str, float] = field(default_factory=dict)  # absolute, max over steps
    peak_mb: float = 0.0  # max over stages (absolute)
    growth_mb: float = 0.0  # peak - baseline: what the analytic model predicts
    # CPU: growth of file-backed resident pages (shared-library code faulted in during the run),
    # subtracted from growth_mb: how many of those pages a process touches depends on the page
    # cache and readahead (a freshly installed venv faults ~20 MiB more), not on the run's tensors
    file_backed_growth_mb: float | None = None
    reserved_mb: float | None = None  # CUDA: max_memory_reserved over the run
    tokens_per_sec: float | None = None  # over the steps after the first (all of them when only one)
    step_time_s: float | None = None  # mean over the same steps
    # mean over the same steps of response/length and response/length_max (tokens): what a run that
    # stops at EOS generates (rlhfkit.memopt.suggest.MeasuredRun)
    response_mean: float | None = None
    response_longest: float | None = None
    snapshot: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def stage_growth_mb(self) -> dict[str, float]:
        """Per stage: the peak less the baseline and (on CPU) the file-backed pages paged in during
        the run. ``growth_mb`` is the largest of these, so the rows and the total agree."""
        off = self.baseline_mb + (self.file_backed_growth_mb or 0.0)
        return {s: round(v - off, 2) for s, v in self.stage_peak_mb.items()}


def _rss_file_mb() -> float | None:
    """Resident file-backed pages of this process (``RssFile``), MiB; None where /proc lacks it."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("RssFile:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class _TrimHook:
    """Hands freed heap back to the OS once the models are built (before the first measured stage)."""

    def on_train_begin(self, trainer: Any) -> None:
        import gc

        gc.collect()
        malloc_trim()


def measure_in_process(config: Any, *, steps: int = 2, snapshot_path: str | Path | None = None) -> Measurement:
    """Run ``steps`` PPO steps of ``config`` here and return the measured per-stage peaks.

    Evaluation is skipped except the engine's start/end passes, checkpoints are off and nothing is
    written. Call it in a fresh process for a clean CPU baseline (see :func:`measure`).
    """
    import torch

    from rlhfkit.instrument import rss_mb
    from rlhfkit.metrics import M
    from rlhfkit.runner import run_training
    from rlhfkit.sinks import MemorySink
    from rlhfkit.trainer import resolve_device

    cfg = config.model_copy(update={"train": config.train.model_copy(update={
        "num_epochs": 1, "steps_per_epoch": steps, "eval_every": 0, "checkpoint_every": 0,
        "checkpoint_at_end": False, "malloc_keep_freed": False})})  # RSS must follow live bytes
    device = resolve_device(cfg.train.device)
    cuda = device.type == "cuda"
    import gc

    gc.collect()
    malloc_trim()
    if cuda:
        torch.cuda.synchronize(device)
        baseline = torch.cuda.memory_allocated(device) / MiB
        if snapshot_path is not None:
            torch.cuda.memory._record_memory_history(max_entries=200_000)
    else:
        baseline = rss_mb()
    file_base = _rss_file_mb()
    sink = MemorySink()
    run_training(cfg, sinks=[sink], out_dir=None, hooks=[_TrimHook()])
    snap = None
    if cuda and snapshot_path is not None:
        Path(snapshot_path).parent.mkdir(parents=True, exist_ok=True)
        torch.cuda.memory._dump_snapshot(str(snapshot_path))
        torch.cuda.memory._record_memory_history(enabled=None)
        snap = str(snapshot_path)
    per_stage: dict[str, float] = {}
    for ev in sink.of_type("memory"):
        for stage, stat in ev.stages.items():
            v = stat.peak_mb if cuda else stat.rss_peak_mb if stat.rss_peak_mb is not None else stat.rss_mb
            if v is not None:
                per_stage[stage] = max(per_stage.get(stage, 0.0), float(v))
    # throughput over every step but the first (which pays one-time costs) when there are several
    timed = [e for e in sink.of_type("timings")]
    timed = timed[1:] if len(timed) > 1 else timed
    busy = sum(e.step_time for e in timed)
    peak = max(per_stage.values()) if per_stage else 0.0
    timed_steps = {e.step for e in timed}
    lens = [e.values for e in sink.of_type("metrics") if e.step in timed_steps and M.RESPONSE_LEN in e.values]
    mean_len = sum(v[M.RESPONSE_LEN] for v in lens) / len(lens) if lens else None
    longest = sum(v.get(M.RESPONSE_LEN_MAX, v[M.RESPONSE_LEN]) for v in lens) / len(lens) if lens else None
    file_growth = None if cuda or file_base is None or (end := _rss_file_mb()) is None else max(0.0, end - file_base)
    return Measurement(
        device=device.type, steps=steps, baseline_mb=round(baseline, 2),
        stage_peak_mb={k: round(v, 2) for k, v in per_stage.items()}, peak_mb=round(peak, 2),
        growth_mb=round(peak - baseline - (file_growth or 0.0), 2),
        file_backed_growth_mb=None if file_growth is None else round(file_growth, 2),
        reserved_mb=round(torch.cuda.max_memory_reserved(device) / MiB, 2) if cuda else None,
        tokens_per_sec=sum(e.tokens for e in timed) / busy if busy > 0 else None,
        step_time_s=busy / len(timed) if timed else None, snapshot=snap,
        response_mean=None if mean_len is None else round(mean_len, 3),
        response_longest=None if longest is None else round(longest, 3),
    )


def measure(config: Any, *, steps: int = 2, isolated: bool = True, timeout: float = 600,
            snapshot_path: str | Path | None = None) -> Measurement:
    """Measure ``config`` in a fresh interpreter (``isolated``) or in this process."""
    if not isolated:
        return measure_in_process(config, steps=steps, snapshot_path=snapshot_path)
    cmd = [sys.executable, "-m", "rlhfkit.memopt.measurement", "--steps", str(steps)]
    if snapshot_path is not None:
        cmd += ["--snapshot", str(snapshot_path)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, input=json.dumps(config.model_dump(mode="json")), capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if proc.returncode != 0:
        raise RuntimeError(f"measurement run failed after {time.perf_counter() - t0:.0f}s:\n{proc.stderr[-3000:]}")
    return Measurement(**json.loads(proc.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    """``python -m rlhfkit.memopt.measurement < config.json``: print one Measurement as JSON."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--snapshot", default=None)
    args = ap.parse_args(argv)
    from rlhfkit.config import validate_config

    cfg = validate_config(json.loads(sys.stdin.read()))
    m = measure_in_process(cfg, steps=args.steps, snapshot_path=args.snapshot)
    print(json.dumps(m.to_dict()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
