"""PPOTrainer: the PPO-for-RLHF loop, readable top to bottom.

One step (:meth:`PPOTrainer.train_step`) is four named stages passing named data
(:mod:`rlhfkit.experience`), each timed and memory-tracked by :class:`rlhfkit.instrument.StageRecorder`:

1. ``rollout()`` (stage **generation**) — sample B prompts, sample responses with the KV cache (in
   chunks of ``generation.batch_size`` prompts when set) -> :class:`Rollout`.
2. ``score()`` (stage **scoring**) — old log-probs and values, read off the sampling pass for fp32
   models (``ppo.rollout_scores``; else one policy pass over the finished sequences), one reference
   pass for the KL anchor, the reward model's scores (reference and reward model on the policy's
   device or, with ``model.reference_device`` / ``reward.device`` = cpu, on the host) -> :class:`Experience`.
3. ``advantages()`` (stage **advantages**) — per-token KL penalty, score on the last token, GAE,
   whitening (math in :mod:`rlhfkit.ppo_ops`) -> :class:`Advantages`.
4. ``update()`` (stage **update**) — ``ppo_epochs`` passes over shuffled minibatches (gradient
   accumulation inside), clipped policy and value losses, entropy bonus, grad-norm clipping, LR
   schedule -> :class:`UpdateStats`. Where its first forward runs the weights that sampled over every
   sampled row (``ppo.update_activations``), that forward builds on the matmul outputs the decode
   kept (``Rollout.activations``) instead of computing them again.

``algorithm`` picks what stages 2-4 do: PPO (the default) trains a value head and uses GAE; the
critic-free family (``grpo``, ``dr_grpo``, ``rloo``, ``reinforce_pp``) builds no value head, skips
the value pass, samples ``generation.samples_per_prompt`` responses per prompt in ``rollout()``,
takes its advantages from :mod:`rlhfkit.advantages`, and may put the KL in the loss (k3) instead of
the reward. Every algorithm clips the ratio to [1 - cliprange_low, 1 + cliprange_high].

After the four stages ``step_metrics()`` names the numbers after :mod:`rlhfkit.metrics`, and every ``eval_every``
steps **evaluation** samples held-out prompts with a fixed sampling seed. Hooks
(``on_step_begin``/``on_step_end``, ``on_stage_begin``/``on_stage_end``) are how benchmarks and
the profiler watch a step; the policy is anything that satisfies :class:`rlhfkit.policy.BasePolicy`.

Batch storage is named by meaning (``b_`` whole rollout batch, ``mb_`` minibatch) as in CleanRL.
The loop never writes files or talks to services: it emits events (:mod:`rlhfkit.events`) to
whatever sinks it was given.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from rlhfkit import advantages as cf
from rlhfkit import hostmem, mfu, runtime
from rlhfkit import ppo_ops as ops
from rlhfkit.config import (
    ConfigError,
    GenerationConfig,
    PPOConfig,
    RunConfig,
    TrainConfig,
    check_runtime,
    clip_bounds,
    generation_batch,
    kl_in_loss,
    logprobs_from_update,
    scores_while_sampling,
    total_steps,
    update_from_sampling,
    uses_critic,
)
from rlhfkit.events import (
    AlertEvent,
    ArtifactEvent,
    EvalEvent,
    Event,
    EventEmitter,
    MemoryEvent,
    MetricsEvent,
    RunCancelled,
    RunFailed,
    RunFinished,
    RunStarted,
    Sample,
    Sink,
    TimingsEvent,
    new_run_id,
)
from rlhfkit.experience import Advantages, Experience, Rollout, UpdateStats
from rlhfkit.instrument import StageRecorder, module_mb
from rlhfkit.metrics import M
from rlhfkit.monitor import StabilityMonitor
from rlhfkit.policy import BasePolicy, shares_prompts, stop_token_id, truncate_at_token
from rlhfkit.rewards import BaseRewardModel
from rlhfkit.sinks import CallbackSink


class RunStopped(Exception):
    """Raised inside the loop when a critical alert stops the run (monitor.stop_on_critical)."""

    def __init__(self, alert: AlertEvent) -> None:
        super().__init__(f"stopped on critical alert {alert.rule}: {alert.message}")
        self.alert = alert


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class PPOTrainer:
    """Main training orchestrator for RLHF with PPO.

    Args:
        policy: the policy to train (:class:`GPT2Policy`).
        reward_model: a :class:`BaseRewardModel`.
        batch_size, learning_rate, kl_coef, value_coef, entropy_coef: the product README's knobs.
        config: a full :class:`RunConfig`; when given, it wins over the keyword knobs above.
        run_id: id stamped on every event (default: generated).
        sinks: event sinks (JSONL, console, Redis, ...).
        run_dir: directory for checkpoints and artifacts (None: nothing is written).
        should_stop: polled between steps; True ends the run as cancelled.
        **ppo_kwargs: ``algorithm`` (``grpo``, ``rloo``, ...) or any :class:`PPOConfig` /
            :class:`TrainConfig` / :class:`GenerationConfig` field by name (``samples_per_prompt=4``).
    """

    def __init__(
        self,
        policy: BasePolicy,
        reward_model: BaseRewardModel,
        batch_size: int = 32,
        learning_rate: float = 1e-5,
        kl_coef: float = 0.2,
        value_coef: float = 0.5,
        entropy_coef: float = 0.01,
        *,
        config: RunConfig | None = None,
        run_id: str | None = None,
        sinks: Sequence[Sink] = (),
        run_dir: str | Path | None = None,
        should_stop: Callable[[], bool] | None = None,
        **ppo_kwargs: Any,
    ) -> None:
        if config is None:
            config = _config_from_kwargs(policy, batch_size, learning_rate, kl_coef, value_coef, entropy_coef, ppo_kwargs)
        self.config = config
        self.policy = policy
        self.reward_model = reward_model
        self.run_id = run_id or new_run_id()
        self.emitter = EventEmitter(self.run_id, list(sinks))
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.should_stop = should_stop
        self.hooks: list[Any] = []
        self.monitor = StabilityMonitor(config.monitor.thresholds or None)
        self.device = resolve_device(config.train.device)
        self.global_step = 0
        self._eval_start = math.nan
        self._setup_done = False
        # the process's memory before the models were built (run_training sets it): the run's measured
        # peak less this is the growth the analytic memory model predicts (rlhfkit.memopt)
        self.memory_baseline_mb: float | None = None

    # ------------------------------------------------------------------ public API
    def add_callbacks(self, *callbacks: Any) -> None:
        """Receive every event: a StabilityMonitor (replaces the default one), a sink, or a callable."""
        for cb in callbacks:
            if isinstance(cb, StabilityMonitor):
                self.monitor = cb
            elif hasattr(cb, "emit"):
                self.emitter.add(cb)
            elif callable(cb):
                self.emitter.add(CallbackSink(cb))
            else:
                raise TypeError(f"callback {cb!r} is neither a StabilityMonitor, a sink (emit) nor callable")

    def add_hooks(self, *hooks: Any) -> None:
        """Step/stage hooks: on_train_begin, on_step_begin, on_step_end, on_stage_begin, on_stage_end, on_train_end."""
        self.hooks.extend(hooks)

    def emit(self, event: Event) -> Event:
        return self.emitter.emit(event)

    def train(self, num_epochs: int | None = None, steps_per_epoch: int | None = None,
              eval_every: int | None = None) -> dict[str, Any]:
        """Run the configured number of PPO steps; returns the run summary."""
        t_update = {k: v for k, v in (("num_epochs", num_epochs), ("steps_per_epoch", steps_per_epoch),
                                      ("eval_every", eval_every)) if v is not None}
        if t_update:
            self.config = self.config.model_copy(update={"train": self.config.train.model_copy(update=t_update)})
        cfg = self.config
        n_steps = total_steps(cfg)
        t_start = time.perf_counter()
        self.peak = mfu.run_peak(self.device, dtype=cfg.model.dtype, threads=cfg.train.threads)
        self.emit(RunStarted(name=cfg.name, config=cfg.model_dump(mode="json"), seed=cfg.seed, total_steps=n_steps,
                             device=str(self.device), versions=runtime.versions(), git_commit=runtime.git_commit(),
                             perf=self.peak.to_dict()))
        summary: dict[str, Any] = {}
        try:
            self.setup()
            self._call_hooks("on_train_begin", self)
            eval_start = self._eval_start = self._evaluate(step=self.global_step)
            summary = {"eval_reward_start": eval_start}
            status = "succeeded"
            last_metrics: dict[str, float] = {}
            for step in range(self.global_step, n_steps):
                if self.should_stop is not None and self.should_stop():
                    status = "cancelled"
                    break
                self._call_hooks("on_step_begin", step)
                last_metrics = self.train_step(step)
                self.global_step = step + 1
                self._call_hooks("on_step_end", step, last_metrics)
                every = cfg.train.checkpoint_every
                if every and self.global_step % every == 0 and self.run_dir is not None:
                    self.save_checkpoint()
            if status == "succeeded":
                eval_end = self._last_eval if self._last_eval_step == self.global_step else self._evaluate(step=self.global_step)
            else:
                eval_end = self._last_eval
            if cfg.train.checkpoint_at_end and self.run_dir is not None:
                self.save_checkpoint()
            wall = time.perf_counter() - t_start
            summary.update(self._summary(status, eval_end, last_metrics, wall))
            if self.monitor.export_metrics and self.run_dir is not None:
                self.monitor.export(self.run_dir)
            self._call_hooks("on_train_end", self, summary)
            if status == "cancelled":
                self.emit(RunCancelled(step=self.global_step, reason="stop requested"))
            else:
                self.emit(RunFinished(step=self.global_step, summary=summary))
            return summary
        except RunStopped as stop:
            # the monitor's decision, not a crash: the step that raised the alert finished, and the
            # run's files (metrics.csv, alerts.csv, the final checkpoint) are written as at any end
            if stop.alert.step is not None:
                self.global_step = stop.alert.step + 1
            with contextlib.suppress(Exception):
                if cfg.train.checkpoint_at_end and self.run_dir is not None:
                    self.save_checkpoint()
                if self.monitor.export_metrics and self.run_dir is not None:
                    self.monitor.export(self.run_dir)
                self._call_hooks("on_train_end", self, {"status": "failed", "error": str(stop),
                                                        "stopped_by": stop.alert.rule})
            self.emit(RunFailed(step=self.global_step, error=str(stop)))
            raise
        except BaseException as exc:
            reason = f"{type(exc).__name__}: {exc}"
            with contextlib.suppress(Exception):  # let hooks (the profiler) stop and flush what they have
                self._call_hooks("on_train_end", self, {"status": "failed", "error": reason})
            if isinstance(exc, KeyboardInterrupt):
                self.emit(RunCancelled(step=self.global_step, reason="interrupted"))
            else:
                self.emit(RunFailed(step=self.global_step, error=reason, traceback=traceback.format_exc(limit=20)))
            raise

    # ------------------------------------------------------------------ set-up
    def setup(self) -> None:
        """Seed, place the models, build the reference, optimizer, schedule and KL controller (once;
        :meth:`train` calls it). Call it yourself only to drive the stages one by one."""
        if self._setup_done:
            return
        cfg = self.config
        seed_everything(cfg.seed)
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        check_runtime(cfg)
        if self.device.type == "cpu" and cfg.train.malloc_keep_freed:
            hostmem.keep_freed_memory()
        # The run's config decides how to sample (and so how log-probs are tempered), not the policy's
        # constructor arguments: run_started records the config, and this makes it true.
        g = cfg.generation
        self.policy.temperature, self.policy.top_p, self.policy.top_k = g.temperature, g.top_p, g.top_k
        self.critic = uses_critic(cfg)
        if not self.critic and self.policy.value_head is not None:
            self.policy.drop_value_head()  # a critic-free run neither trains nor stores one
        self.policy.to(self.device)
        # "cpu" placement keeps a frozen model in host memory; its forward runs there (CPU runs: no change)
        self.ref_device = torch.device("cpu") if cfg.model.reference_device == "cpu" else self.device
        self.reward_device = torch.device("cpu") if cfg.reward.device == "cpu" else self.device
        self.reward_model.to(self.reward_device)
        self.ref_model = self.policy.make_reference().to(self.ref_device)  # type: ignore[arg-type]
        p = cfg.ppo
        self.optimizer = _make_optimizer(p, self.policy.trainable_parameters(), self.device)
        n_updates = total_steps(cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_lambda(p, n_updates))
        self.kl_ctl: ops.AdaptiveKLController | ops.FixedKLController = (
            ops.AdaptiveKLController(p.kl_coef, p.kl_target, p.kl_horizon) if p.kl_controller == "adaptive"
            else ops.FixedKLController(p.kl_coef))
        self.monitor.kl_target = p.kl_target if p.kl_controller == "adaptive" else None
        self.monitor.lr_warmup_steps = p.warmup_steps
        self.gen = torch.Generator(device="cpu").manual_seed(cfg.seed)  # prompts, minibatch order
        self.sample_gen = torch.Generator(device=self.device).manual_seed(cfg.seed + 1)  # token sampling
        self.train_prompts = self.policy.train_prompts()
        try:
            self.stop_token_id = stop_token_id(self.policy.tokenizer, cfg.generation.stop_token)
        except ValueError as exc:
            raise ConfigError([{"field": "generation.stop_token", "type": "value_error", "message": str(exc)}]) from exc
        self.reward_moments = ops.RunningMoments()  # reward.normalize
        self.eval_prompt_list = self.policy.eval_prompts()[: cfg.train.eval_prompts]
        self.recorder = StageRecorder(self.device, self.hooks)
        self.autocast = self.device.type == "cuda" and cfg.model.dtype == "bf16"
        self._last_eval = math.nan
        self._last_eval_step = -1
        self.peak = getattr(self, "peak", None) or mfu.run_peak(self.device, dtype=cfg.model.dtype,
                                                                threads=cfg.train.threads)  # train() probes first
        self.perf = mfu.PerfCounter(mfu.ModelShape.of(self.policy.model.config), p.ppo_epochs,
                                    self.critic and self.policy.critic is not None, self.peak,
                                    getattr(self.reward_model, "flops_per_token", 0.0),
                                    *shares_prompts(self.policy, self.ref_model))
        self.model_mb = {
            "policy": module_mb(self.policy.model),
            "reference": module_mb(self.ref_model),
            "value": module_mb(self.policy.value_head, self.policy.critic),
            "reward": module_mb(*self.reward_model.modules_for_memory()),
        }
        if cfg.train.resume_from:
            self.load_checkpoint(cfg.train.resume_from)
        self._setup_done = True

    def _amp(self) -> Any:
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast)

    # ------------------------------------------------------------------ one PPO step
    def train_step(self, step: int) -> dict[str, float]:
        """One PPO step: rollout -> score -> advantages -> update -> metrics (and evaluation when due)."""
        rec = self.recorder
        rec.begin_step(step)
        t0 = time.perf_counter()
        with rec.stage("generation"):
            rollout = self.rollout()
        with rec.stage("scoring"), torch.no_grad(), self._amp():
            exp = self.score(rollout)
        del rollout  # exp holds what the later stages read; the decode's kept outputs go when the update is done with them
        with rec.stage("advantages"), torch.no_grad():
            adv = self.advantages(exp)
        with rec.stage("update"):
            stats = self.update(exp, adv)
        if exp.logprobs_from_update:  # π_old came off the update's forward: the KL figures follow it
            exp, adv = self.with_update_logprobs(exp, adv, stats)
        self.kl_ctl.update(float(adv.seq_kl_k1.mean()), exp.batch_size)
        every = self.config.train.eval_every
        if every and (step + 1) % every == 0 and step + 1 < total_steps(self.config):
            self._evaluate(step=step + 1)
        step_time = time.perf_counter() - t0
        metrics = self.step_metrics(exp, adv, stats, step_time)
        self._emit_step(step, metrics, step_time, int(exp.mask.sum()))
        return metrics

    def rollout(self) -> Rollout:
        """Sample ``ppo.batch_size`` prompts and ``generation.samples_per_prompt`` (G) responses each,
        prompt-major (a prompt's G responses are adjacent), in chunks of ``generation.batch_size`` prompts."""
        cfg, g = self.config, self.config.generation
        G = g.samples_per_prompt
        idx = torch.randint(len(self.train_prompts), (cfg.ppo.batch_size,), generator=self.gen).tolist()
        prompts = [self.train_prompts[i] for i in idx for _ in range(G)]
        B = len(prompts)  # sequences: prompts x G
        query, query_mask = self.policy.encode_prompts(prompts, self.device)  # (B, P)
        self.policy.eval()
        gb = generation_batch(cfg) * G  # chunks share the batch's padding, so P is the same for all
        # old log-probs and values read off the sampling pass where the policy can supply both
        from_sampling = scores_while_sampling(cfg) and self.policy.scores_while_sampling
        keep = update_from_sampling(cfg)  # one chunk: gb covers the batch
        activations = None
        chunks: list[tuple[torch.Tensor, torch.Tensor]] = []  # per chunk: ids, mask (b, R_chunk)
        scored: list[tuple[torch.Tensor, torch.Tensor | None]] = []  # per chunk: log-probs, values
        with self._amp():
            for c0 in range(0, B, gb):
                args = (query[c0 : c0 + gb], query_mask[c0 : c0 + gb], g.max_new_tokens)
                if from_sampling:
                    if keep:
                        ids, msk, lp, val, activations = self.policy.generate_scored_kept(
                            *args, generator=self.sample_gen, stop_at_eos=g.stop_at_eos)
                    else:
                        ids, msk, lp, val = self.policy.generate_scored(*args, generator=self.sample_gen,
                                                                        stop_at_eos=g.stop_at_eos)
                    assert val is not None or not self.critic
                    chunks.append((ids, msk))
                    scored.append((lp, val))
                elif keep:
                    ids, msk, activations = self.policy.generate_kept(*args, generator=self.sample_gen,
                                                                      stop_at_eos=g.stop_at_eos)
                    chunks.append((ids, msk))
                else:
                    chunks.append(self.policy.generate(*args, generator=self.sample_gen, stop_at_eos=g.stop_at_eos))
        response, response_mask = _cat_responses(chunks, self.policy.tokenizer.pad_token_id)  # (B, R)
        if self.stop_token_id is not None:
            response, response_mask = truncate_at_token(response, response_mask, self.stop_token_id,
                                                         self.policy.tokenizer.pad_token_id)
        out = Rollout(prompts=prompts, query=query, query_mask=query_mask, response=response,
                      response_mask=response_mask, activations=activations)
        if from_sampling:
            R = response.shape[1]
            out.sampled_logprobs = _pad_cat([lp for lp, _ in scored], R)
            values = [v for _, v in scored if v is not None]
            out.sampled_values = _pad_cat(values, R) if self.critic else None
        return out

    def score(self, rollout: Rollout) -> Experience:
        """Old log-probs and values (none for a critic-free run), reference log-probs and the reward
        model's scores (no grad)."""
        rec, g = self.recorder, self.config.generation
        ids, attn, P = rollout.input_ids, rollout.attention_mask, rollout.prompt_len  # (B, T)
        with rec.substage("scoring/value"):
            values: torch.Tensor | None
            from_sampling = rollout.sampled_logprobs is not None and (rollout.sampled_values is not None
                                                                      or not self.critic)
            from_update = not from_sampling and self.logprobs_from_update
            logprobs: torch.Tensor | None
            if rollout.sampled_logprobs is not None and from_sampling:
                logprobs, values = rollout.sampled_logprobs, rollout.sampled_values
            elif from_update:
                logprobs, values = None, None  # update() reads them off its own forward
            else:
                logprobs, values, _ = self.policy.forward_scores(ids, attn, P, with_values=self.critic)  # (B, R)
                assert (values is not None) == self.critic
        with rec.substage("scoring/reference"):
            dev = self.ref_device
            ref_logprobs = self.policy.reference_logprobs(self.ref_model, ids.to(dev), attn.to(dev), P).to(self.device)
        with rec.substage("scoring/reward"):
            texts = self.policy.decode(rollout.response, rollout.response_mask)
            raw_scores = self.reward_model.score(prompts=rollout.prompts, responses=texts, query_ids=rollout.query,
                                                 response_ids=rollout.response,
                                                 response_mask=rollout.response_mask).to(self.device)
        has_eos = self._ended(rollout.response, rollout.response_mask)
        scores = self.shape_scores(raw_scores)
        if g.missing_eos_penalty is not None:
            scores = torch.where(has_eos, scores, scores - g.missing_eos_penalty)
        return Experience(prompts=rollout.prompts, input_ids=ids, attention_mask=attn, prompt_len=P,
                          response=rollout.response, mask=rollout.response_mask.float(),
                          logprobs=logprobs.float() if logprobs is not None else None,
                          ref_logprobs=ref_logprobs.float(),
                          values=values.float() if values is not None else None,
                          raw_scores=raw_scores, scores=scores, has_eos=has_eos,
                          scored_while_sampling=from_sampling, logprobs_from_update=from_update,
                          activations=rollout.activations)

    @property
    def logprobs_from_update(self) -> bool:
        """Whether π_old is exactly the policy the update's forward runs, with nothing before the
        update needing its log-probs: one optimizer step per rollout (one epoch, one minibatch), no
        critic, the KL outside the rewards. Then scoring runs no policy forward and update() takes
        π_old from its own forward, detached (the ratio is exactly 1 and the gradient is the policy
        gradient, as in TRL's GRPOTrainer with ``num_iterations=1``); the KL metrics follow the update.
        ``ppo.rollout_scores=sampling`` still reads them off the sampling pass instead (``auto`` and
        ``forward`` take this path)."""
        return logprobs_from_update(self.config)

    def with_update_logprobs(self, exp: Experience, adv: Advantages, stats: UpdateStats,
                             ) -> tuple[Experience, Advantages]:
        """``exp`` with the log-probs the update read off its forward, and ``adv`` with the KL to the
        reference measured on them (logprobs_from_update)."""
        assert stats.old_logprobs is not None
        exp = dataclasses.replace(exp, logprobs=stats.old_logprobs)
        seq_k1, seq_k3 = self.sequence_kl(exp)
        return exp, dataclasses.replace(adv, seq_kl_k1=seq_k1, seq_kl_k3=seq_k3)

    def sequence_kl(self, exp: Experience) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) Σ_t k1 and Σ_t k3 of log π_old/π_ref over each response."""
        assert exp.logprobs is not None
        k1, k3 = ops.kl_estimators(exp.logprobs, exp.ref_logprobs)
        return (k1 * exp.mask).sum(1), (k3 * exp.mask).sum(1)

    def shape_scores(self, raw: torch.Tensor) -> torch.Tensor:
        """The reward model's scores (B,) as PPO uses them: ``reward.normalize`` (running mean/std,
        updated with this batch first), then ``reward.clip``."""
        r = self.config.reward
        scores = raw.clone()
        if r.normalize:
            self.reward_moments.update(scores)
            scores = self.reward_moments.normalize(scores)
        if r.clip is not None:
            scores = scores.clamp(-r.clip, r.clip)
        return scores

    def _ended(self, response: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B,) bool: the response ended on EOS or on ``generation.stop_token``."""
        hit = torch.zeros_like(response, dtype=torch.bool)
        for tid in (self.policy.tokenizer.eos_token_id, self.stop_token_id):
            if tid is not None:
                hit |= response == tid
        return (hit & mask.bool()).any(1)

    def advantages(self, exp: Experience) -> Advantages:
        """PPO: per-token KL penalty plus the score on the last token, then GAE and whitening. The
        critic-free family: the estimator ``algorithm`` names (:mod:`rlhfkit.advantages`) on the same
        rewards, no value baseline. With ``kl_in_loss`` the KL leaves the rewards for update(). No grad."""
        cfg, p = self.config, self.config.ppo
        if exp.logprobs is not None:
            k1, k3 = ops.kl_estimators(exp.logprobs, exp.ref_logprobs)  # (B, R) per-token estimates
        else:  # logprobs_from_update: the KL is a loss term, so the rewards hold none; measured after update()
            k1 = k3 = torch.zeros_like(exp.mask)
        kl_tok = k1 if p.kl_estimator == "k1" else k3
        kl_coef = self.kl_ctl.value
        in_loss = kl_in_loss(cfg)
        reward_kl_coef = 0.0 if in_loss else kl_coef
        scores = exp.scores
        if p.whiten_rewards:
            scores = ops.masked_whiten(scores, torch.ones_like(scores), shift_mean=False)
        returns: torch.Tensor | None = None
        if exp.values is not None:
            rewards = ops.kl_penalized_rewards(scores, kl_tok, exp.mask, reward_kl_coef)
            adv_raw, returns = ops.compute_gae(rewards, exp.values, exp.mask, p.gamma, p.lam)
            adv = ops.masked_whiten(adv_raw, exp.mask) if p.whiten_advantages else adv_raw
        else:  # the baseline comes from the batch: GRPO/Dr. GRPO/RLOO per group, REINFORCE++ global
            adv_raw, rewards = cf.critic_free_advantages(cfg.algorithm, scores, kl_tok, exp.mask, reward_kl_coef,
                                                         cfg.generation.samples_per_prompt, p.gamma)
            adv = adv_raw
        return Advantages(kl_coef=kl_coef, kl_in_loss=in_loss, rewards=rewards, advantages=adv, advantages_raw=adv_raw,
                          returns=returns, seq_kl_k1=(k1 * exp.mask).sum(1), seq_kl_k3=(k3 * exp.mask).sum(1))

    def update(self, exp: Experience, adv: Advantages) -> UpdateStats:
        """``ppo_epochs`` passes over shuffled minibatches: clipped policy loss (clip range low/high),
        value loss (PPO only), k3 KL loss (``kl_in_loss`` only), entropy bonus, gradient accumulation
        over micro-batches, grad-norm clipping, one LR-schedule step. Takes the decode's kept outputs
        out of ``exp`` (``exp.activations`` is None after): they serve the first forward only."""
        cfg, p, rec = self.config, self.config.ppo, self.recorder
        B, P = exp.batch_size, exp.prompt_len  # B sequences: ppo.batch_size prompts x G
        acc = _StatsAccumulator()
        self.policy.train()
        mb_size = p.mini_batch_size * cfg.generation.samples_per_prompt  # a minibatch counts prompts
        micro = mb_size // p.grad_accum_steps
        clip_low, clip_high = clip_bounds(p)
        agg = cf.loss_aggregation(cfg.algorithm)
        norm_len = cfg.generation.max_new_tokens  # Dr. GRPO's constant
        old_lp = torch.zeros_like(exp.mask) if exp.logprobs is None else None  # (B, R) logprobs_from_update
        # the decode's matmul outputs serve the first forward, which runs the weights that sampled over
        # every row; taken out of exp so that they go with that forward's graph, not at the step's end
        kept = exp.activations if mb_size >= B and micro >= B else None
        exp.activations = None
        if kept is not None and not kept.matches(exp.input_ids, exp.attention_mask):
            kept = None
        forward_from_sampling = kept is not None
        for _epoch in range(p.ppo_epochs):
            perm = torch.randperm(B, generator=self.gen).to(self.device)
            for start in range(0, B, mb_size):
                mb_idx = perm[start : start + mb_size]
                mb_tokens = exp.mask[mb_idx].sum().clamp_min(1.0)
                self.optimizer.zero_grad(set_to_none=True)
                for m0 in range(0, mb_size, micro):
                    i = mb_idx[m0 : m0 + micro]
                    with rec.substage("update/forward"), self._amp():
                        if kept is not None:  # every row, in the decode's order, then this minibatch's
                            lp_all, v_all, ent_all = self.policy.forward_scores(
                                exp.input_ids, exp.attention_mask, P, with_values=self.critic, with_entropy=True,
                                activations=kept)
                            mb_logprobs, mb_entropy = lp_all[i], ent_all[i] if ent_all is not None else None
                            mb_values = v_all[i] if v_all is not None else None
                            kept = None
                        else:
                            mb_logprobs, mb_values, mb_entropy = self.policy.forward_scores(
                                exp.input_ids[i], exp.attention_mask[i], P, with_values=self.critic,
                                with_entropy=True)
                        assert mb_entropy is not None
                        mb_mask, mb_lp = exp.mask[i], mb_logprobs.float()
                        if old_lp is not None:  # the policy that sampled is the one this forward runs
                            mb_old = mb_lp.detach()
                            old_lp[i] = mb_old
                        else:
                            assert exp.logprobs is not None
                            mb_old = exp.logprobs[i]
                        pl = cf.clipped_policy_loss(mb_lp, mb_old, adv.advantages[i], mb_mask,
                                                    clip_low, clip_high, agg, norm_len)
                        ent = ops.masked_mean(mb_entropy.float(), mb_mask)
                        loss = pl.loss
                        vl = vclip = kll = None
                        if mb_values is not None and exp.values is not None and adv.returns is not None:
                            vl, vclip = ops.value_loss(mb_values.float(), exp.values[i], adv.returns[i], mb_mask,
                                                       p.cliprange_value)
                            loss = loss + p.value_coef * vl
                        loss = loss - p.entropy_coef * ent
                        if adv.kl_in_loss:
                            kll = cf.kl_loss_k3(mb_lp, exp.ref_logprobs[i], mb_mask, agg, norm_len)
                            loss = loss + adv.kl_coef * kll
                    with rec.substage("update/backward"):
                        # weigh each micro-batch's loss by its share of the minibatch, so accumulation gives
                        # one big minibatch's gradient: a share of its tokens for per-token means, a share
                        # of its responses for the per-response reductions (GRPO, Dr. GRPO)
                        share = mb_mask.sum() / mb_tokens if agg == "token_mean" else len(i) / len(mb_idx)
                        (loss * share).backward()
                    acc.add_micro(pl, vl, vclip, ent, loss, kll)
                with rec.substage("update/optimizer"):
                    gn = clip_and_step(self.optimizer, self.policy.trainable_parameters(), p.max_grad_norm)
                acc.add_optimizer_step(gn)
        lr = float(self.scheduler.get_last_lr()[0])
        self.scheduler.step()
        return dataclasses.replace(acc.finish(lr), old_logprobs=old_lp, forward_from_sampling=forward_from_sampling)

    def step_metrics(self, exp: Experience, adv: Advantages, stats: UpdateStats, step_time: float) -> dict[str, float]:
        """The step's metrics under their contract names (:mod:`rlhfkit.metrics`). A metric the run
        does not have (value metrics without a critic, group metrics with one sample per prompt) is
        left out, not sent as NaN: the monitor reads NaN as a failure."""
        B, mask, raw = exp.batch_size, exp.mask, exp.raw_scores
        lengths = mask.sum(1)  # (B,) tokens per response
        capped = (~exp.has_eos) & (lengths >= self.config.generation.max_new_tokens)
        metrics = {
            M.REWARD_MEAN: float(raw.mean()),
            M.REWARD_STD: float(raw.std()) if B > 1 else 0.0,
            M.REWARD_MIN: float(raw.min()),
            M.REWARD_MAX: float(raw.max()),
            M.SCORE_MEAN: float((adv.rewards * mask).sum(1).mean()),
            M.KL_K1: float(adv.seq_kl_k1.mean()),
            M.KL_K3: float(adv.seq_kl_k3.mean()),
            M.KL_PER_TOKEN: float(adv.seq_kl_k3.sum() / mask.sum().clamp_min(1.0)),
            M.KL_COEF: adv.kl_coef,
            M.ENTROPY: stats.entropy,
            M.POLICY_LOSS: stats.policy_loss,
            M.TOTAL_LOSS: stats.total_loss,
            M.POLICY_CLIPFRAC: stats.clipfrac,
            M.CLIPFRAC_LOW: stats.clipfrac_low,
            M.CLIPFRAC_HIGH: stats.clipfrac_high,
            M.APPROX_KL: stats.approx_kl,
            M.RATIO_MEAN: stats.ratio_mean,
            M.RATIO_MAX: stats.ratio_max,
            M.GRAD_NORM: stats.grad_norm,
            M.LEARNING_RATE: stats.learning_rate,
            M.ADV_MEAN: float(ops.masked_mean(adv.advantages_raw, mask)),
            M.ADV_STD: float(ops.masked_var(adv.advantages_raw, mask).sqrt()),
            M.RESPONSE_LEN: float(lengths.mean()),
            M.RESPONSE_LEN_MIN: float(lengths.min()),
            M.RESPONSE_LEN_MAX: float(lengths.max()),
            M.RESPONSE_CLIPPED: float(capped.float().mean()),
            M.EOS_FRACTION: float(exp.has_eos.float().mean()),
            M.DISTINCT_2: ops.distinct_n(exp.response, mask, 2),
            M.TOKENS_PER_SEC: int(mask.sum()) / step_time,
            M.STEP_TIME: step_time,
        }
        if exp.values is not None and adv.returns is not None:
            assert stats.value_loss is not None and stats.value_clipfrac is not None
            metrics[M.VALUE_LOSS] = stats.value_loss
            metrics[M.VALUE_CLIPFRAC] = stats.value_clipfrac
            metrics[M.EXPLAINED_VAR] = ops.explained_variance(exp.values, adv.returns, mask)
            metrics[M.VALUE_MEAN] = float(ops.masked_mean(exp.values, mask))
        G = self.config.generation.samples_per_prompt
        if G > 1:
            metrics[M.REWARD_GROUP_STD], metrics[M.FRAC_ZERO_STD] = cf.group_stats(exp.scores, G)
        if isinstance(self.kl_ctl, ops.AdaptiveKLController):
            metrics[M.KL_TARGET] = self.kl_ctl.target
        metrics.update(self.perf.step(self.recorder.timings, exp.input_ids, exp.attention_mask, exp.prompt_len,
                                      exp.mask, not exp.policy_forward_in_scoring, stats.forward_from_sampling))
        return metrics

    def _emit_step(self, step: int, metrics: dict[str, float], step_time: float, n_tokens: int) -> None:
        alerts = self.monitor.check(step, metrics)
        finite = {k: v for k, v in metrics.items() if math.isfinite(v)}  # NaN/inf travel as alerts
        self.emit(MetricsEvent(step=step, values=finite))
        self.emit(TimingsEvent(step=step, stages=dict(self.recorder.timings), step_time=step_time, tokens=n_tokens))
        self.emit(MemoryEvent(step=step, device=str(self.device), stages=dict(self.recorder.memory), models=self.model_mb))
        self._emit_alerts(alerts)

    def _emit_alerts(self, alerts: list[AlertEvent]) -> None:
        critical: AlertEvent | None = None
        for a in alerts:
            self.emit(a)
            if a.severity == "critical":
                critical = a
        if critical is not None and self.config.monitor.stop_on_critical:
            raise RunStopped(critical)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def _evaluate(self, step: int) -> float:
        """Mean reward on the held-out prompts, sampled with a fixed seed (same noise every time)."""
        cfg = self.config
        with self.recorder.stage("evaluation"):
            self.policy.eval()
            gen = torch.Generator(device=self.device).manual_seed(cfg.seed + 10_007)
            prompts = self.eval_prompt_list
            rewards: list[float] = []
            lengths: list[float] = []
            samples: list[Sample] = []
            chunk = cfg.generation.batch_size or max(cfg.ppo.batch_size, 16)
            for s in range(0, len(prompts), chunk):
                ps = prompts[s : s + chunk]
                q, qm = self.policy.encode_prompts(ps, self.device)
                with self._amp():
                    r, rm = self.policy.generate(q, qm, cfg.generation.max_new_tokens, generator=gen,
                                                 stop_at_eos=cfg.generation.stop_at_eos)
                if self.stop_token_id is not None:
                    r, rm = truncate_at_token(r, rm, self.stop_token_id, self.policy.tokenizer.pad_token_id)
                lengths.extend(rm.sum(1).float().tolist())
                texts = self.policy.decode(r, rm)
                sc = self.reward_model.score(prompts=ps, responses=texts, query_ids=q, response_ids=r, response_mask=rm)
                rewards.extend(sc.tolist())
                for pr, tx, v in zip(ps, texts, sc.tolist(), strict=True):
                    if len(samples) < cfg.train.eval_samples_logged:
                        samples.append(Sample(prompt=pr, response=tx, reward=float(v)))
        mean = float(np.mean(rewards)) if rewards else math.nan
        self._last_eval, self._last_eval_step = mean, step
        self.emit(EvalEvent(step=step, reward_mean=mean, samples=samples))
        values = {M.EVAL_REWARD: mean, M.EVAL_RESPONSE_LEN: float(np.mean(lengths)) if lengths else math.nan}
        self.emit(MetricsEvent(step=step, values={k: v for k, v in values.items() if math.isfinite(v)}))
        self._emit_alerts(self.monitor.check(step, values))  # the monitor's rules over evaluations
        return mean

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path:
        assert self.run_dir is not None
        path = self.run_dir / "checkpoints" / f"step_{self.global_step}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "step": self.global_step,
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "kl_coef": self.kl_ctl.value,
            "reward_moments": vars(self.reward_moments),
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
                    "gen": self.gen.get_state(), "sample_gen": self.sample_gen.get_state()},
            "config": self.config.model_dump(mode="json"),
        }
        torch.save(state, path)
        self.emit(ArtifactEvent(step=self.global_step, name=f"checkpoints/{path.name}", kind="checkpoint",
                                path=str(path), size_bytes=path.stat().st_size))
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        state = torch.load(path, map_location=self.device, weights_only=False)
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.kl_ctl.value = state["kl_coef"]
        vars(self.reward_moments).update(state.get("reward_moments", {}))
        rng = state["rng"]
        torch.set_rng_state(rng["torch"].cpu())
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        self.gen.set_state(rng["gen"].cpu())
        self.sample_gen.set_state(rng["sample_gen"].cpu() if self.device.type == "cpu" else rng["sample_gen"])
        self.global_step = int(state["step"])

    # ------------------------------------------------------------------ helpers
    def _call_hooks(self, name: str, *args: Any) -> None:
        for h in self.hooks:
            fn = getattr(h, name, None)
            if fn is not None:
                fn(*args)

    def _summary(self, status: str, eval_end: float, last: dict[str, float], wall: float) -> dict[str, Any]:
        return {
            "status": status,
            "run_id": self.run_id,
            "steps": self.global_step,
            "wall_seconds": round(wall, 3),
            "eval_reward_end": eval_end,
            "eval_reward_gain": eval_end - self._eval_start,
            "final_kl": last.get(M.KL_K1, math.nan),
            "final_kl_k3": last.get(M.KL_K3, math.nan),
            "final_kl_coef": self.kl_ctl.value,
            "final_reward_mean": last.get(M.REWARD_MEAN, math.nan),
            "tokens_per_sec": last.get(M.TOKENS_PER_SEC, math.nan),
            "alerts": len(self.monitor.alerts),
            "device": str(self.device),
            "gpu_total_mb": (torch.cuda.get_device_properties(self.device).total_memory / 2**20
                             if self.device.type == "cuda" else None),
            "run_dir": str(self.run_dir) if self.run_dir is not None else None,
            "memory_baseline_mb": self.memory_baseline_mb,
        }



