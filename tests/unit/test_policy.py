"""GPT2Policy: the from_pretrained path on a locally saved model, sampling masks, top-p/top-k, value head."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from rlhfkit import GPT2Policy, PPOTrainer, SentimentReward
from rlhfkit.policy import _filter_logits
from rlhfkit.sinks import MemorySink
from rlhfkit.tiny import get_tokenizer


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 + tokenizer saved with save_pretrained, as a hub checkpoint would be on disk."""
    tok = get_tokenizer()
    cfg = GPT2Config(vocab_size=len(tok), n_layer=2, n_embd=64, n_head=2, n_positions=64,
                     eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(cfg)
    path = tmp_path_factory.mktemp("ckpt") / "tiny-gpt2"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_from_pretrained_loads_weights_and_trains(saved_model: Path) -> None:
    policy = GPT2Policy(pretrained=str(saved_model), max_length=48)
    ref = GPT2LMHeadModel.from_pretrained(saved_model)
    for (n1, p1), (_, p2) in zip(policy.model.named_parameters(), ref.named_parameters(), strict=True):
        assert torch.equal(p1, p2), n1
    assert policy.tokenizer.eos_token == "<|endoftext|>" and policy.tokenizer.padding_side == "left"
    mem = MemorySink()
    trainer = PPOTrainer(policy, SentimentReward(), batch_size=4, learning_rate=1e-3, sinks=[mem],
                         max_new_tokens=6, eval_prompts=4)
    summary = trainer.train(num_epochs=1, steps_per_epoch=1, eval_every=0)
    assert summary["status"] == "succeeded"
    changed = any(not torch.equal(p1, p2) for p1, p2 in zip(policy.model.parameters(), ref.parameters(), strict=True))
    assert changed  # the PPO update moved the loaded weights


def test_generate_masks_after_eos_and_respects_length() -> None:
    policy = GPT2Policy(model_size="tiny", max_length=48, warm_start=False, top_p=1.0)
    eos = policy.tokenizer.eos_token_id
    q, qm = policy.encode_prompts(["the movie was", "i think the soup tasted", "today"], torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    ids, mask = policy.generate(q, qm, 12, generator=g)
    assert ids.shape[0] == 3 and ids.shape[1] <= 12 and mask.shape == ids.shape
    for row, m in zip(ids.tolist(), mask.tolist(), strict=True):
        n = sum(m)
        assert m == [1] * n + [0] * (len(m) - n)  # real tokens first, then padding
        if eos in row[:n]:
            assert row.index(eos) == n - 1  # the mask ends exactly at the first EOS
        assert all(t == policy.tokenizer.pad_token_id for t in row[n:])


def test_same_generator_seed_gives_same_samples() -> None:
    policy = GPT2Policy(model_size="tiny", max_length=48, warm_start=False)
    q, qm = policy.encode_prompts(["the movie was"] * 4, torch.device("cpu"))
    a = policy.generate(q, qm, 8, generator=torch.Generator().manual_seed(3))
    b = policy.generate(q, qm, 8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_top_k_and_top_p_filtering() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.15, 0.1]]))
    k2 = _filter_logits(logits, top_p=1.0, top_k=2)
    assert torch.isfinite(k2).tolist() == [[True, True, False, False]]
    p = _filter_logits(logits, top_p=0.7, top_k=0)  # 0.5 < 0.7 <= 0.75: keep the first two
    assert torch.isfinite(p).tolist() == [[True, True, False, False]]
    p = _filter_logits(logits, top_p=0.5, top_k=0)
    assert torch.isfinite(p).tolist() == [[True, False, False, False]]
    assert torch.equal(_filter_logits(logits, 1.0, 0), logits)


