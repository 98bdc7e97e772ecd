"""TRL (and any ``transformers.Trainer``) runs reporting live into rlhfkit.

Two ways in:

    trainer = GRPOTrainer(..., callbacks=[RLHFKitCallback()])       # any Trainer
    trainer = TRLAdapter(base_trainer=trainer, enable_profiling=True)  # + stage timings, failures
    trainer.train()

:class:`RLHFKitCallback` registers an external run (source ``trl``, the trainer's arguments as
config) at ``on_train_begin``, maps every ``on_log`` record to our metric names
(:mod:`rlhfkit.adapters.mapping`; unknown keys keep their names), runs the stability monitor on
them, and at ``on_step_end`` emits the step's wall time and memory. Transformers' end-of-training
record (``train_runtime``, ``train_loss``...) becomes the run summary.

:class:`TRLAdapter` adds what a callback cannot see: it wraps the trainer's generation
(``_generate``) and rollout (``_generate_and_score_completions``) methods, where they exist
(GRPO, RLOO), so each step's time splits into ``generation``, ``scoring`` (rewards and reference
log-probs: rollout minus generation) and ``update`` (the rest); it reports an exception out of
``train()`` as ``run_failed``; and with ``enable_profiling`` it runs the native runs' profiler
(:class:`rlhfkit.profiler.hooks.ProfilerHooks`) over a few steps: Chrome trace, speedscope,
collapsed stacks and per-stage summary, stored as artifacts.

Cost: a handful of ``perf_counter`` calls, one small dict mapping and three JSON lines per step,
about 0.6 ms per step in the trainer (< 1 % of even a 70 ms tiny-GPT-2 GRPO step on an H100;
``benchmarks/bench_callback_overhead.py``). No device synchronisation at step end.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from rlhfkit.adapters.track import Run
from rlhfkit.adapters.transport import ClientFactory, default_client
from rlhfkit.events import MemoryStat, Sink
from rlhfkit.instrument import rss_mb
from rlhfkit.metrics import M

_log = logging.getLogger("rlhfkit.adapters")
_MB = 1024 * 1024

# Transformers' end-of-training record: these go to the run summary, not to the step metrics.
SUMMARY_KEYS = frozenset({"train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos",
                          "train_loss"})


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_mb() -> float:
    """Resident set size from /proc/self/statm (one short read, ~10x cheaper than parsing status)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE / _MB
    except (OSError, IndexError, ValueError):
        return rss_mb()


def _memory_now(device: torch.device) -> MemoryStat:
    """Allocator counters only: no device synchronisation (the numbers are the allocator's, not the GPU's)."""
    if device.type == "cuda":
        # memory_allocated() & co. each build the allocator's whole stats dict: read it once.
        stats = torch.cuda.memory_stats(device)
        return MemoryStat(allocated_mb=stats.get("allocated_bytes.all.current", 0) / _MB,
                          reserved_mb=stats.get("reserved_bytes.all.current", 0) / _MB,
                          peak_mb=stats.get("allocated_bytes.all.peak", 0) / _MB)
    return MemoryStat(rss_mb=_rss_mb())


def _trainer_kind(args: Any) -> str:
    """``grpo`` from a ``GRPOConfig``, ``ppo`` from a ``PPOConfig``...; ``trainer`` otherwise."""
    cls = type(args).__name__
    return cls[: -len("Config")].lower() if cls.endswith("Config") and cls != "Config" else "trainer"


