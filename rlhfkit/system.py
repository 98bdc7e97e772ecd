"""System metrics of a training process, sampled on a thread of their own.

Every ``monitor.system_interval_s`` seconds (10 by default, as W&B, MLflow and NeMo-RL poll), and
once more when training ends, a daemon thread reads, and emits as one ``metrics`` event of
``system/*`` values:

* ``system/cpu_percent`` — this process's CPU use since the previous sample (100 = one core busy;
  psutil's ``cpu_percent``), ``system/rss_mb`` — its resident memory;
* ``system/host_mem_used_mb``, ``system/host_mem_percent`` — the machine's memory in use;
* per visible GPU ``i``, through NVML (``nvidia-ml-py``): ``system/gpu<i>/util_percent`` (share of
  the last sample period a kernel ran), ``system/gpu<i>/mem_used_mb``, ``system/gpu<i>/mem_total_mb``,
  ``system/gpu<i>/power_w``, ``system/gpu<i>/temp_c``.

GPU series are *absent*, not zero, where there is no GPU or no NVML: a chart of zeros would claim an
idle GPU. ``CUDA_VISIBLE_DEVICES`` picks which NVML devices are "visible" (by index or UUID).

The thread never touches the step loop: it reads the step in progress (an int attribute) and
emits through the run's emitter, which serialises events from both threads
(:class:`rlhfkit.events.EventEmitter`). A sample is stamped with the step in progress, so a long step
may carry several samples; their ``ts`` orders them. Attach it as a trainer hook (``run_training``
does for every run): it starts in ``on_train_begin`` and stops in ``on_train_end``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from rlhfkit.events import Event, MetricsEvent
from rlhfkit.metrics import GPU_FIELDS, M, gpu_metric

_log = logging.getLogger(__name__)
_MB = 1024 * 1024


class _Nvml:
    """NVML handles of the visible GPUs, or none (no driver, no package, no GPU)."""

    def __init__(self) -> None:
        self.handles: list[tuple[int, Any]] = []
        self.nvml: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception:  # no nvidia-ml-py, no driver: GPU series stay absent
            return
        self.nvml = pynvml
        count = pynvml.nvmlDeviceGetCount()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        wanted = [v.strip() for v in visible.split(",") if v.strip()] if visible is not None else None
        for i in range(count):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            if wanted is not None:
                uuid = pynvml.nvmlDeviceGetUUID(h)
                uuid = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
                if str(i) not in wanted and not any(uuid.startswith(w) for w in wanted if w.startswith("GPU-")):
                    continue
            self.handles.append((len(self.handles), h))

    def sample(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for i, h in self.handles:
            for field in GPU_FIELDS:
                try:
                    out[gpu_metric(i, field)] = self._read(h, field)
                except Exception:  # a field this GPU does not report (power on some boards): absent
                    continue
        return out

    def _read(self, h: Any, field: str) -> float:
        nv = self.nvml
        if field == "util_percent":
            return float(nv.nvmlDeviceGetUtilizationRates(h).gpu)
        if field == "mem_used_mb":
            return float(nv.nvmlDeviceGetMemoryInfo(h).used) / _MB
        if field == "mem_total_mb":
            return float(nv.nvmlDeviceGetMemoryInfo(h).total) / _MB
        if field == "power_w":
            return float(nv.nvmlDeviceGetPowerUsage(h)) / 1000.0  # NVML reports milliwatts
        return float(nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU))

    def close(self) -> None:
        if self.nvml is not None:
            with contextlib.suppress(Exception):
                self.nvml.nvmlShutdown()


def sample_system(proc: Any, nvml: _Nvml | None) -> dict[str, float]:
    """One reading (``proc``: a ``psutil.Process`` whose ``cpu_percent`` was primed)."""
    import psutil

    vm = psutil.virtual_memory()
    out = {
        M.SYS_CPU_PERCENT: float(proc.cpu_percent(None)),
        M.SYS_RSS_MB: proc.memory_info().rss / _MB,
        M.SYS_HOST_MEM_USED_MB: (vm.total - vm.available) / _MB,
        M.SYS_HOST_MEM_PERCENT: float(vm.percent),
    }
    if nvml is not None:
        out.update(nvml.sample())
    return out


class SystemSampler:
    """A trainer hook that samples system metrics every ``interval_s`` seconds on its own thread."""

    def __init__(self, interval_s: float = 10.0, *, emit: Callable[[Event], Any] | None = None,
                 step: Callable[[], int] | None = None) -> None:
        if interval_s < 1:
            raise ValueError("interval_s must be >= 1")
        self.interval_s = interval_s
        self._emit = emit
        self._step = step
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.samples = 0
        self.seconds = 0.0  # spent reading and emitting (benchmarks/bench_instrumentation.py reports it)

    # ---- trainer hooks
    def on_train_begin(self, trainer: Any) -> None:
        self._emit = self._emit or trainer.emit
        self._step = self._step or (lambda: int(trainer.global_step))
        self.start()

    def on_train_end(self, trainer: Any, summary: dict[str, Any]) -> None:
        self.stop()

    # ---- thread
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="rlhfkit-system-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        import psutil

        proc = psutil.Process(os.getpid())
        proc.cpu_percent(None)  # the first call only primes the counter
        nvml = _Nvml()
        def take() -> None:
            t0 = time.perf_counter()
            try:
                values = sample_system(proc, nvml)
                assert self._emit is not None and self._step is not None
                self._emit(MetricsEvent(step=self._step(), values=values, ts=time.time()))
                self.samples += 1
                self.seconds += time.perf_counter() - t0
            except Exception:  # a failed reading must never end the run
                _log.exception("system sample failed; trying again next interval")

        try:
            next_at = time.monotonic() + self.interval_s
            while not self._stop.wait(max(0.0, next_at - time.monotonic())):
                next_at += self.interval_s
                take()
            take()  # one last sample at the end, so a run shorter than the interval has one too
        finally:
            nvml.close()
