"""Critic-free advantage estimators and the loss pieces that go with them, as small pure functions.

PPO (:mod:`rlhfkit.ppo_ops`) learns a value function and takes advantages from GAE. The critic-free
family replaces the learned baseline with one computed from the batch itself, so no value head is
built and no value pass runs:

* **GRPO** (Shao et al. 2024, "DeepSeekMath", eq. 3 with outcome supervision): sample G responses
  per prompt, ``A_i = (r_i - mean_g) / (std_g + eps)``, the same advantage on every token.
* **Dr. GRPO** (Liu et al. 2025, "Understanding R1-Zero-Like Training: A Critical Perspective"):
  drops the division by the group std (it over-weights too-easy and too-hard prompts) and the
  per-response length normalisation (it favours long wrong answers); the token losses of a
  response are summed and divided by a constant (the generation cap) instead.
* **RLOO** (Ahmadian et al. 2024, "Back to Basics", after Kool et al. 2019): each response's
  baseline is the mean reward of the *other* G - 1 responses of its prompt.
* **REINFORCE++** (Hu 2025): the per-token KL penalty goes into the reward as in PPO, the return
  is the (discounted) sum of later rewards, and advantages are whitened over the whole batch
  (global, not per group) instead of being compared with a critic.

Layout: a step's responses are prompt-major, ``[p0 s0, p0 s1, ..., p0 s(G-1), p1 s0, ...]``, so
``scores.view(-1, G)`` is one row per prompt. Each function is checked against a slow, obvious
loop in ``tests/unit/test_advantages.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from rlhfkit import ppo_ops as ops

Tensor = torch.Tensor

# How a (B, T) matrix of per-token losses becomes one number.
LossAgg = Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"]


def _groups(scores: Tensor, group_size: int) -> Tensor:
    if scores.dim() != 1 or group_size < 1 or scores.shape[0] % group_size:
        raise ValueError(f"scores of shape {tuple(scores.shape)} do not split into groups of {group_size}")
    return scores.view(-1, group_size)  # (N prompts, G)


def grpo_advantages(scores: Tensor, group_size: int, *, scale_by_std: bool = True, eps: float = 1e-4) -> Tensor:
    """GRPO's group-normalised advantage per response: (B,) -> (B,).

    ``(r_i - mean_g) / (std_g + eps)`` with the Bessel-corrected group std (as TRL's GRPOTrainer);
    ``scale_by_std=False`` gives Dr. GRPO's ``r_i - mean_g``. A group whose rewards are all equal
    gets advantage 0: it carries no learning signal (the std is 0, the eps keeps it finite).
    """
    r = _groups(scores, group_size)
    adv = r - r.mean(1, keepdim=True)
    if scale_by_std:
        adv = adv / (r.std(1, keepdim=True) + eps)
    return adv.reshape(-1)


def dr_grpo_advantages(scores: Tensor, group_size: int) -> Tensor:
    """Dr. GRPO: the group mean is the baseline, no std division: (B,) -> (B,)."""
    return grpo_advantages(scores, group_size, scale_by_std=False)


def rloo_advantages(scores: Tensor, group_size: int) -> Tensor:
    """REINFORCE leave-one-out: ``r_i - mean(r_j, j != i)`` within the prompt's group: (B,) -> (B,).

    Algebraically ``G/(G-1) * (r_i - mean_g)``; computed from the group sum so that it is exact.
    """
    if group_size < 2:
        raise ValueError("RLOO needs at least 2 samples per prompt")
    r = _groups(scores, group_size)
    baseline = (r.sum(1, keepdim=True) - r) / (group_size - 1)
    return (r - baseline).reshape(-1)


def discounted_returns(rewards: Tensor, mask: Tensor, gamma: float = 1.0) -> Tensor:
    """``G_t = sum_{s >= t} gamma^(s-t) r_s`` over each response's real tokens: (B, T) -> (B, T)."""
    rewards = rewards * mask
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] + gamma * running
        out[:, t] = running
    return out * mask


def reinforce_pp_advantages(scores: Tensor, kl: Tensor, mask: Tensor, kl_coef: float, gamma: float = 1.0,
                            ) -> tuple[Tensor, Tensor]:
    """REINFORCE++: KL-penalised token rewards, their returns, whitened over the batch's tokens.

    scores (B,), kl (B, T) per-token KL estimate, mask (B, T) -> (advantages, returns), both (B, T).
    The whitening is global (every real token of the batch), not per group.
    """
    rewards = ops.kl_penalized_rewards(scores, kl, mask, kl_coef)
    returns = discounted_returns(rewards, mask, gamma)
    return ops.masked_whiten(returns, mask), returns


def critic_free_advantages(algorithm: str, scores: Tensor, kl: Tensor, mask: Tensor, kl_coef: float,
                           group_size: int, gamma: float = 1.0) -> tuple[Tensor, Tensor]:
    """The estimator ``algorithm`` names, on a step's rollout: (advantages (B, T), rewards (B, T)).

    scores (B,) in prompt-major groups of ``group_size``; kl (B, T) the per-token KL estimate;
    ``kl_coef`` the penalty in the reward (0 when the KL is a loss term instead). The sequence-level
    estimators (GRPO, Dr. GRPO, RLOO) see ``score - kl_coef * sum_t kl_t`` per response and give
    every token of a response its advantage; REINFORCE++ works per token. ``rewards`` are the
    per-token rewards the advantages came from (KL penalty on every token, score on the last).
    """
    rewards = ops.kl_penalized_rewards(scores, kl, mask, kl_coef)  # (B, T)
    if algorithm == "reinforce_pp":
        adv, _ = reinforce_pp_advantages(scores, kl, mask, kl_coef, gamma)
        return adv, rewards
    seq_reward = (rewards * mask).sum(1)  # (B,) score minus the summed KL penalty
    if algorithm == "grpo":
        seq_adv = grpo_advantages(seq_reward, group_size)
    elif algorithm == "dr_grpo":
        seq_adv = dr_grpo_advantages(seq_reward, group_size)
    elif algorithm == "rloo":
        seq_adv = rloo_advantages(seq_reward, group_size)
    else:
        raise ValueError(f"no critic-free estimator called {algorithm!r}")
    return per_token(seq_adv, mask), rewards


