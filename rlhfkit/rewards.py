"""Reward models.

A reward model maps (prompt, response) pairs to one scalar per response. Subclass
:class:`BaseRewardModel` and implement ``compute_reward(responses, prompts=None) -> torch.Tensor``,
exactly as in the product README. The trainer calls :meth:`BaseRewardModel.score`, which by default
decodes text and calls ``compute_reward``; token-level models (:class:`ModelReward`) override it to
skip the text round-trip.

Provided: :class:`SentimentReward` (VADER compound score, lexicon shipped with ``vadersentiment``),
:class:`LengthReward` (closeness to a target word count) and :class:`ModelReward` (a GPT-2 backbone
with a scalar head, trainable from preference pairs with a Bradley–Terry loss).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GPT2Config, GPT2Model, PreTrainedTokenizerBase

from rlhfkit.runtime import disable_dropout


class BaseRewardModel:
    """Base class: implement ``compute_reward``."""

    name = "custom"

    def __init__(self) -> None:
        self.device = torch.device("cpu")

    def compute_reward(self, responses: list[str], prompts: list[str] | None = None) -> torch.Tensor:
        """One score per response, shape (B,)."""
        raise NotImplementedError

    def score(self, *, prompts: list[str], responses: list[str], query_ids: torch.Tensor | None = None,
              response_ids: torch.Tensor | None = None, response_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Called by the trainer. Token-level models may use the ids and skip text."""
        out = self.compute_reward(responses, prompts)
        return torch.as_tensor(out, dtype=torch.float32).reshape(-1)

    def to(self, device: torch.device | str) -> BaseRewardModel:
        self.device = torch.device(device)
        return self

    def modules_for_memory(self) -> list[nn.Module]:
        """Modules whose weights count as the reward model's memory (none for lexicon rewards)."""
        return []


class SentimentReward(BaseRewardModel):
    """VADER compound sentiment of the response, in [-1, 1] (positive is rewarded)."""

    name = "sentiment"

    def __init__(self, include_prompt: bool = False) -> None:
        super().__init__()
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._vader = SentimentIntensityAnalyzer()
        self.include_prompt = include_prompt

    def compute_reward(self, responses: list[str], prompts: list[str] | None = None) -> torch.Tensor:
        texts = responses
        if self.include_prompt and prompts is not None:
            texts = [f"{p} {r}" for p, r in zip(prompts, responses, strict=True)]
        return torch.tensor([self._vader.polarity_scores(t)["compound"] for t in texts], dtype=torch.float32)


class LengthReward(BaseRewardModel):
    """1 / (1 + |words - target_length|): 1 at the target, falling off on both sides."""

    name = "length"

    def __init__(self, target_length: int = 50) -> None:
        super().__init__()
        self.target_length = target_length

    def compute_reward(self, responses: list[str], prompts: list[str] | None = None) -> torch.Tensor:
        return torch.tensor([1.0 / (1.0 + abs(len(r.split()) - self.target_length)) for r in responses])


class FunctionReward(BaseRewardModel):
    """Wrap a plain function ``f(responses, prompts) -> list[float]``."""

    def __init__(self, fn: Callable[[list[str], list[str] | None], Sequence[float]], name: str = "function") -> None:
        super().__init__()
        self.fn = fn
        self.name = name

    def compute_reward(self, responses: list[str], prompts: list[str] | None = None) -> torch.Tensor:
        return torch.tensor(list(self.fn(responses, prompts)), dtype=torch.float32)


class RewardNet(nn.Module):
    """GPT-2 trunk + scalar head read at the last real token."""

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.config = config
        self.transformer = GPT2Model(config)
        self.head = nn.Linear(config.n_embd, 1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prefix_len: int = 0) -> torch.Tensor:
        """(B, T) left- or right-padded ids -> (B,) scores. ``prefix_len``: the first columns hold a
        prompt rows may share, run once per distinct prompt (see :func:`rlhfkit.fastgpt2.hidden_states`)."""
        from rlhfkit import fastgpt2

        position_ids = fastgpt2.position_ids_from_mask(attention_mask)
        # index of the last real token in each row (works for left and right padding)
        T = attention_mask.shape[1]
        last = T - 1 - attention_mask.flip(-1).argmax(-1)
        if fastgpt2.supports(self.transformer):  # same math and weights, less work: see hidden_states(at=)
            h_last = fastgpt2.hidden_states(self.transformer, input_ids, attention_mask, position_ids, at=last,
                                            prefix_len=prefix_len)
        else:
            h = self.transformer(input_ids=input_ids, attention_mask=attention_mask,
                                 position_ids=position_ids).last_hidden_state
            h_last = h[torch.arange(h.shape[0], device=h.device), last]
        return self.head(h_last).squeeze(-1)


