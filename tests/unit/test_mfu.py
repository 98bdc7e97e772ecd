"""The analytic FLOP counter against a hand count, against the weights of a real GPT-2 and against
PyTorch's own FLOP counter on a real forward; MFU arithmetic; the CUDA peak table."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import GPT2Config, GPT2LMHeadModel

from rlhfkit import mfu
from rlhfkit.metrics import METRICS, perf_name

SHAPE = mfu.ModelShape(n_layer=2, d_model=8, d_ff=32, vocab=10)


def test_forward_flops_match_a_hand_count() -> None:
    # Two sequences of 3 and 5 tokens, logits on 4 positions.
    # block weights: 2 layers x (qkv 8x24 + out 8x8 + fc 8x32 + proj 32x8) = 2 x (192+64+256+256) = 1536
    # matmuls: 2 FLOPs x 1536 weights x 8 tokens                             = 24,576
    # attention: per layer, a token at position c does QK (2*8*c) + AV (2*8*c) = 32c;
    #   sequence of 3: 32*(1+2+3) = 192, of 5: 32*(1+..+5) = 480; x 2 layers  = 1,344
    # head: 2 x 8 x 10 x 4 positions                                          = 640
    assert SHAPE.block_params == 1536
    assert mfu.forward_flops(SHAPE, [3, 5], 4) == 24_576 + 1_344 + 640
    assert mfu.forward_flops(SHAPE, [3, 5], 4, head=False) == 24_576 + 1_344


def test_block_params_are_the_weights_of_a_real_gpt2() -> None:
    cfg = GPT2Config(vocab_size=50, n_positions=32, n_embd=16, n_layer=3, n_head=2)
    model = GPT2LMHeadModel(cfg)
    weights = sum(m.weight.numel() for b in model.transformer.h
                  for m in (b.attn.c_attn, b.attn.c_proj, b.mlp.c_fc, b.mlp.c_proj))
    assert mfu.ModelShape.of(cfg).block_params == weights


def test_forward_flops_agree_with_torch_flop_counter_on_a_real_forward() -> None:
    """PyTorch counts every matmul of the forward; its attention is a full T x T product (the
    causal mask is applied after), so compare with the causal half swapped for the full square."""
    cfg = GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=4, attn_implementation="eager")
    model = GPT2LMHeadModel(cfg).eval()
    T = 12
    ids = torch.randint(0, 64, (1, T))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(ids)
    shape = mfu.ModelShape.of(cfg)
    causal = 2 * shape.n_layer * shape.d_model * T * (T + 1)
    full = 4 * shape.n_layer * shape.d_model * T * T
    assert counter.get_total_flops() == mfu.forward_flops(shape, [T], T) - causal + full


def test_stage_flops_count_the_passes_of_each_stage() -> None:
    batch = mfu.BatchTokens(prompt=(3, 2), response=(2, 1))
    assert batch.fed_lens == [4, 2]  # the last token of each sequence is never fed
    fwd = mfu.forward_flops(SHAPE, [4, 2], 3)
    trunk = mfu.forward_flops(SHAPE, [4, 2], 0, head=False)
    got = mfu.stage_flops(SHAPE, batch, ppo_epochs=2, separate_critic=False, scores_from_sampling=False)
    assert got == {"generation": fwd, "scoring": 2 * fwd, "advantages": 3 * mfu.ADVANTAGE_FLOPS_PER_TOKEN,
                   "update": 3 * 2 * fwd}
    critic = mfu.stage_flops(SHAPE, batch, ppo_epochs=1, separate_critic=True, scores_from_sampling=True,
                             reward_flops_per_token=100.0)
    assert critic["scoring"] == trunk + fwd + 100.0 * 8  # critic + reference + reward over 8 tokens
    assert critic["update"] == 3 * (fwd + trunk)


def test_perf_metrics_divide_by_seconds_peak_and_tokens() -> None:
    batch = mfu.BatchTokens(prompt=(3, 2), response=(2, 1))
    peak = mfu.Peak(1e6, "test", "fp32")
    out = mfu.perf_metrics({"generation": 5e5, "update": 2e6}, {"generation": 1.0, "update": 4.0}, batch, peak)
    assert out[perf_name("mfu", "generation")] == 0.5
    assert out[perf_name("mfu", "update")] == 0.5
    assert out[perf_name("time_per_token_ms", "generation")] == 1000.0 / 3  # per generated token
    assert out[perf_name("time_per_token_ms", "update")] == 4000.0 / 8  # per token of the batch
    assert perf_name("mfu", "scoring") not in out  # the stage did not run
    assert set(out) <= set(METRICS)
    unknown = mfu.perf_metrics({"update": 1.0}, {"update": 1.0}, batch, mfu.Peak(None, "?", "fp32"))
    assert perf_name("mfu", "update") not in unknown and perf_name("flops", "update") in unknown


@pytest.mark.parametrize(("name", "dtype", "expected"), [
    ("NVIDIA H100 80GB HBM3", "bf16", 989e12), ("NVIDIA H100 PCIe", "bf16", 756e12),
    ("NVIDIA A100-SXM4-80GB", "fp32", 19.5e12), ("NVIDIA H200", "bf16", 989e12), ("Some New GPU", "bf16", None)])
def test_cuda_peaks_come_from_the_table_by_name_and_dtype(name: str, dtype: str, expected: float | None) -> None:
    peak = mfu.cuda_peak(name, dtype)
    assert peak.flops == expected
    assert ("TFLOP/s" in peak.source) == (expected is not None)


def test_cpu_probe_measures_a_positive_peak_through_the_engine_kernels() -> None:
    peak = mfu.cpu_peak_probe(rows=64, width=128, repeats=2)
    assert peak.flops is not None and peak.flops > 0
    assert "measured" in peak.source and peak.dtype == "fp32"


def test_a_learned_reward_counts_the_matmuls_its_scoring_forward_runs() -> None:
    """ModelReward.flops_per_token x tokens is what the lean forward multiplies: every layer's
    matmuls at every position, except the last layer's projection and MLP, which run at the one
    position it reads (added back here, with the scalar head). Attention is not counted (rlhfkit.mfu)."""
    from torch.utils.flop_counter import FlopCounterMode

    from rlhfkit import tiny
    from rlhfkit.rewards import ModelReward

    def onednn_flops(x_shape: Any, w_shape: Any, *args: Any, **kwargs: Any) -> int:
        return 2 * x_shape[0] * w_shape[0] * x_shape[1]  # (N, in) @ (out, in)^T

    rm = ModelReward(tiny.get_tokenizer(), n_layer=2, n_embd=32, n_head=4)
    query, response = torch.randint(5, 60, (1, 6)), torch.randint(5, 60, (1, 10))
    # the oneDNN matmul, which serves these matmuls on CPUs that prefer it, is not in torch's table
    with FlopCounterMode(display=False, custom_mapping={torch.ops.mkldnn._linear_pointwise: onednn_flops}) as counter:
        rm.score(prompts=["a"], responses=["b"], query_ids=query, response_ids=response,
                 response_mask=torch.ones_like(response))
    d = 32
    assert counter.get_total_flops() == rm.flops_per_token * 16 + 2 * 9 * d * d + 2 * d
    assert rm.flops_per_token == 2 * mfu.ModelShape.of(rm.net.config).block_params * (1 - 0.75 / 2)


def test_a_prompt_rows_share_is_counted_once_as_the_lean_forward_runs_it() -> None:
    """A GRPO batch (each prompt's G samples adjacent): the policy's scoring forward runs each
    distinct prompt once, and the count leaves the other rows' prompt tokens out. Matmuls only
    (torch's counter does not count the CPU's attention kernel)."""
    from rlhfkit.policy import GPT2Policy

    def onednn_flops(x_shape: Any, w_shape: Any, *args: Any, **kwargs: Any) -> int:
        return 2 * x_shape[0] * w_shape[0] * x_shape[1]

    policy = GPT2Policy(model_size="custom", n_layer=2, n_embd=32, n_head=4, vocab_size=64, max_length=16,
                        warm_start=False)
    policy.eval()
    U, G, P, R = 2, 3, 5, 7
    ids = torch.cat([torch.randint(5, 60, (U, P)).repeat_interleave(G, 0), torch.randint(5, 60, (U * G, R))], 1)
    mask = torch.ones_like(ids)
    shared = mfu.shared_prompts(ids, mask, P)
    assert shared == (P,) * (U * (G - 1))
    with FlopCounterMode(display=False, custom_mapping={torch.ops.mkldnn._linear_pointwise: onednn_flops}) as counter, \
            torch.no_grad():
        policy.forward_scores(ids, mask, P, with_values=False)
    shape = mfu.ModelShape.of(policy.model.config)
    B, L, d = U * G, shape.n_layer, shape.d_model
    # every position but the last (its logits predict nothing): each prompt once, R - 1 more per row
    assert counter.get_total_flops() == 2 * shape.block_params * (U * P + B * (R - 1)) + 2 * d * shape.vocab * B * R
    plain = mfu.forward_flops(shape, [P + R - 1] * B, B * R)
    once = mfu.forward_flops(shape, [P + R - 1] * B, B * R, shared=shared)
    assert plain - once == len(shared) * (2 * shape.block_params * P + 2 * L * d * P * (P + 1))
    batch = mfu.BatchTokens(prompt=(P,) * B, response=(R,) * B, shared=shared)
    got = mfu.stage_flops(shape, batch, ppo_epochs=1, separate_critic=False, scores_from_sampling=True,
                          share_nograd=True, share_update=True)
    assert got["generation"] == got["scoring"] == once and got["update"] == 3 * once
    alone = mfu.stage_flops(shape, batch, ppo_epochs=1, separate_critic=False, scores_from_sampling=True)
    assert alone["generation"] == alone["scoring"] == plain  # transformers' forward runs every row
