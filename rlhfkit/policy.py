"""GPT-2 policy with a value head, its frozen reference copy, and fast sampling.

One :class:`GPT2Policy` owns the language model, the tokenizer, the prompt data and the value
function. By default the value head sits on the policy's own transformer trunk
(``shared_value_trunk=True``): one forward pass then yields both log-probabilities and values, which
saves a whole model's forward pass and memory per step. With ``shared_value_trunk=False`` a separate
critic (a copy of the initial trunk with its own head) is trained instead, as in TRL and OpenRLHF.

Sampling is a hand-written loop over the transformers KV cache: one prefill of the left-padded
prompts, then one single-token forward per new token, computing logits only for the last position.
At GPT-2-small scale on a CPU this per-token overhead, not the matmuls, decides generation speed.

Shapes in comments: B batch, P prompt length (left-padded), R response length, T = P + R, V vocab,
D width.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model, PreTrainedTokenizerBase

from rlhfkit import cpukernel, fastgpt2
from rlhfkit import ppo_ops as ops
from rlhfkit.runtime import disable_dropout, trunk

# GPT-2 shapes by name (n_layer, n_embd, n_head); `tiny` comes from rlhfkit.tiny.
GPT2_SHAPES: dict[str, tuple[int, int, int]] = {
    "small": (12, 768, 12),
    "medium": (24, 1024, 16),
    "large": (36, 1280, 20),
}


@runtime_checkable
class BasePolicy(Protocol):
    """What :class:`rlhfkit.trainer.PPOTrainer` calls on a policy; :class:`GPT2Policy` is the
    reference implementation. Shapes: B batch, P prompt length, R response length, T = P + R.

    A policy is a ``torch.nn.Module`` (the trainer moves it, switches train/eval, checkpoints it)
    that also owns its tokenizer, its prompt data and its value function.
    """

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase: ...
    @property
    def model(self) -> nn.Module:
        """The language model (counted as "policy" in memory events)."""
        ...
    @property
    def value_head(self) -> nn.Module | None:
        """The value head, or None for a policy trained critic-free (GRPO, RLOO, ...)."""
        ...
    @property
    def critic(self) -> nn.Module | None:
        """A separate value trunk, or None when the value head sits on the policy's own trunk (or
        there is no value head)."""
        ...

    model_size: str
    max_length: int
    shared_value_trunk: bool
    temperature: float  # the trainer sets these three from the run's config before the first step
    top_p: float
    top_k: int

    # nn.Module's own surface that the loop uses
    def to(self, device: torch.device) -> Any: ...
    def train(self, mode: bool = True) -> Any: ...
    def eval(self) -> Any: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any: ...

    def train_prompts(self) -> list[str]:
        """Prompts the rollout samples from."""
        ...

    def eval_prompts(self) -> list[str]:
        """Held-out prompts for evaluation."""
        ...

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the optimizer updates (language model, value head, critic)."""
        ...

    def drop_value_head(self) -> None:
        """Remove the value head and critic (a critic-free run neither trains nor stores them)."""
        ...

    def make_reference(self) -> nn.Module:
        """A frozen copy of the current language model (the KL anchor), in eval mode."""
        ...

    def reference_logprobs(self, reference: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                           prompt_len: int) -> torch.Tensor:
        """Log-probs (B, R) of the response tokens under ``reference`` (from :meth:`make_reference`)."""
        ...

    def encode_prompts(self, prompts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded prompt ids and attention mask, (B, P) each."""
        ...

    def decode(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> list[str]:
        """Text of each row of ``ids`` (B, R), keeping only positions where ``mask`` is 1."""
        ...

    def forward_scores(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int,
                       *, with_values: bool = True, with_entropy: bool = False,
                       activations: fastgpt2.SamplingActivations | None = None,
                       ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Log-probs, values and entropy (B, R) of the response tokens of (B, T) sequences
        (``activations``: what :meth:`generate_kept` kept of these very sequences, to build on)."""
        ...

    def generate(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, max_new_tokens: int, *,
                 generator: torch.Generator | None = None, stop_at_eos: bool = True,
                 temperature: float | None = None, top_p: float | None = None, top_k: int | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sampled response ids and mask (B, R); the mask is 1 up to and including EOS."""
        ...

    def generate_kept(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, max_new_tokens: int, *,
                      generator: torch.Generator | None = None, stop_at_eos: bool = True,
                      ) -> tuple[torch.Tensor, torch.Tensor, fastgpt2.SamplingActivations | None]:
        """:meth:`generate`, also keeping what a training forward over the sampled sequences would
        compute again (None where the sampler cannot)."""
        ...

    @property
    def scores_while_sampling(self) -> bool:
        """True when :meth:`generate_scored` returns log-probs and values (no scoring pass needed)."""
        ...

    def generate_scored(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, max_new_tokens: int, *,
                        generator: torch.Generator | None = None, stop_at_eos: bool = True,
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """:meth:`generate` plus the sampled tokens' log-probs and values, (B, R) each."""
        ...

    def generate_scored_kept(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, max_new_tokens: int, *,
                             generator: torch.Generator | None = None, stop_at_eos: bool = True,
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None,
                                        fastgpt2.SamplingActivations | None]:
        """:meth:`generate_scored`, plus what :meth:`generate_kept` keeps (None where the sampler cannot)."""
        ...


class GPT2Policy(nn.Module):
    """GPT-2 policy network.

    Args:
        model_size: ``tiny`` (offline: shipped tokenizer and prompts, reproducible warm-start),
            ``small``/``medium``/``large`` (GPT-2 124M/355M/774M shapes) or ``custom``.
        max_length: maximum prompt + response length in tokens.
        temperature, top_p, top_k: sampling parameters.
        n_layer, n_embd, n_head, vocab_size: explicit shape (overrides ``model_size``).
        config: a ``transformers.GPT2Config`` (overrides the above).
        pretrained: hub name or local directory loaded with ``from_pretrained`` (weights and
            tokenizer); the path GPU boxes use for real GPT-2 checkpoints.
        tokenizer: a tokenizer to use instead of the default one.
        warm_start: ``tiny`` only — start from the project's supervised warm-start.
        shared_value_trunk: value head on the policy trunk (True) or a separate critic (False).
        with_value_head: False builds neither value head nor critic (the critic-free algorithms).
        prompts: (train, eval) prompt lists to use instead of the shipped ones.
    """

    def __init__(
        self,
        model_size: str = "tiny",
        max_length: int = 128,
        temperature: float = 1.0,
        top_p: float = 0.9,
        *,
        top_k: int = 0,
        n_layer: int | None = None,
        n_embd: int | None = None,
        n_head: int | None = None,
        vocab_size: int | None = None,
        config: GPT2Config | None = None,
        pretrained: str | Path | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        warm_start: bool = True,
        shared_value_trunk: bool = True,
        with_value_head: bool = True,
        gradient_checkpointing: bool = False,
        prompts: tuple[list[str], list[str]] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.model_size = model_size
        self.max_length = max_length
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = top_k
        self.shared_value_trunk = shared_value_trunk
        self.warm_start_info: dict[str, Any] | None = None

        torch.manual_seed(seed)
        if pretrained is not None:
            from transformers import AutoTokenizer

            self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(str(pretrained))
            self.model = GPT2LMHeadModel.from_pretrained(str(pretrained))
        else:
            if tokenizer is None:
                from rlhfkit import tiny

                tokenizer = tiny.get_tokenizer()
                use_warm_start = model_size == "tiny" and warm_start
            else:
                use_warm_start = False  # the warm-start is defined for the shipped tokenizer only
            self.tokenizer = tokenizer
            if config is None:
                config = self._shape_config(model_size, n_layer, n_embd, n_head, vocab_size)
            self.model = GPT2LMHeadModel(config)
            if use_warm_start and config.vocab_size == len(self.tokenizer):
                from rlhfkit import tiny

                if not tiny.cache_path(self.model, self.tokenizer, seed=seed).exists():
                    print("rlhfkit: building the tiny model's warm-start (one-time, a few minutes on a CPU; "
                          f"cached in {tiny.warmstart.default_cache_dir()})", file=sys.stderr, flush=True)
                self.warm_start_info = tiny.warm_start(self.model, self.tokenizer, seed=seed)
        disable_dropout(self.model)  # checkpoints ship with 0.1; see runtime.disable_dropout
        _prepare_tokenizer(self.tokenizer)
        self.model.config.eos_token_id = self.tokenizer.eos_token_id
        self.model.config.bos_token_id = self.tokenizer.bos_token_id
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.generation_config.pad_token_id = self.tokenizer.pad_token_id
        if gradient_checkpointing:
            self.model.gradient_checkpointing_enable()

        d = self.model.config.n_embd
        # The value head starts at zero, as in lm-human-preferences and OpenRLHF: V = 0 before any
        # update, so the first advantages are the returns themselves (not returns minus a random
        # function of the prompt), and the value loss sends no gradient into a shared trunk until
        # the head has learned something. Explained variance starts at 0 instead of below it.
        self.value_head: nn.Linear | None = None
        self.critic: GPT2Model | None = None
        if with_value_head:
            self.value_head = nn.Linear(d, 1)
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)
            if not shared_value_trunk:  # a separate critic starts as a copy of the initial trunk (TRL/OpenRLHF)
                self.critic = copy.deepcopy(self.model.transformer)
        self._prompts = prompts

    # ------------------------------------------------------------------ construction helpers
    def _shape_config(self, size: str, n_layer: int | None, n_embd: int | None, n_head: int | None,
                      vocab_size: int | None) -> GPT2Config:
        base: dict[str, Any]
        if size in GPT2_SHAPES:
            L, D, H = GPT2_SHAPES[size]
            base = {"n_layer": L, "n_embd": D, "n_head": H, "n_positions": 1024}
        else:
            from rlhfkit import tiny

            base = dict(tiny.TINY_SHAPE)
        if n_layer:
            base["n_layer"] = n_layer
        if n_embd:
            base["n_embd"] = n_embd
        if n_head:
            base["n_head"] = n_head
        base["n_positions"] = max(int(base.get("n_positions", 128)), self.max_length)
        vocab = vocab_size or len(self.tokenizer)
        return GPT2Config(vocab_size=vocab, bos_token_id=self.tokenizer.bos_token_id,
                          eos_token_id=self.tokenizer.eos_token_id, resid_pdrop=0.0, embd_pdrop=0.0,
                          attn_pdrop=0.0, **base)

    @classmethod
    def from_run_config(cls, model_cfg: Any, gen_cfg: Any, seed: int = 0, *, with_value_head: bool = True,
                        ) -> GPT2Policy:
        """Build from ``RunConfig.model`` and ``RunConfig.generation`` (no value head for a
        critic-free run: ``with_value_head=rlhfkit.config.uses_critic(cfg)``)."""
        return cls(
            model_size=model_cfg.size, max_length=model_cfg.max_length, temperature=gen_cfg.temperature,
            top_p=gen_cfg.top_p, top_k=gen_cfg.top_k, n_layer=model_cfg.n_layer, n_embd=model_cfg.n_embd,
            n_head=model_cfg.n_head, vocab_size=model_cfg.vocab_size, pretrained=model_cfg.pretrained,
            warm_start=model_cfg.warm_start, shared_value_trunk=model_cfg.shared_value_trunk,
            with_value_head=with_value_head,
            gradient_checkpointing=model_cfg.gradient_checkpointing, seed=seed,
        )

    # ------------------------------------------------------------------ data
    def train_prompts(self) -> list[str]:
        if self._prompts is not None:
            return self._prompts[0]
        from rlhfkit import tiny

        return tiny.load_prompts("train")

    def eval_prompts(self) -> list[str]:
        if self._prompts is not None:
            return self._prompts[1]
        from rlhfkit import tiny

        return tiny.load_prompts("eval")

    def make_reference(self) -> GPT2LMHeadModel:
        """A frozen copy of the current language model (the KL anchor)."""
        ref = copy.deepcopy(self.model)
        ref.eval()
        ref.requires_grad_(False)
        return ref

    def reference_logprobs(self, reference: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                           prompt_len: int) -> torch.Tensor:
        """Log-probs (B, R) of the response tokens under the frozen ``reference`` (a GPT-2 LM from
        :meth:`make_reference`), tempered like the policy's, on the lean forward when it applies."""
        # positions P-1 .. T-2 (the last token predicts nothing here, and causality keeps it from the rest)
        fed, fed_mask = input_ids[:, :-1], attention_mask[:, :-1]
        h = trunk(reference.transformer, fed, fed_mask, fastgpt2.position_ids_from_mask(fed_mask),  # type: ignore[arg-type]
                  start=prompt_len - 1, prefix_len=prompt_len)  # (B, R, D)
        logits = fastgpt2.lm_logits(reference.lm_head, h)  # type: ignore[arg-type]
        if self.temperature != 1.0:
            logits = logits / self.temperature
        return ops.logprobs_from_logits(logits, input_ids[:, prompt_len:])

    def encode_prompts(self, prompts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        ids = enc["input_ids"].to(device)  # (B, P) left-padded
        mask = enc["attention_mask"].to(device)
        return ids, mask

    def decode(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> list[str]:
        out = []
        for i, row in enumerate(ids.tolist()):
            if mask is not None:
                row = [t for t, m in zip(row, mask[i].tolist(), strict=True) if m]
            out.append(str(self.tokenizer.decode(row, skip_special_tokens=True)).strip())
        return out

    # ------------------------------------------------------------------ forward passes
    def forward_scores(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int,
                       *, with_values: bool = True, with_entropy: bool = False,
                       activations: fastgpt2.SamplingActivations | None = None,
                       ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Log-probs (and values, entropy) of the response tokens in one pass.

        input_ids/attention_mask (B, T) with T = P + R; returns (B, R) tensors. The logits at
        position t predict token t+1, so the response's scores come from positions P-1 .. T-2.
        ``activations``: kept by :meth:`generate_kept` while sampling these sequences with the
        weights the policy holds now; the forward then builds on the matmul outputs they hold
        (:func:`rlhfkit.fastgpt2.sampled_hidden_states`) where the lean forward applies and they
        match the sequences, and runs in full otherwise.
        """
        tr = self.model.transformer
        fed, fed_mask = input_ids[:, :-1], attention_mask[:, :-1]
        if (activations is not None and fastgpt2.supports(tr)
                and activations.matches(input_ids, attention_mask)):
            h = fastgpt2.sampled_hidden_states(tr, activations)  # (B, R, D)
            logits = fastgpt2.sampled_logits(self.model.lm_head, h, activations)
        else:
            # positions P-1 .. T-2 (the last token predicts nothing here, and causality keeps it from
            # the rest); a prompt several rows share (a GRPO group) runs once
            h = trunk(tr, fed, fed_mask, fastgpt2.position_ids_from_mask(fed_mask), start=prompt_len - 1,
                      prefix_len=prompt_len)  # (B, R, D)
            logits = fastgpt2.lm_logits(self.model.lm_head, h)  # (B, R, V)
        if self.temperature != 1.0:
            logits = logits / self.temperature
        labels = input_ids[:, prompt_len:]
        # one log-softmax serves both the log-probs and the entropy
        logprobs, entropy = fastgpt2.logprobs_and_entropy(logits, labels, with_entropy)
        values = None
        if with_values and self.value_head is not None:  # critic-free policies have none
            if self.critic is None:
                values = self.value_head(h).squeeze(-1)
            else:
                hc = trunk(self.critic, fed, fed_mask, fastgpt2.position_ids_from_mask(fed_mask),
                           start=prompt_len - 1, prefix_len=prompt_len)
                values = self.value_head(hc).squeeze(-1)
        return logprobs, values, entropy

    @torch.no_grad()
    def generate(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, max_new_tokens: int, *,
                 generator: torch.Generator | None = None, stop_at_eos: bool = True,
                 temperature: float | None = None, top_p: float | None = None, top_k: int | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample responses with a KV cache. Returns (response_ids, response_mask), both (B, R).

        response_mask is 1 up to and including EOS; tokens after EOS are padding.
        """
        out = self._sample(prompt_ids, prompt_mask, max_new_tokens, generator=generator, stop_at_eos=stop_at_eos,
                           temperature=temperature, top_p=top_p, top_k=top_k)
        return out.tokens, out.mask

    @torch.no_grad()
    def generate_kept(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, max_new_tokens: int, *,
                      generator: torch.Generator | None = None, stop_at_eos: bool = True,
                      ) -> tuple[torch.Tensor, torch.Tensor, fastgpt2.SamplingActivations | None]:
        """:meth:`generate`, plus what the lean sampler kept for :meth:`forward_scores` to build on
        (:class:`rlhfkit.fastgpt2.SamplingActivations`; None on the transformers path)."""
        out = self._sample(prompt_ids, prompt_mask, max_new_tokens, generator=generator, stop_at_eos=stop_at_eos,
                           keep=self._can_keep)
        return out.tokens, out.mask, out.activations

    @property
    def _can_keep(self) -> bool:
        """Whether keeping the decode's matmul outputs serves anything: the training forward that
        would build on them (:meth:`forward_scores`) takes the lean path."""
        return fastgpt2.supports(self.model.transformer, training=True)

    @property
    def scores_while_sampling(self) -> bool:
        """True when :meth:`generate_scored` returns values as well as log-probs (shared value trunk,
        model on the lean sampler), so a step can skip the policy's scoring forward."""
        return self.critic is None and fastgpt2.supports(self.model.transformer)

    @torch.no_grad()
    def generate_scored(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, max_new_tokens: int, *,
                        generator: torch.Generator | None = None, stop_at_eos: bool = True,
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """:meth:`generate`, plus what a scoring pass would compute for the sampled tokens:
        (response_ids, response_mask, logprobs, values), each (B, R).

        ``logprobs`` are the sampled tokens' log-probabilities under the policy's tempered,
        unfiltered distribution (what :meth:`forward_scores` returns); ``values`` come from the
        shared-trunk value head on the decode steps' hidden states, or are None where the sampler
        has no hidden states (the transformers fallback) or a separate critic owns the values.
        """
        ids, mask, logprobs, values, _ = self._generate_scored(prompt_ids, prompt_mask, max_new_tokens,
                                                               generator=generator, stop_at_eos=stop_at_eos)
        return ids, mask, logprobs, values

    @torch.no_grad()
    def generate_scored_kept(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, max_new_tokens: int, *,
                             generator: torch.Generator | None = None, stop_at_eos: bool = True,
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None,
                                        fastgpt2.SamplingActivations | None]:
        """:meth:`generate_scored`, plus what :meth:`generate_kept` keeps for :meth:`forward_scores`:
        one decode gives π_old (and values) for scoring and the matmul outputs for the update's first
        forward."""
        return self._generate_scored(prompt_ids, prompt_mask, max_new_tokens, generator=generator,
                                     stop_at_eos=stop_at_eos, keep=self._can_keep)

    def _generate_scored(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, max_new_tokens: int, *,
                         generator: torch.Generator | None, stop_at_eos: bool, keep: bool = False,
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None,
                                    fastgpt2.SamplingActivations | None]:
        out = self._sample(prompt_ids, prompt_mask, max_new_tokens, generator=generator, stop_at_eos=stop_at_eos,
                           scored=True, keep=keep)
        assert out.logprobs is not None
        values = None
        if self.value_head is not None and self.critic is None and out.hidden is not None:
            values = self.value_head(out.hidden).squeeze(-1)  # (B, R)
        return out.tokens, out.mask, out.logprobs, values, out.activations

    def _sample(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, max_new_tokens: int, *,
                generator: torch.Generator | None, stop_at_eos: bool, scored: bool = False, keep: bool = False,
                temperature: float | None = None, top_p: float | None = None, top_k: int | None = None) -> Samples:
        """:func:`sample` with this policy's tokenizer and sampling settings (each overridable)."""
        return sample(self.model, prompt_ids, prompt_mask, max_new_tokens,
                      eos_token_id=self.tokenizer.eos_token_id, pad_token_id=self.tokenizer.pad_token_id,
                      temperature=self.temperature if temperature is None else temperature,
                      top_p=self.top_p if top_p is None else top_p,
                      top_k=self.top_k if top_k is None else top_k,
                      generator=generator, stop_at_eos=stop_at_eos, scored=scored, keep=keep)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def drop_value_head(self) -> None:
        self.value_head = None
        self.critic = None


def shares_prompts(policy: BasePolicy, reference: nn.Module) -> tuple[bool, bool]:
    """Whether the no-grad forwards (the decoder's prefill; reference, and policy and critic where
    scoring runs them) and the update's run a prompt that rows share once: a :class:`GPT2Policy` on
    the lean forward does (:func:`rlhfkit.fastgpt2.hidden_states` with ``prefix_len``)."""
    if not isinstance(policy, GPT2Policy):
        return False, False
    ref = getattr(reference, "transformer", None)
    return (fastgpt2.supports(ref, training=False),
            fastgpt2.supports(policy.model.transformer, training=True))


def truncate_at_token(ids: torch.Tensor, mask: torch.Tensor, token_id: int, pad_token_id: int | None,
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut each response after the first ``token_id`` (kept): (B, R) ids and mask -> the same with
    later positions masked out and set to padding. Rows without the token are unchanged."""
    R = ids.shape[1]
    hit = (ids == token_id) & mask.bool()  # (B, R)
    pos = torch.arange(R, device=ids.device).unsqueeze(0)  # (1, R)
    first = torch.where(hit.any(1), hit.long().argmax(1), torch.full_like(ids[:, 0], R))  # (B,)
    keep = mask.bool() & (pos <= first.unsqueeze(1))
    pad = pad_token_id if pad_token_id is not None else 0
    return torch.where(keep, ids, torch.full_like(ids, pad)), keep.to(mask.dtype)


def stop_token_id(tokenizer: PreTrainedTokenizerBase, stop_token: str | None) -> int | None:
    """The id of ``generation.stop_token`` (None when off); ValueError unless it is one token."""
    if stop_token is None:
        return None
    ids = tokenizer(stop_token, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"generation.stop_token {stop_token!r} is {len(ids)} tokens for this tokenizer; "
                         "it must be exactly one")
    return int(ids[0])


def _prepare_tokenizer(tok: PreTrainedTokenizerBase) -> None:
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"


def _cache_kwarg() -> str:
    """transformers >= 5.2x calls the KV cache ``cache``; older releases ``past_key_values``."""
    import inspect

    return "cache" if "cache" in inspect.signature(GPT2LMHeadModel.forward).parameters else "past_key_values"


_CACHE_KW = _cache_kwarg()


def _get_cache(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _filter_logits(logits: torch.Tensor, top_p: float, top_k: int) -> torch.Tensor:
    """Mask logits outside top-k / the top-p nucleus with -inf. (B, V) -> (B, V)."""
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        remove = cum - sorted_logits.softmax(-1) >= top_p  # mass before this token already reaches top_p
        sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, idx, sorted_logits)
    return logits


def _draw(probs: torch.Tensor, generator: torch.Generator | None, u: torch.Tensor | None = None) -> torch.Tensor:
    """One token per row from (B, V) probabilities by inverting the CDF with one uniform per row.

    The same distribution as ``torch.multinomial(probs, 1)``, which on CPU draws B*V exponential
    variates per call (~2 ms at B=64, V=2k: 15% of a generation step at small shapes); this draws B
    uniforms. The CDF is summed in float64 so each token's interval is its probability to ~1e-16,
    and ``side="right"`` never lands on a zero-probability token. ``u``: the (B, 1) float64
    uniforms to invert at, else drawn from ``generator``.
    """
    cdf = probs.double().cumsum(-1)  # (B, V)
    total = cdf[:, -1:]
    if u is None:
        u = torch.rand(probs.shape[0], 1, generator=generator, device=probs.device, dtype=torch.float64)
    x = torch.minimum(u * total, torch.nextafter(total, torch.zeros_like(total)))  # strictly below the total
    return torch.searchsorted(cdf, x, right=True).squeeze(1)


def _sample_step(logits: torch.Tensor, filtered: torch.Tensor, generator: torch.Generator | None,
                 scored: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One token per row drawn from ``filtered`` (B, V) (``logits`` after top-k / top-p, or the same
    tensor), and with ``scored`` its log-probability under ``logits`` (before filtering).

    Where the compiled kernels run (:func:`rlhfkit.fastgpt2.kernels_for`) one pass per row draws
    the token and takes its log-softmax (:func:`rlhfkit.cpukernel.sample`: the same inverse CDF as
    :func:`_draw`, from the same uniform); else a softmax, :func:`_draw` and a log-softmax.
    """
    if fastgpt2.kernels_for(filtered) and cpukernel.samples(filtered):
        u = torch.rand(filtered.shape[0], 1, generator=generator, dtype=torch.float64)
        tok, logprob = cpukernel.sample(filtered, u)
        if not scored:
            return tok, None
        return tok, logprob if filtered is logits else ops.logprobs_from_logits(logits.float(), tok)
    tok = _draw(torch.softmax(filtered, dim=-1), generator)
    return tok, ops.logprobs_from_logits(logits.float(), tok) if scored else None


class _HFDecoder:
    """The transformers KV-cache path of :func:`sample` (fallback, and the reference in tests)."""

    def __init__(self, model: GPT2LMHeadModel, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> None:
        self.model = model
        self.attn = prompt_mask
        position_ids = fastgpt2.position_ids_from_mask(prompt_mask)
        out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=position_ids, use_cache=True,
                    logits_to_keep=1)
        self.past = _get_cache(out)
        self.logits = out.logits[:, -1]  # (B, V)
        self.next_pos = position_ids[:, -1:] + 1

    def step(self, tok: torch.Tensor) -> torch.Tensor:
        B = tok.shape[0]
        self.attn = torch.cat([self.attn, torch.ones((B, 1), dtype=self.attn.dtype, device=tok.device)], dim=1)
        out = self.model(input_ids=tok.unsqueeze(1), attention_mask=self.attn, position_ids=self.next_pos,
                         use_cache=True, **{_CACHE_KW: self.past})
        self.past = _get_cache(out)
        self.next_pos = self.next_pos + 1
        return out.logits[:, -1]


@dataclass
class Samples:
    """What :func:`sample` returns: tokens and mask (B, R); with ``scored``, the sampled tokens'
    log-probs (B, R) and the trunk's final hidden state at the position that predicted each token
    (B, R, D; None on the transformers path)."""

    tokens: torch.Tensor
    mask: torch.Tensor
    logprobs: torch.Tensor | None = None
    hidden: torch.Tensor | None = None
    activations: fastgpt2.SamplingActivations | None = None  # with ``keep``, on the lean path


@torch.no_grad()
def sample(model: GPT2LMHeadModel, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, max_new_tokens: int, *,
           eos_token_id: int | None, pad_token_id: int | None, temperature: float = 1.0, top_p: float = 1.0,
           top_k: int = 0, generator: torch.Generator | None = None, stop_at_eos: bool = True,
           lean: bool = True, scored: bool = False, keep: bool = False) -> Samples:
    """KV-cache sampling loop: prefill once, then one single-token forward per new token.

    With ``lean`` (default) and a model :func:`rlhfkit.fastgpt2.supports`, the forwards run on
    :class:`rlhfkit.fastgpt2.Decoder` (static in-place KV cache, no transformers mask/cache
    machinery); otherwise on the transformers module with its cache. Both give the same logits up to
    fp32 rounding, hence the same tokens for the same ``generator``.

    With ``scored``, each step also keeps the sampled token's log-probability under the tempered
    distribution *before* top-k/top-p filtering (the distribution PPO's ratio is taken against) and,
    on the lean path, the hidden state that produced the logits: the numbers a scoring forward over
    the finished sequences would compute, here read off the sampling pass.

    With ``keep``, on the lean path, the decoder also keeps each block's matmul outputs and the
    logits (``Samples.activations``) for a training forward over the sampled sequences to build on.
    """
    B = prompt_ids.shape[0]
    device = prompt_ids.device
    pad = pad_token_id if pad_token_id is not None else 0
    decoder: fastgpt2.Decoder | _HFDecoder
    if lean and fastgpt2.supports(model.transformer):
        decoder = fastgpt2.Decoder(model, prompt_ids, prompt_mask, max_new_tokens, keep=keep)
    else:
        decoder = _HFDecoder(model, prompt_ids, prompt_mask)
    next_logits = decoder.logits  # (B, V)
    tokens = torch.full((B, max_new_tokens), pad, dtype=torch.long, device=device)
    alive = torch.ones(B, dtype=torch.bool, device=device)
    lengths = torch.full((B,), max_new_tokens, dtype=torch.long, device=device)
    logprobs: list[torch.Tensor] = []
    hidden: list[torch.Tensor] = []
    for t in range(max_new_tokens):
        logits = next_logits / temperature if temperature != 1.0 else next_logits
        tok, logprob = _sample_step(logits, _filter_logits(logits, top_p, top_k), generator, scored)  # (B,)
        tok = torch.where(alive, tok, torch.full_like(tok, pad))
        tokens[:, t] = tok
        if logprob is not None:
            logprobs.append(logprob)
            h = getattr(decoder, "hidden", None)
            if h is not None:
                hidden.append(h)
        if stop_at_eos and eos_token_id is not None:
            ended = alive & (tok == eos_token_id)
            lengths = torch.where(ended, torch.full_like(lengths, t + 1), lengths)
            alive = alive & ~ended
            if not bool(alive.any()):  # a CPU-GPU sync point, once per token; worth it to stop early
                tokens = tokens[:, : t + 1]
                break
        if t + 1 == max_new_tokens:
            break
        next_logits = decoder.step(tok)
    R = tokens.shape[1]
    resp_mask = (torch.arange(R, device=device).unsqueeze(0) < lengths.clamp(max=R).unsqueeze(1)).long()
    kept = decoder.activations() if isinstance(decoder, fastgpt2.Decoder) else None
    if not scored:
        return Samples(tokens, resp_mask, activations=kept)
    return Samples(tokens, resp_mask, torch.stack(logprobs, 1), torch.stack(hidden, 1) if hidden else None, kept)


def _as_base_policy(policy: GPT2Policy) -> BasePolicy:
    """Never called: lets mypy check that GPT2Policy satisfies the BasePolicy protocol."""
    return policy
