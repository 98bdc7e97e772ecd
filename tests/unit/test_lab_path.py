"""The path a lab user takes: a pretrained checkpoint, a learned reward model, a config built in Python.

Each test here pins one defect found on that path (issue #12): it failed before the fix.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from rlhfkit import fastgpt2
from rlhfkit.config import load_config, validate_config
from rlhfkit.experience import Rollout
from rlhfkit.metrics import M
from rlhfkit.monitor import StabilityMonitor
from rlhfkit.policy import GPT2Policy
from rlhfkit.rewards import ModelReward, SentimentReward
from rlhfkit.runner import run_training
from rlhfkit.sinks import MemorySink
from rlhfkit.tiny import get_tokenizer, tiny_config
from rlhfkit.trainer import PPOTrainer
from tests.utils import fast_overrides


def save_checkpoint_with_dropout(directory: Path, p: float = 0.1) -> Path:
    """A tiny GPT-2 saved with transformers' default dropout, plus its tokenizer, as a hub model would be."""
    tok = get_tokenizer()
    cfg = tiny_config(tok)
    cfg.resid_pdrop = cfg.embd_pdrop = cfg.attn_pdrop = p
    torch.manual_seed(0)
    GPT2LMHeadModel(cfg).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


# ---------------------------------------------------------------- 1. learned RM read where it was trained
def test_model_reward_scores_token_ids_like_the_text_it_was_trained_on() -> None:
    """score() on (query, response with EOS and padding) must equal compute_reward on the texts: the
    reward model reads the last response token before EOS, the position train-rm trains on."""
    tok = get_tokenizer()
    rm = ModelReward(tok, n_layer=2, n_embd=64, n_head=2, seed=3)
    prompts = ["the harbor was", "my friend said that the", "today"]
    replies = ["lovely and calm", "food was terrible", "it rained all day long"]
    q = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    r_rows = [tok(x, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for x in replies]
    R = max(len(r) for r in r_rows) + 2  # right padding after EOS, as the sampler leaves it
    pad = tok.pad_token_id
    response = torch.tensor([r + [pad] * (R - len(r)) for r in r_rows])
    mask = torch.tensor([[1] * len(r) + [0] * (R - len(r)) for r in r_rows])
    from_ids = rm.score(prompts=prompts, responses=replies, query_ids=q["input_ids"], response_ids=response,
                        response_mask=mask)
    from_text = rm.compute_reward(replies, prompts)
    torch.testing.assert_close(from_ids, from_text, rtol=0, atol=1e-5)


# ---------------------------------------------------------------- 2. dropout off for pretrained checkpoints
def test_pretrained_checkpoint_with_dropout_starts_ppo_at_ratio_one(tmp_path: Path) -> None:
    ckpt = save_checkpoint_with_dropout(tmp_path / "gpt2-dropout")
    mem = MemorySink()
    cfg = load_config("smoke", fast_overrides(**{
        "model.pretrained": str(ckpt), "model.size": "custom", "ppo.batch_size": 8, "ppo.mini_batch_size": 8,
        "ppo.ppo_epochs": 1, "train.steps_per_epoch": 1, "train.eval_every": 0, "train.eval_prompts": 4}))
    run_training(cfg, sinks=[mem], out_dir=None)
    first = next(e.values for e in mem.of_type("metrics") if M.RATIO_MEAN in e.values)
    assert abs(first[M.RATIO_MEAN] - 1.0) < 1e-5
    assert abs(first[M.RATIO_MAX] - 1.0) < 1e-5
    assert first[M.POLICY_CLIPFRAC] == 0.0


def test_every_model_of_a_pretrained_run_has_dropout_off_and_keeps_the_lean_forward(tmp_path: Path) -> None:
    ckpt = save_checkpoint_with_dropout(tmp_path / "gpt2-dropout")
    policy = GPT2Policy(pretrained=ckpt, shared_value_trunk=False)
    policy.train()
    assert fastgpt2.supports(policy.model.transformer)  # the lean forward stays on in train mode
    assert policy.critic is not None and fastgpt2.supports(policy.critic)
    ref = policy.make_reference()
    rm_dir = tmp_path / "rm"
    tok = get_tokenizer()
    cfg = GPT2Config(vocab_size=len(tok), n_layer=1, n_embd=32, n_head=2, resid_pdrop=0.1, embd_pdrop=0.1,
                     attn_pdrop=0.1)
    ModelReward(tok, config=cfg).save(rm_dir)
    rm = ModelReward.load(rm_dir, tok)
    for name, module in (("policy", policy.model), ("critic", policy.critic), ("reference", ref),
                         ("reward", rm.net)):
        ps = [m.p for m in module.modules() if isinstance(m, torch.nn.Dropout)]
        assert ps and all(p == 0.0 for p in ps), name


# ---------------------------------------------------------------- 3. the config's sampling settings win
def test_config_sampling_settings_win_over_the_policys(monkeypatch: pytest.MonkeyPatch) -> None:
    import rlhfkit.policy as policy_mod

    seen: list[tuple[float, float, int]] = []
    real = policy_mod.sample

    def spy(*args: Any, **kw: Any) -> Any:
        seen.append((kw["temperature"], kw["top_p"], kw["top_k"]))
        return real(*args, **kw)

    monkeypatch.setattr(policy_mod, "sample", spy)
    policy = GPT2Policy(model_size="tiny", max_length=40, warm_start=False, temperature=1.0, top_p=0.9, top_k=0)
    cfg = load_config("smoke", fast_overrides(**{"generation.temperature": 0.7, "generation.top_p": 0.8,
                                                 "generation.top_k": 50, "train.steps_per_epoch": 1}))
    PPOTrainer(policy, SentimentReward(), config=cfg).train()
    assert seen and set(seen) == {(0.7, 0.8, 50)}
    assert policy.temperature == 0.7  # log-probs (policy and reference) are tempered like the sampling


# ---------------------------------------------------------------- 4. kl_rising does not fire by construction
def test_kl_rising_does_not_compare_against_step_zero() -> None:
    """Step 0's KL is 0 by construction (the policy is the reference); a flat 1.2 nats from step 1 on
    is not a rise."""
    mon = StabilityMonitor()
    fired = [a.rule for s in range(30) for a in mon.check(s, {M.KL_K1: 0.0 if s == 0 else 1.2})]
    assert "kl_rising" not in fired


def test_kl_rising_still_fires_on_a_real_rise() -> None:
    mon = StabilityMonitor()
    kl = [0.0] + [1.0] * 12 + [1.0 + 0.6 * i for i in range(1, 12)]
    fired = [(s, a.rule) for s, k in enumerate(kl) for a in mon.check(s, {M.KL_K1: k})]
    assert any(rule == "kl_rising" for _, rule in fired)


# ---------------------------------------------------------------- 5. a stopped run has its own ending and its files
def test_stop_on_critical_names_the_rule_and_writes_the_runs_files(tmp_path: Path) -> None:
    cfg = load_config("smoke", fast_overrides(**{"monitor.stop_on_critical": True,
                                                 "monitor.thresholds": {"ratio_max": 0.0}}))
    mem = MemorySink()
    with pytest.raises(Exception, match="critical alert ratio_far_from_one"):
        run_training(cfg, run_id="stopped", sinks=[mem], out_dir=tmp_path)
    end = mem.events[-1]
    assert end.type == "run_failed"
    assert end.error.startswith("stopped on critical alert ratio_far_from_one")
    assert end.traceback is None  # a decision, not a crash
    run_dir = tmp_path / "stopped"
    assert (run_dir / "metrics.csv").read_text().count("\n") >= 2  # header + the step that stopped it
    assert "ratio_far_from_one" in (run_dir / "alerts.csv").read_text()


# ---------------------------------------------------------------- 6. accumulation weights tokens like one big batch
def _first_minibatch_grad(accum: int) -> dict[str, torch.Tensor]:
    cfg = validate_config({
        "seed": 0, "model": {"size": "tiny", "max_length": 40, "warm_start": False},
        "generation": {"max_new_tokens": 8},
        "ppo": {"batch_size": 8, "mini_batch_size": 8, "grad_accum_steps": accum, "ppo_epochs": 1,
                "max_grad_norm": 1e9},
        "train": {"steps_per_epoch": 1, "eval_every": 0, "eval_prompts": 2, "device": "cpu"}})
    policy = GPT2Policy.from_run_config(cfg.model, cfg.generation, seed=0)
    trainer = PPOTrainer(policy, SentimentReward(), config=cfg)
    trainer.setup()
    tok = policy.tokenizer
    query, query_mask = policy.encode_prompts(["the harbor was"] * 8, trainer.device)
    g = torch.Generator().manual_seed(1)
    response = torch.randint(10, len(tok), (8, 8), generator=g)
    lengths = torch.tensor([1, 8, 2, 7, 8, 8, 1, 3])  # micro-batches of 2 hold 9, 9, 16 and 4 tokens
    mask = (torch.arange(8).unsqueeze(0) < lengths.unsqueeze(1)).long()
    response = torch.where(mask.bool(), response, torch.full_like(response, tok.pad_token_id))
    rollout = Rollout(prompts=["the harbor was"] * 8, query=query, query_mask=query_mask, response=response,
                      response_mask=mask)
    with torch.no_grad():
        exp = trainer.score(rollout)
        adv = trainer.advantages(exp)
    grads: dict[str, torch.Tensor] = {}

    def grab(opt: Any, args: Any, kwargs: Any) -> None:
        if not grads:
            grads.update({n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None})

    trainer.optimizer.register_step_pre_hook(grab)
    trainer.update(exp, adv)
    return grads


def test_gradient_accumulation_gives_the_one_big_minibatch_gradient() -> None:
    one, four = _first_minibatch_grad(1), _first_minibatch_grad(4)
    assert one.keys() == four.keys() and one
    num = math.sqrt(sum(float(((one[k] - four[k]) ** 2).sum()) for k in one))
    den = math.sqrt(sum(float((one[k] ** 2).sum()) for k in one))
    assert num / den < 1e-5


# ---------------------------------------------------------------- 7. value head starts at zero
def test_value_head_starts_at_zero() -> None:
    policy = GPT2Policy(model_size="tiny", max_length=32, warm_start=False)
    assert torch.count_nonzero(policy.value_head.weight) == 0 and torch.count_nonzero(policy.value_head.bias) == 0
    ids, mask = policy.encode_prompts(["the harbor was lovely", "today"], torch.device("cpu"))
    _, values, _ = policy.forward_scores(ids, mask, 2)
    assert values is not None and torch.count_nonzero(values) == 0


# ---------------------------------------------------------------- reward normalisation and clipping, stop token
def _trainer(**overrides: Any) -> PPOTrainer:
    cfg = load_config("smoke", fast_overrides(**overrides))
    policy = GPT2Policy.from_run_config(cfg.model, cfg.generation, seed=cfg.seed)
    trainer = PPOTrainer(policy, SentimentReward(), config=cfg)
    trainer.setup()
    return trainer


def test_reward_normalize_and_clip_shape_the_score_ppo_sees() -> None:
    trainer = _trainer(**{"reward.normalize": True, "reward.clip": 1.5})
    g = torch.Generator().manual_seed(0)
    seen = []
    for _ in range(4):
        raw = torch.randn(16, generator=g) * 4.2 + 10.0  # a learned RM's scale
        seen.append(raw)
        out = trainer.shape_scores(raw)
        assert float(out.abs().max()) <= 1.5
    allx = torch.cat(seen).double()
    expected = ((seen[-1].double() - allx.mean()) / allx.std(unbiased=False)).clamp(-1.5, 1.5)
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=1e-5)
    plain = _trainer()
    torch.testing.assert_close(plain.shape_scores(seen[0]), seen[0])  # both off: the raw score


