"""The ``tiny`` model's shipped data: a word-level tokenizer and sentiment-neutral prompts.

Both are generated from the project's own grammar (:mod:`rlhfkit.tiny.corpus`) by
``scripts/build_tiny_assets.py`` and committed under ``rlhfkit/assets/tiny/``, so a run needs
no download. :func:`write_assets` is deterministic: the same grammar always writes the same bytes
(the unit tests regenerate the files and compare).

The tokenizer is word-level on purpose: with ~1,600 words every token is a whole word, decoding
is ``" ".join(words)`` with no ``##``/``Ġ`` artefacts, and a small model learns the grammar in
well under a minute of CPU.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Literal

from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

from rlhfkit.tiny.corpus import openings, vocabulary

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets" / "tiny"
"""Where the committed tokenizer and prompt files live."""

PAD, UNK, BOS, EOS = "<|pad|>", "<|unk|>", "<|bos|>", "<|endoftext|>"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)  # ids 0..3, in this order
MODEL_MAX_LENGTH = 128

N_TRAIN_PROMPTS = 2000
N_EVAL_PROMPTS = 200
PROMPT_SEED = 1234

TOKENIZER_FILE = "tokenizer.json"
PROMPT_FILES = {"train": "prompts_train.txt", "eval": "prompts_eval.txt"}


def build_tokenizer() -> Tokenizer:
    """A WordLevel tokenizer over every word the grammar can produce (ids: specials, then sorted words).

    Input is lower-cased and split on whitespace and punctuation, so ``"Great movie!"`` encodes
    as ``great movie !``; words outside the grammar map to ``<|unk|>``.
    """
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for word in vocabulary():
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(WordLevel(vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    # No decoder: the tokenizers library then joins tokens with single spaces.
    return tok


def build_prompts(n_train: int = N_TRAIN_PROMPTS, n_eval: int = N_EVAL_PROMPTS,
                  seed: int = PROMPT_SEED) -> dict[str, list[str]]:
    """Disjoint train/eval lists of distinct neutral openings, shuffled with ``seed``."""
    pool = openings(n_train + n_eval, seed=seed)
    random.Random(seed).shuffle(pool)
    return {"eval": pool[:n_eval], "train": pool[n_eval:]}


def write_assets(out_dir: str | Path = ASSETS_DIR) -> list[Path]:
    """(Re)generate ``tokenizer.json`` and the prompt files into ``out_dir``; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / TOKENIZER_FILE]
    paths[0].write_text(build_tokenizer().to_str(pretty=True) + "\n", encoding="utf-8")
    for split, lines in build_prompts().items():
        path = out / PROMPT_FILES[split]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def get_tokenizer(assets_dir: str | Path = ASSETS_DIR) -> PreTrainedTokenizerFast:
    """The shipped tokenizer as a ``transformers`` fast tokenizer (a new instance per call).

    pad/unk/bos/eos are set (``<|endoftext|>`` is EOS), padding is on the left (for batched
    generation), no special tokens are added when encoding, and ``decode`` joins words with single
    spaces: ``decode(encode(s)) == s`` for every corpus sentence.
    """
    path = Path(assets_dir) / TOKENIZER_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run scripts/build_tiny_assets.py")
    return PreTrainedTokenizerFast(
        tokenizer_file=str(path), pad_token=PAD, unk_token=UNK, bos_token=BOS, eos_token=EOS,
        padding_side="left", model_max_length=MODEL_MAX_LENGTH, clean_up_tokenization_spaces=False,
    )


def load_prompts(split: Literal["train", "eval"], assets_dir: str | Path = ASSETS_DIR) -> list[str]:
    """The shipped prompts of one split (``train``: 2,000; ``eval``: 200 held-out, disjoint)."""
    if split not in PROMPT_FILES:
        raise ValueError(f"split must be 'train' or 'eval', not {split!r}")
    path = Path(assets_dir) / PROMPT_FILES[split]
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