def _cat_responses(chunks: list[tuple[torch.Tensor, torch.Tensor]], pad_id: int | None,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Join per-chunk (ids, mask) of shape (b_i, R_i): a chunk whose responses all ended early is
    shorter, so it is right-padded (pad token, mask 0) to the longest."""
    if len(chunks) == 1:
        return chunks[0]
    R = max(ids.shape[1] for ids, _ in chunks)
    pad = pad_id if pad_id is not None else 0
    return _pad_cat([i for i, _ in chunks], R, pad), _pad_cat([m for _, m in chunks], R)


def _pad_cat(chunks: list[torch.Tensor], R: int, value: int = 0) -> torch.Tensor:
    """Join per-chunk (b_i, R_i) tensors, right-padding each with ``value`` to R."""
    return torch.cat([torch.nn.functional.pad(c, (0, R - c.shape[1]), value=value) for c in chunks])


def _make_optimizer(p: PPOConfig, params: list[torch.nn.Parameter], device: torch.device) -> torch.optim.Optimizer:
    """AdamW as ``ppo.optimizer`` says: torch's (fused where it exists) or bitsandbytes' 8-bit one."""
    if p.optimizer == "adamw_8bit":
        import bitsandbytes as bnb  # check_runtime has made sure it is importable

        opt: torch.optim.Optimizer = bnb.optim.AdamW8bit(params, lr=p.learning_rate, weight_decay=p.weight_decay,
                                                         eps=1e-5)
        return opt
    # Fused AdamW: the same fp32 update in one kernel per parameter group (3x faster step at GPT-2 small).
    fused = _fused_adamw_ok(device)
    return torch.optim.AdamW(params, lr=p.learning_rate, weight_decay=p.weight_decay, eps=1e-5, fused=fused or None)


def clip_and_step(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """Clip the gradients' global L2 norm to ``max_norm``, take the optimizer step, and return the
    norm before clipping: what ``clip_grad_norm_`` then ``step()`` do, to fp32 rounding.

    Why not those two: on the CPU they make four passes over every gradient (a norm per tensor, a
    norm of the norms, a multiply by the clip factor, the step), and at GPT-2-small the norm and the
    multiply cost about as much as the fused AdamW step itself (benchmarks/NOTES_ppo_vs_trl.md,
    change 17). Where :func:`_clips_inside_step` holds this makes two: the squared norm as one BLAS
    dot per gradient (faster than ``vector_norm`` here, and nearer the exact value), and the clip
    factor handed to the fused kernel as its ``grad_scale``, the divisor it applies to each gradient
    as it reads it (the attribute ``torch.amp.GradScaler`` sets for fused optimizers), so no separate
    multiply. The scale is a tensor, max(1, norm / max_norm): no branch on the norm. Anywhere else
    ``clip_grad_norm_`` and ``step()``.
    """
    grads = [q.grad for q in params if q.grad is not None]
    if not _clips_inside_step(optimizer, grads):
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        optimizer.step()
        return norm
    norm = torch.stack([torch.dot(g.view(-1), g.view(-1)) for g in grads]).sum().sqrt()
    optimizer.grad_scale = torch.clamp((norm + 1e-6) / max_norm, min=1.0)  # type: ignore[attr-defined]
    try:
        optimizer.step()
    finally:
        del optimizer.grad_scale  # type: ignore[attr-defined]
    return norm


def _clips_inside_step(optimizer: torch.optim.Optimizer, grads: list[torch.Tensor]) -> bool:
    """:func:`clip_and_step` can hand the clip factor to the step: torch's fused AdamW, whose step
    reads ``grad_scale`` (``_step_supports_amp_scaling``, what GradScaler checks too) and holds no
    scaler's ``grad_scale`` / ``found_inf`` now, over contiguous fp32 CPU gradients."""
    if not (isinstance(optimizer, torch.optim.AdamW) and getattr(optimizer, "_step_supports_amp_scaling", False)
            and all(group.get("fused") for group in optimizer.param_groups)):
        return False
    if getattr(optimizer, "grad_scale", None) is not None or getattr(optimizer, "found_inf", None) is not None:
        return False
    return bool(grads) and all(g.device.type == "cpu" and g.dtype == torch.float32 and g.is_contiguous()
                               for g in grads)


def _fused_adamw_ok(device: torch.device) -> bool:
    """Fused AdamW exists for CUDA and (torch >= 2.4) for CPU."""
    if device.type == "cuda":
        return True
    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    return (major, minor) >= (2, 4)


def _mean(xs: list[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else math.nan


class _StatsAccumulator:
    """Collects the update's per-micro-batch statistics as detached device tensors, so the step
    pays one host transfer at the end rather than a dozen per micro-batch. Statistics a run does
    not have (the value loss of a critic-free run, the KL loss of a KL-in-reward run) stay None."""

    _MICRO = ("policy_loss", "value_loss", "value_clipfrac", "entropy", "total_loss", "clipfrac", "clipfrac_low",
              "clipfrac_high", "approx_kl", "ratio_mean", "ratio_max", "kl_loss")

    def __init__(self) -> None:
        self.values: dict[str, list[torch.Tensor]] = {k: [] for k in (*self._MICRO, "grad_norm")}

    def add_micro(self, pl: cf.ClippedLossOut, vl: torch.Tensor | None, vclip: torch.Tensor | None,
                  ent: torch.Tensor, loss: torch.Tensor, kl_loss: torch.Tensor | None = None) -> None:
        for key, val in (("policy_loss", pl.loss), ("value_loss", vl), ("entropy", ent), ("clipfrac", pl.clipfrac),
                         ("clipfrac_low", pl.clipfrac_low), ("clipfrac_high", pl.clipfrac_high),
                         ("value_clipfrac", vclip), ("approx_kl", pl.approx_kl), ("ratio_mean", pl.ratio_mean),
                         ("ratio_max", pl.ratio_max), ("total_loss", loss), ("kl_loss", kl_loss)):
            if val is not None:
                self.values[key].append(val.detach())

    def add_optimizer_step(self, grad_norm: torch.Tensor) -> None:
        self.values["grad_norm"].append(grad_norm.detach())

    def finish(self, learning_rate: float) -> UpdateStats:
        st = {k: torch.stack(v).float().cpu().tolist() for k, v in self.values.items() if v}  # the step's one sync

        def mean(key: str) -> float:
            return _mean(st[key])

        def mean_or_none(key: str) -> float | None:
            return _mean(st[key]) if key in st else None

        return UpdateStats(
            policy_loss=mean("policy_loss"), value_loss=mean_or_none("value_loss"), entropy=mean("entropy"),
            total_loss=mean("total_loss"), clipfrac=mean("clipfrac"), clipfrac_low=mean("clipfrac_low"),
            clipfrac_high=mean("clipfrac_high"), value_clipfrac=mean_or_none("value_clipfrac"),
            kl_loss=mean_or_none("kl_loss"), approx_kl=mean("approx_kl"), ratio_mean=mean("ratio_mean"),
            ratio_max=max(st["ratio_max"]), grad_norm=mean("grad_norm"), learning_rate=learning_rate)


def _lr_lambda(p: PPOConfig, n_updates: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if p.warmup_steps and step < p.warmup_steps:
            return (step + 1) / p.warmup_steps
        if p.lr_schedule == "constant":
            return 1.0
        progress = min(1.0, (step - p.warmup_steps) / max(1, n_updates - p.warmup_steps))
        if p.lr_schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


def _config_from_kwargs(policy: BasePolicy, batch_size: int, learning_rate: float, kl_coef: float,
                        value_coef: float, entropy_coef: float, extra: dict[str, Any]) -> RunConfig:
    ppo: dict[str, Any] = {"batch_size": batch_size, "learning_rate": learning_rate, "kl_coef": kl_coef,
                           "value_coef": value_coef, "entropy_coef": entropy_coef}
    mb = next((d for d in (8, 4, 2, 1) if batch_size % d == 0), 1)
    ppo["mini_batch_size"] = min(mb, batch_size)
    train: dict[str, Any] = {}
    gen = {"temperature": policy.temperature, "top_p": policy.top_p, "top_k": policy.top_k}
    rest: dict[str, Any] = {}
    algorithm = extra.get("algorithm", "ppo")
    for k, v in extra.items():
        if k == "algorithm":
            continue
        if k in PPOConfig.model_fields:
            ppo[k] = v
        elif k in TrainConfig.model_fields:
            train[k] = v
        elif k in GenerationConfig.model_fields:
            gen[k] = v
        else:
            rest[k] = v
    if rest:
        raise TypeError(f"unknown PPOTrainer argument(s): {sorted(rest)}")
    model = {"size": policy.model_size if policy.model_size in ("tiny", "small", "medium", "large") else "custom",
             "max_length": policy.max_length, "shared_value_trunk": policy.shared_value_trunk}
    if model["size"] == "custom":
        c = cast(Any, policy.model).config
        model.update(n_layer=c.n_layer, n_embd=c.n_embd, n_head=c.n_head)
    from rlhfkit.config import validate_config

    return validate_config({"algorithm": algorithm, "model": model, "generation": gen, "ppo": ppo, "train": train})


__all__ = ["PPOTrainer", "RunStopped", "resolve_device", "seed_everything"]
