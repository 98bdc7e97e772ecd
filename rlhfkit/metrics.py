"""The metric-name contract.

Every number the engine, the service, the adapters and the UI exchange is named here, once.
Names use slash namespaces (``reward/mean``, ``kl/k1``) like CleanRL and TRL, so they group
naturally in charts. The backend exports :data:`METRICS` through ``GET /api/metrics/contract``
and the OpenAPI schema, and the TypeScript client is generated from that, so a rename here is a
rename everywhere.

Each :class:`MetricSpec` says its unit and how it was measured, because a number shown to a user
without a unit is a guess.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Final


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its canonical name, unit, what it measures and the names peers use for it."""

    name: str
    unit: str
    description: str
    group: str
    aliases: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class M:
    """Canonical metric names (use these constants, never string literals)."""

    REWARD_MEAN: Final = "reward/mean"
    REWARD_STD: Final = "reward/std"
    REWARD_MIN: Final = "reward/min"
    REWARD_MAX: Final = "reward/max"
    REWARD_GROUP_STD: Final = "reward/group_std"  # critic-free runs: mean std within a prompt's G responses
    FRAC_ZERO_STD: Final = "reward/frac_zero_std"  # share of prompts whose G rewards are all equal
    SCORE_MEAN: Final = "reward/score_mean"  # mean return: score minus the summed per-token KL penalty
    KL_K1: Final = "kl/k1"
    KL_K3: Final = "kl/k3"
    KL_PER_TOKEN: Final = "kl/per_token"
    KL_COEF: Final = "kl/coef"
    KL_TARGET: Final = "kl/target"
    ENTROPY: Final = "policy/entropy"
    POLICY_LOSS: Final = "loss/policy"
    VALUE_LOSS: Final = "loss/value"
    TOTAL_LOSS: Final = "loss/total"
    POLICY_CLIPFRAC: Final = "policy/clipfrac"
    CLIPFRAC_LOW: Final = "policy/clipfrac_low"
    CLIPFRAC_HIGH: Final = "policy/clipfrac_high"
    VALUE_CLIPFRAC: Final = "value/clipfrac"
    APPROX_KL: Final = "policy/approx_kl"
    RATIO_MEAN: Final = "policy/ratio_mean"
    RATIO_MAX: Final = "policy/ratio_max"
    GRAD_NORM: Final = "optim/grad_norm"
    LEARNING_RATE: Final = "optim/lr"
    EXPLAINED_VAR: Final = "value/explained_variance"
    VALUE_MEAN: Final = "value/mean"
    ADV_MEAN: Final = "advantage/mean"
    ADV_STD: Final = "advantage/std"
    RESPONSE_LEN: Final = "response/length"
    RESPONSE_LEN_MIN: Final = "response/length_min"
    RESPONSE_LEN_MAX: Final = "response/length_max"
    RESPONSE_CLIPPED: Final = "response/clipped_ratio"
    EOS_FRACTION: Final = "response/eos_fraction"
    TOKENS_PER_SEC: Final = "perf/tokens_per_sec"
    STEP_TIME: Final = "perf/step_time"
    EVAL_REWARD: Final = "eval/reward_mean"
    # per stage: model FLOP utilisation, time per token, model FLOPs (rlhfkit.mfu says how each is counted)
    MFU_GENERATION: Final = "perf/mfu/generation"
    MFU_SCORING: Final = "perf/mfu/scoring"
    MFU_ADVANTAGES: Final = "perf/mfu/advantages"
    MFU_UPDATE: Final = "perf/mfu/update"
    TIME_PER_TOKEN_GENERATION: Final = "perf/time_per_token_ms/generation"
    TIME_PER_TOKEN_SCORING: Final = "perf/time_per_token_ms/scoring"
    TIME_PER_TOKEN_ADVANTAGES: Final = "perf/time_per_token_ms/advantages"
    TIME_PER_TOKEN_UPDATE: Final = "perf/time_per_token_ms/update"
    FLOPS_GENERATION: Final = "perf/flops/generation"
    FLOPS_SCORING: Final = "perf/flops/scoring"
    FLOPS_ADVANTAGES: Final = "perf/flops/advantages"
    FLOPS_UPDATE: Final = "perf/flops/update"
    # training-vs-inference mismatch: the sampler's and the trainer's probabilities of the same tokens
    MISMATCH_KL: Final = "mismatch/kl"
    MISMATCH_LOGP_DIFF_MEAN: Final = "mismatch/logp_diff_mean"
    MISMATCH_LOGP_DIFF_MAX: Final = "mismatch/logp_diff_max"
    MISMATCH_PROBS_DIFF_MEAN: Final = "mismatch/probs_diff_mean"
    MISMATCH_PROBS_DIFF_MAX: Final = "mismatch/probs_diff_max"
    MISMATCH_TOKEN_PROB_ERROR: Final = "mismatch/token_prob_error"
    # sampled on a thread every monitor.system_interval_s (rlhfkit.system); per GPU: system/gpu<i>/<field>
    SYS_CPU_PERCENT: Final = "system/cpu_percent"
    SYS_RSS_MB: Final = "system/rss_mb"
    SYS_HOST_MEM_USED_MB: Final = "system/host_mem_used_mb"
    SYS_HOST_MEM_PERCENT: Final = "system/host_mem_percent"


