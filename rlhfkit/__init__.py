"""RLHF Systems Kit engine: an instrumented PPO-for-RLHF loop on GPT-2 policies.

    from rlhfkit import PPOTrainer, GPT2Policy, SentimentReward
    trainer = PPOTrainer(policy=GPT2Policy(model_size="tiny"), reward_model=SentimentReward())
    trainer.train(num_epochs=1, steps_per_epoch=20)

Heavy modules (torch, transformers) load on first use of a name, so ``import rlhfkit`` is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "PPOTrainer": "rlhfkit.trainer",
    "GPT2Policy": "rlhfkit.policy",
    "BasePolicy": "rlhfkit.policy",
    "BaseRewardModel": "rlhfkit.rewards",
    "SentimentReward": "rlhfkit.rewards",
    "LengthReward": "rlhfkit.rewards",
    "ModelReward": "rlhfkit.rewards",
    "FunctionReward": "rlhfkit.rewards",
    "StabilityMonitor": "rlhfkit.monitor",
    "RunConfig": "rlhfkit.config",
    "load_config": "rlhfkit.config",
    "run_training": "rlhfkit.runner",
    "MemorySink": "rlhfkit.sinks",
    "JsonlSink": "rlhfkit.sinks",
    "ConsoleSink": "rlhfkit.sinks",
    "track": "rlhfkit.adapters.track",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'rlhfkit' has no attribute {name!r}")
    return getattr(importlib.import_module(mod), name)
