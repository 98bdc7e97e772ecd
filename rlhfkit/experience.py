"""The data that flows between the stages of one RL step, named and shaped.

``rollout()`` -> :class:`Rollout` -> ``score()`` -> :class:`Experience` -> ``advantages()`` ->
:class:`Advantages` -> ``update()`` -> :class:`UpdateStats` (OpenRLHF's ``Experience`` is the
model). Shapes: B sequences, P prompt length (left-padded), R response length, T = P + R. Every
tensor lives on the training device; ``mask`` is 1.0 on real response tokens (up to and including
EOS) and 0.0 on padding after it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlhfkit.fastgpt2 import SamplingActivations

Tensor = torch.Tensor


@dataclass
class Rollout:
    """What sampling produced (stage 1)."""

    prompts: list[str]  # B prompt texts
    query: Tensor  # (B, P) prompt ids, left-padded
    query_mask: Tensor  # (B, P) 1 on real prompt tokens
    response: Tensor  # (B, R) sampled ids, pad after EOS
    response_mask: Tensor  # (B, R) long, 1 up to and including EOS
    sampled_logprobs: Tensor | None = None  # (B, R) log π_old(a|s) read off the sampling pass, if it could
    sampled_values: Tensor | None = None  # (B, R) V_old(s) read off the sampling pass, if it could
    # what the decode kept for the update's forward to build on (config.update_from_sampling), if it could
    activations: SamplingActivations | None = None

    @property
    def prompt_len(self) -> int:
        return int(self.query.shape[1])

    @property
    def input_ids(self) -> Tensor:  # (B, T)
        return torch.cat([self.query, self.response], 1)

    @property
    def attention_mask(self) -> Tensor:  # (B, T)
        return torch.cat([self.query_mask, self.response_mask], 1)


@dataclass
class Experience:
    """A scored rollout (stage 2): everything the advantages and the update read."""

    prompts: list[str]  # B prompt texts
    input_ids: Tensor  # (B, T) prompt + response ids
    attention_mask: Tensor  # (B, T)
    prompt_len: int  # P: response token r sits at input_ids[:, P + r]
    response: Tensor  # (B, R) sampled ids
    mask: Tensor  # (B, R) float, 1 on real response tokens
    # (B, R) log π_old(a|s), the policy that sampled; None until update() reads them off its own
    # forward (logprobs_from_update: scoring ran no policy forward for them)
    logprobs: Tensor | None
    ref_logprobs: Tensor  # (B, R) log π_ref(a|s), the frozen KL anchor
    values: Tensor | None  # (B, R) V_old(s) before the update; None for critic-free runs
    raw_scores: Tensor  # (B,) the reward model's score, as it scored
    scores: Tensor  # (B,) the score the advantages use (after EOS penalty, normalisation, clipping)
    has_eos: Tensor  # (B,) bool, the response ended on EOS
    scored_while_sampling: bool = False  # logprobs (and values) came off the sampling pass: scoring ran no policy forward
    logprobs_from_update: bool = False  # one on-policy optimizer step: π_old is the update's own forward, detached
    activations: SamplingActivations | None = None  # Rollout.activations, until the update has used them

    @property
    def policy_forward_in_scoring(self) -> bool:
        """Whether scoring ran the policy over the batch (for its log-probs and values)."""
        return not (self.scored_while_sampling or self.logprobs_from_update)

    @property
    def batch_size(self) -> int:
        return int(self.input_ids.shape[0])


@dataclass
class Advantages:
    """Per-token learning targets (stage 3)."""

    kl_coef: float  # β: of the per-token KL penalty, or of the k3 loss term (kl_in_loss)
    kl_in_loss: bool  # the KL acts as a loss term in update(), not through the rewards
    rewards: Tensor  # (B, R) -β KL per token (unless kl_in_loss), plus the score on the last real token
    advantages: Tensor  # (B, R) what the policy loss weighs (whitened when configured)
    advantages_raw: Tensor  # (B, R) GAE before whitening, or the critic-free estimator's output
    returns: Tensor | None  # (B, R) advantages_raw + values: the value target; None without a critic
    seq_kl_k1: Tensor  # (B,) Σ_t log π/π_ref over the response
    seq_kl_k3: Tensor  # (B,) Σ_t k3 estimate over the response


@dataclass(frozen=True)
class UpdateStats:
    """Means over the step's micro-batches (stage 4); ``ratio_max`` is the step's maximum."""

    policy_loss: float
    value_loss: float | None  # None without a critic
    entropy: float  # mean per-token entropy (nats)
    total_loss: float
    clipfrac: float  # share of tokens where the policy clip was active
    clipfrac_low: float  # ... at 1 - cliprange_low on a negative advantage
    clipfrac_high: float  # ... at 1 + cliprange_high on a positive advantage
    value_clipfrac: float | None
    kl_loss: float | None  # the k3 KL loss term before β (kl_in_loss only)
    approx_kl: float  # k3 of KL(π_old || π) per token
    ratio_mean: float  # π/π_old per token
    ratio_max: float
    grad_norm: float  # before clipping, mean over optimizer steps
    learning_rate: float  # the rate this step's updates used
    old_logprobs: Tensor | None = None  # (B, R) π_old read off the update's forward (Experience.logprobs_from_update)
    forward_from_sampling: bool = False  # the update's forward built on the decode's matmul outputs (Experience.activations)


__all__ = ["Advantages", "Experience", "Rollout", "UpdateStats"]
