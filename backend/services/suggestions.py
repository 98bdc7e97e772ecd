"""The memory model applied to a run: its predicted breakdown, and config suggestions (which memory
knobs to turn so it runs faster within a budget).

Computed on demand from the run's stored config with :func:`rlhfkit.memopt.estimate_memory` and
:func:`rlhfkit.memopt.suggest.suggest_config` (an analytic memory model plus a throughput ranking
model; no model is built, nothing is measured).
The search takes 1–4 s of CPU, so the route runs it in a worker thread, and results are memoised
per (config, budget, device, top): the same run's tab reopened costs nothing.

Keyword-only functions with typed returns; a run whose config is not an rlhfkit RunConfig (most
external runs) raises :class:`~backend.services.runs.Conflict` (409).
"""

from __future__ import annotations

import json
import logging
import math
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import select

from backend.core.db import Database
from backend.models import MemorySnapshot, Run
from backend.schemas import (
    MEMORY_FOOTING,
    MemoryEstimatePublic,
    ModelMemory,
    OriginCheckPublic,
    RunOrigin,
    StageMemory,
    SuggestionCandidate,
    SuggestionCurrent,
    SuggestionsPublic,
)
from backend.services.metrics import query_series
from backend.services.runs import Conflict
from rlhfkit.config import ConfigError, RunConfig, validate_config
from rlhfkit.metrics import M

if TYPE_CHECKING:
    from rlhfkit.memopt.suggest import MeasuredRun

Device = Literal["cpu", "cuda"]
_log = logging.getLogger(__name__)

CPU_BUDGET_GB = 4.0  # default budget of CPU runs: RSS growth a laptop spares without swapping
CUDA_BUDGET_GB = 16.0  # default budget of CUDA runs whose GPU memory was not recorded
HEADROOM = 0.1  # fraction of the budget kept free (allocator fragmentation, other processes)
# The sections suggest_config reads; an external run's config must carry them to be a RunConfig.
_REQUIRED_SECTIONS = ("model", "generation", "ppo")

# How each knob suggest_config turns reads in a title.
_LABELS: dict[str, str] = {
    "ppo.batch_size": "rollout batch {}",
    "ppo.mini_batch_size": "minibatch {}",
    "ppo.grad_accum_steps": "grad accum {}",
    "generation.batch_size": "generation batch {}",
    "generation.max_new_tokens": "response cap {} tokens",
    "model.dtype": "{}",
}


def run_device(*, db: Database, run: Run) -> Device:
    """The device the run used: its summary, else its latest memory snapshot, else its config."""
    seen = str((run.summary or {}).get("device") or "")
    if not seen:
        with db.session() as s:
            seen = s.scalar(select(MemorySnapshot.device).where(MemorySnapshot.run_id == run.id)
                            .order_by(MemorySnapshot.step.desc()).limit(1)) or ""
    if not seen:
        seen = str(((run.config or {}).get("train") or {}).get("device") or "")
    return "cuda" if seen.startswith("cuda") else "cpu"


def default_budget_gb(*, run: Run, device: Device) -> float:
    """CPU: 4 GiB. CUDA: the GPU's memory when the run recorded it (summary ``gpu_total_mb``), else 16 GiB."""
    if device == "cpu":
        return CPU_BUDGET_GB
    total_mb = (run.summary or {}).get("gpu_total_mb")
    if isinstance(total_mb, (int, float)) and total_mb > 0:
        return round(float(total_mb) / 1024, 2)
    return CUDA_BUDGET_GB


def run_config(*, run: Run) -> RunConfig:
    """The run's config as a validated RunConfig, or Conflict when it is not one."""
    data = run.config or {}
    if run.source != "native":
        missing = [k for k in _REQUIRED_SECTIONS if not isinstance(data.get(k), dict)]
        if missing:
            raise Conflict(f"run {run.id} came from {run.source} and its config is not an rlhfkit RunConfig "
                           f"(no {', '.join(missing)} section); config suggestions need one")
    try:
        return validate_config(data)
    except ConfigError as exc:
        raise Conflict(f"the config of run {run.id} is not a valid rlhfkit RunConfig, so it cannot be "
                       f"sized: {exc}") from None


def suggest_for_run(*, db: Database, run: Run, budget_gb: float | None = None, device: Device | None = None,
                    top: int = 5) -> SuggestionsPublic:
    """Row 0 (the run's config, predicted and, once it ran, measured) and up to ``top`` candidates
    of each group (same math, changes the algorithm); defaults: the run's device and budget."""
    cfg = run_config(run=run)
    ran_on = run_device(db=db, run=run)
    dev = device or ran_on
    budget = budget_gb if budget_gb is not None else default_budget_gb(run=run, device=dev)
    peak, tps, how = measured(db=db, run=run, device=dev)
    # the run's own tokens/s anchor the model to this machine, when the run ran on the device asked about
    found = measured_run(db=db, run=run, tokens_per_sec=tps if dev == ran_on else None)
    try:
        current, candidates, notes = _suggest(cfg.model_dump_json(), budget, dev, top, found)
    except OSError as exc:  # a pretrained model whose config is not on this machine
        raise Conflict(f"cannot size the model of run {run.id} here: {exc}") from None
    current = current.model_copy(update={"measured_peak_mb": peak, "measured_tokens_per_sec": tps,
                                         "measured_note": how}, deep=True)
    return SuggestionsPublic(run_id=run.id, budget_gb=budget, device=dev, headroom=HEADROOM, notes=list(notes),
                             current=current, candidates=[c.model_copy(deep=True) for c in candidates])


