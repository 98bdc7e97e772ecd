"""A custom reward model: subclass BaseRewardModel and implement compute_reward.

Run: .venv/bin/python examples/custom_reward.py   (about 20 seconds on a laptop CPU)
"""

from __future__ import annotations

import torch

from rlhfkit import BaseRewardModel, GPT2Policy, PPOTrainer


class CustomReward(BaseRewardModel):
    """Rewards responses whose word count is close to a target length."""

    def __init__(self, target_length: int = 8) -> None:
        super().__init__()
        self.target_length = target_length

    def compute_reward(self, responses: list[str], prompts: list[str] | None = None) -> torch.Tensor:
        rewards = []
        for response in responses:
            length = len(response.split())
            rewards.append(1.0 / (1.0 + abs(length - self.target_length)))
        return torch.tensor(rewards)


def main() -> dict:
    policy = GPT2Policy(model_size="tiny", max_length=64)
    trainer = PPOTrainer(policy=policy, reward_model=CustomReward(target_length=8), batch_size=16,
                         learning_rate=3e-4, kl_coef=0.05, max_new_tokens=16, eval_prompts=32)
    summary = trainer.train(num_epochs=1, steps_per_epoch=10, eval_every=5)
    print(f"eval reward {summary['eval_reward_start']:.3f} -> {summary['eval_reward_end']:.3f} "
          f"in {summary['wall_seconds']:.1f}s (KL {summary['final_kl']:.2f} nats)")
    return summary


if __name__ == "__main__":
    main()
