"""``suggest_config``: the fastest configuration the analytic model says fits a memory budget.

The search walks the memory knobs a RunConfig exposes — rollout batch size, minibatch size,
gradient accumulation, generation batch, gradient checkpointing, dtype (bf16 only on CUDA), the
shared value trunk (PPO only: the critic-free algorithms have no value head), and on CUDA the
placement of the reference and reward models (GPU or host) — and 8-bit AdamW when bitsandbytes is
importable. :func:`suggest_groups` adds response-length candidates (``generation.max_new_tokens``
halved and doubled within the config's limits), which change what the reward scores. Each candidate gets a predicted peak
(:func:`rlhfkit.memopt.model.estimate_memory`) and a predicted throughput from a simple cost model,
and the ones that fit ``budget * (1 - headroom)`` are ranked by throughput; within 2% the
config's own optimizer wins (8-bit moments change the numerics, so they must buy speed, i.e. a
larger batch that fits), then the lower peak.

The throughput model is deliberately simple and only used to *rank*: FLOPs at an effective rate
per device and dtype, plus a per-layer launch/Python overhead for every generated token and
every micro-batch (what makes small-batch generation launch-bound). ``benchmarks/bench_memopt.py``
measures the top candidates to check that the ranking holds.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfkit.memopt.model import GiB, MiB, ModelShape, Plan, estimate_memory, plan_from_config

# Effective dense matmul rates (FLOP/s) at these small shapes, and the fixed cost per layer of one
# forward (s): Python, dispatch and kernel launches. CPU: ~150 GFLOP/s fp32 peak on a 2-core box at
# ~40%; 2 ms is the order of the per-layer fixed cost seen on the shared 2-core machine, where it
# varies several-fold with load (benchmarks/bench_memopt.py, 2026-11-27). Only the ranking uses it.
# CUDA: H100-class tf32/bf16 rates at ~40%; ~10 kernels x 8 us per layer.
_RATE = {("cpu", "fp32"): 60e9, ("cpu", "bf16"): 60e9, ("cuda", "fp32"): 120e12, ("cuda", "bf16"): 300e12}
_LAYER_OVERHEAD = {"cpu": 2e-3, "cuda": 8e-5}


@dataclass(frozen=True)
class MeasuredRun:
    """What a finished run of the config measured. Its response lengths (tokens) make the throughput
    model count what a run that stops at EOS generates instead of ``max_new_tokens`` for every
    response; its tokens/s, when it ran on the device the suggestions are for, anchor the model to
    this machine: every row's tokens/s is the model's ratio to row 0 times row 0's measured figure."""

    mean: float  # mean generated tokens per response (response/length, mean over steps)
    longest: float  # the step's longest response (response/length_max, mean over steps)
    source: str = "a measured run"  # where they come from, for the note
    tokens_per_sec: float | None = None  # the run's measured tokens/s on this device (None: not anchored)

    def apply(self, plan: Plan) -> Plan:
        return plan.with_(response_mean=self.mean, response_longest=max(self.longest, self.mean))


def lengths_note(config: Any, lengths: MeasuredRun | None) -> str:
    """What the tokens/s figures count, in words (one note shared by every row)."""
    r = config.generation.max_new_tokens
    if lengths is None:
        return (f"tokens/s count every response at generation.max_new_tokens ({r} tokens) because no run of "
                "this config was measured; runs that stop at EOS generate fewer, so the figures are upper bounds")
    return (f"tokens/s count the mean response length measured on {lengths.source} ({lengths.mean:.1f} of "
            f"{r} tokens; generation runs for the longest, {min(lengths.longest, r):.1f}); memory still plans "
            f"for {r}")


