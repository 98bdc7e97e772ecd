"""Factories shared by tests."""

from __future__ import annotations

from typing import Any


def fast_overrides(**extra: Any) -> dict[str, Any]:
    """A few-second run of the tiny model (no warm-start) for mechanics tests."""
    base: dict[str, Any] = {
        "model.warm_start": False, "model.max_length": 40, "generation.max_new_tokens": 8,
        "ppo.batch_size": 8, "ppo.mini_batch_size": 4, "ppo.ppo_epochs": 1,
        "train.steps_per_epoch": 3, "train.eval_every": 2, "train.eval_prompts": 8, "train.device": "cpu",
    }
    base.update(extra)
    return base