_SPECS: tuple[MetricSpec, ...] = (
    MetricSpec(M.REWARD_MEAN, "reward", "Mean reward-model score of the batch's responses", "reward",
               ("env/reward_mean", "objective/scores", "reward", "train/reward", "rewards/mean", "ppo/mean_scores",
                "critic/score/mean")),
    MetricSpec(M.REWARD_STD, "reward", "Std of the batch's scores (reward-variance collapse shows here)", "reward",
               ("env/reward_std", "reward_std", "train/reward_std", "objective/scores_std", "ppo/std_scores")),
    MetricSpec(M.REWARD_MIN, "reward", "Lowest score in the batch", "reward",
               ("critic/score/min",)),
    MetricSpec(M.REWARD_MAX, "reward", "Highest score in the batch", "reward",
               ("critic/score/max",)),
    MetricSpec(M.REWARD_GROUP_STD, "reward", "Mean over prompts of the std of its G responses' scores (critic-free "
               "runs): the spread the group baseline learns from", "reward"),
    MetricSpec(M.FRAC_ZERO_STD, "fraction", "Share of prompts whose G responses all scored the same: advantage 0, "
               "no learning signal (critic-free runs)", "reward", ("frac_reward_zero_std",)),
    MetricSpec(M.SCORE_MEAN, "reward", "Mean total return: score minus the per-token KL penalty", "reward",
               ("objective/rlhf_reward", "ppo/returns/mean", "train/return", "critic/rewards/mean")),
    MetricSpec(M.KL_K1, "nats", "KL(policy||reference) per sequence, k1 estimator: sum of log-ratios", "kl",
               ("objective/kl", "ppo/mean_non_score_reward_kl", "objective/kl_k1")),
    MetricSpec(M.KL_PER_TOKEN, "nats/token", "KL(policy||reference) per token, as GRPO/RLOO ('kl', k3) and OpenRLHF ('train/kl') report it", "kl",
               ("kl", "train/kl", "actor/reward_kl_penalty", "actor/kl_loss")),
    MetricSpec(M.KL_K3, "nats", "KL(policy||reference) per sequence, k3 estimator (r-1-log r), low variance", "kl",
               ("objective/kl_k3",)),
    MetricSpec(M.KL_COEF, "1", "Current KL penalty coefficient beta", "kl", ("objective/kl_coef", "ppo/kl_coef", "train/kl_coef",
               "kl_coef", "beta", "actor/reward_kl_penalty_coeff", "actor/kl_coef")),
    MetricSpec(M.KL_TARGET, "nats", "Target KL of the adaptive controller", "kl"),
    MetricSpec(M.ENTROPY, "nats/token", "Mean per-token entropy of the policy on its samples", "policy",
               ("policy/entropy_avg", "ppo/policy/entropy", "train/entropy", "entropy", "train/entropy_loss",
                "actor/entropy")),
    # (TRL's objective/entropy is a per-sequence sum of -log p, not per-token: not an alias.)
    MetricSpec(M.POLICY_LOSS, "1", "Clipped PPO surrogate loss", "loss",
               ("loss/policy_avg", "ppo/loss/policy", "train/policy_loss", "policy_loss", "actor/pg_loss")),
    MetricSpec(M.VALUE_LOSS, "1", "Clipped value loss (0.5 * max of squared errors)", "loss",
               ("loss/value_avg", "ppo/loss/value", "train/critic_loss", "train/value_loss", "critic/vf_loss")),
    MetricSpec(M.TOTAL_LOSS, "1", "Policy loss + value_coef*value loss - entropy_coef*entropy", "loss",
               ("ppo/loss/total", "loss", "train/loss", "loss/mean")),
    MetricSpec(M.POLICY_CLIPFRAC, "fraction", "Share of tokens whose ratio was clipped", "policy",
               ("policy/clipfrac_avg", "ppo/policy/clipfrac", "train/clip_ratio", "clip_ratio",
                "clip_ratio/region_mean", "train/ppo_clip_ratio", "actor/pg_clipfrac")),
    MetricSpec(M.CLIPFRAC_LOW, "fraction", "Share of tokens clipped at 1 - cliprange_low (ratio below it on a "
               "negative advantage)", "policy", ("clip_ratio/low_mean",)),
    MetricSpec(M.CLIPFRAC_HIGH, "fraction", "Share of tokens clipped at 1 + cliprange_high (ratio above it on a "
               "positive advantage)", "policy", ("clip_ratio/high_mean",)),
    MetricSpec(M.VALUE_CLIPFRAC, "fraction", "Share of tokens whose value prediction was clipped", "value",
               ("val/clipfrac_avg", "ppo/val/clipfrac", "critic/vf_clipfrac")),
    MetricSpec(M.APPROX_KL, "nats", "Approximate KL(old||new) across the PPO update (k3)", "policy",
               ("policy/approxkl_avg", "ppo/policy/approxkl", "train/approx_kl", "train/ppo_kl", "actor/ppo_kl")),
    MetricSpec(M.RATIO_MEAN, "1", "Mean importance ratio pi_new/pi_old (should stay near 1)", "policy",
               ("val/ratio", "ppo/policy/ratio_mean")),
    MetricSpec(M.RATIO_MAX, "1", "Largest importance ratio in the update", "policy"),
    MetricSpec(M.GRAD_NORM, "1", "Global gradient L2 norm before clipping", "optim",
               ("grad_norm", "train/grad_norm", "ppo/grad_norm", "actor/grad_norm")),
    MetricSpec(M.LEARNING_RATE, "1", "Learning rate after the schedule", "optim", ("learning_rate", "lr", "train/lr",
               "train/actor_lr", "ppo/learning_rate", "actor/lr")),
    MetricSpec(M.EXPLAINED_VAR, "fraction", "1 - Var(returns - values)/Var(returns)", "value",
               ("ppo/val/var_explained", "critic/vf_explained_var")),
    MetricSpec(M.VALUE_MEAN, "reward", "Mean value prediction on response tokens", "value",
               ("ppo/val/mean", "train/values", "critic/values/mean")),
    MetricSpec(M.ADV_MEAN, "1", "Mean advantage before whitening", "advantage",
               ("ppo/policy/advantages_mean", "critic/advantages/mean")),
    MetricSpec(M.ADV_STD, "1", "Std of advantages before whitening", "advantage"),
    MetricSpec(M.RESPONSE_LEN, "tokens", "Mean response length in tokens", "response",
               ("tokens/responses_len_mean", "train/response_length", "completions/mean_length", "completion_length",
                "response_length/mean")),
    MetricSpec(M.RESPONSE_LEN_MIN, "tokens", "Shortest response of the step in tokens", "response",
               ("completions/min_length", "response_length/min")),
    MetricSpec(M.RESPONSE_LEN_MAX, "tokens", "Longest response of the step in tokens", "response",
               ("completions/max_length", "response_length/max")),
    MetricSpec(M.RESPONSE_CLIPPED, "fraction", "Share of responses cut at generation.max_new_tokens without EOS",
               "response", ("completions/clipped_ratio", "response_length/clip_ratio")),
    # (TRL PPOTrainer's val/num_eos_tokens is a count of EOS tokens, not this fraction: not an alias.)
    MetricSpec(M.EOS_FRACTION, "fraction", "Share of responses that ended with EOS", "response"),
    MetricSpec(M.TOKENS_PER_SEC, "tokens/s", "Generated response tokens per second of wall time for the whole step", "perf"),
    MetricSpec(M.STEP_TIME, "s", "Wall time of the whole step", "perf", ("time/ppo/total", "step_time", "timing_s/step",
               "perf/time_per_step", "timing/train/total_step_time")),
    MetricSpec(M.EVAL_REWARD, "reward", "Mean reward on held-out eval prompts (greedy-free sampling)", "eval",
               ("eval/reward", "eval_reward")),
)

