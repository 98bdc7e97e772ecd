"""PPO-for-RLHF math as small pure tensor functions.

Everything here is stateless (except the two KL controllers, which hold one number) and works on
(B, T) tensors over *response* tokens with a 0/1 ``mask`` marking real tokens (1 up to and
including EOS, 0 for padding after it). Each function is unit-tested against a slow, obvious loop
in ``tests/unit/test_ppo_ops.py``.

References: Schulman et al. 2017 (PPO), Schulman et al. 2016 (GAE), Ziegler et al. 2019 (adaptive
KL, per-token KL penalty), Huang et al. 2024 "The N Implementation Details of RLHF with PPO",
Schulman 2020 "Approximating KL divergence" (k1/k3 estimators).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``x`` over positions where ``mask`` is 1 (all of them, or along ``dim``)."""
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp_min(1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp_min(1.0)


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance over masked positions (Bessel-corrected when ``unbiased``)."""
    mean = masked_mean(x, mask)
    sq = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.sum()
        if n > 1:
            sq = sq * n / (n - 1)
    return sq


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """Normalise masked values to unit variance (and zero mean when ``shift_mean``).

    ``shift_mean=False`` keeps the mean, which is what reward whitening wants: shifting rewards
    changes the optimal policy only through the value baseline, but it would hide a reward level.
    """
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


def logprobs_from_logits(logits: Tensor, labels: Tensor) -> Tensor:
    """log softmax(logits)[labels]: (B, T, V), (B, T) -> (B, T).

    One fused ``log_softmax`` kernel, then a gather. Gather minus ``logsumexp`` would avoid keeping
    the log-softmax, but ``logsumexp`` is itself four passes over V (max, subtract, exp, sum) with
    one V-sized temporary, and measures twice as slow on CPU at (4096, 2023).
    """
    return F.log_softmax(logits, dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Per-position entropy of softmax(logits): (B, T, V) -> (B, T)."""
    logp = F.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def kl_estimators(logprobs: Tensor, ref_logprobs: Tensor) -> tuple[Tensor, Tensor]:
    """Per-token estimators of KL(pi || ref) from tokens sampled from pi.

    k1 = log pi - log ref (unbiased, high variance, can be negative per token);
    k3 = (r - 1) - log r with r = ref/pi (unbiased, always >= 0, lower variance).
    """
    log_ratio = logprobs - ref_logprobs
    k1 = log_ratio
    k3 = torch.expm1(-log_ratio) + log_ratio
    return k1, k3


def kl_penalized_rewards(scores: Tensor, kl: Tensor, mask: Tensor, kl_coef: float) -> Tensor:
    """Per-token rewards: -beta * KL at every response token, plus the score at the last one.

    scores (B,), kl (B, T), mask (B, T) -> (B, T).
    """
    rewards = -kl_coef * kl * mask
    last = (mask.sum(1).long() - 1).clamp_min(0)  # index of the last real token (EOS or cut-off)
    rewards = rewards.clone()
    rewards[torch.arange(rewards.shape[0], device=rewards.device), last] += scores
    return rewards


def compute_gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over response tokens.

    delta_t = r_t + gamma * V_{t+1} - V_t,  A_t = delta_t + gamma * lam * A_{t+1},
    with V and r zero after the last real token (the episode ends there).
    Returns (advantages, returns = advantages + values), both (B, T), zero where mask is 0.
    """
    values = values * mask
    rewards = rewards * mask
    T = rewards.shape[1]
    adv = torch.zeros_like(rewards)
    last_gae = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(values[:, 0])
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last_gae = delta + gamma * lam * last_gae * (mask[:, t + 1] if t + 1 < T else 0.0)
        adv[:, t] = last_gae
    adv = adv * mask
    return adv, (adv + values) * mask


@dataclass(frozen=True)
class PolicyLossOut:
    loss: Tensor
    clipfrac: Tensor
    approx_kl: Tensor
    ratio_mean: Tensor
    ratio_max: Tensor


def policy_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, cliprange: float) -> PolicyLossOut:
    """Clipped surrogate: mean over tokens of max(-A r, -A clip(r, 1-eps, 1+eps))."""
    log_ratio = (logprobs - old_logprobs) * mask
    ratio = torch.exp(log_ratio)
    loss1 = -advantages * ratio
    loss2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(loss1, loss2), mask)
    with torch.no_grad():
        clipfrac = masked_mean((loss2 > loss1).float(), mask)
        approx_kl = masked_mean(torch.expm1(log_ratio) - log_ratio, mask)  # k3 of KL(old || new)
        ratio_mean = masked_mean(ratio, mask)
        ratio_max = (ratio * mask).max()
    return PolicyLossOut(loss, clipfrac, approx_kl, ratio_mean, ratio_max)


def value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, cliprange_value: float) -> tuple[Tensor, Tensor]:
    """Clipped value loss 0.5 * mean(max((V - R)^2, (clip(V, V_old +- eps) - R)^2)); returns (loss, clipfrac)."""
    clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    l1 = (values - returns) ** 2
    l2 = (clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(l1, l2), mask)
    with torch.no_grad():
        clipfrac = masked_mean((l2 > l1).float(), mask)
    return loss, clipfrac


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> float:
    """1 - Var(R - V) / Var(R) over masked tokens (1 = perfect, <= 0 = no better than a constant)."""
    var_r = masked_var(returns, mask)
    if var_r.item() == 0:
        return float("nan")
    return float(1.0 - masked_var(returns - values, mask) / var_r)


class RunningMoments:
    """Running mean and (population) variance of every value seen, merged batch by batch with
    Chan et al.'s parallel update (as OpenAI baselines' ``RunningMeanStd`` and OpenRLHF's reward
    normalisation): exact for any batch sizes, no history kept."""

    def __init__(self) -> None:
        self.mean = 0.0
        self.var = 1.0
        self.count = 0

    def update(self, x: Tensor) -> None:
        n = x.numel()
        if n == 0:
            return
        b_mean = float(x.double().mean())
        b_var = float(x.double().var(unbiased=False))
        total = self.count + n
        delta = b_mean - self.mean
        m2 = self.var * self.count + b_var * n + delta * delta * self.count * n / total
        self.mean += delta * n / total
        self.var = m2 / total
        self.count = total

    @property
    def std(self) -> float:
        return math.sqrt(self.var)

    def normalize(self, x: Tensor, eps: float = 1e-8) -> Tensor:
        """(x - mean) / std with the moments so far."""
        return (x - self.mean) / (self.std + eps)


def distinct_n(tokens: Tensor, mask: Tensor, n: int = 2) -> float:
    """Distinct-n (Li et al. 2016): unique n-grams / all n-grams over the masked tokens of a batch.

    tokens, mask (B, T); n-grams never cross a row or a masked position. 1.0 = no n-gram repeats
    anywhere in the batch; it falls as samples repeat themselves or each other. NaN without n-grams.
    """
    seen: set[tuple[int, ...]] = set()
    total = 0
    for row, m in zip(tokens.tolist(), mask.tolist(), strict=True):
        real = [t for t, k in zip(row, m, strict=True) if k]
        for i in range(len(real) - n + 1):
            seen.add(tuple(real[i : i + n]))
            total += 1
    return len(seen) / total if total else float("nan")


class FixedKLController:
    """A constant KL coefficient."""

    def __init__(self, kl_coef: float) -> None:
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        pass


class AdaptiveKLController:
    """Proportional controller of Ziegler et al. 2019 (section 2.2).

    error = clip(KL / target - 1, -0.2, 0.2);  beta <- beta * (1 + error * n / horizon)
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int) -> None:
        self.value = init_kl_coef
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        if not math.isfinite(current_kl):
            return
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
