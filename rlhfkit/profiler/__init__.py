"""Profiler: where a PPO step's time goes.

:class:`ProfilerHooks` attaches to a trainer and writes a Chrome/Perfetto trace, collapsed stacks
and a speedscope flame graph per profiled window, a per-stage summary (mean, p50, p95, share of
step time, tokens/s), the top operators per stage and a bottleneck report in words. See
``docs/profiling.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rlhfkit.profiler.hooks import ProfilerHooks

__all__ = ["ProfilerHooks"]


def __getattr__(name: str) -> Any:
    # Lazy: `rlhfkit --help` builds the CLI parser from rlhfkit.profiler.cli without importing torch.
    if name == "ProfilerHooks":
        from rlhfkit.profiler.hooks import ProfilerHooks

        return ProfilerHooks
    raise AttributeError(name)
