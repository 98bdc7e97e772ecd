"""Always-on, cheap instrumentation: wall time and memory per stage.

Each stage of a PPO step runs inside :meth:`StageRecorder.stage`, which
* opens a ``torch.profiler.record_function`` range of the stage's name (free when no profiler runs),
* on CUDA synchronises the device at the stage *boundary only* (never inside a stage), so the wall
  time is the stage's real cost and not the launch time of its kernels,
* resets the memory high-water mark at the start and reads it at the end: CUDA
  ``max_memory_allocated`` (+ allocated/reserved), on CPU the process RSS high-water ``VmHWM``,
  which Linux resets when "5" is written to ``/proc/self/clear_refs``,
* calls the trainer's hooks (``on_stage_begin`` / ``on_stage_end``).

Cost per stage is a few tens of microseconds (two /proc reads and one write on CPU), well under 1%
of a step; ``benchmarks/bench_instrumentation.py`` measures it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from rlhfkit.events import MemoryStat

_MB = 1024 * 1024


def _read_status_kb(*keys: str) -> dict[str, float]:
    out: dict[str, float] = {}
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                for k in keys:
                    if line.startswith(k):
                        out[k] = float(line.split()[1])
    except OSError:
        pass
    return out


def _reset_rss_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def rss_mb() -> float:
    kb = _read_status_kb("VmRSS:").get("VmRSS:")
    if kb is not None:
        return kb / 1024
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss / _MB


class _Nvml:
    """GPU utilisation and memory through NVML (pynvml), when a GPU and the library exist."""

    def __init__(self, device: torch.device) -> None:
        self.handle: Any = None
        if device.type != "cuda":
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            index = device.index if device.index is not None else torch.cuda.current_device()
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self._nv = pynvml
        except Exception:
            self.handle = None

    def read(self) -> tuple[float | None, float | None]:
        if self.handle is None:
            return None, None
        try:
            util = self._nv.nvmlDeviceGetUtilizationRates(self.handle)
            mem = self._nv.nvmlDeviceGetMemoryInfo(self.handle)
            return float(util.gpu), float(mem.used) / _MB
        except Exception:
            return None, None


class StageRecorder:
    """Times stages, snapshots memory per stage and forwards stage callbacks to hooks."""

    def __init__(self, device: torch.device, hooks: Sequence[Any] = (), track_memory: bool = True) -> None:
        self.device = device
        self.hooks = hooks
        self.track_memory = track_memory
        self.cuda = device.type == "cuda"
        self.nvml = _Nvml(device) if track_memory else None
        self.can_reset_rss = (not self.cuda) and track_memory and _reset_rss_peak()
        self.timings: dict[str, float] = {}
        self.memory: dict[str, MemoryStat] = {}
        self.step = 0

    def begin_step(self, step: int) -> None:
        self.step = step
        self.timings = {}
        self.memory = {}

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        for h in self.hooks:
            fn = getattr(h, "on_stage_begin", None)
            if fn is not None:
                fn(name, self.step)
        self._sync()
        if self.track_memory:
            if self.cuda:
                torch.cuda.reset_peak_memory_stats(self.device)
            elif self.can_reset_rss:
                _reset_rss_peak()
        t0 = time.perf_counter()
        with torch.profiler.record_function(name):
            yield
        self._sync()
        dt = time.perf_counter() - t0
        self.timings[name] = self.timings.get(name, 0.0) + dt
        if self.track_memory:
            self.memory[name] = self._snapshot()
        for h in self.hooks:
            fn = getattr(h, "on_stage_end", None)
            if fn is not None:
                fn(name, self.step, dt)

    @contextlib.contextmanager
    def substage(self, name: str) -> Iterator[None]:
        """A timed, profiled sub-range (``scoring/reference``); no memory snapshot, no sync on CPU."""
        t0 = time.perf_counter()
        with torch.profiler.record_function(name):
            yield
        if self.cuda:
            self._sync()
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0

    def _snapshot(self) -> MemoryStat:
        if self.cuda:
            util, used = self.nvml.read() if self.nvml else (None, None)
            return MemoryStat(
                allocated_mb=torch.cuda.memory_allocated(self.device) / _MB,
                reserved_mb=torch.cuda.memory_reserved(self.device) / _MB,
                peak_mb=torch.cuda.max_memory_allocated(self.device) / _MB,
                gpu_util=util, gpu_mem_used_mb=used,
            )
        kb = _read_status_kb("VmRSS:", "VmHWM:")
        rss = kb.get("VmRSS:", 0.0) / 1024
        return MemoryStat(rss_mb=rss, rss_peak_mb=kb.get("VmHWM:", 0.0) / 1024 if self.can_reset_rss else None)


def module_mb(*modules: torch.nn.Module | None) -> float:
    """Megabytes of parameters and buffers (weights only) of the given modules, shared ones once."""
    seen: set[int] = set()
    total = 0
    for m in modules:
        if m is None:
            continue
        for t in list(m.parameters()) + list(m.buffers()):
            if id(t) in seen:
                continue
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total / _MB
