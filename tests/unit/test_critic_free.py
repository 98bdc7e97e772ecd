"""The critic-free family end to end on the tiny model: no value head, G samples per prompt, the
group metrics, and bit-identical reruns with the same seed."""

from __future__ import annotations

import math
from typing import Any

import pytest

from rlhfkit.config import ConfigError, load_config
from rlhfkit.metrics import METRICS, M
from rlhfkit.runner import build_components, run_training
from rlhfkit.sinks import MemorySink
from rlhfkit.trainer import PPOTrainer
from tests.utils import fast_overrides

CRITIC_FREE = ("grpo", "dr_grpo", "rloo", "reinforce_pp")
VALUE_METRICS = {M.VALUE_LOSS, M.VALUE_CLIPFRAC, M.EXPLAINED_VAR, M.VALUE_MEAN}


def _overrides(algorithm: str, **extra: Any) -> dict[str, Any]:
    # 4 prompts x G=2 = 8 responses a step, minibatches of 2 prompts (4 responses)
    return fast_overrides(**{"algorithm": algorithm, "generation.samples_per_prompt": 2, "ppo.batch_size": 4,
                             "ppo.mini_batch_size": 2, "generation.max_new_tokens": 6, "train.steps_per_epoch": 2,
                             "train.eval_every": 0, "train.eval_prompts": 2, **extra})


def _step_metrics(mem: MemorySink) -> list[dict[str, float]]:
    return [{k: v for k, v in e.values.items() if not k.startswith("perf/")}
            for e in mem.of_type("metrics") if M.REWARD_MEAN in e.values]


@pytest.mark.parametrize("algorithm", CRITIC_FREE)
def test_same_seed_runs_are_bit_identical(algorithm: str) -> None:
    def run(seed: int) -> tuple[list[dict[str, float]], float]:
        mem = MemorySink()
        summary = run_training(load_config("smoke", _overrides(algorithm, seed=seed)), sinks=[mem], out_dir=None)
        return _step_metrics(mem), summary["eval_reward_end"]

    a, b = run(3), run(3)
    assert a == b and len(a[0]) == 2  # exact float equality, every metric of every step
    if algorithm == "grpo":  # and the seed matters (once is enough)
        assert run(4)[0] != a[0]


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_critic_free_run_has_no_value_head_and_reports_its_groups(algorithm: str) -> None:
    cfg = load_config("smoke", _overrides(algorithm, **{"ppo.cliprange_high": 0.28}))
    policy, reward = build_components(cfg)
    assert policy.value_head is None and policy.critic is None  # never built
    mem = MemorySink()
    trainer = PPOTrainer(policy, reward, config=cfg, sinks=[mem])
    trainer.train()
    assert all(not n.startswith("value_head") for n, _ in policy.named_parameters())
    steps = _step_metrics(mem)
    for m in steps:
        assert not VALUE_METRICS & set(m)  # no value pass: nothing to report, not NaN
        assert set(m) <= set(METRICS)
        assert 0.0 <= m[M.FRAC_ZERO_STD] <= 1.0 and m[M.REWARD_GROUP_STD] >= 0.0
        assert 0.0 <= m[M.CLIPFRAC_LOW] <= 1.0 and 0.0 <= m[M.CLIPFRAC_HIGH] <= 1.0
        assert m[M.RESPONSE_LEN_MIN] <= m[M.RESPONSE_LEN] <= m[M.RESPONSE_LEN_MAX] <= 6
        assert 0.0 <= m[M.RESPONSE_CLIPPED] <= 1.0 and math.isfinite(m[M.KL_PER_TOKEN])
    assert all(e.models["value"] == 0 for e in mem.of_type("memory"))
    # G responses per prompt, prompt-major: each prompt twice in a row
    rollout = trainer.rollout()
    prompts = rollout.prompts
    assert len(prompts) == 8 and prompts[0::2] == prompts[1::2] and rollout.response.shape[0] == 8


def test_a_ppo_built_policy_loses_its_value_head_in_a_critic_free_run() -> None:
    cfg = load_config("smoke", _overrides("dr_grpo", **{"train.steps_per_epoch": 1}))
    ppo_cfg = load_config("smoke", fast_overrides())
    policy, reward = build_components(ppo_cfg)
    assert policy.value_head is not None
    PPOTrainer(policy, reward, config=cfg).train()
    assert policy.value_head is None and "value_head.weight" not in policy.state_dict()


def test_ppo_keeps_its_value_head_and_metrics() -> None:
    mem = MemorySink()
    run_training(load_config("smoke", fast_overrides(**{"train.steps_per_epoch": 1, "train.eval_every": 0})),
                 sinks=[mem], out_dir=None)
    (m,) = _step_metrics(mem)
    assert set(m) >= VALUE_METRICS and M.FRAC_ZERO_STD not in m  # one sample per prompt: no groups
    assert m[M.CLIPFRAC_LOW] >= 0.0 and M.RESPONSE_CLIPPED in m


def test_the_python_api_takes_the_algorithm_and_group_size_as_keywords() -> None:
    policy, reward = build_components(load_config("smoke", fast_overrides()))
    trainer = PPOTrainer(policy, reward, batch_size=4, algorithm="rloo", samples_per_prompt=2)
    assert trainer.config.algorithm == "rloo" and trainer.config.generation.samples_per_prompt == 2
    with pytest.raises(ConfigError, match="samples_per_prompt"):
        PPOTrainer(policy, reward, batch_size=4, algorithm="grpo")