class RLHFKitCallback(TrainerCallback):
    """A ``TrainerCallback`` that streams a TRL/transformers run into rlhfkit.

    Args:
        name: run name (default: ``args.run_name`` or the output directory's name).
        tags: registry tags (``trl`` and the trainer kind are added).
        server / token: default ``RLHFKIT_SERVER`` / ``RLHFKIT_TOKEN``; none = local file only.
        out_dir: local event files go to ``<out_dir>/<run_id>/events.jsonl``
            (default ``<args.output_dir>/rlhfkit``).
        enable_monitoring: run stability alerts on the mapped metrics.
        warning_thresholds: monitor threshold overrides.
        sinks: extra event sinks.
    """

    def __init__(self, name: str | None = None, *, tags: Sequence[str] = (), server: str | None = None,
                 token: str | None = None, out_dir: str | Path | None = None, enable_monitoring: bool = True,
                 warning_thresholds: dict[str, float] | None = None, sinks: Sequence[Sink] = (),
                 client_factory: ClientFactory = default_client) -> None:
        self.name = name
        self.tags = list(tags)
        self.server = server
        self.token = token
        self.out_dir = out_dir
        self.enable_monitoring = enable_monitoring
        self.warning_thresholds = warning_thresholds
        self.extra_sinks = list(sinks)
        self.client_factory = client_factory
        self.run: Run | None = None
        self.device = torch.device("cpu")
        self.summary: dict[str, Any] = {}
        # Per-step stage clock, filled by TRLAdapter's wrappers (seconds / MemoryStat by stage).
        self.stage_time: dict[str, float] = {}
        self.stage_memory: dict[str, MemoryStat] = {}
        self._t_step: float | None = None
        self._profiler: Any = None  # rlhfkit.profiler.hooks.ProfilerHooks while profiling
        self._host: _ProfilerHost | None = None

    # -- run lifecycle -------------------------------------------------------------------
    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        if not state.is_world_process_zero or self.run is not None:
            return
        kind = _trainer_kind(args)
        config = {"trainer": kind, "args": args.to_dict()}
        name = self.name or getattr(args, "run_name", None) or Path(args.output_dir or "trl").name
        self.device = args.device if isinstance(getattr(args, "device", None), torch.device) else torch.device("cpu")
        self.run = Run(name, config=config, source="trl", tags=["trl", kind, *self.tags], server=self.server,
                       token=self.token, out_dir=self.out_dir or Path(args.output_dir or ".") / "rlhfkit",
                       monitor=self.enable_monitoring, warning_thresholds=self.warning_thresholds,
                       total_steps=state.max_steps or None, sinks=self.extra_sinks,
                       client_factory=self.client_factory)
        self.run.start(device=str(self.device), seed=getattr(args, "seed", None))

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        self._stop_profiler()
        if self.run is not None:
            self.run.finish({"global_step": state.global_step, **self.summary})

    def fail(self, exc: BaseException) -> None:
        """Report that training raised (``TRLAdapter.train`` calls this)."""
        self._stop_profiler()
        if self.run is not None:
            self.run.fail(exc)

    # -- per step ------------------------------------------------------------------------
    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                      **kwargs: Any) -> None:
        if self.run is None:
            return
        self.stage_time = {}
        self.stage_memory = {}
        if self._profiler is not None:
            self._profiler.on_step_begin(state.global_step + 1)
        self._t_step = time.perf_counter()

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        if self.run is None or self._t_step is None:
            return
        # No device sync here: it would stall the host on every step. The step time is host wall
        # time between the step hooks; TRL's loop already waits for the GPU when it reads losses
        # and rewards (.item()), and the adapter's stage wrappers sync at their boundaries.
        step_time = time.perf_counter() - self._t_step
        self._t_step = None
        stages = dict(self.stage_time)
        rollout = stages.pop("rollout", None)
        if rollout is not None:
            stages["scoring"] = max(0.0, rollout - stages.get("generation", 0.0))
        if stages:
            stages["update"] = max(0.0, step_time - (rollout if rollout is not None else sum(stages.values())))
        memory = dict(self.stage_memory)
        if "rollout" in memory:
            memory["scoring"] = memory.pop("rollout")
        memory["update" if stages else "step"] = _memory_now(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        step = state.global_step
        self.run.log_timings(step, stages, step_time)
        self.run.log_memory(step, memory, device=str(self.device))
        self._profile_step(step, stages, step_time)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if self.run is None or not logs:
            return
        if SUMMARY_KEYS & logs.keys():
            self.summary.update({k: v for k, v in logs.items() if isinstance(v, (int, float))})
            return
        self.run.log(logs, step=state.global_step)

    # -- stage timing (installed by TRLAdapter) ---------------------------------------------
    def timed(self, stage: str, fn: Callable[..., Any], memory: bool = False) -> Callable[..., Any]:
        """Wrap ``fn`` so its wall time adds to ``stage`` in the current step (and, optionally, memory)."""

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if self.run is None:
                return fn(*args, **kwargs)
            cuda = self.device.type == "cuda"
            if cuda:
                torch.cuda.synchronize(self.device)
                if memory:
                    torch.cuda.reset_peak_memory_stats(self.device)
            t0 = time.perf_counter()
            try:
                with torch.profiler.record_function(stage):
                    return fn(*args, **kwargs)
            finally:
                if cuda:
                    torch.cuda.synchronize(self.device)
                self.stage_time[stage] = self.stage_time.get(stage, 0.0) + time.perf_counter() - t0
                if memory:
                    self.stage_memory[stage] = _memory_now(self.device)

        return wrapper

    # -- profiling ---------------------------------------------------------------------------
    def start_profiler(self, wait: int = 1, warmup: int = 1, active: int = 2) -> None:
        """Profile ``active`` steps after ``wait + warmup`` with the native runs' profiler hooks.

        :class:`rlhfkit.profiler.hooks.ProfilerHooks` does the work, so a TRL run gets the same
        artifacts as a native one: Chrome trace, speedscope file, collapsed stacks, per-stage
        summary and report, each announced as an ``artifact`` event.
        """
        if self.run is None:
            return
        from rlhfkit.profiler.hooks import ProfilerHooks

        self._host = _ProfilerHost(run_id=self.run.local_id, device=self.device, emitter=self.run.emitter)
        self._profiler = ProfilerHooks(output_dir=self.run.run_dir.parent, schedule=(0, wait, warmup, active, 1))
        self._profiler.on_train_begin(self._host)

    def _profile_step(self, step: int, stages: dict[str, float], step_time: float) -> None:
        prof = self._profiler
        if prof is None:
            return
        try:
            for stage, seconds in stages.items():
                prof.on_stage_end(stage, step, seconds)
            prof.on_step_end(step, {M.STEP_TIME: step_time})
        except Exception:
            _log.exception("rlhfkit: the profiler failed at step %s; profiling stops", step)
            self._profiler = None

    def _stop_profiler(self) -> None:
        if self._profiler is not None:
            prof, self._profiler = self._profiler, None
            try:
                prof.on_train_end(self._host, {})
            except Exception:
                _log.exception("rlhfkit: stopping the profiler failed")


@dataclass
class _ProfilerHost:
    """The attributes :class:`~rlhfkit.profiler.hooks.ProfilerHooks` reads from a trainer."""

    run_id: str
    device: torch.device
    emitter: Any
    config: Any = None  # no RunConfig: the bottleneck and memory reports need one and are skipped
    recorder: Any = None


class _ProfilerStarter(TrainerCallback):
    """Starts the profiler right after the run exists (callbacks run in registration order)."""

    def __init__(self, cb: RLHFKitCallback, schedule: tuple[int, int, int]) -> None:
        self.cb = cb
        self.schedule = schedule

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        self.cb.start_profiler(*self.schedule)


# Methods whose time is a pipeline stage: (attribute, stage, snapshot memory at its end).
STAGE_METHODS: tuple[tuple[str, str, bool], ...] = (
    ("_generate", "generation", True),
    ("_generate_and_score_completions", "rollout", True),
)


class TRLAdapter:
    """Wraps a TRL trainer so its run reports into rlhfkit; use it exactly like the trainer.

    Args:
        base_trainer: any TRL trainer or ``transformers.Trainer``.
        enable_profiling: profile a few steps with ``torch.profiler`` (trace stored as an artifact).
        enable_monitoring: stability alerts on the mapped metrics.
        profile_schedule: ``(wait, warmup, active)`` steps for the profiler.
        **callback_kwargs: passed to :class:`RLHFKitCallback` (name, tags, server, out_dir, ...).
    """

    def __init__(self, base_trainer: Any, enable_profiling: bool = False, enable_monitoring: bool = True,
                 profile_schedule: tuple[int, int, int] = (1, 1, 2), **callback_kwargs: Any) -> None:
        self.base_trainer = base_trainer
        self.callback = RLHFKitCallback(enable_monitoring=enable_monitoring, **callback_kwargs)
        base_trainer.add_callback(self.callback)
        if enable_profiling:
            base_trainer.add_callback(_ProfilerStarter(self.callback, profile_schedule))
        for attr, stage, memory in STAGE_METHODS:
            fn = getattr(base_trainer, attr, None)
            if callable(fn):
                setattr(base_trainer, attr, self.callback.timed(stage, fn, memory=memory))

    @property
    def run(self) -> Run | None:
        return self.callback.run

    def train(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.base_trainer.train(*args, **kwargs)
        except BaseException as exc:
            self.callback.fail(exc)
            raise

    def __getattr__(self, item: str) -> Any:
        return getattr(self.base_trainer, item)
