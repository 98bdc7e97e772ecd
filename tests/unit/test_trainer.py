"""The PPO loop end to end on the tiny model: event contract, determinism, resume, callbacks."""

from __future__ import annotations

import math

import pytest
import torch

from rlhfkit import BaseRewardModel, GPT2Policy, PPOTrainer, StabilityMonitor
from rlhfkit.config import load_config
from rlhfkit.events import parse_event
from rlhfkit.metrics import METRICS, STAGES, M
from rlhfkit.runner import run_training
from rlhfkit.sinks import MemorySink
from tests.utils import fast_overrides

NON_TIMING = [k for k in METRICS if not k.startswith(("perf/", "system/"))]  # clocks and the system sampler


def test_run_emits_the_event_contract(tmp_path, fast_config) -> None:
    mem = MemorySink()
    summary = run_training(fast_config, run_id="r1", sinks=[mem], out_dir=tmp_path)
    types = [e.type for e in mem.events]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    assert [e.seq for e in mem.events] == list(range(len(mem.events)))
    steps = [e for e in mem.of_type("metrics") if M.REWARD_MEAN in e.values]
    assert [e.step for e in steps] == [0, 1, 2]
    for e in steps:
        missing = {M.REWARD_MEAN, M.KL_K1, M.KL_K3, M.KL_COEF, M.ENTROPY, M.POLICY_LOSS, M.VALUE_LOSS,
                   M.POLICY_CLIPFRAC, M.VALUE_CLIPFRAC, M.APPROX_KL, M.RATIO_MEAN, M.RATIO_MAX, M.GRAD_NORM,
                   M.LEARNING_RATE, M.ADV_MEAN, M.ADV_STD, M.RESPONSE_LEN, M.TOKENS_PER_SEC} - set(e.values)
        assert not missing
        assert set(e.values) <= set(METRICS)  # every name is in the contract
    timings = mem.of_type("timings")
    assert len(timings) == 3
    for t in timings:
        top = sum(v for k, v in t.stages.items() if "/" not in k)
        assert set(STAGES) - {"evaluation"} <= set(t.stages)
        assert top <= t.step_time * 1.001 and top >= 0.9 * t.step_time  # stages cover the step
    mems = mem.of_type("memory")
    assert mems[0].stages["update"].rss_mb > 0 and mems[0].models["policy"] > 0
    assert len(mem.of_type("eval")) >= 2 and mem.of_type("eval")[0].samples
    # the JSONL file holds exactly the same events
    lines = (tmp_path / "r1" / "events.jsonl").read_text().splitlines()
    assert [parse_event(x).seq for x in lines] == [e.seq for e in mem.events]
    assert (tmp_path / "r1" / "config.yaml").exists() and (tmp_path / "r1" / "metrics.csv").exists()
    assert summary["steps"] == 3 and math.isfinite(summary["eval_reward_start"])


def test_same_seed_gives_identical_metrics(tmp_path) -> None:
    def run(seed: int) -> list[dict[str, float]]:
        mem = MemorySink()
        run_training(load_config("smoke", fast_overrides(seed=seed)), sinks=[mem], out_dir=None)
        return _step_metrics(mem)

    a, b = run(7), run(7)
    assert a == b and len(a) >= 3
    assert run(8) != a


def test_resume_from_checkpoint_continues_identically(tmp_path) -> None:
    full = MemorySink()
    run_training(load_config("smoke", fast_overrides(**{"train.steps_per_epoch": 4, "train.checkpoint_every": 2,
                                                         "train.eval_every": 0})),
                 run_id="full", sinks=[full], out_dir=tmp_path)
    ckpt = tmp_path / "full" / "checkpoints" / "step_2.pt"
    assert ckpt.exists()
    resumed = MemorySink()
    run_training(load_config("smoke", fast_overrides(**{"train.steps_per_epoch": 4, "train.eval_every": 0,
                                                         "train.resume_from": str(ckpt)})),
                 sinks=[resumed], out_dir=None)

    def by_step(m: MemorySink) -> dict[int, dict[str, float]]:
        return {e.step: {k: v for k, v in e.values.items() if k in NON_TIMING}
                for e in m.of_type("metrics") if M.REWARD_MEAN in e.values}

    f, r = by_step(full), by_step(resumed)
    assert sorted(r) == [2, 3]
    for s in (2, 3):
        for k, v in f[s].items():
            assert r[s][k] == pytest.approx(v, rel=1e-5, abs=1e-6), k