# Per-stage performance: verl's and NeMo-RL's names for the same quantities are aliases.
_PERF_ALIASES: dict[str, tuple[str, ...]] = {
    "perf/mfu/generation": ("perf/mfu/rollout",),
    "perf/mfu/update": ("perf/mfu/actor", "perf/mfu/policy_training"),
    "perf/time_per_token_ms/generation": ("timing_per_token_ms/gen", "timing_per_token_ms/generation"),
    "perf/time_per_token_ms/advantages": ("timing_per_token_ms/adv",),
    "perf/time_per_token_ms/update": ("timing_per_token_ms/update_actor",),
}
_PERF_SPECS: tuple[MetricSpec, ...] = tuple(
    spec
    for stage in ("generation", "scoring", "advantages", "update")
    for spec in (
        MetricSpec(f"perf/mfu/{stage}", "fraction", f"Model FLOPs of the {stage} stage / (its seconds x the device's "
                   "peak FLOP/s); the peak's source is in run_started.perf", "perf",
                   _PERF_ALIASES.get(f"perf/mfu/{stage}", ())),
        MetricSpec(f"perf/time_per_token_ms/{stage}", "ms/token",
                   f"Wall time of the {stage} stage per token " + ("generated" if stage == "generation"
                                                                   else "of the batch (prompt + response)"), "perf",
                   _PERF_ALIASES.get(f"perf/time_per_token_ms/{stage}", ())),
        MetricSpec(f"perf/flops/{stage}", "FLOP", f"Model FLOPs of the {stage} stage, counted from the model shape and "
                   "the real tokens processed (rlhfkit.mfu)", "perf"),
    )
)
# Training-vs-inference mismatch (a vLLM/SGLang sampler's log-probs vs the trainer's, same tokens),
# which every framework logs under its own name: one family, so one alert rule covers all of them.
_MISMATCH_SPECS: tuple[MetricSpec, ...] = (
    MetricSpec(M.MISMATCH_KL, "nats/token", "KL(sampler || trainer) per response token on the sampled tokens", "mismatch",
               ("mismatch_kl", "mismatch_kl/all/mean", "vllm_kl", "train/vllm_kl", "gen_kl_error", "train/gen_kl_error")),
    MetricSpec(M.MISMATCH_LOGP_DIFF_MEAN, "nats", "Mean |log p_sampler - log p_trainer| per response token", "mismatch",
               ("sampling/sampling_logp_difference/mean",)),
    MetricSpec(M.MISMATCH_LOGP_DIFF_MAX, "nats", "Largest |log p_sampler - log p_trainer| over the batch's tokens", "mismatch",
               ("sampling/sampling_logp_difference/max",)),
    MetricSpec(M.MISMATCH_PROBS_DIFF_MEAN, "probability", "Mean |p_sampler - p_trainer| per response token", "mismatch",
               ("training/rollout_probs_diff_mean",)),
    MetricSpec(M.MISMATCH_PROBS_DIFF_MAX, "probability", "Largest |p_sampler - p_trainer| over the batch's tokens", "mismatch",
               ("training/rollout_probs_diff_max",)),
    MetricSpec(M.MISMATCH_TOKEN_PROB_ERROR, "1", "Token-weighted exp(|log p_sampler - log p_trainer|): 1 = identical "
               "(NeMo-RL's token_mult_prob_error)", "mismatch", ("token_mult_prob_error", "train/token_mult_prob_error")),
)
_SYSTEM_SPECS: tuple[MetricSpec, ...] = (
    MetricSpec(M.SYS_CPU_PERCENT, "%", "CPU use of the training process since the previous sample (100 = one core)",
               "system"),
    MetricSpec(M.SYS_RSS_MB, "MiB", "Resident memory of the training process", "system"),
    MetricSpec(M.SYS_HOST_MEM_USED_MB, "MiB", "Memory in use on the host (total - available)", "system"),
    MetricSpec(M.SYS_HOST_MEM_PERCENT, "%", "Share of the host's memory in use", "system"),
)
_SPECS = _SPECS + _PERF_SPECS + _MISMATCH_SPECS + _SYSTEM_SPECS

