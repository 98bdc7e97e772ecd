"""``run_training``: one call that turns a validated RunConfig into a finished run.

The CLI, the Celery worker and the embedded service all call this, so a run behaves the same
wherever it executes. It builds the policy, reward model and trainer from the config, writes
``<out_dir>/<run_id>/config.yaml`` and ``events.jsonl``, and returns the run summary.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rlhfkit.config import RunConfig, to_yaml, total_steps, uses_critic, validate_config
from rlhfkit.events import EventEmitter, RunFailed, RunStarted, Sink, new_run_id
from rlhfkit.sinks import JsonlSink
from rlhfkit.system import SystemSampler

_log = logging.getLogger(__name__)


def run_training(config: RunConfig, *, run_id: str | None = None, sinks: Sequence[Sink] = (),
                 out_dir: str | Path | None = "runs", should_stop: Callable[[], bool] | None = None,
                 hooks: Sequence[object] = (), write_events: bool = True) -> dict[str, Any]:
    """Run one PPO training run to completion (see docs/architecture.md for the event contract).

    ``write_events=False`` when one of ``sinks`` writes ``<out_dir>/<run_id>/events.jsonl`` itself
    (the CLI's :class:`rlhfkit.adapters.transport.RemoteSink`, which uploads from that file)."""
    from rlhfkit.trainer import PPOTrainer

    run_id = run_id or new_run_id()
    all_sinks: list[Sink] = list(sinks)
    run_dir: Path | None = None
    if out_dir is not None:
        run_dir = Path(out_dir) / run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(to_yaml(config))
        if write_events:
            all_sinks.append(JsonlSink(run_dir / "events.jsonl"))
    try:
        baseline_mb = memory_baseline_mb(config)
        try:
            policy, reward = build_components(config)
        except Exception as exc:
            report_never_started(run_id, all_sinks, exc, config=config)
            raise
        trainer = PPOTrainer(policy, reward, config=config, run_id=run_id, sinks=all_sinks, run_dir=run_dir,
                             should_stop=should_stop)
        trainer.memory_baseline_mb = baseline_mb
        trainer.add_hooks(SystemSampler(config.monitor.system_interval_s), *hooks)
        if config.profile.enabled:
            from rlhfkit.profiler import ProfilerHooks

            pc = config.profile
            # Files go to <out_dir>/<run_id>/ beside events.jsonl; each becomes an artifact event.
            trainer.add_hooks(ProfilerHooks(
                output_dir=Path(out_dir) if out_dir is not None else Path("profiles"),
                stages=config.profile.stages or None, schedule=(pc.skip_first, pc.wait, pc.warmup, pc.active, pc.repeat),
                record_shapes=config.profile.record_shapes, profile_memory=config.profile.profile_memory))
        return trainer.train()
    finally:
        for s in all_sinks:
            if isinstance(s, JsonlSink):
                s.close()



def memory_baseline_mb(config: RunConfig) -> float:
    """The process's memory before any model is built, MiB: resident set size on CPU,
    ``memory_allocated`` on CUDA — what the run's measured peaks are taken above."""
    import torch

    from rlhfkit.instrument import rss_mb
    from rlhfkit.trainer import resolve_device

    device = resolve_device(config.train.device)
    if device.type == "cuda":
        return round(torch.cuda.memory_allocated(device) / 2**20, 2)
    return round(rss_mb(), 2)


def report_never_started(run_id: str, sinks: Sequence[Sink], exc: BaseException, *,
                         config: RunConfig | None = None) -> None:
    """The trainer never started: report the failure on the run's own stream. With a valid
    ``config`` the run's details come first (``run_started``); without one the failure is the run's
    only event. Call it from inside the ``except`` block (the traceback is the current one)."""
    em = EventEmitter(run_id, sinks)
    if config is not None:
        from rlhfkit.runtime import git_commit, versions

        em.emit(RunStarted(name=config.name, config=config.model_dump(mode="json"), seed=config.seed,
                           total_steps=total_steps(config), versions=versions(), git_commit=git_commit()))
    em.emit(RunFailed(error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc(limit=20)))


def execute_stored_run(run_id: str, config: Mapping[str, Any], *, sinks: Sequence[Sink], out_dir: str | Path,
                       should_stop: Callable[[], bool] | None = None) -> str:
    """Start a run the service stored (the Celery task and the embedded executor's child process).

    Validates the stored config and trains; every outcome is also an event in ``sinks``, so the
    caller only needs the returned status (``succeeded``, ``failed`` or ``cancelled``)."""
    try:
        cfg = validate_config(dict(config))
    except Exception as exc:
        report_never_started(run_id, sinks, exc)
        return "failed"
    try:
        summary = run_training(cfg, run_id=run_id, sinks=sinks, out_dir=out_dir, should_stop=should_stop)
    except Exception:
        _log.exception("run %s failed", run_id)  # run_training emitted run_failed before raising
        return "failed"
    return str(summary.get("status", "succeeded")) if isinstance(summary, dict) else "succeeded"

def build_components(config: RunConfig) -> tuple[Any, Any]:
    """Policy and reward model for a config."""
    from rlhfkit.policy import GPT2Policy
    from rlhfkit.rewards import build_reward

    policy = GPT2Policy.from_run_config(config.model, config.generation, seed=config.seed,
                                        with_value_head=uses_critic(config))
    reward = build_reward(config.reward, policy.tokenizer)
    return policy, reward
