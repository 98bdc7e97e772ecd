"""A TRL GRPO run reporting live into rlhfkit — on CPU, in well under a minute, no downloads.

    # with the dashboard running (`rlhfkit serve` / `make run`):
    RLHFKIT_SERVER=http://127.0.0.1:8000 python examples/trl_integration.py
    # without a server the events go to <out>/rlhfkit/<run_id>/events.jsonl; upload later with
    rlhfkit import <out>/rlhfkit/<run_id>

The model is a 2-layer GPT-2 with a 20-word vocabulary built in code, the reward a plain Python
function (longer completions score higher), so the example runs anywhere. For a real run, swap
in your model, dataset and reward functions; the two lines that matter are::

    trainer = TRLAdapter(base_trainer=GRPOTrainer(...), enable_profiling=True, enable_monitoring=True)
    trainer.train()

``--alert-demo`` sets a deliberately high entropy floor so the stability monitor raises an
``entropy_collapse`` alert on the first step (to see alerts in the dashboard).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from typing import Any

WORDS = ["the", "a", "cat", "dog", "sat", "ran", "on", "mat", "big", "small", "happy", "sad", "good", "bad",
         "very", "red", "blue", "tree", "sun", "moon"]
PROMPTS = ["the cat", "a dog", "the big cat", "a sad dog", "the sun", "a red tree", "the moon sat", "a good dog"]


def tiny_tokenizer() -> Any:
    """A word-level tokenizer over :data:`WORDS` (+ <pad>, <eos>, <unk>), left-padding for generation."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<eos>", "<unk>", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    hf.padding_side = "left"
    return hf


def tiny_model_dir(path: str | Path, seed: int = 0) -> str:
    """Save a 2-layer, 32-wide GPT-2 and its tokenizer to ``path`` (TRL builds the reference copy from it)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                     bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    GPT2LMHeadModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def reward_length(completions: list[str], **kwargs: Any) -> list[float | None]:
    """Function reward: the number of words (a stand-in for a reward model)."""
    return [float(len(c.split())) for c in completions]


def build_grpo_trainer(out_dir: str | Path, max_steps: int = 4, seed: int = 0, callbacks: list[Any] | None = None,
                       device: str = "cpu") -> Any:
    """A GRPOTrainer on the tiny model: 4 prompts x 4 generations per step, 8 new tokens (CPU by default)."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    out = Path(out_dir)
    model_dir = tiny_model_dir(out / "tiny-gpt2", seed=seed)
    args = GRPOConfig(output_dir=str(out), per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=8, max_steps=max_steps, logging_steps=1, report_to="none",
                      use_cpu=device == "cpu", save_strategy="no", beta=0.1, learning_rate=1e-3, seed=seed,
                      disable_tqdm=True, log_level="warning")
    dataset = Dataset.from_dict({"prompt": PROMPTS * 4})
    return GRPOTrainer(model=model_dir, reward_funcs=reward_length, args=args, train_dataset=dataset,
                       processing_class=tiny_tokenizer(), callbacks=callbacks)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--out", default=None, help="output directory (default: a temporary one)")
    parser.add_argument("--server", default=None, help="default $RLHFKIT_SERVER; unset = local file only")
    parser.add_argument("--name", default="trl-grpo-tiny")
    parser.add_argument("--profile", action="store_true", help="torch.profiler trace of steps 3-4 as an artifact")
    parser.add_argument("--alert-demo", action="store_true", help="force an entropy alert on the first step")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda to use the GPU")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    from rlhfkit.adapters import TRLAdapter

    out = Path(args.out or tempfile.mkdtemp(prefix="trl-rlhfkit-"))
    trainer = TRLAdapter(base_trainer=build_grpo_trainer(out, max_steps=args.steps, device=args.device), enable_profiling=args.profile,
                         enable_monitoring=True, name=args.name, server=args.server,
                         warning_thresholds={"entropy_min": 10.0} if args.alert_demo else None)
    trainer.train()
    run = trainer.run
    assert run is not None
    result = {"run_id": run.id, "events": str(run.events_path), "steps": run.last_step}
    print(f"run {run.id}: {run.last_step} steps; events in {run.events_path}")
    return result


if __name__ == "__main__":
    main()
