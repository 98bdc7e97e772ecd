"""``rlhfkit.track()``: report any training script into the registry, like ``wandb.init``.

    import rlhfkit
    with rlhfkit.track(name="my-run", config=cfg) as run:
        for step in range(n):
            ...
            run.log({"objective/kl": kl, "reward/mean": r}, step=step)

:class:`Run` is also the core the TRL callback and the OpenRLHF logger/ingester build on: it
owns the :class:`~rlhfkit.events.EventEmitter` (so every event gets ``run_id``/``seq``), maps peer
metric names to ours (:mod:`rlhfkit.adapters.mapping`), runs the
:class:`~rlhfkit.monitor.StabilityMonitor` on every logged step and sends everything through a
:class:`~rlhfkit.adapters.transport.RemoteSink` (local JSON Lines always; the server when
``RLHFKIT_SERVER`` or ``server=`` is set). Nothing here raises into the caller's training loop
after start-up: a failing sink or monitor is logged and skipped.
"""

from __future__ import annotations

import atexit
import logging
import platform
import subprocess
import sys
import traceback
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from rlhfkit.adapters.mapping import finite_only, map_metrics
from rlhfkit.adapters.transport import ClientFactory, RemoteSink, RunMeta, default_client, server_from_env
from rlhfkit.events import (
    AlertEvent,
    ArtifactEvent,
    Event,
    EventEmitter,
    MemoryEvent,
    MemoryStat,
    MetricsEvent,
    RunFailed,
    RunFinished,
    RunSource,
    RunStarted,
    Sink,
    TimingsEvent,
)

_log = logging.getLogger("rlhfkit.adapters")


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for mod in ("rlhfkit", "torch", "transformers", "trl", "openrlhf"):
        m = sys.modules.get(mod)
        v = getattr(m, "__version__", None) if m is not None else None
        if v:
            out[mod] = str(v)
    return out


def _git_commit() -> str | None:
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=2, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode != 0:
        return None
    return res.stdout.strip() or None


def jsonable(obj: Any, depth: int = 0) -> Any:
    """A JSON-safe copy of a config (paths, enums and objects become strings)."""
    if depth > 6:
        return str(obj)
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else str(obj)
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v, depth + 1) for v in obj]
    return str(obj)