class CustomReward(BaseRewardModel):
    """The product README's example reward: closeness to a target word count."""

    def __init__(self, target_length: int = 5) -> None:
        super().__init__()
        self.target_length = target_length

    def compute_reward(self, responses, prompts=None):  # noqa: ANN001, ANN201
        return torch.tensor([1.0 / (1.0 + abs(len(r.split()) - self.target_length)) for r in responses])


def test_readme_python_api_with_custom_reward_and_callbacks() -> None:
    policy = GPT2Policy(model_size="tiny", max_length=40, warm_start=False)
    trainer = PPOTrainer(policy=policy, reward_model=CustomReward(), batch_size=8, learning_rate=1e-5,
                         kl_coef=0.2, value_coef=0.5, entropy_coef=0.01, eval_prompts=8)
    seen: list[str] = []
    trainer.add_callbacks(lambda e: seen.append(e.type))
    monitor = StabilityMonitor(warning_thresholds={"clipfrac_max": 0.0}, export_metrics=False)
    trainer.add_callbacks(monitor)
    summary = trainer.train(num_epochs=1, steps_per_epoch=2, eval_every=1)
    assert summary["steps"] == 2
    assert seen[0] == "run_started" and seen[-1] == "run_finished"
    assert "alert" in seen and monitor.alerts  # the user's monitor (threshold 0) is the one used
    rewards = [r for r in trainer.monitor.history if M.REWARD_MEAN in r[1]]
    assert all(0.0 <= h[M.REWARD_MEAN] <= 1.0 for _, h in rewards)


def test_unknown_trainer_argument_is_an_error() -> None:
    policy = GPT2Policy(model_size="tiny", max_length=40, warm_start=False)
    with pytest.raises(TypeError, match="unknown PPOTrainer argument"):
        PPOTrainer(policy=policy, reward_model=CustomReward(), batch_size=8, bogus=1)


def test_should_stop_cancels_between_steps(fast_config) -> None:
    mem = MemorySink()
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 1  # let one step run

    summary = run_training(fast_config, sinks=[mem], out_dir=None, should_stop=stop)
    assert summary["status"] == "cancelled"
    assert mem.events[-1].type == "run_cancelled"
    assert len([e for e in mem.of_type("metrics") if M.REWARD_MEAN in e.values]) == 1


def test_crash_emits_run_failed_and_keeps_events(tmp_path, fast_config) -> None:
    class Exploding(BaseRewardModel):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def compute_reward(self, responses, prompts=None):  # noqa: ANN001, ANN201
            self.calls += 1
            if self.calls > 2:  # eval at start + step 0 succeed, step 1 explodes
                raise RuntimeError("reward server down")
            return torch.zeros(len(responses))

    policy = GPT2Policy(model_size="tiny", max_length=40, warm_start=False)
    mem = MemorySink()
    trainer = PPOTrainer(policy, Exploding(), config=fast_config, sinks=[mem])
    with pytest.raises(RuntimeError, match="reward server down"):
        trainer.train()
    assert mem.events[-1].type == "run_failed"
    assert "reward server down" in mem.events[-1].error
    assert [e.step for e in mem.of_type("metrics") if M.REWARD_MEAN in e.values] == [0]


def test_stop_on_critical_alert(fast_config) -> None:
    cfg = load_config("smoke", fast_overrides(**{"monitor.stop_on_critical": True,
                                                 "monitor.thresholds": {"ratio_max": 0.0}}))
    mem = MemorySink()
    with pytest.raises(Exception, match="critical alert"):
        run_training(cfg, sinks=[mem], out_dir=None)
    assert mem.events[-1].type == "run_failed"