# Per visible GPU i (NVML), absent where there is none: system/gpu<i>/<field>, field -> unit.
GPU_FIELDS: Final[dict[str, str]] = {"util_percent": "%", "mem_used_mb": "MiB", "mem_total_mb": "MiB",
                                     "power_w": "W", "temp_c": "°C"}


def gpu_metric(index: int, field: str) -> str:
    """``system/gpu<index>/<field>`` for a field of :data:`GPU_FIELDS`."""
    return f"system/gpu{index}/{field}"

METRICS: Final[dict[str, MetricSpec]] = {s.name: s for s in _SPECS}


def perf_name(kind: str, stage: str) -> str:
    """``perf/<kind>/<stage>`` for kind in mfu, time_per_token_ms, flops."""
    return f"perf/{kind}/{stage}"

# Pipeline stages of one PPO step, in execution order. Timings and memory use these names.
STAGES: Final[tuple[str, ...]] = ("generation", "scoring", "advantages", "update", "evaluation")



def stage_sort_key(name: str) -> tuple[int, bool, str]:
    """Pipeline order for stage names: a stage, then its ``stage/sub`` ranges; unknown names last."""
    top = name.split("/")[0]
    return (STAGES.index(top) if top in STAGES else len(STAGES), "/" in name, name)


# What each scoring sub-stage is called inside the profiler ranges.
SUB_STAGES: Final[tuple[str, ...]] = ("scoring/reference", "scoring/reward", "scoring/value")

# Models whose memory is reported separately.
MODELS: Final[tuple[str, ...]] = ("policy", "reference", "value", "reward")


def alias_map() -> dict[str, str]:
    """Peer name -> canonical name, for the adapters (unknown keys keep their own names)."""
    out: dict[str, str] = {}
    for spec in _SPECS:
        for a in spec.aliases:
            out.setdefault(a, spec.name)
    return out


def canonical(name: str) -> str:
    """Map a peer's metric name to ours; names we do not know pass through unchanged."""
    return _ALIASES.get(name, name)


_ALIASES: Final[dict[str, str]] = alias_map()