def loss_aggregation(algorithm: str) -> LossAgg:
    """How each algorithm reduces its token losses: GRPO per response then over responses (the
    paper), Dr. GRPO a constant-normalised token sum, the rest (PPO, RLOO, REINFORCE++) per token."""
    if algorithm == "grpo":
        return "seq_mean_token_mean"
    if algorithm == "dr_grpo":
        return "seq_mean_token_sum_norm"
    return "token_mean"


def per_token(seq_adv: Tensor, mask: Tensor) -> Tensor:
    """Broadcast one advantage per response onto its real tokens: (B,), (B, T) -> (B, T)."""
    return seq_adv.unsqueeze(1) * mask


def group_stats(scores: Tensor, group_size: int, tol: float = 1e-6) -> tuple[float, float]:
    """(mean within-group reward std, fraction of groups whose rewards are all equal).

    The second is TRL's ``frac_reward_zero_std``: such groups have advantage 0 under GRPO and RLOO
    and teach nothing.
    """
    r = _groups(scores, group_size)
    std = r.std(1) if group_size > 1 else torch.zeros(r.shape[0])
    return float(std.mean()), float(((r.max(1).values - r.min(1).values) <= tol).float().mean())


def aggregate(loss_tok: Tensor, mask: Tensor, agg: LossAgg, norm_len: int | None = None) -> Tensor:
    """Reduce per-token losses (B, T) to a scalar.

    * ``token_mean``: mean over every real token of the batch (PPO, RLOO, REINFORCE++; DAPO).
    * ``seq_mean_token_mean``: mean over each response's tokens, then over responses (GRPO paper).
    * ``seq_mean_token_sum_norm``: each response's token sum divided by the constant ``norm_len``,
      then the mean over responses (Dr. GRPO: no length bias).
    """
    if agg == "token_mean":
        return ops.masked_mean(loss_tok, mask)
    if agg == "seq_mean_token_mean":
        return ops.masked_mean(loss_tok, mask, dim=1).mean()
    if norm_len is None or norm_len < 1:
        raise ValueError("seq_mean_token_sum_norm needs norm_len >= 1")
    return ((loss_tok * mask).sum(1) / norm_len).mean()


@dataclass(frozen=True)
class ClippedLossOut:
    loss: Tensor
    clipfrac: Tensor  # share of tokens whose gradient the clip removed (low or high)
    clipfrac_low: Tensor  # ratio < 1 - eps_low on a negative advantage
    clipfrac_high: Tensor  # ratio > 1 + eps_high on a positive advantage
    approx_kl: Tensor
    ratio_mean: Tensor
    ratio_max: Tensor


def clipped_policy_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor,
                        cliprange_low: float, cliprange_high: float, agg: LossAgg = "token_mean",
                        norm_len: int | None = None) -> ClippedLossOut:
    """PPO's clipped surrogate with separate lower and upper clip ranges (DAPO's "clip-higher").

    ``max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high))`` per token, reduced by :func:`aggregate`.
    With ``eps_low == eps_high`` and ``token_mean`` it equals :func:`rlhfkit.ppo_ops.policy_loss`.
    """
    log_ratio = (logprobs - old_logprobs) * mask
    ratio = torch.exp(log_ratio)
    loss1 = -advantages * ratio
    loss2 = -advantages * torch.clamp(ratio, 1.0 - cliprange_low, 1.0 + cliprange_high)
    loss = aggregate(torch.maximum(loss1, loss2), mask, agg, norm_len)
    with torch.no_grad():
        low = ((ratio < 1.0 - cliprange_low) & (advantages < 0)).float()
        high = ((ratio > 1.0 + cliprange_high) & (advantages > 0)).float()
        out = ClippedLossOut(
            loss=loss,
            clipfrac=ops.masked_mean((loss2 > loss1).float(), mask),
            clipfrac_low=ops.masked_mean(low, mask),
            clipfrac_high=ops.masked_mean(high, mask),
            approx_kl=ops.masked_mean(torch.expm1(log_ratio) - log_ratio, mask),
            ratio_mean=ops.masked_mean(ratio, mask),
            ratio_max=(ratio * mask).max(),
        )
    return out


def kl_loss_k3(logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor, agg: LossAgg = "token_mean",
               norm_len: int | None = None) -> Tensor:
    """GRPO's KL term in the loss: k3 = ref/pi - log(ref/pi) - 1 per token (>= 0), reduced by ``agg``.

    Differentiable in ``logprobs``; the caller multiplies it by beta and adds it to the policy loss.
    """
    log_ratio = ref_logprobs - logprobs
    return aggregate(torch.expm1(log_ratio) - log_ratio, mask, agg, norm_len)


__all__ = [
    "ClippedLossOut", "LossAgg", "aggregate", "clipped_policy_loss", "critic_free_advantages", "discounted_returns",
    "dr_grpo_advantages", "group_stats", "grpo_advantages", "kl_loss_k3", "loss_aggregation", "per_token",
    "reinforce_pp_advantages", "rloo_advantages",
]