class ModelReward(BaseRewardModel):
    """A learned reward model: GPT-2 backbone of any shape with a scalar head.

    The head reads the hidden state of the last real token of ``prompt response`` *without* EOS,
    both when ``train-rm`` fits it and when PPO scores sampled token ids (:meth:`score` masks out the
    EOS the sampler appended): one position for training and scoring, so a response's score does
    not depend on whether it stopped. Whether to stop is then left to the KL anchor and, when set,
    ``generation.missing_eos_penalty``. Dropout is off (a reward must be a function of the text).

    Build one from a shape (``n_layer``, ``n_embd``, ``n_head``, ``vocab_size``) or load one saved by
    :meth:`save` / ``rlhfkit train-rm`` with :meth:`load`.
    """

    name = "model"

    def __init__(self, tokenizer: PreTrainedTokenizerBase, *, config: GPT2Config | None = None,
                 n_layer: int = 4, n_embd: int = 256, n_head: int = 4, vocab_size: int | None = None,
                 n_positions: int = 256, seed: int = 0) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        torch.manual_seed(seed)
        cfg = config or GPT2Config(vocab_size=vocab_size or len(tokenizer), n_layer=n_layer, n_embd=n_embd,
                                   n_head=n_head, n_positions=n_positions, resid_pdrop=0.0, embd_pdrop=0.0,
                                   attn_pdrop=0.0)
        self.net = RewardNet(cfg)
        disable_dropout(self.net)
        self.net.eval()

    def to(self, device: torch.device | str) -> ModelReward:
        super().to(device)
        self.net.to(self.device)
        return self

    def modules_for_memory(self) -> list[nn.Module]:
        return [self.net]

    @property
    def flops_per_token(self) -> float:
        """Model FLOPs of scoring one token (block matmuls, as :mod:`rlhfkit.mfu` counts them): the
        lean forward runs only q/k/v of its last layer at positions it does not read (3/4 of that
        layer skipped), transformers' forward every layer in full."""
        from rlhfkit import fastgpt2
        from rlhfkit.mfu import ModelShape

        shape = ModelShape.of(self.net.config)
        skipped = 0.75 / shape.n_layer if fastgpt2.supports(self.net.transformer) else 0.0
        return 2.0 * shape.block_params * (1.0 - skipped)

    @torch.no_grad()
    def compute_reward(self, responses: list[str], prompts: list[str] | None = None) -> torch.Tensor:
        texts = responses if prompts is None else [f"{p} {r}" for p, r in zip(prompts, responses, strict=True)]
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        return self.net(enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)).float().cpu()

    @torch.no_grad()
    def score(self, *, prompts: list[str], responses: list[str], query_ids: torch.Tensor | None = None,
              response_ids: torch.Tensor | None = None, response_mask: torch.Tensor | None = None) -> torch.Tensor:
        if query_ids is None or response_ids is None or response_mask is None or \
                response_ids.max() >= self.net.config.vocab_size:
            return self.compute_reward(responses, prompts)
        qmask = (query_ids != self.tokenizer.pad_token_id).long() if self.tokenizer.pad_token_id is not None \
            else torch.ones_like(query_ids)
        # Read the last response token *before* EOS: train-rm fits the head on texts without EOS, so
        # that is the position the score was learned at (and what compute_reward on the text reads).
        eos = self.tokenizer.eos_token_id
        rmask = response_mask * (response_ids != eos).long() if eos is not None else response_mask
        ids = torch.cat([query_ids, response_ids], 1).to(self.device)
        mask = torch.cat([qmask, rmask.to(qmask.device)], 1).to(self.device)
        return self.net(ids, mask, prefix_len=query_ids.shape[1]).float().cpu()

    def save(self, path: str | Path, info: dict[str, Any] | None = None) -> None:
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        torch.save(self.net.state_dict(), p / "reward_model.pt")
        (p / "config.json").write_text(json.dumps({"gpt2": self.net.config.to_dict(), "info": info or {}}, indent=2))

    @classmethod
    def load(cls, path: str | Path, tokenizer: PreTrainedTokenizerBase) -> ModelReward:
        p = Path(path)
        meta = json.loads((p / "config.json").read_text())
        model = cls(tokenizer, config=GPT2Config(**meta["gpt2"]))
        model.net.load_state_dict(torch.load(p / "reward_model.pt", map_location="cpu", weights_only=True))
        return model


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(r_chosen - r_rejected), averaged: the pairwise preference likelihood."""
    return -F.logsigmoid(chosen - rejected).mean()


def train_reward_model(model: ModelReward, pairs: list[tuple[str, str]], *, epochs: int = 2, batch_size: int = 32,
                       lr: float = 3e-4, seed: int = 0, eval_pairs: list[tuple[str, str]] | None = None,
                       on_progress: Callable[[dict[str, float]], None] | None = None) -> dict[str, float]:
    """Fit ``model`` on (chosen, rejected) text pairs with the Bradley–Terry loss.

    Returns the final training loss and, when ``eval_pairs`` are given, held-out pairwise accuracy.
    """
    rng = random.Random(seed)
    torch.manual_seed(seed)
    net, tok = model.net, model.tokenizer
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    t0 = time.perf_counter()
    loss_val = math.nan
    step = 0
    for _epoch in range(epochs):
        order = list(range(len(pairs)))
        rng.shuffle(order)
        for i in range(0, len(order), batch_size):
            batch = [pairs[j] for j in order[i : i + batch_size]]
            enc = tok([c for c, _ in batch] + [r for _, r in batch], return_tensors="pt", padding=True,
                      add_special_tokens=False)
            scores = net(enc["input_ids"].to(model.device), enc["attention_mask"].to(model.device))
            n = len(batch)
            loss = bradley_terry_loss(scores[:n], scores[n:])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            loss_val = loss.item()
            step += 1
            if on_progress is not None:
                on_progress({"step": step, "loss": loss_val})
    net.eval()
    result = {"loss": loss_val, "steps": float(step), "seconds": time.perf_counter() - t0}
    if eval_pairs:
        result["eval_accuracy"] = preference_accuracy(model, eval_pairs)
    return result


@torch.no_grad()
def preference_accuracy(model: ModelReward, pairs: list[tuple[str, str]]) -> float:
    chosen = model.compute_reward([c for c, _ in pairs])
    rejected = model.compute_reward([r for _, r in pairs])
    return float((chosen > rejected).float().mean())


def build_reward(cfg: Any, tokenizer: PreTrainedTokenizerBase | None = None) -> BaseRewardModel:
    """Reward model from ``RunConfig.reward``."""
    reward: BaseRewardModel
    if cfg.kind == "sentiment":
        reward = SentimentReward()
    elif cfg.kind == "length":
        reward = LengthReward(cfg.target_length)
    elif cfg.kind == "model":
        if tokenizer is None:
            raise ValueError("reward.kind=model needs the policy's tokenizer")
        reward = ModelReward.load(cfg.model_path, tokenizer) if cfg.model_path else ModelReward(tokenizer)
    else:  # pragma: no cover - guarded by the config's Literal
        raise ValueError(f"unknown reward.kind {cfg.kind!r}")
    if cfg.scale != 1.0:
        reward = _Scaled(reward, cfg.scale)
    return reward


class _Scaled(BaseRewardModel):
    def __init__(self, inner: BaseRewardModel, scale: float) -> None:
        super().__init__()
        self.inner, self.scale, self.name = inner, scale, inner.name

    def compute_reward(self, responses: list[str], prompts: list[str] | None = None) -> torch.Tensor:
        return self.inner.compute_reward(responses, prompts) * self.scale

    def score(self, **kw: Any) -> torch.Tensor:
        return self.inner.score(**kw) * self.scale

    def to(self, device: torch.device | str) -> _Scaled:
        self.inner.to(device)
        return self

    def modules_for_memory(self) -> list[nn.Module]:
        return self.inner.modules_for_memory()
