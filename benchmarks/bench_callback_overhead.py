"""What the rlhfkit TRL callback costs a TRL training step.

Runs the tiny GRPO trainer of ``examples/trl_integration.py`` (CPU) three ways and prints a table:

* ``plain``      — no rlhfkit;
* ``callback``   — ``RLHFKitCallback`` (metrics mapping, monitor, timings, memory, JSONL writes);
* ``adapter``    — ``TRLAdapter`` (the callback + stage wrappers around generation and rollout).

Two figures, because A/B wall times on a shared CPU are noisy at the 1% level:

1. **in-callback time**: the seconds spent inside the callback's per-step hooks (``on_step_begin``,
   ``on_step_end``, ``on_log``), measured with ``perf_counter`` around each, as a share of the
   steps' wall time. This is the overhead, measured directly. (The adapter's stage wrappers add two
   ``perf_counter`` calls and a ``record_function`` range per wrapped call, not counted here.)
2. **median step time** per variant (A/B). On this shared 2-core machine the tiny model's step
   time varies by 2-3x between identical runs (CPU contention, completion lengths), so this column
   shows the noise floor rather than the overhead.

The tiny model makes a step ~20-60 ms, so the share is an upper bound: on a real model the
callback's cost is the same few hundred microseconds and the step is seconds long.

    python benchmarks/bench_callback_overhead.py [--steps 30] [--server URL]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parents[1]


def _example() -> Any:
    spec = importlib.util.spec_from_file_location("trl_integration", ROOT / "examples" / "trl_integration.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class StepClock(TrainerCallback):
    """Wall time of each optimizer step (registered first, so it brackets the other callbacks)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._t = 0.0

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._t = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.times.append(time.perf_counter() - self._t)


def _timed(fn: Callable[..., Any], acc: dict[int, float], clock: StepClock) -> Callable[..., Any]:
    """Adds the hook's time to the current step (``len(clock.times)`` = steps finished so far)."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            step = len(clock.times) - 1 if fn.__name__ in ("on_step_end", "on_log") else len(clock.times)
            acc[step] = acc.get(step, 0.0) + time.perf_counter() - t0

    return wrapper


def run_variant(kind: str, steps: int, server: str | None, device: str = "cpu") -> dict[str, float]:
    from rlhfkit.adapters import RLHFKitCallback, TRLAdapter

    ex = _example()
    out = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-"))
    clock = StepClock()
    trainer = ex.build_grpo_trainer(out, max_steps=steps + 2, callbacks=[clock], device=device)
    acc: dict[int, float] = {}
    cb: Any = None
    if kind == "callback":
        cb = RLHFKitCallback(server=server, out_dir=out / "rlhfkit")
        trainer.add_callback(cb)
    elif kind == "adapter":
        adapter = TRLAdapter(base_trainer=trainer, server=server, out_dir=out / "rlhfkit")
        cb = adapter.callback
    if cb is not None:  # time every hook the trainer calls
        for hook in ("on_step_begin", "on_step_end", "on_log"):  # per step; run start/end are one-off
            setattr(cb, hook, _timed(getattr(cb, hook), acc, clock))
    trainer.train()
    warm = 2  # the first steps warm up allocators, caches and first-use code paths (both sides)
    step_times = clock.times[warm:]
    in_cb = sum(v for step, v in acc.items() if warm <= step < len(clock.times))
    total = sum(step_times)
    return {"median_step_ms": 1000 * statistics.median(step_times),
            "in_callback_ms_per_step": 1000 * in_cb / len(step_times), "share": in_cb / total if total else 0.0}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--server", default=None, help="also upload to this server (default: local file only)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--order", default="plain,callback,adapter",
                        help="variants in run order (repeat one to see drift)")
    args = parser.parse_args(argv)
    rows: dict[str, dict[str, float]] = {}
    for i, kind in enumerate(args.order.split(",")):
        rows[f"{kind}" if kind not in rows else f"{kind}#{i}"] = run_variant(kind, args.steps, args.server, args.device)
    base = rows.get("plain", next(iter(rows.values())))["median_step_ms"]
    print(f"TRL GRPOTrainer, tiny GPT-2 on {args.device}, {args.steps} timed steps, "
          f"server={args.server or 'none (JSONL only)'}")
    print(f"{'variant':<10} {'median step (ms)':>17} {'vs plain':>9} {'in callback (ms/step)':>22} {'share of step':>14}")
    for kind, r in rows.items():
        delta = (r["median_step_ms"] / base - 1) * 100
        print(f"{kind:<10} {r['median_step_ms']:>17.2f} {delta:>+8.1f}% {r['in_callback_ms_per_step']:>22.3f} "
              f"{100 * r['share']:>13.2f}%")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
