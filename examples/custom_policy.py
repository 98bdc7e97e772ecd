"""A policy of your own shape (or from a checkpoint), trained with the sentiment reward.

GPT2Policy takes an explicit shape (n_layer, n_embd, n_head), a transformers.GPT2Config, or
`pretrained=` a hub name / local directory loaded with from_pretrained (on a GPU box with hub
access: GPT2Policy(pretrained="gpt2")).

Run: .venv/bin/python examples/custom_policy.py   (about 20 seconds on a laptop CPU)
"""

from __future__ import annotations

from rlhfkit import GPT2Policy, PPOTrainer, SentimentReward
from rlhfkit.sinks import ConsoleSink


def main() -> dict:
    # A 2-layer, 128-wide GPT-2 using the shipped tiny tokenizer and prompts (random init, no warm-start).
    policy = GPT2Policy(model_size="custom", n_layer=2, n_embd=128, n_head=4, max_length=64, temperature=1.0, top_p=1.0)
    print(f"policy: {sum(p.numel() for p in policy.model.parameters()) / 1e6:.2f}M parameters")
    trainer = PPOTrainer(policy=policy, reward_model=SentimentReward(), batch_size=16, learning_rate=1e-3,
                         kl_coef=0.05, max_new_tokens=12, eval_prompts=16, sinks=[ConsoleSink(every=5)])
    return trainer.train(num_epochs=1, steps_per_epoch=10, eval_every=5)


if __name__ == "__main__":
    main()