def test_forward_scores_shapes_and_value_head_on_trunk() -> None:
    policy = GPT2Policy(model_size="tiny", max_length=48, warm_start=False)
    q, qm = policy.encode_prompts(["the movie was", "today"], torch.device("cpu"))
    r, rm = policy.generate(q, qm, 5, generator=torch.Generator().manual_seed(0), stop_at_eos=False)
    ids, attn = torch.cat([q, r], 1), torch.cat([qm, rm], 1)
    lp, v, ent = policy.forward_scores(ids, attn, q.shape[1], with_entropy=True)
    assert lp.shape == v.shape == ent.shape == r.shape
    assert bool((lp <= 0).all()) and bool((ent >= 0).all())
    # the value shares the trunk: a separate critic adds a whole transformer's parameters
    separate = GPT2Policy(model_size="tiny", max_length=48, warm_start=False, shared_value_trunk=False)
    n_shared = sum(p.numel() for p in policy.parameters())
    n_sep = sum(p.numel() for p in separate.parameters())
    assert n_sep > n_shared * 1.3
    lp2, v2, _ = separate.forward_scores(ids, attn, q.shape[1])
    assert v2 is not None and v2.shape == r.shape


@pytest.mark.parametrize("shared", [True, False])
def test_scores_read_off_the_sampling_pass_equal_a_scoring_forward(shared: bool) -> None:
    """generate_scored's log-probs (tempered, before top-p) and values equal forward_scores' on the
    finished sequences: left-padded prompts, rows that stop at EOS, a separate critic (no values)."""
    torch.manual_seed(4)
    policy = GPT2Policy(model_size="tiny", max_length=48, warm_start=False, temperature=0.8, top_p=0.9,
                        shared_value_trunk=shared)
    policy.eval()
    q, qm = policy.encode_prompts(["the movie was", "i think the soup tasted", "today"], torch.device("cpu"))
    assert not bool(qm.all())  # left padding present
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    r, rm, lp, v = policy.generate_scored(q, qm, 10, generator=g1)
    r2, rm2 = policy.generate(q, qm, 10, generator=g2)
    assert torch.equal(r, r2) and torch.equal(rm, rm2)  # same tokens as plain sampling
    with torch.no_grad():
        ref_lp, ref_v, _ = policy.forward_scores(torch.cat([q, r], 1), torch.cat([qm, rm], 1), q.shape[1])
    real = rm.bool()
    torch.testing.assert_close(lp[real], ref_lp[real], atol=1e-4, rtol=1e-4)
    if shared:
        assert v is not None and ref_v is not None
        torch.testing.assert_close(v[real], ref_v[real], atol=1e-4, rtol=1e-4)
    else:
        assert v is None  # the critic's values need its own forward
    assert policy.scores_while_sampling is shared  # the trainer runs the scoring forward for a critic
    # the same decode can also keep what the update's forward builds on: the same tokens, the same
    # scores to fp32 rounding (keeping the MLP's pre-activation unfuses its GELU from the matmul)
    r3, rm3, lp3, v3, kept = policy.generate_scored_kept(q, qm, 10, generator=torch.Generator().manual_seed(5))
    assert torch.equal(r3, r) and torch.equal(rm3, rm)
    torch.testing.assert_close(lp3, lp, atol=1e-5, rtol=1e-5)
    assert (v3 is None) == (v is None)
    if v is not None:
        torch.testing.assert_close(v3, v, atol=1e-5, rtol=1e-5)
    assert kept is not None and kept.matches(torch.cat([q, r], 1), torch.cat([qm, rm], 1))
    with torch.no_grad():
        kept_lp, kept_v, _ = policy.forward_scores(torch.cat([q, r], 1), torch.cat([qm, rm], 1), q.shape[1],
                                                   activations=kept)
    torch.testing.assert_close(kept_lp[real], ref_lp[real], atol=1e-4, rtol=1e-4)
    if shared:
        assert kept_v is not None and ref_v is not None
        torch.testing.assert_close(kept_v[real], ref_v[real], atol=1e-4, rtol=1e-4)


def test_gpt2_policy_satisfies_the_base_policy_protocol() -> None:
    from rlhfkit.policy import BasePolicy

    policy = GPT2Policy(model_size="tiny", max_length=32, warm_start=False)
    assert isinstance(policy, BasePolicy)  # runtime check of the names; mypy checks the signatures