def error_pct(predicted: float | None, measured_value: float | None) -> float | None:
    """Signed prediction error in percent of the measurement (positive: the prediction was too high)."""
    if predicted is None or measured_value is None or measured_value <= 0:
        return None
    return round((predicted - measured_value) / measured_value * 100, 1)


def origin_check(*, db: Database, run: Run) -> OriginCheckPublic | None:
    """Predicted vs measured for a run launched from a suggestion; None if it was not."""
    if not run.origin:
        return None
    origin = RunOrigin.model_validate(run.origin)
    peak, tps, how = measured(db=db, run=run, device=run_device(db=db, run=run))
    return OriginCheckPublic(run_id=run.id, origin=origin, measured_peak_mb=peak, measured_tokens_per_sec=tps,
                             measured_note=how, peak_error_pct=error_pct(origin.predicted_peak_mb, peak),
                             tokens_per_sec_error_pct=error_pct(origin.predicted_tokens_per_sec, tps))


def measured(*, db: Database, run: Run, device: Device) -> tuple[float | None, float | None, str]:
    """The run's measured peak (growth above its process baseline, MiB), its tokens/s, and how they
    were taken; None where the run has not measured them (still queued, external, or from before the
    baseline was recorded)."""
    summary = run.summary or {}
    tps_raw = summary.get("tokens_per_sec", (run.latest or {}).get(M.TOKENS_PER_SEC))
    tps = round(float(tps_raw), 1) if isinstance(tps_raw, (int, float)) and math.isfinite(tps_raw) else None
    with db.session() as s:
        snaps = list(s.scalars(select(MemorySnapshot.stages).where(MemorySnapshot.run_id == run.id)))
    field = "peak_mb" if device == "cuda" else "rss_peak_mb"
    highs = [float(v) for stages in snaps for stat in (stages or {}).values() if isinstance(stat, dict)
             for v in (stat.get(field), stat.get("rss_mb") if device == "cpu" else None)
             if isinstance(v, (int, float)) and math.isfinite(v)]
    baseline = summary.get("memory_baseline_mb")
    if not highs:
        return None, tps, "no memory snapshots recorded for this run"
    if not isinstance(baseline, (int, float)):
        return None, tps, ("the run did not record its process baseline, so its absolute peak "
                           f"({max(highs):.0f} MiB) cannot be put on the prediction's footing")
    what = "max_memory_allocated" if device == "cuda" else "RSS high-water"
    return (round(max(highs) - float(baseline), 1), tps,
            f"{what} over the run's stages ({max(highs):.0f} MiB) less its process baseline ({baseline:.0f} MiB); "
            "tokens/s: the last step's perf/tokens_per_sec")


def measured_run(*, db: Database, run: Run, tokens_per_sec: float | None = None) -> MeasuredRun | None:
    """The run's response lengths (mean over its steps of response/length and response/length_max),
    so the throughput model counts what it generated, not max_new_tokens per response, with
    ``tokens_per_sec`` (its measured figure, to anchor the model to); None before its first step."""
    from rlhfkit.memopt.suggest import MeasuredRun

    series = query_series(db, run.id, [M.RESPONSE_LEN, M.RESPONSE_LEN_MAX], max_points=1)
    mean, longest = series[M.RESPONSE_LEN], series[M.RESPONSE_LEN_MAX]
    if not mean.values or not math.isfinite(mean.values[0]):
        return None
    top = longest.values[0] if longest.values and math.isfinite(longest.values[0]) else mean.values[0]
    return MeasuredRun(mean=round(mean.values[0], 2), longest=round(top, 2),
                       source=f"run {run.name} ({mean.total_points} steps)", tokens_per_sec=tokens_per_sec)


@lru_cache(maxsize=64)
def _suggest(config_json: str, budget_gb: float, device: Device, top: int, found: MeasuredRun | None = None,
             ) -> tuple[SuggestionCurrent, tuple[SuggestionCandidate, ...], tuple[str, ...]]:
    from rlhfkit.memopt.suggest import dotted_get, suggest_groups

    cfg = validate_config(json.loads(config_json))
    base = cfg.model_dump(mode="json")
    sg = suggest_groups(cfg, budget_gb, device, headroom=HEADROOM, top_per_group=top, measured=found)
    cur = sg.current
    current = SuggestionCurrent(config=base, predicted_peak_mb=round(cur.peak_mb, 1),
                                predicted_tokens_per_sec=round(cur.tokens_per_sec, 1), fits=cur.fits)
    out = []
    for c in sg.candidates:
        changed = {k: v for k, v in c.overrides.items() if dotted_get(base, k) != v}
        out.append(SuggestionCandidate(
            title=describe_changes(changed), group=c.group,  # type: ignore[arg-type]
            changes=list(c.algorithm_changes), overrides=changed, config=c.config.model_dump(mode="json"),
            predicted_peak_mb=round(c.peak_mb, 1), predicted_tokens_per_sec=round(c.tokens_per_sec, 1),
            tokens_per_sec_ratio=round(c.tokens_per_sec / cur.tokens_per_sec, 3),
            peak_change_pct=round((c.peak_bytes / cur.peak_bytes - 1) * 100, 1),
            fits=c.fits, notes=list(c.notes)))
    ranking = [] if sg.anchored else ["tokens/s come from a ranking model: compare rows with each other, not with a "
                                   "stopwatch (no measured run of this config on this device to anchor them to)"]
    notes = [*sg.notes, *ranking, "memory: " + MEMORY_FOOTING]
    return current, tuple(out), tuple(notes)