def _step_metrics(mem: MemorySink) -> list[dict[str, float]]:
    kept = [{k: v for k, v in e.values.items() if k in NON_TIMING} for e in mem.of_type("metrics")]
    return [m for m in kept if m]  # the system sampler's events (system/* only) come as the clock allows


def test_chunked_generation_samples_in_chunks_and_is_deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int] = []
    sample = GPT2Policy._sample  # under generate() and generate_scored() (rollouts read scores off sampling)

    def spy(self, prompt_ids, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        sizes.append(prompt_ids.shape[0])
        return sample(self, prompt_ids, *args, **kwargs)

    monkeypatch.setattr(GPT2Policy, "_sample", spy)

    def run() -> list[dict[str, float]]:
        mem = MemorySink()
        run_training(load_config("smoke", fast_overrides(seed=7, **{"generation.batch_size": 2,
                                                                    "train.eval_every": 0})),
                     sinks=[mem], out_dir=None)
        return _step_metrics(mem)

    a = run()
    # 3 steps x 4 chunks of 2 prompts; the start/end evaluations generate in chunks of 2 as well
    assert sizes == [2] * (4 * 3 + 2 * 4)
    assert run() == a and len(a) >= 3


def test_cat_responses_pads_a_chunk_that_ended_early() -> None:
    from rlhfkit.trainer import _cat_responses

    long = (torch.tensor([[5, 6, 7]]), torch.tensor([[1, 1, 1]]))
    short = (torch.tensor([[8]]), torch.tensor([[1]]))  # every response of this chunk hit EOS first
    ids, mask = _cat_responses([long, short], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_cpu_placement_on_a_cpu_run_trains_like_same() -> None:
    """On a CPU run 'cpu' placement is the policy's device: the same run, metric for metric."""
    def run(**extra: object) -> list[dict[str, float]]:
        mem = MemorySink()
        run_training(load_config("smoke", fast_overrides(seed=3, **{"train.eval_every": 0, **extra})),
                     sinks=[mem], out_dir=None)
        return _step_metrics(mem)

    placed = run(**{"model.reference_device": "cpu", "reward.device": "cpu"})
    assert placed == run() and len(placed) >= 3


def test_adamw_8bit_without_bitsandbytes_fails_at_start_naming_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from rlhfkit.config import ConfigError

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "bitsandbytes" else find_spec(name, *a))
    mem = MemorySink()
    with pytest.raises(ConfigError) as ei:
        run_training(load_config("smoke", fast_overrides(**{"ppo.optimizer": "adamw_8bit"})), sinks=[mem],
                     out_dir=None)
    assert [e["field"] for e in ei.value.errors] == ["ppo.optimizer"] and "bitsandbytes" in str(ei.value)
    assert mem.events[-1].type == "run_failed" and not mem.of_type("metrics")


def test_adamw_8bit_trains_with_one_byte_moments() -> None:
    pytest.importorskip("bitsandbytes")
    seen: list[PPOTrainer] = []

    class Grab:
        def on_train_begin(self, trainer: PPOTrainer) -> None:
            seen.append(trainer)

    summary = run_training(load_config("smoke", fast_overrides(**{"ppo.optimizer": "adamw_8bit",
                                                                  "train.eval_every": 0})),
                           out_dir=None, hooks=[Grab()])
    assert summary["steps"] == 3 and math.isfinite(summary["final_kl"])
    opt = seen[0].optimizer
    wte = seen[0].policy.model.transformer.wte.weight
    assert type(opt).__name__ == "AdamW8bit"
    assert opt.state[wte]["state1"].dtype == torch.uint8 and opt.state[wte]["state2"].dtype == torch.uint8


def test_rollout_scores_from_sampling_skip_the_policy_forward_and_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """ppo.rollout_scores=sampling (and auto, the default, for an fp32 model): no scoring forward of the
    policy (only the update's), and the first step's metrics equal the forward-scored run's to fp32
    rounding (same tokens, same rewards)."""
    calls = {"no_grad": 0}
    forward_scores = GPT2Policy.forward_scores

    def spy(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls["no_grad"] += not torch.is_grad_enabled()
        return forward_scores(self, *args, **kwargs)

    monkeypatch.setattr(GPT2Policy, "forward_scores", spy)

    def run(source: str) -> list[dict[str, float]]:
        mem = MemorySink()
        overrides = {"ppo.rollout_scores": source, "generation.batch_size": 4, "train.eval_every": 0}
        run_training(load_config("smoke", fast_overrides(seed=7, **overrides)), sinks=[mem], out_dir=None)
        return _step_metrics(mem)

    forward = run("forward")
    assert calls["no_grad"] == 3  # one scoring forward per step
    calls["no_grad"] = 0
    sampled = run("sampling")
    assert calls["no_grad"] == 0
    assert run("auto") == sampled and calls["no_grad"] == 0  # the default, for this fp32 model
    assert len(sampled) == len(forward) == 5  # evaluation at start, 3 steps, evaluation at the end
    first_step = forward[1]
    assert "reward/mean" in first_step
    for k, v in first_step.items():
        assert sampled[1][k] == pytest.approx(v, rel=1e-4, abs=1e-5), k


def _adamw_pair(fused: bool) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter], torch.optim.Optimizer,
                                      torch.optim.Optimizer]:
    g = torch.Generator().manual_seed(3)
    shapes = [(64, 48), (48,), (3, 5, 7), (1,)]
    a = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    kw = {"lr": 1e-2, "weight_decay": 0.1, "eps": 1e-5, "fused": fused or None}
    return a, b, torch.optim.AdamW(a, **kw), torch.optim.AdamW(b, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("grad_size", [0.01, 30.0])  # below the clip norm, and far above it
def test_clip_and_step_is_clip_grad_norm_then_step(fused: bool, grad_size: float) -> None:
    """The fused CPU path (the norm from dots, the clip factor as the fused kernel's grad_scale)
    leaves the parameters where clip_grad_norm_ and step() do, to fp32 rounding, over several steps
    with and without clipping, returns the same pre-clip norm, and leaves no grad_scale behind;
    other optimizers take clip_grad_norm_ and step() themselves (bit-identical)."""
    from rlhfkit.trainer import clip_and_step

    a, b, opt_a, opt_b = _adamw_pair(fused)
    g = torch.Generator().manual_seed(4)
    for _ in range(3):
        for p, q in zip(a, b, strict=True):
            p.grad = torch.randn(p.shape, generator=g) * grad_size
            q.grad = p.grad.clone()
        norm = clip_and_step(opt_a, a, 1.0)
        ref = torch.nn.utils.clip_grad_norm_(b, 1.0)
        opt_b.step()
        assert not hasattr(opt_a, "grad_scale")
        torch.testing.assert_close(norm, ref, rtol=1e-6, atol=0)
        for p, q in zip(a, b, strict=True):
            if fused:
                torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
            else:
                assert torch.equal(p, q)
    assert (float(norm) > 1.0) == (grad_size > 1.0)


def test_clip_and_step_clips_where_a_gradient_is_missing_and_keeps_a_scalers_grad_scale() -> None:
    """A parameter without a gradient is skipped, as clip_grad_norm_ skips it; an optimizer that
    already carries a GradScaler's grad_scale is left to clip_grad_norm_ and its scaler."""
    from rlhfkit.trainer import clip_and_step

    a, b, opt_a, opt_b = _adamw_pair(True)
    for p, q in zip(a[:2], b[:2], strict=True):
        p.grad = torch.full(p.shape, 5.0)
        q.grad = p.grad.clone()
    clip_and_step(opt_a, a, 1.0)
    torch.nn.utils.clip_grad_norm_(b, 1.0)
    opt_b.step()
    for p, q in zip(a, b, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    scale = torch.tensor(2.0)
    opt_a.grad_scale = scale  # type: ignore[attr-defined]
    for p in a[:2]:
        p.grad = torch.full(p.shape, 5.0)
    clip_and_step(opt_a, a, 1.0)
    assert opt_a.grad_scale is scale  # type: ignore[attr-defined]
