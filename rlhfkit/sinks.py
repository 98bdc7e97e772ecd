"""Event sinks: where a run's events go.

A sink implements ``emit(event)`` and ``close()`` (:class:`rlhfkit.events.Sink`). The loop does not
know which sinks it has; the CLI, the worker and tests choose. Sinks here need nothing beyond the
standard library; the Redis sink lives in ``worker/`` and the HTTP sink in ``rlhfkit.client``
because they talk to services.
"""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from rlhfkit.events import AlertEvent, EvalEvent, Event, MetricsEvent, RunFinished, RunStarted, TimingsEvent
from rlhfkit.metrics import M


class MemorySink:
    """Keeps every event in a list (tests, notebooks)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def emit(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def close(self) -> None:
        pass

    def of_type(self, type_: str) -> list[Any]:
        return [e for e in self.events if e.type == type_]

    def metric(self, key: str) -> list[float]:
        return [e.values[key] for e in self.events if isinstance(e, MetricsEvent) and key in e.values]


class JsonlSink:
    """Appends one JSON object per line to ``path`` (``<out>/<run_id>/events.jsonl``).

    Each line is flushed as written so ``tail -f`` and ``rlhfkit import`` see it at once.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] | None = self.path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def emit(self, event: Event) -> None:
        line = event.model_dump_json(exclude_none=True)
        with self._lock:
            if self._fh is None:
                return
            self._fh.write(line + "\n")
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


class CallbackSink:
    """Calls a user function with every event (``trainer.add_callbacks(fn)``)."""

    def __init__(self, fn: Callable[[Event], Any]) -> None:
        self.fn = fn

    def emit(self, event: Event) -> None:
        self.fn(event)

    def close(self) -> None:
        close = getattr(self.fn, "close", None)
        if callable(close):
            close()


class ConsoleSink:
    """A progress bar (step, reward, KL, tokens/s, ETA) on stderr, plus alerts and a final summary.

    Uses tqdm when the stream is a terminal; otherwise prints one line every ``every`` steps so
    logs stay readable.
    """

    def __init__(self, stream: IO[str] | None = None, every: int = 10, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.every = every
        self.quiet = quiet
        self._bar: Any = None
        self._total: int | None = None
        self._last: dict[str, float] = {}
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def emit(self, event: Event) -> None:
        if self.quiet:
            return
        if isinstance(event, RunStarted):
            self._total = event.total_steps
            print(f"run {event.run_id} ({event.name}) on {event.device}: {event.total_steps} steps",
                  file=self.stream, flush=True)
            if self._tty:
                from tqdm import tqdm

                self._bar = tqdm(total=event.total_steps, file=self.stream, unit="step", dynamic_ncols=True)
        elif isinstance(event, MetricsEvent):
            self._last.update(event.values)
            if M.REWARD_MEAN not in event.values:
                return  # an evaluation's metrics, not a training step
            postfix = self._postfix()
            if self._bar is not None:
                self._bar.set_postfix_str(postfix, refresh=False)
                self._bar.update(1)
            elif event.step is not None and (event.step % self.every == 0 or event.step == (self._total or 0) - 1):
                print(f"step {event.step + 1}/{self._total}  {postfix}", file=self.stream, flush=True)
        elif isinstance(event, TimingsEvent):
            pass
        elif isinstance(event, EvalEvent):
            self._write(f"eval @ step {event.step}: reward {event.reward_mean:+.3f}"
                        + (f" | e.g. {event.samples[0].prompt!r} -> {event.samples[0].response!r}" if event.samples else ""))
        elif isinstance(event, AlertEvent):
            self._write(f"[{event.severity.upper()}] step {event.step}: {event.message} -> {event.suggestion}")
        elif isinstance(event, RunFinished):
            self._close_bar()
            for line in summary_table(event.summary):
                self._write(line)
        elif event.type in ("run_failed", "run_cancelled"):
            self._close_bar()
            self._write(f"{event.type}: {getattr(event, 'error', getattr(event, 'reason', ''))}")

    def _postfix(self) -> str:
        d = self._last
        parts = []
        for key, label, fmt in ((M.REWARD_MEAN, "reward", "{:+.3f}"), (M.KL_K1, "kl", "{:.3f}"),
                                (M.TOKENS_PER_SEC, "tok/s", "{:.0f}")):
            if key in d:
                parts.append(f"{label}={fmt.format(d[key])}")
        return " ".join(parts)

    def _write(self, msg: str) -> None:
        if self._bar is not None:
            self._bar.write(msg, file=self.stream)
        else:
            print(msg, file=self.stream, flush=True)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def close(self) -> None:
        self._close_bar()


def _num(v: Any) -> float | None:
    """A finite number, else None (absent, null, NaN: a row that does not apply)."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def summary_table(s: dict[str, Any]) -> list[str]:
    """The end-of-run summary as a short two-column table; rows that do not apply (no GPU, no
    evaluation, a NaN) are left out. ``--json`` prints the full summary."""
    head = f"{s.get('status', 'finished')}"
    wall, steps = _num(s.get("wall_seconds")), _num(s.get("steps"))
    if wall is not None:
        head += f" in {wall:.1f} s"
    if steps is not None:
        head += f" ({steps:.0f} steps on {s.get('device', '?')})"
    rows: list[tuple[str, str]] = []
    start, end, gain = (_num(s.get(k)) for k in ("eval_reward_start", "eval_reward_end", "eval_reward_gain"))
    if end is not None:
        rows.append(("eval reward", (f"{start:+.3f} -> " if start is not None else "") + f"{end:+.3f}"
                     + (f"  (gain {gain:+.3f})" if gain is not None else "")))
    for key, label, fmt in (("final_reward_mean", "train reward", "{:+.3f}"), ("final_kl", "KL (k1)", "{:.4f}"),
                            ("final_kl_coef", "KL coef", "{:.4g}"), ("tokens_per_sec", "tokens/s", "{:.0f}"),
                            ("gpu_total_mb", "GPU memory", "{:.0f} MiB"), ("alerts", "alerts", "{:.0f}")):
        v = _num(s.get(key))
        if v is not None:
            rows.append((label, fmt.format(v)))
    if s.get("run_dir"):
        rows.append(("files", str(s["run_dir"])))
    width = max((len(k) for k, _ in rows), default=0)
    return [head] + [f"  {k:<{width}}  {v}" for k, v in rows]