_MEASURED_AS = {
    "cuda": "torch.cuda.max_memory_allocated during each stage less the run's memory_allocated before its models "
            "were built (tensor bytes; the CUDA context and the allocator's cached blocks are not counted, as in "
            "the model)",
    "cpu": "process RSS high-water per stage less the run's RSS before its models were built (its summary's "
           "memory_baseline_mb): the growth the model predicts, as rlhfkit mem-report and the Suggestions tab "
           "measure it; file-backed pages (libraries paged in) still count here, which mem-report subtracts",
}


def memory_estimate(*, db: Database, run: Run, device: Device | None = None) -> MemoryEstimatePublic:
    """The analytic memory breakdown of ``run``'s config on ``device`` (default: the run's)."""
    cfg = run_config(run=run)
    dev = device or run_device(db=db, run=run)
    try:
        est = _estimate(cfg.model_dump_json(), dev)
    except OSError as exc:
        raise Conflict(f"cannot size the model of run {run.id} here: {exc}") from None
    return est.model_copy(update={"run_id": run.id}, deep=True)


def warm_estimator() -> None:
    """Size the default config once, so the libraries the estimator needs (torch, transformers, the
    tiny tokenizer and prompts) are imported before the first request asks for an estimate. Run in a
    background thread at start-up; a failure here only means the first request pays the imports."""
    try:
        for device in ("cpu", "cuda"):
            _estimate(RunConfig().model_dump_json(), device)
    except Exception:  # noqa: BLE001 - warming is best effort; the request path reports errors
        _log.debug("warming the memory estimator failed", exc_info=True)


@lru_cache(maxsize=64)
def _estimate(config_json: str, device: Device) -> MemoryEstimatePublic:
    from rlhfkit.memopt.model import MiB, estimate_memory, plan_from_config

    est = estimate_memory(plan_from_config(validate_config(json.loads(config_json)), device=device))

    def mb(n: int) -> float:
        return round(n / MiB, 2)

    models = []
    for name, parts in est.models.items():
        w, g, o = parts.get("weights", 0), parts.get("grads", 0), parts.get("optimizer", 0)
        models.append(ModelMemory.model_validate({"model": name, "weights_mb": mb(w), "grads_mb": mb(g),
                                                  "optimizer_mb": mb(o), "total_mb": mb(sum(parts.values()))}))
    stages = [StageMemory(stage=st, peak_mb=mb(est.stage_peak(st)),
                          parts_mb={k: mb(v) for k, v in sorted(parts.items(), key=lambda kv: -abs(kv[1]))})
              for st, parts in est.stages.items()]
    return MemoryEstimatePublic(run_id="", device=device, measured_as=_MEASURED_AS[device], peak_mb=mb(est.peak),
                                peak_stage=est.peak_stage, persistent_mb=mb(est.persistent),
                                overhead_mb=mb(est.overhead), update_phase=est.update_phase, models=models,
                                stages=stages)



def describe_changes(changed: dict[str, Any]) -> str:
    """A candidate's changes in words: ``rollout batch 64, bf16, gradient checkpointing on``."""
    if not changed:
        return "Current config"
    parts = []
    for key, value in changed.items():
        if key == "model.gradient_checkpointing":
            parts.append(f"gradient checkpointing {'on' if value else 'off'}")
        elif key == "model.shared_value_trunk":
            parts.append("shared value trunk" if value else "separate critic")
        elif key == "generation.batch_size" and value is None:
            parts.append("generation batch = rollout batch")
        elif key in ("model.reference_device", "reward.device"):
            what = "reference model" if key == "model.reference_device" else "reward model"
            parts.append(f"{what} on {'CPU' if value == 'cpu' else 'the policy device'}")
        elif key == "ppo.optimizer":
            parts.append("8-bit AdamW" if value == "adamw_8bit" else "AdamW")
        elif key in _LABELS:
            parts.append(_LABELS[key].format(value))
        else:
            parts.append(f"{key} = {value}")
    return ", ".join(parts)


__all__ = ["CPU_BUDGET_GB", "CUDA_BUDGET_GB", "HEADROOM", "default_budget_gb", "describe_changes", "memory_estimate",
           "run_config", "run_device", "suggest_for_run"]