@dataclass
class Candidate:
    """One configuration the search tried: its overrides, predicted peak and throughput."""

    overrides: dict[str, Any]
    plan: Plan
    peak_bytes: int
    tokens_per_sec: float
    step_seconds: float
    fits: bool
    config: Any = None  # RunConfig
    notes: list[str] = field(default_factory=list)
    # what it changes in the algorithm (empty: "same math", identical updates up to rounding)
    algorithm_changes: list[str] = field(default_factory=list)

    @property
    def group(self) -> str:
        """``same_math`` or ``changes_algorithm``."""
        return "changes_algorithm" if self.algorithm_changes else "same_math"

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / MiB

    def to_dict(self) -> dict[str, Any]:
        return {"overrides": self.overrides, "peak_mb": round(self.peak_mb, 1),
                "tokens_per_sec": round(self.tokens_per_sec, 1), "step_seconds": round(self.step_seconds, 4),
                "fits": self.fits, "group": self.group, "algorithm_changes": self.algorithm_changes,
                "notes": self.notes}


def predict_step_seconds(plan: Plan, ppo_epochs: int) -> float:
    """Ranking model of one PPO step's wall time (generation + scoring + update)."""
    s: ModelShape = plan.shape
    dev = plan.device
    rate = _RATE[(dev, plan.dtype if dev == "cuda" else "fp32")]
    over = _LAYER_OVERHEAD[dev] * s.n_layer
    n = 12 * s.n_layer * s.n_embd**2  # non-embedding matmul parameters
    head = s.vocab_size * s.n_embd
    # the tokens the step actually runs for: generation stops when a pass's longest response ends
    B, R = plan.sequences, plan.generated_len
    T = plan.prompt_len + R
    g = plan.gen_batch  # sequences per generation pass
    passes = -(-B // g)
    gen = passes * (R * over + (2 * n * g * T + 2 * head * g * R) / rate)
    fwd_models = plan.value_trunks  # policy(+value), critic; critic-free runs: the policy alone
    score = fwd_models * (over + 2 * n * B * T / rate) + 2 * head * B * R / rate
    # the reference pass, on the host when it was moved there
    ref_rate, ref_over = (rate, over) if plan.reference_on_device else (_RATE[("cpu", "fp32")], _LAYER_OVERHEAD["cpu"] * s.n_layer)
    score += ref_over + (2 * n * B * T + 2 * head * B * R) / ref_rate
    rs = plan.reward_shape
    if rs is not None:
        rm_rate, rm_over = (rate, _LAYER_OVERHEAD[dev]) if plan.reward_on_device else (_RATE[("cpu", "fp32")], _LAYER_OVERHEAD["cpu"])
        score += rs.n_layer * rm_over + 2 * 12 * rs.n_layer * rs.n_embd**2 * B * T / rm_rate
    micro_batches = ppo_epochs * (B // plan.micro_batch)
    recompute = 1.33 if plan.gradient_checkpointing else 1.0
    trunks = plan.value_trunks
    upd = micro_batches * 3 * over * trunks + ppo_epochs * recompute * trunks * 6 * n * B * T / rate
    upd += ppo_epochs * 6 * head * B * R / rate
    return gen + score + upd


def _powers_of_two(lo: int, hi: int) -> list[int]:
    out, v = [], 1
    while v <= hi:
        if v >= lo:
            out.append(v)
        v *= 2
    return out


def bitsandbytes_available() -> bool:
    """True when bitsandbytes (``ppo.optimizer: adamw_8bit``) can be imported here."""
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None


def algorithm_changes(config: Any, overrides: dict[str, Any]) -> list[str]:
    """What a candidate changes in the learning algorithm itself, in words; empty when its updates
    are the config's (gradient accumulation, generation batch, checkpointing, placement, optimizer
    state format and, on a GPU, dtype only change how the same step is computed)."""
    p = config.ppo
    B0, mb0 = p.batch_size, p.mini_batch_size
    B, mb = overrides.get("ppo.batch_size", B0), overrides.get("ppo.mini_batch_size", mb0)
    out = []
    if B != B0:
        out.append(f"rollout batch {B0} -> {B} ({B / B0:g}x samples per PPO step; retune the learning rate / "
                   "KL coefficient if learning dynamics matter)")
    if B // mb != B0 // mb0:
        out.append(f"minibatches per epoch {B0 // mb0} -> {B // mb} (optimizer steps per PPO step)")
    shared = overrides.get("model.shared_value_trunk", config.model.shared_value_trunk)
    if shared != config.model.shared_value_trunk:
        out.append("value head " + ("on the shared trunk (was a separate critic)" if shared
                                    else "on a separate critic (was the shared trunk)"))
    R0 = config.generation.max_new_tokens
    R = overrides.get("generation.max_new_tokens", R0)
    if R < R0:
        out.append(f"response cap {R0} -> {R} tokens: responses may be cut shorter: the reward sees different "
                   "text (and a step trains on fewer tokens)")
    elif R > R0:
        out.append(f"response cap {R0} -> {R} tokens: responses may run longer: the reward sees different text "
                   "(and a step generates and trains on more tokens)")
    return out


def response_lengths(config: Any, prompt_len: int) -> tuple[list[int], list[str]]:
    """The response caps to offer besides the config's ``generation.max_new_tokens`` (R): R/2 and 2R,
    each kept within the config's limits — the field's own bounds, and ``prompt_len + R`` within
    ``model.max_length`` (prompt + response, the positions the policy is built for). Also returns a
    note for each side that has no room."""
    from rlhfkit.config import GenerationConfig, field_bounds

    lo, hi = field_bounds(GenerationConfig, "max_new_tokens")
    R0 = config.generation.max_new_tokens
    room = config.model.max_length - prompt_len  # the longest response the prompts leave space for
    shorter = max(R0 // 2, int(lo if lo is not None else 1))
    longer = min(2 * R0, room, int(hi if hi is not None else 2 * R0))
    out, notes = [], []
    if shorter < R0:
        out.append(shorter)
    else:
        notes.append(f"no shorter response cap was offered: generation.max_new_tokens is already {R0}")
    if longer > R0:
        out.append(longer)
    else:
        notes.append(f"no longer response cap was offered: the longest prompt ({prompt_len} tokens) and the "
                     f"response cap ({R0}) already fill model.max_length ({config.model.max_length})")
    return out, notes


@dataclass
class Suggestions:
    """Row 0 (the config as it is) and the best candidates of each group, with the notes they share."""

    current: Candidate
    same_math: list[Candidate]
    changes_algorithm: list[Candidate]
    notes: list[str]
    budget_gb: float
    headroom: float
    anchored: bool = False  # tokens/s scaled to a measured run's (MeasuredRun.tokens_per_sec); else the model's own

    @property
    def candidates(self) -> list[Candidate]:
        return [*self.same_math, *self.changes_algorithm]


def current_candidate(config: Any, budget_gb: float, device: str | None = None, *, headroom: float = 0.1,
                      prompt_len: int | None = None, measured: MeasuredRun | None = None) -> Candidate:
    """Row 0: the config as it is, with the same memory and throughput models as the candidates."""
    plan = plan_from_config(config, device=device, prompt_len=prompt_len)  # type: ignore[arg-type]
    plan = measured.apply(plan) if measured else plan
    peak = estimate_memory(plan).peak
    secs = predict_step_seconds(plan, config.ppo.ppo_epochs)
    return Candidate({}, plan, peak, plan.tokens_per_step / secs, secs,
                     peak <= int(budget_gb * GiB * (1.0 - headroom)), config=config)


def suggest_groups(config: Any, budget_gb: float, device: str | None = None, *, headroom: float = 0.1,
                   top_per_group: int = 5, prompt_len: int | None = None,
                   measured: MeasuredRun | None = None) -> Suggestions:
    """Like :func:`suggest_config`, but split: the best ``top_per_group`` candidates that keep the
    algorithm (same math) and, separately, those that change it, each saying what; row 0 is the
    current config; notes common to every row are returned once. ``measured``: what a run of the
    config measured (:class:`MeasuredRun`): its response lengths (else every response counts
    ``max_new_tokens``, and a note says so) and, when given, its tokens/s, which every row's figure
    is anchored to.

    The second group always offers the response-length candidates that fit (the current config with
    ``generation.max_new_tokens`` shorter and longer, :func:`response_lengths`): they take their
    places among its ``top_per_group`` rows, which are then ranked together."""
    current = current_candidate(config, budget_gb, device, headroom=headroom, prompt_len=prompt_len, measured=measured)
    ranked, notes = _search(config, budget_gb, device, headroom=headroom, prompt_len=prompt_len, measured=measured)
    notes = [lengths_note(config, measured), *notes]
    caps, cap_notes = _length_candidates(config, current, budget_gb, headroom=headroom)
    caps = caps[:top_per_group]
    limits = {"same_math": top_per_group, "changes_algorithm": top_per_group - len(caps)}
    groups: dict[str, list[Candidate]] = {"same_math": [], "changes_algorithm": []}
    base = config.model_dump(mode="json")
    for c in ranked:
        changed = {k: v for k, v in c.overrides.items() if dotted_get(base, k) != v}
        if not changed:
            continue  # the current config: row 0
        c.algorithm_changes = algorithm_changes(config, changed)
        bucket = groups[c.group]
        if len(bucket) < limits[c.group]:
            bucket.append(c)
        if all(len(groups[g]) >= n for g, n in limits.items()):
            break
    groups["changes_algorithm"] = sorted(groups["changes_algorithm"] + caps, key=lambda c: _rank(config, c))
    anchor = _anchor(current, measured)
    if anchor is not None:
        scale, note = anchor
        for c in [current, *groups["same_math"], *groups["changes_algorithm"]]:
            c.tokens_per_sec *= scale
            c.step_seconds /= scale
        notes.append(note)
    for c in groups["same_math"] + groups["changes_algorithm"]:
        c.config = _apply(config, {**c.overrides, "name": f"{config.name}-suggested"})
        if c.overrides["ppo.optimizer"] != config.ppo.optimizer:
            c.notes.append(f"optimizer {config.ppo.optimizer} -> {c.overrides['ppo.optimizer']}: "
                           "8-bit moments change the update's numerics")
    return Suggestions(current, groups["same_math"], groups["changes_algorithm"], [*notes, *cap_notes],
                       budget_gb, headroom, anchored=anchor is not None)


def _anchor(current: Candidate, measured: MeasuredRun | None) -> tuple[float, str] | None:
    """The factor that brings row 0's modelled tokens/s to the measured run's, and a note saying so;
    None without a measurement. A uniform factor: the ranking is unchanged."""
    if measured is None or not measured.tokens_per_sec or measured.tokens_per_sec <= 0 or current.tokens_per_sec <= 0:
        return None
    scale = measured.tokens_per_sec / current.tokens_per_sec
    return scale, (f"tokens/s are anchored to {measured.source}: it measured {measured.tokens_per_sec:.0f} tokens/s "
                   f"where the ranking model says {current.tokens_per_sec:.0f}, so every row shows the model's "
                   f"ratio to row 0 times the measured figure (x{scale:.2f})")


def _length_candidates(config: Any, current: Candidate, budget_gb: float, *, headroom: float,
                       ) -> tuple[list[Candidate], list[str]]:
    """The current config with only ``generation.max_new_tokens`` changed, for each length of
    :func:`response_lengths` whose predicted peak fits; notes say which lengths were not offered."""
    lengths, notes = response_lengths(config, current.plan.prompt_len)
    limit = int(budget_gb * GiB * (1.0 - headroom))
    own = {"ppo.batch_size": config.ppo.batch_size, "ppo.mini_batch_size": config.ppo.mini_batch_size,
           "ppo.grad_accum_steps": config.ppo.grad_accum_steps,
           "model.gradient_checkpointing": config.model.gradient_checkpointing, "model.dtype": config.model.dtype,
           "model.shared_value_trunk": config.model.shared_value_trunk,
           "generation.batch_size": config.generation.batch_size,
           "model.reference_device": config.model.reference_device, "reward.device": config.reward.device,
           "ppo.optimizer": config.ppo.optimizer}
    out = []
    for R in lengths:
        plan = current.plan.with_(response_len=R)
        peak = estimate_memory(plan).peak
        secs = predict_step_seconds(plan, config.ppo.ppo_epochs)
        if peak > limit:
            notes.append(f"a response cap of {R} tokens was not offered: its predicted peak "
                         f"({peak / MiB:.0f} MiB) is over the budget")
            continue
        ov = {**own, "generation.max_new_tokens": R}
        out.append(Candidate(ov, plan, peak, plan.tokens_per_step / secs, secs, True,
                             algorithm_changes=algorithm_changes(config, {"generation.max_new_tokens": R})))
    return out, notes


def dotted_get(data: dict[str, Any], key: str) -> Any:
    """``data['a']['b']`` for ``key='a.b'``; None where a part is missing."""
    cur: Any = data
    for part in key.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _apply(config: Any, overrides: dict[str, Any]) -> Any:
    from rlhfkit.config import apply_overrides, validate_config

    return validate_config(apply_overrides(config.model_dump(mode="json"), overrides))


def suggest_config(config: Any, budget_gb: float, device: str | None = None, *, headroom: float = 0.1,
                   max_batch_factor: int = 8, top: int = 10, out_path: str | Path | None = None,
                   prompt_len: int | None = None, measured: MeasuredRun | None = None) -> list[Candidate]:
    """Search memory knobs for the fastest configurations whose predicted peak fits ``budget_gb``.

    Args:
        config: the starting RunConfig (its model, reward and sampling settings are kept).
        budget_gb: memory budget in GiB (device memory on CUDA; RSS growth on CPU).
        device: ``cpu`` or ``cuda`` (default: the config's device, ``auto`` = cuda when available).
        headroom: fraction of the budget kept free (allocator fragmentation, other processes).
        max_batch_factor: largest rollout batch tried, as a multiple of the config's.
        top: how many ranked candidates to return (fitting ones first).
        out_path: where to write the best candidate as YAML (``suggested_config.yaml``); None: don't.
        measured: response lengths a run of the config measured; None: every response counts
            ``max_new_tokens`` (each candidate's notes say so). Not anchored: the tokens/s here
            are the ranking model's own.

    Returns the candidates, best first; ``[0].fits`` is False when nothing fits.
    """
    cands, search_notes = _search(config, budget_gb, device, headroom=headroom,
                                  max_batch_factor=max_batch_factor, prompt_len=prompt_len, measured=measured)
    search_notes = [lengths_note(config, measured), *search_notes]
    B0 = config.ppo.batch_size
    chosen = cands[:top]
    for c in chosen:
        c.config = _apply(config, {**c.overrides, "name": f"{config.name}-suggested"})
        if c.overrides["ppo.batch_size"] != B0:
            c.notes.append(f"rollout batch {B0} -> {c.overrides['ppo.batch_size']}: changes samples per PPO step "
                           "(retune the learning rate / KL coefficient if learning dynamics matter)")
        if c.overrides["model.shared_value_trunk"] != config.model.shared_value_trunk:
            c.notes.append("value head placement changed (shared trunk vs separate critic)")
        if c.overrides["ppo.optimizer"] != config.ppo.optimizer:
            c.notes.append(f"optimizer {config.ppo.optimizer} -> {c.overrides['ppo.optimizer']}: "
                           "8-bit moments change the update's numerics")
        c.notes.extend(search_notes)
    if out_path is not None and chosen:
        write_suggestion(chosen[0], out_path)
    return chosen


def _search(config: Any, budget_gb: float, device: str | None, *, headroom: float, max_batch_factor: int = 8,
            prompt_len: int | None = None, measured: MeasuredRun | None = None) -> tuple[list[Candidate], list[str]]:
    """Every candidate of the grid, ranked (fitting first, then by predicted throughput), and the
    notes on what the search left out."""
    base = plan_from_config(config, device=device, prompt_len=prompt_len)  # type: ignore[arg-type]
    base = measured.apply(base) if measured else base
    dev = base.device
    limit = int(budget_gb * GiB * (1.0 - headroom))
    B0 = config.ppo.batch_size
    batch_sizes = _powers_of_two(max(1, B0 // 4), B0 * max_batch_factor)
    if B0 not in batch_sizes:
        batch_sizes.append(B0)
    dtypes = ["fp32", "bf16"] if dev == "cuda" else [config.model.dtype]
    # moving a frozen model to the host frees accelerator memory; on a CPU run it changes nothing
    ref_places = ["same", "cpu"] if dev == "cuda" else [config.model.reference_device]
    rm_places = ["same", "cpu"] if dev == "cuda" and base.reward_shape is not None else [config.reward.device]
    search_notes: list[str] = []
    # the value head's placement only exists for PPO; the critic-free family has no value head
    shared_opts = (True, False) if base.critic else (config.model.shared_value_trunk,)
    if bitsandbytes_available():
        optimizers = ["adamw", "adamw_8bit"]
    else:
        optimizers = ["adamw"]
        search_notes.append("8-bit AdamW (ppo.optimizer=adamw_8bit) was not searched: bitsandbytes is not "
                            "installed here")
    cands: list[Candidate] = []
    for B in sorted(batch_sizes):
        # generation chunks of 8+ prompts that divide the batch (None = the whole batch in one pass)
        gens: list[int | None] = [None] + [g for g in _powers_of_two(8, B // 2) if B % g == 0]
        for mb in _powers_of_two(1, B):
            if B % mb:
                continue
            for ga in _powers_of_two(1, min(mb, 16)):
                if mb % ga:
                    continue
                for ckpt, dt, shared, gb, ref, rm, opt in itertools.product(
                        (False, True), dtypes, shared_opts, gens, ref_places, rm_places, optimizers):
                    ov: dict[str, Any] = {"ppo.batch_size": B, "ppo.mini_batch_size": mb,
                                          "ppo.grad_accum_steps": ga, "model.gradient_checkpointing": ckpt,
                                          "model.dtype": dt, "model.shared_value_trunk": shared,
                                          "generation.batch_size": gb, "model.reference_device": ref,
                                          "reward.device": rm, "ppo.optimizer": opt,
                                          "generation.max_new_tokens": config.generation.max_new_tokens}
                    plan = base.with_(batch_size=B, mini_batch_size=mb, grad_accum_steps=ga,
                                      gradient_checkpointing=ckpt, dtype=dt, shared_value_trunk=shared,
                                      generation_batch=gb, eval_batch=gb or max(B, 16),
                                      reference_on_device=dev == "cpu" or ref == "same",
                                      reward_on_device=dev == "cpu" or rm == "same", optimizer=opt)
                    peak = estimate_memory(plan).peak
                    secs = predict_step_seconds(plan, config.ppo.ppo_epochs)
                    cands.append(Candidate(ov, plan, peak, plan.tokens_per_step / secs, secs,
                                           peak <= limit))

    cands.sort(key=lambda c: _rank(config, c))
    return cands, search_notes


def _rank(config: Any, c: Candidate) -> tuple[bool, float, bool, int]:
    """Ranked by predicted throughput as printed (whole tokens/s), so the table reads top-down
    (README: "ranked by predicted throughput"); an equal figure is a tie: then the config's own
    optimizer, then the lower peak (more headroom) wins. Candidates over the budget come last."""
    if not c.fits:
        return (True, 0.0, False, c.peak_bytes)
    return (False, -round(c.tokens_per_sec), c.overrides["ppo.optimizer"] != config.ppo.optimizer, c.peak_bytes)


def write_suggestion(cand: Candidate, path: str | Path) -> Path:
    """Write a candidate as a RunConfig YAML (loadable with ``rlhfkit train --config PATH``)."""
    from rlhfkit.config import to_yaml

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    head = (f"# Suggested by `rlhfkit suggest-config`: predicted peak {cand.peak_mb:.0f} MiB "
            f"({cand.plan.device}), predicted {cand.tokens_per_sec:.0f} tokens/s (ranking model).\n")
    p.write_text(head + to_yaml(cand.config))
    return p


def format_suggestions(sg: Suggestions, measured: dict[str, float] | None = None) -> str:
    """Row 0, then the two groups, each candidate against row 0 (x tokens/s, +-% peak); shared notes once."""
    cur = sg.current
    lines = [f"Budget {sg.budget_gb:g} GiB, {cur.plan.device}. Peak: predicted growth above the process baseline "
             "(analytic model); tokens/s: ranking model (compare rows, not absolute speed)."]
    lines += [f"note: {n}" for n in sg.notes]
    m = measured or {}
    meas = ""
    if m:
        meas = (f"  measured: {m.get('peak_mb', float('nan')):.0f} MiB, "
                f"{m.get('tokens_per_sec', float('nan')):.0f} tokens/s")
    lines.append(f" 0 current config: {cur.peak_mb:.0f} MiB, {cur.tokens_per_sec:.0f} tokens/s"
                 f"{'' if cur.fits else ' (over the budget)'}{meas}")
    i = 1
    for title, rows in (("same math (identical updates)", sg.same_math),
                        ("changes the algorithm", sg.changes_algorithm)):
        lines.append(f"-- {title}:")
        if not rows:
            lines.append("   (none fits)")
        for c in rows:
            changed = ", ".join(f"{k}={v}" for k, v in c.overrides.items()
                                if dotted_get(cur.config.model_dump(mode="json"), k) != v)
            lines.append(f"{i:>2} {'fits' if c.fits else 'OVER'} {c.peak_mb:>7.0f} MiB "
                         f"({(c.peak_bytes / cur.peak_bytes - 1) * 100:+.0f}%) {c.tokens_per_sec:>7.0f} tok/s "
                         f"(x{c.tokens_per_sec / cur.tokens_per_sec:.2f})  {changed}")
            for what in c.algorithm_changes + c.notes:
                lines.append(f"     changes: {what}" if what in c.algorithm_changes else f"     note: {what}")
            i += 1
    return "\n".join(lines)


def format_candidates(cands: list[Candidate], budget_gb: float) -> str:
    lines = [f"Budget {budget_gb:g} GiB ({budget_gb * 1024:.0f} MiB). Candidates, best first "
             "(peak: analytic model; tokens/s: ranking model):",
             f"{'#':>2} {'fits':>4} {'peak MiB':>9} {'tok/s':>9}  batch  mini  accum  ckpt  dtype  shared  gen  "
             "ref   reward  optimizer"]
    for i, c in enumerate(cands):
        o = c.overrides
        lines.append(f"{i:>2} {'yes' if c.fits else 'no':>4} {c.peak_mb:>9.0f} {c.tokens_per_sec:>9.0f}  "
                     f"{o['ppo.batch_size']:>5} {o['ppo.mini_batch_size']:>5} {o['ppo.grad_accum_steps']:>6} "
                     f"{'on' if o['model.gradient_checkpointing'] else 'off':>5} {o['model.dtype']:>6} "
                     f"{'yes' if o['model.shared_value_trunk'] else 'no':>7}  "
                     f"{o['generation.batch_size'] or 'all':>3}  {o['model.reference_device']:<5} "
                     f"{o['reward.device']:<7} {o['ppo.optimizer']}")
    if cands and not cands[0].fits:
        lines.append("Nothing fits: the smallest candidate above needs more than the budget.")
    for n in cands[0].notes if cands else []:  # the best one's, and what the search left out
        lines.append(f"note: {n}")
    return "\n".join(lines)


__all__ = ["Candidate", "MeasuredRun", "Suggestions", "algorithm_changes", "bitsandbytes_available", "current_candidate",
           "format_candidates", "format_suggestions", "suggest_groups", "predict_step_seconds", "response_lengths",
           "suggest_config", "write_suggestion"]
