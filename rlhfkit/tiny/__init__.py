"""The offline ``tiny`` model: shipped tokenizer and prompts, and a reproducible warm-start.

Everything a PPO run on the ``tiny`` shape needs, with nothing downloaded:

* :func:`get_tokenizer` — a word-level tokenizer built from the project's own English grammar;
* :func:`load_prompts` — 2,000 train / 200 held-out eval prompts, sentiment-neutral openings;
* :func:`warm_start` — a short, seeded supervised pass so samples read like English before
  PPO starts (cached on disk, never committed);
* :func:`corpus` — sentences from the grammar (:mod:`rlhfkit.tiny.corpus`).
"""

from __future__ import annotations

from rlhfkit.tiny.corpus import CORPUS_VERSION, corpus
from rlhfkit.tiny.data import (
    ASSETS_DIR,
    build_prompts,
    build_tokenizer,
    get_tokenizer,
    load_prompts,
    write_assets,
)
from rlhfkit.tiny.warmstart import DEFAULT_STEPS, TINY_SHAPE, cache_path, tiny_config, warm_start

__all__ = [
    "ASSETS_DIR",
    "CORPUS_VERSION",
    "DEFAULT_STEPS",
    "TINY_SHAPE",
    "build_prompts",
    "build_tokenizer",
    "cache_path",
    "corpus",
    "get_tokenizer",
    "load_prompts",
    "tiny_config",
    "warm_start",
    "write_assets",
]