class Run:
    """One externally executed run reporting into rlhfkit.

    Args:
        name: display name.
        config: hyper-parameters to store with the run (made JSON-safe).
        source: ``"external"``, ``"trl"`` or ``"openrlhf"``.
        tags: labels for filtering in the registry.
        server / token: default ``RLHFKIT_SERVER`` / ``RLHFKIT_TOKEN``; no server = local file only.
        out_dir: events go to ``<out_dir>/<run_id>/events.jsonl``.
        monitor: run :class:`~rlhfkit.monitor.StabilityMonitor` alerts on logged metrics.
        warning_thresholds: threshold overrides for the monitor (see ``monitor.DEFAULT_THRESHOLDS``).
        total_steps: shown as progress in the dashboard when known.
        sinks: extra sinks (tests, console).
        client_factory: builds the API client (tests inject fakes).
    """

    def __init__(self, name: str | None = None, *, config: Mapping[str, Any] | None = None,
                 source: RunSource = "external", tags: Sequence[str] = (), server: str | None = None,
                 token: str | None = None, out_dir: str | Path = "runs", monitor: bool = True,
                 warning_thresholds: dict[str, float] | None = None, total_steps: int | None = None,
                 sinks: Sequence[Sink] = (), client_factory: ClientFactory = default_client) -> None:
        self.local_id = uuid.uuid4().hex[:16]
        self.name = name or f"{source}-{self.local_id[:8]}"
        self.config: dict[str, Any] = jsonable(dict(config or {}))
        self.source: RunSource = source
        self.tags = list(tags)
        self.total_steps = total_steps
        self.run_dir = Path(out_dir) / self.local_id
        server, token = server_from_env(server, token)
        self.meta = RunMeta(self.name, source, self.config, self.tags, total_steps=total_steps)
        self.sink = RemoteSink(self.run_dir, self.meta,
                               server=server, token=token, client_factory=client_factory)
        self.emitter = EventEmitter(self.local_id, [self.sink, *sinks])
        self.monitor: Any = None
        if monitor:
            from rlhfkit.monitor import StabilityMonitor

            self.monitor = StabilityMonitor(warning_thresholds=warning_thresholds, export_metrics=False)
        self.last_step = -1
        self.last_metrics: dict[str, float] = {}
        self.started = False
        self.ended = False

    # -- identity ----------------------------------------------------------------------------
    @property
    def id(self) -> str:
        """The server's run id once registered, else the local id (the directory name)."""
        return self.sink.remote_id or self.local_id

    @property
    def events_path(self) -> Path:
        return self.sink.path

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, device: str = "cpu", seed: int | None = None) -> Run:
        if not self.started:
            self.started = True
            self.meta.seed = seed  # read by the sender thread when it registers the run
            atexit.register(self._at_exit)
            self._emit(RunStarted(name=self.name, source=self.source, config=self.config, seed=seed,
                                  total_steps=self.total_steps, device=device, versions=_versions(),
                                  git_commit=_git_commit()))
        return self

    def finish(self, summary: Mapping[str, Any] | None = None) -> None:
        if self.ended:
            return
        self.ended = True
        data = {"last_step": self.last_step, **finite_only(self.last_metrics), **dict(summary or {})}
        self._emit(RunFinished(step=max(self.last_step, 0), summary=jsonable(data)))
        self._close()

    def fail(self, exc: BaseException) -> None:
        if self.ended:
            return
        self.ended = True
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self._emit(RunFailed(step=max(self.last_step, 0), error=f"{type(exc).__name__}: {exc}", traceback=tb))
        self._close()

    def _at_exit(self) -> None:
        """The process ends with the run still open (the script raised past a bare callback, or
        never called ``finish``): say so instead of leaving the run "running" forever."""
        if not self.ended:
            self.ended = True
            self._emit(RunFailed(step=max(self.last_step, 0), error="process exited before the run finished"))
            self._close()

    def _close(self) -> None:
        atexit.unregister(self._at_exit)
        try:
            self.emitter.close()
        except Exception:
            _log.exception("rlhfkit: closing the run's sinks failed")

    def __enter__(self) -> Run:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is not None:
            self.fail(exc)
        else:
            self.finish()

    # -- data --------------------------------------------------------------------------------
    def log(self, metrics: Mapping[str, Any], step: int | None = None, *, strip_prefix: str = "") -> list[AlertEvent]:
        """Log one step's scalars (peer names are mapped; non-numbers skipped); returns alerts raised."""
        if not self.started:
            self.start()
        step = self.last_step + 1 if step is None else int(step)
        values = map_metrics(metrics, strip_prefix=strip_prefix)
        if not values:
            return []
        self.last_step = max(self.last_step, step)
        self.last_metrics.update(values)
        alerts: list[AlertEvent] = []
        if self.monitor is not None:
            try:
                alerts = self.monitor.check(step, values)
            except Exception:
                _log.exception("rlhfkit: the stability monitor failed at step %s; continuing", step)
        finite = finite_only(values)
        if finite:
            self._emit(MetricsEvent(step=step, values=finite))
        for alert in alerts:
            self._emit(alert)
        return alerts

    def log_timings(self, step: int, stages: Mapping[str, float], step_time: float, tokens: int = 0) -> None:
        self._emit(TimingsEvent(step=step, stages=dict(stages), step_time=step_time, tokens=tokens))

    def log_memory(self, step: int, stages: Mapping[str, MemoryStat], device: str = "cpu",
                   models: Mapping[str, float] | None = None) -> None:
        self._emit(MemoryEvent(step=step, device=device, stages=dict(stages), models=dict(models or {})))

    def log_artifact(self, name: str, path: str | Path, kind: str = "other", step: int | None = None,
                     meta: Mapping[str, Any] | None = None) -> None:
        p = Path(path)
        size = p.stat().st_size if p.exists() else 0
        self._emit(ArtifactEvent(step=step, name=name, kind=kind, path=str(p), size_bytes=size,
                                 meta=dict(meta or {})))

    def _emit(self, event: Event) -> None:
        try:
            self.emitter.emit(event)
        except Exception:  # the emitter already shields sinks; this guards the model itself
            _log.exception("rlhfkit: could not emit %s", event.type)


def track(name: str | None = None, config: Mapping[str, Any] | None = None, *, source: RunSource = "external",
          tags: Sequence[str] = (), server: str | None = None, token: str | None = None,
          out_dir: str | Path = "runs", monitor: bool = True,
          warning_thresholds: dict[str, float] | None = None, total_steps: int | None = None,
          sinks: Sequence[Sink] = ()) -> Run:
    """Start a run for any training script; use it as a context manager (see the module docstring).

    The run appears in the registry as soon as the server answers; with no server reachable its
    events go to ``<out_dir>/<run_id>/events.jsonl`` for ``rlhfkit import`` (see
    :mod:`rlhfkit.adapters.transport`).
    """
    return Run(name, config=config, source=source, tags=tags, server=server, token=token, out_dir=out_dir,
               monitor=monitor, warning_thresholds=warning_thresholds, total_steps=total_steps, sinks=sinks)