def test_stop_token_truncates_responses_and_counts_as_an_ending() -> None:
    trainer = _trainer(**{"generation.stop_token": ".", "generation.max_new_tokens": 12})
    tok = trainer.policy.tokenizer
    dot = tok(".", add_special_tokens=False)["input_ids"][0]
    rollout = trainer.rollout()
    for ids, m in zip(rollout.response.tolist(), rollout.response_mask.tolist(), strict=True):
        real = [t for t, k in zip(ids, m, strict=True) if k]
        assert dot not in real[:-1]  # nothing after the first stop token
        assert all(t == tok.pad_token_id for t, k in zip(ids, m, strict=True) if not k)
    ended = trainer._ended(rollout.response, rollout.response_mask)
    last = [r[int(m.sum()) - 1] for r, m in zip(rollout.response.tolist(), rollout.response_mask, strict=True)]
    assert ended.tolist() == [t in (dot, tok.eos_token_id) for t in last]


def test_truncate_at_token_keeps_the_stop_token_and_pads_after_it() -> None:
    from rlhfkit.policy import truncate_at_token

    ids = torch.tensor([[5, 3, 9, 3, 4], [5, 6, 7, 8, 4], [3, 0, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [1, 0, 0, 0, 0]])
    out, m = truncate_at_token(ids, mask, token_id=3, pad_token_id=0)
    assert out.tolist() == [[5, 3, 0, 0, 0], [5, 6, 7, 8, 0], [3, 0, 0, 0, 0]]
    assert m.tolist() == [[1, 1, 0, 0, 0], [1, 1, 1, 1, 0], [1, 0, 0, 0, 0]]


def test_a_stop_token_of_several_tokens_is_refused_naming_the_field() -> None:
    from rlhfkit.config import ConfigError

    with pytest.raises(ConfigError, match="generation.stop_token"):
        _trainer(**{"generation.stop_token": "lovely harbor"})
