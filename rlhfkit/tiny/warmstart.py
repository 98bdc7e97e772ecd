"""The ``tiny`` shape and its reproducible supervised warm-start.

PPO from random weights spends its whole budget learning to spell. The warm-start is a short
next-token pass on the project's grammar corpus (:mod:`rlhfkit.tiny.corpus`) so that samples
read like English before PPO starts, while their sentiment stays balanced (the corpus is), which
leaves the reward room to move.

Reproducible by construction: the weights are re-initialised from ``seed`` (so the result does
not depend on how the caller built the model), the data order is seeded, and training runs on
the CPU on one thread (float reductions then happen in a fixed order), under bfloat16 autocast
with float32 master weights (≈ 2.5x faster on CPUs with native bf16). Bit-identical results are
promised on one machine and library stack; another CPU may differ in the last bits. The global
torch RNG is left untouched, so a cached and an uncached call leave the caller in the same state.

The resulting ``state_dict`` is cached under ``$RLHFKIT_CACHE`` (default ``~/.cache/rlhfkit``),
keyed by a hash of everything that determines it: shape, vocabulary, steps, seed, corpus
version and the recipe below. Weights are never committed to the repository.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerBase

from rlhfkit.tiny.corpus import CORPUS_VERSION, corpus

TINY_SHAPE: dict[str, int] = {"n_layer": 4, "n_embd": 256, "n_head": 4, "n_positions": 128}
"""The ``tiny`` GPT-2 shape (about 3.6 M parameters with the shipped ~1,600-word vocabulary)."""

DEFAULT_STEPS = 400
"""Optimizer steps of the default warm-start (a few minutes of one CPU thread; see benchmarks/NOTES_warmstart.md)."""

# The recipe. Changing any of these changes the weights: bump RECIPE_VERSION (part of the cache key).
RECIPE_VERSION = 1
BATCH_SIZE = 16  # rows per step
SEQ_LEN = 48  # tokens per row: whole sentences, each followed by EOS, packed left to right
LR = 3e-3
WARMUP_STEPS = 15
MIN_LR_FRACTION = 0.1  # cosine decay from LR to LR * MIN_LR_FRACTION
WEIGHT_DECAY = 0.01
GRAD_CLIP = 1.0


def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX-512 BF16 or AMX). Without either oneDNN
    emulates bf16 and the warm-start runs slower than in float32 (benchmarks/NOTES_warmstart.md),
    so it trains in float32 there (a different recipe: the choice is part of the cache key).

    Asked of the instruction sets themselves: oneDNN's own "bf16 supported"
    (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) also says yes on AVX-512 CPUs that only
    emulate it."""
    probes = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(bool(probe()) for probe in probes if probe is not None)


AUTOCAST_BF16 = native_bf16()  # bf16 autocast where native (faster than float32); master weights stay float32


def tiny_config(tokenizer: PreTrainedTokenizerBase) -> GPT2Config:
    """A GPT-2 config of :data:`TINY_SHAPE` for ``tokenizer`` (no dropout: RL wants exact log-probs)."""
    return GPT2Config(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        n_layer=TINY_SHAPE["n_layer"], n_embd=TINY_SHAPE["n_embd"], n_head=TINY_SHAPE["n_head"],
        n_positions=TINY_SHAPE["n_positions"],
    )


def default_cache_dir() -> Path:
    return Path(os.environ.get("RLHFKIT_CACHE") or Path.home() / ".cache" / "rlhfkit")


def _cache_key(config: GPT2Config, tokenizer: PreTrainedTokenizerBase, steps: int, seed: int) -> dict[str, Any]:
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return {
        "shape": {k: getattr(config, k) for k in ("n_layer", "n_embd", "n_head", "n_positions", "n_inner",
                                                   "activation_function", "layer_norm_epsilon",
                                                   "resid_pdrop", "embd_pdrop", "attn_pdrop",
                                                   "tie_word_embeddings", "scale_attn_weights")},
        "vocab_size": config.vocab_size,
        "vocab_sha": hashlib.sha256(json.dumps(vocab).encode()).hexdigest()[:16],
        "eos": tokenizer.eos_token_id,
        "steps": steps,
        "seed": seed,
        "corpus_version": CORPUS_VERSION,
        "recipe_version": RECIPE_VERSION,
        "autocast_bf16": AUTOCAST_BF16,
    }


def cache_path(model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerBase, *, steps: int = DEFAULT_STEPS,
               seed: int = 0, cache_dir: Path | None = None) -> Path:
    """Where :func:`warm_start` keeps (or would keep) the weights for these arguments."""
    key = _cache_key(model.config, tokenizer, steps, seed)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return Path(cache_dir or default_cache_dir()) / "tiny_warm_start" / f"{digest}.pt"


