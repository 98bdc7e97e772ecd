"""The critic-free family end to end on the tiny model: no value head, G samples per prompt, the
group metrics, and bit-identical reruns with the same seed."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from rlhfkit.config import ConfigError, load_config
from rlhfkit.metrics import METRICS, M, perf_name
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


@pytest.mark.parametrize("algorithm", ["grpo", "dr_grpo"])
def test_one_on_policy_step_reads_old_logprobs_off_the_update_and_learns_the_same(
        algorithm: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """One epoch, one minibatch, the KL in the loss: π_old is the policy the update runs, so scoring
    skips the policy forward and the update takes π_old from its own forward (TRL's GRPOTrainer with
    num_iterations=1). The run must learn what the run with a scoring forward learns, up to fp32
    rounding of the two forwards, and report the same KL."""
    overrides = _overrides(algorithm, **{"ppo.mini_batch_size": 4, "ppo.grad_accum_steps": 2, "ppo.kl_coef": 0.1,
                                         "train.steps_per_epoch": 3})

    def run(from_update: bool) -> tuple[list[dict[str, float]], dict[str, Any], int, list[float]]:
        cfg = load_config("smoke", overrides)
        policy, reward = build_components(cfg)
        calls = 0
        real = policy.forward_scores

        def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            return real(*args, **kwargs)

        policy.forward_scores = counting  # type: ignore[method-assign]
        mem = MemorySink()
        trainer = PPOTrainer(policy, reward, config=cfg, sinks=[mem])
        assert trainer.logprobs_from_update
        if not from_update:
            monkeypatch.setattr(PPOTrainer, "logprobs_from_update", property(lambda self: False))
        trainer.train()
        monkeypatch.undo()
        return (_step_metrics(mem), {k: v.detach().clone() for k, v in policy.state_dict().items()}, calls,
                mem.metric(perf_name("flops", "scoring")))

    deferred, w_deferred, calls_deferred, flops_deferred = run(True)
    scored, w_scored, calls_scored, flops_scored = run(False)
    # the FLOP counter (MFU) knows scoring ran no policy forward: reference only (a lexicon reward)
    assert all(0 < d < s for d, s in zip(flops_deferred, flops_scored, strict=True))
    steps, micro = 3, 2
    assert calls_deferred == steps * micro and calls_scored == steps * (micro + 1)  # no scoring forward
    for a, b in zip(deferred, scored, strict=True):
        assert a[M.RATIO_MEAN] == 1.0 and a[M.POLICY_CLIPFRAC] == 0.0  # exactly the policy that sampled
        for key in (M.KL_K1, M.KL_K3, M.REWARD_MEAN, M.POLICY_LOSS, M.ENTROPY, M.GRAD_NORM):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
    for name, w in w_deferred.items():
        torch.testing.assert_close(w, w_scored[name], rtol=1e-4, atol=1e-6)


def test_old_logprobs_come_from_a_scoring_forward_when_anything_needs_them_first() -> None:
    """Two minibatches (the second sees an updated policy), several epochs, a critic, or the KL in the
    rewards: π_old must be measured before the update."""
    def from_update(algorithm: str, **extra: Any) -> bool:
        cfg = load_config("smoke", _overrides(algorithm, **{"ppo.mini_batch_size": 4, **extra}))
        policy, reward = build_components(cfg)
        return PPOTrainer(policy, reward, config=cfg).logprobs_from_update

    assert from_update("grpo")
    assert not from_update("grpo", **{"ppo.mini_batch_size": 2})
    assert not from_update("grpo", **{"ppo.ppo_epochs": 2})
    assert not from_update("grpo", **{"ppo.kl_placement": "reward"})
    assert not from_update("reinforce_pp")  # its KL sits in the rewards
    assert not from_update("ppo", **{"generation.samples_per_prompt": 1})  # the critic reads the same forward
    assert not from_update("grpo", **{"ppo.rollout_scores": "sampling"})  # read off sampling instead
    assert from_update("grpo", **{"ppo.rollout_scores": "forward"})  # as under the default, auto


@pytest.mark.parametrize(("algorithm", "stop_token", "extra"), [
    ("grpo", None, {}),
    ("grpo", ".", {}),
    ("rloo", None, {}),  # KL in the reward: π_old read off the same decode that keeps the outputs
    ("grpo", None, {"ppo.rollout_scores": "forward"}),  # π_old from a scoring forward
    ("ppo", None, {"generation.samples_per_prompt": 1}),  # the value head on the trunk built on them
    ("ppo", None, {"generation.samples_per_prompt": 1, "ppo.ppo_epochs": 2}),  # the first epoch's forward
])
def test_the_update_forward_builds_on_the_decode_and_learns_what_its_own_forward_learns(
        algorithm: str, stop_token: str | None, extra: dict[str, Any]) -> None:
    """One minibatch in one micro-batch: the update's first forward (the only one with one epoch)
    takes its matmul outputs from the decode (``ppo.update_activations=auto``), whatever the
    algorithm and wherever π_old comes from. The run learns what the run with the update's own
    forward (``recompute``) learns, up to fp32 rounding, and the FLOP counter counts one policy
    forward's matmuls fewer in the update. With a stop token the rollout replaces the tokens after it by padding, which no real
    position reads: the kept outputs still serve."""
    extra = {"ppo.mini_batch_size": 4, "ppo.kl_coef": 0.1, "train.steps_per_epoch": 3,
             "generation.stop_token": stop_token, **extra}

    def run(update_activations: str) -> tuple[list[dict[str, float]], dict[str, Any], list[float], int]:
        cfg = load_config("smoke", _overrides(algorithm, **{**extra, "ppo.update_activations": update_activations}))
        policy, reward = build_components(cfg)
        kept = 0
        real = policy.forward_scores

        def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal kept
            kept += kwargs.get("activations") is not None
            return real(*args, **kwargs)

        policy.forward_scores = counting  # type: ignore[method-assign]
        mem = MemorySink()
        PPOTrainer(policy, reward, config=cfg, sinks=[mem]).train()
        return (_step_metrics(mem), {k: v.detach().clone() for k, v in policy.state_dict().items()},
                mem.metric(perf_name("flops", "update")), kept)

    auto, w_auto, flops_auto, kept_auto = run("auto")
    own, w_own, flops_own, kept_own = run("recompute")
    assert kept_auto == 3 and kept_own == 0  # every step's update built on its decode
    assert all(0 < a < o for a, o in zip(flops_auto, flops_own, strict=True))
    keys = [M.KL_K1, M.KL_K3, M.REWARD_MEAN, M.POLICY_LOSS, M.ENTROPY, M.GRAD_NORM, M.RATIO_MEAN]
    if algorithm == "ppo":
        keys.append(M.VALUE_LOSS)
    for a, b in zip(auto, own, strict=True):
        if "ppo.ppo_epochs" not in extra:
            assert a[M.RATIO_MEAN] == pytest.approx(1.0, abs=1e-5)  # the weights that sampled, one step
        for key in keys:
            # the KL terms start at fp32 noise (policy = reference), ~1e-6 when the decode's GELU is
            # the compiled kernel's and the reference's oneDNN's
            tol = 5e-6 if key in (M.KL_K1, M.KL_K3) else 1e-6
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=tol), key
    for name, w in w_auto.items():
        torch.testing.assert_close(w, w_own[name], rtol=1e-4, atol=1e-6)


def test_the_kept_outputs_go_with_the_first_forwards_graph() -> None:
    """With several epochs of one minibatch the decode's kept outputs serve the first epoch's
    forward only: by the second epoch's forward nothing holds them (they are as large as a
    forward's activations, and the memory model counts them up to the first backward)."""
    import gc
    import weakref

    cfg = load_config("smoke", _overrides("ppo", **{"generation.samples_per_prompt": 1, "ppo.mini_batch_size": 4,
                                                    "ppo.ppo_epochs": 2, "train.steps_per_epoch": 1}))
    policy, reward = build_components(cfg)
    refs: list[weakref.ref[Any]] = []
    alive_at_later_forwards: list[bool] = []
    real_generate, real_forward = policy.generate_scored_kept, policy.forward_scores

    def generate(*args: Any, **kwargs: Any) -> Any:
        out = real_generate(*args, **kwargs)
        assert out[4] is not None
        refs.append(weakref.ref(out[4].qkv[0]))
        return out

    def forward(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("activations") is None and torch.is_grad_enabled():
            gc.collect()
            alive_at_later_forwards.append(refs[-1]() is not None)
        return real_forward(*args, **kwargs)

    policy.generate_scored_kept = generate  # type: ignore[method-assign]
    policy.forward_scores = forward  # type: ignore[method-assign]
    PPOTrainer(policy, reward, config=cfg, sinks=[MemorySink()]).train()
    assert len(refs) == 1 and alive_at_later_forwards == [False]