def _packed_rows(tokenizer: PreTrainedTokenizerBase, n_rows: int, seed: int) -> torch.Tensor:
    """(n_rows, SEQ_LEN) token ids: each row starts at a sentence start; -1 marks padding."""
    eos = tokenizer.eos_token_id
    sentences = corpus(n_rows * SEQ_LEN // 6, seed=seed)  # ~12 tokens per sentence: more than enough
    encoded = tokenizer(sentences, add_special_tokens=False)["input_ids"]
    rows = torch.full((n_rows, SEQ_LEN), -1, dtype=torch.long)
    r, col = 0, 0
    for ids in encoded:
        piece = [*ids, eos]
        if col + len(piece) > SEQ_LEN:
            r, col = r + 1, 0
            if r == n_rows:
                break
        rows[r, col : col + len(piece)] = torch.tensor(piece)
        col += len(piece)
    if (rows[:, 0] < 0).any():
        raise RuntimeError("warm-start corpus ran out before the rows were filled")
    return rows


def _lr_at(step: int, steps: int) -> float:
    if step < WARMUP_STEPS:
        return LR * (step + 1) / WARMUP_STEPS
    progress = (step - WARMUP_STEPS) / max(1, steps - WARMUP_STEPS)
    return LR * (MIN_LR_FRACTION + (1 - MIN_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress)))


def _train(model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerBase, steps: int, seed: int) -> dict[str, float]:
    torch.manual_seed(seed)
    fresh = GPT2LMHeadModel(model.config)  # re-initialise from the seed: the result is a function of the key
    model.load_state_dict(fresh.state_dict())
    del fresh
    rows = _packed_rows(tokenizer, steps * BATCH_SIZE, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.95), weight_decay=WEIGHT_DECAY)
    losses: list[float] = []
    model.train()
    for step in range(steps):
        b_rows = rows[step * BATCH_SIZE : (step + 1) * BATCH_SIZE]  # (B, T)
        b_mask = (b_rows >= 0).long()
        b_ids = b_rows.clamp_min(0)  # padding: any id, masked out of attention and loss
        b_labels = b_rows.masked_fill(b_rows < 0, -100)
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, steps)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=AUTOCAST_BF16):
            loss = model(input_ids=b_ids, attention_mask=b_mask, labels=b_labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        opt.step()
        losses.append(loss.item())
    tail = losses[-10:]
    return {"initial_loss": losses[0], "final_loss": sum(tail) / len(tail)}


def warm_start(model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerBase, *, steps: int = DEFAULT_STEPS,
               seed: int = 0, cache_dir: Path | None = None) -> dict[str, Any]:
    """Load (or compute and cache) the warm-start weights into ``model`` in place.

    Args:
        model: a GPT-2 LM whose vocabulary matches ``tokenizer`` (its current weights are ignored).
        tokenizer: the shipped tiny tokenizer (:func:`rlhfkit.tiny.get_tokenizer`).
        steps: optimizer steps (``BATCH_SIZE`` rows of ``SEQ_LEN`` tokens each).
        seed: seeds the initialisation and the corpus.
        cache_dir: defaults to ``$RLHFKIT_CACHE`` or ``~/.cache/rlhfkit``.

    Returns:
        ``{"cached": bool, "seconds": float (this call, wall clock), "final_loss": float (mean
        next-token cross-entropy of the last 10 steps, nats), "initial_loss": float, "steps": int,
        "path": str}``, plus ``"cpu_seconds"`` (process CPU time of the training) when not cached;
        on a machine shared with other work ``cpu_seconds`` is the honest single-thread cost.
    """
    if model.config.vocab_size < len(tokenizer):
        raise ValueError(f"model vocabulary ({model.config.vocab_size}) is smaller than the tokenizer's "
                         f"({len(tokenizer)})")
    t0 = time.perf_counter()
    path = cache_path(model, tokenizer, steps=steps, seed=seed, cache_dir=cache_dir)
    was_training = model.training
    device = next(model.parameters()).device
    if path.exists():
        try:
            blob = torch.load(path, map_location=device, weights_only=True)
            model.load_state_dict(blob["state_dict"])
            model.train(was_training)
            return {"cached": True, "seconds": time.perf_counter() - t0, "final_loss": float(blob["final_loss"]),
                    "initial_loss": float(blob["initial_loss"]), "steps": steps, "path": str(path)}
        except Exception:  # a truncated or stale file: recompute and overwrite it
            pass

    threads = torch.get_num_threads()
    cpu0 = time.process_time()
    module: torch.nn.Module = model  # plain Module.to: transformers' typed wrapper rejects devices
    module.to("cpu")
    try:
        torch.set_num_threads(1)  # one thread: a fixed reduction order, the same bits on every run here
        with torch.random.fork_rng(devices=[]):
            losses = _train(model, tokenizer, steps, seed)
    finally:
        cpu_seconds = time.process_time() - cpu0
        torch.set_num_threads(threads)
        module.to(device)
        model.train(was_training)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    state = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, **losses}, tmp)
    os.replace(tmp, path)  # atomic: concurrent test workers never read half a file
    return {"cached": False, "seconds": time.perf_counter() - t0, "cpu_seconds": cpu_seconds, **losses,
            "steps": steps, "path": str(path)}
