"""The analytic memory model: exact parameter counts, activation counts checked against what autograd
really saves, and predicted vs measured RSS growth on small shapes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from rlhfkit import fastgpt2
from rlhfkit.config import load_config
from rlhfkit.memopt import ModelShape, Plan, estimate_memory, measure, plan_from_config
from rlhfkit.memopt.model import head_saved_bytes, layer_saved_bytes
from tests.utils import fast_overrides


def _gpt2(shape: ModelShape) -> GPT2LMHeadModel:
    cfg = GPT2Config(n_layer=shape.n_layer, n_embd=shape.n_embd, n_head=shape.n_head, vocab_size=shape.vocab_size,
                     n_positions=shape.n_positions, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(cfg)


@pytest.mark.parametrize("shape", [ModelShape(2, 64, 4, 500, 128), ModelShape(3, 96, 3, 1000, 256)])
def test_parameter_count_is_exact(shape: ModelShape) -> None:
    model = _gpt2(shape)
    assert shape.params() == sum(p.numel() for p in model.parameters())


def _saved_bytes(model: GPT2LMHeadModel, b: int, T: int, lean: bool = False) -> tuple[int, int]:
    """Bytes of the distinct non-parameter storages autograd saves in the trunk and in total."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            seen[st.data_ptr()] = st.nbytes()
        return t

    ids = torch.randint(model.config.vocab_size, (b, T))
    attn = torch.ones(b, T, dtype=torch.long)
    attn[0, :2] = 0  # left padding, as in the trainer
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        pos = (attn.cumsum(-1) - 1).clamp_min(0)
        if lean:
            h = fastgpt2.hidden_states(model.transformer, ids, attn, pos)
        else:
            h = model.transformer(input_ids=ids, attention_mask=attn, position_ids=pos).last_hidden_state
        assert h.requires_grad
        return sum(seen.values()), len(seen)


@pytest.mark.parametrize("lean", [True, False], ids=["fastgpt2", "transformers"])
@pytest.mark.parametrize(("b", "T"), [(4, 32), (2, 96)])
def test_layer_activation_count_matches_autograd(b: int, T: int, lean: bool) -> None:
    shape = ModelShape(2, 128, 4, 300, 256)
    model = _gpt2(shape).train()
    trunk, _ = _saved_bytes(model, b, T, lean=lean)
    plan = Plan(shape=shape, batch_size=b, mini_batch_size=b, grad_accum_steps=1, prompt_len=T - 8, response_len=8)
    predicted = shape.n_layer * layer_saved_bytes(plan, b, T, lean=lean)
    assert abs(predicted - trunk) / trunk < 0.10, (predicted, trunk)


def test_estimate_components_scale_as_expected() -> None:
    shape = ModelShape(12, 256, 4, 2000, 128)  # deep enough for checkpointing to pay off
    base = Plan(shape=shape, batch_size=32, mini_batch_size=16, grad_accum_steps=1, prompt_len=8, response_len=24)
    est = estimate_memory(base)
    n = shape.params()
    assert est.models["policy"] == {"weights": 4 * n, "grads": 4 * n, "optimizer": 8 * n}
    # on a CPU where decoding runs on packed weights: one more copy of each block's four matmul weights
    # and of the LM head (its rows padded to oneDNN's block)
    packed = fastgpt2.packed_decode_bytes(12, 256, 2000, base.gen_batch)
    assert est.models.get("policy_packed") == ({"weights": packed} if packed else None)
    if packed:
        assert 4 * (12 * 256 * 256 * 12 + 2000 * 256) <= packed <= 4 * (12 * 256 * 256 * 12 + 2064 * 256)
    assert "policy_packed" not in estimate_memory(base.with_(device="cuda")).models
    assert est.models["reference"]["weights"] == 4 * n
    ckpt = estimate_memory(base.with_(gradient_checkpointing=True))
    assert ckpt.stages["update"]["activations"] < est.stages["update"]["activations"] / 2
    accum = estimate_memory(base.with_(grad_accum_steps=4))
    assert accum.stages["update"]["activations"] == pytest.approx(est.stages["update"]["activations"] / 4, rel=0.01)
    off = estimate_memory(base.with_(reference_on_device=False))
    assert off.peak == est.peak - 4 * n
    eight = estimate_memory(base.with_(optimizer="adamw_8bit"))
    assert eight.models["policy"]["optimizer"] < est.models["policy"]["optimizer"] / 3
    bf16 = estimate_memory(base.with_(device="cuda", dtype="bf16"))
    assert bf16.stages["update"]["activations"] < 0.7 * est.stages["update"]["activations"]
    # the engine's static KV cache keeps the weights' dtype (fp32); transformers' cache follows autocast
    assert bf16.stages["generation"]["kv_cache"] == est.stages["generation"]["kv_cache"]
    hf = base.with_(device="cuda", lean_forward=False)
    assert estimate_memory(hf.with_(dtype="bf16")).stages["generation"]["kv_cache"] * 2 == \
        estimate_memory(hf).stages["generation"]["kv_cache"]
    assert head_saved_bytes(base, 2, 32, 24, 2000, 256) == 2 * 32 * 256 * 4 + 2 * (2 * 24 * 2000) * 4  # h, logp, p


# Three small shapes (different width, vocabulary and micro-batch), fixed response length.
CALIBRATION = [
    {"model.size": "custom", "model.n_layer": 4, "model.n_embd": 256, "model.n_head": 4,
     "ppo.batch_size": 32, "ppo.mini_batch_size": 16},
    {"model.size": "custom", "model.n_layer": 4, "model.n_embd": 256, "model.n_head": 4, "model.vocab_size": 8000,
     "ppo.batch_size": 32, "ppo.mini_batch_size": 32},  # two epochs of one minibatch: the first builds on the decode
    {"model.size": "custom", "model.n_layer": 6, "model.n_embd": 384, "model.n_head": 6, "model.vocab_size": 4000,
     "ppo.batch_size": 16, "ppo.mini_batch_size": 16, "generation.max_new_tokens": 48},
    # one GRPO step per rollout: the decode keeps its matmul outputs until the update (update_activations)
    {"model.size": "custom", "model.n_layer": 4, "model.n_embd": 256, "model.n_head": 4, "model.vocab_size": 8000,
     "algorithm": "grpo", "generation.samples_per_prompt": 4, "ppo.batch_size": 8, "ppo.mini_batch_size": 8,
     "ppo.ppo_epochs": 1},
]


@pytest.mark.slow
@pytest.mark.parametrize("overrides", CALIBRATION)
def test_predicted_peak_within_15_percent_of_rss_growth(overrides: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")  # RSS follows live bytes (see memopt.measurement)
    cfg = load_config("smoke", fast_overrides(**{"model.max_length": 64, "generation.max_new_tokens": 16,
                                                 "generation.stop_at_eos": False,
                                                 "train.eval_prompts": 8, **overrides}))
    predicted = estimate_memory(plan_from_config(cfg, device="cpu")).peak / 2**20
    m = measure(cfg, steps=2)
    measured = m.growth_mb
    assert measured > 0
    # the per-stage rows mem-report prints are on the same footing as the total (file pages excluded)
    assert max(m.stage_growth_mb().values()) == pytest.approx(measured, abs=0.05)
    assert abs(predicted - measured) / measured <= 0.15, f"predicted {predicted:.1f} MiB, measured {measured:.1f} MiB"


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [CALIBRATION[3], CALIBRATION[1]], ids=["grpo", "ppo"])
def test_the_decodes_kept_outputs_are_counted_from_generation_to_the_update(
        overrides: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run whose update's first forward covers every row in one micro-batch (one-step GRPO; PPO
    with two epochs of one minibatch, its π_old and values off the same decode) keeps the decode's
    matmul outputs until that forward builds on them: the stages in between hold them, and the
    predicted stage peaks follow the measured ones (without the kept outputs scoring's prediction
    would fall ~20% short)."""
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    cfg = load_config("smoke", fast_overrides(**{"model.max_length": 64, "generation.max_new_tokens": 16,
                                                 "generation.stop_at_eos": False, "train.eval_prompts": 8,
                                                 **overrides}))
    plan = plan_from_config(cfg, device="cpu")
    assert plan.update_from_sampling
    est = estimate_memory(plan)
    without = estimate_memory(plan.with_(update_from_sampling=False))
    # with gradient checkpointing the update runs transformers' forward, which cannot build on them
    assert "kept_activations" not in estimate_memory(plan.with_(gradient_checkpointing=True)).stages["scoring"]
    measured = measure(cfg, steps=2).stage_growth_mb()
    for stage in ("generation", "scoring", "advantages"):
        assert est.stage_peak(stage) > without.stage_peak(stage)
        predicted = est.stage_peak(stage) / 2**20
        assert abs(predicted - measured[stage]) / measured[stage] <= 0.15, (stage, predicted, measured[stage])


def test_plan_follows_generation_batch_placement_and_optimizer() -> None:
    cfg = load_config("smoke", {"generation.batch_size": 8, "model.reference_device": "cpu",
                                "ppo.optimizer": "adamw_8bit"})
    whole = load_config("smoke")
    cuda, cuda_whole = plan_from_config(cfg, device="cuda"), plan_from_config(whole, device="cuda")
    assert cuda.gen_batch == 8 and cuda_whole.gen_batch == 32 and cuda.eval_batch == 8
    assert not cuda.reference_on_device and cuda_whole.reference_on_device
    est, est_whole = estimate_memory(cuda), estimate_memory(cuda_whole)
    n = cuda.shape.params()
    assert est.models["reference"]["weights"] == 0 and est_whole.models["reference"]["weights"] == 4 * n
    assert est.stages["generation"]["kv_cache"] * 4 == est_whole.stages["generation"]["kv_cache"]
    assert est.models["policy"]["optimizer"] < est_whole.models["policy"]["optimizer"] / 3
    # a CPU run keeps the reference in the memory it measures: "cpu" placement frees nothing there
    assert plan_from_config(cfg, device="cpu").reference_on_device


def _traced_update_peak(policy, b: int, P: int, R: int, ga: int, G: int = 1) -> int:  # noqa: ANN001
    """Peak live tensor bytes of one minibatch update (forward, entropy head, backward, fused AdamW
    step) above the memory before it, from torch.profiler's allocation events."""
    from torch.profiler import ProfilerActivity, profile

    params = policy.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=1e-5, fused=True)
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()  # the moments exist in every step after the first
    ids = torch.randint(policy.model.config.vocab_size, (b * ga, P + R))
    ids[:, :P] = ids[::G, :P].repeat_interleave(G, 0)  # each prompt's G samples adjacent, as rollout() lays them
    attn = torch.ones_like(ids)
    policy.train()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        opt.zero_grad(set_to_none=True)
        for m in range(ga):
            lp, v, ent = policy.forward_scores(ids[m * b:(m + 1) * b], attn[m * b:(m + 1) * b], P, with_entropy=True)
            ((lp.mean() + v.pow(2).mean() - 0.01 * ent.mean()) / ga).backward()
            del lp, v, ent
        opt.step()
    return _traced_peak(prof)


def _traced_peak(prof) -> int:  # noqa: ANN001
    """Peak of the live bytes allocated inside a ``profile_memory=True`` profile.

    Frees count only for blocks allocated inside it: the profiler also reports the freeing of blocks
    it saw allocated in an *earlier* profile of the same process (another test's tensors, released
    whenever the garbage collector gets to them), which would otherwise lower the peak at random.
    """
    from torch._C._profiler import _EventType

    allocs: list[tuple[int, int, int]] = []  # (time, pointer, signed bytes)

    def walk(nodes) -> None:  # noqa: ANN001
        for n in nodes:
            if n.tag == _EventType.Allocation:
                allocs.append((n.start_time_ns, n.extra_fields.ptr, n.extra_fields.alloc_size))
            walk(n.children)

    walk(prof.profiler.kineto_results.experimental_event_tree())
    live: set[int] = set()
    cur = peak = 0
    for _, ptr, nbytes in sorted(allocs, key=lambda a: a[0]):  # stable: same-time events keep their order
        if nbytes > 0:
            live.add(ptr)
        elif ptr in live:
            live.discard(ptr)
        else:
            continue  # allocated before this profile
        cur += nbytes
        peak = max(peak, cur)
    return peak


@pytest.mark.parametrize("ckpt,ga,G,peak_phase", [(False, 1, 1, "head"), (True, 1, 1, "embedding"),
                                                  (True, 2, 1, "head"), (False, 1, 4, "head")])
def test_update_peak_matches_the_traced_allocations(ckpt: bool, ga: int, G: int, peak_phase: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The update's phases (head backward without gradients, checkpoint recompute, embedding
    gradient, fused optimizer step) against every allocation of a real minibatch update; G = 4: a
    GRPO batch whose groups share their prompt (run once). The matmuls go where a fresh run's would:
    oneDNN serves a bounded set of row counts per process, and tests before this one may have used
    them all up (the allocations then follow addmm's pattern, not the one the model describes)."""
    from rlhfkit.memopt.model import _update_peak
    from rlhfkit.policy import GPT2Policy

    monkeypatch.setattr(fastgpt2, "_onednn_rows", set())

    L, D, H, V, b, P, R = 4, 256, 4, 8000, 8, 8, 32
    torch.manual_seed(0)
    policy = GPT2Policy(model_size="custom", n_layer=L, n_embd=D, n_head=H, vocab_size=V, max_length=P + R,
                        warm_start=False, gradient_checkpointing=ckpt)
    traced = _traced_update_peak(policy, b, P, R, ga, G)
    plan = Plan(shape=ModelShape(L, D, H, V, policy.model.config.n_positions), batch_size=b * ga // G,
                mini_batch_size=b * ga // G, grad_accum_steps=ga, prompt_len=P, response_len=R,
                gradient_checkpointing=ckpt, samples_per_prompt=G)
    n_trainable = sum(p.numel() for p in policy.trainable_parameters())
    assert n_trainable == plan.shape.params() + D + 1
    parts, phase = _update_peak(plan, n_trainable)
    predicted = 4 * n_trainable + sum(parts.values())  # persistent memory counts the gradients
    # at this shape the LM head holds the peak, except checkpointed without accumulation: there the
    # activations are small, no earlier micro-batch's gradients exist, and the tied embedding's
    # dense gradient at the end of the backward is the worst moment, unless the CPU's matmuls run
    # on oneDNN (the embedding's gradient is then summed in place, and the head holds the peak, or,
    # where the compiled kernel computes the log-softmax and entropy and so lowers the head's moment,
    # block 0's recomputed activations)
    from rlhfkit.fastgpt2 import kernels_in_use, onednn_in_use

    if peak_phase == "embedding" and onednn_in_use():
        peak_phase = "trunk" if kernels_in_use() else "head"
    assert phase == peak_phase
    assert abs(predicted - traced) / traced < 0.05, (predicted / 2**20, traced / 2**20)


def test_scores_from_sampling_move_the_policy_pass_out_of_scoring() -> None:
    """ppo.rollout_scores=sampling: the generation stage keeps the decode hidden states (2 x g x R x
    D fp32), and scoring no longer holds the policy's forward (the reference's, same shape, remains
    unless it lives on the host)."""
    base = Plan(shape=ModelShape(4, 256, 4, 2000, 128), batch_size=32, mini_batch_size=8, grad_accum_steps=1,
                prompt_len=8, response_len=32, device="cuda", reference_on_device=False)
    sampled = base.with_(scores_from_sampling=True)
    a, b = estimate_memory(base), estimate_memory(sampled)
    assert b.stages["generation"]["scores"] == 2 * 32 * 32 * 256 * 4
    assert "scores" not in a.stages["generation"]
    assert b.stages["scoring"]["forward"] < a.stages["scoring"]["forward"]
    assert plan_from_config(load_config("smoke", {"ppo.rollout_scores": "sampling"})).scores_from_sampling
    assert plan_from_config(load_config("smoke")).scores_from_sampling  # auto, fp32
    assert not plan_from_config(load_config("smoke", {"ppo.rollout_scores": "forward"})).scores_from_sampling


def test_scores_from_sampling_keep_the_reference_pass_in_scoring() -> None:
    """The reference's forward still runs in scoring when the old log-probs come off sampling: the
    scoring peak keeps it (it was counted as zero along with the policy's pass)."""
    base = Plan(shape=ModelShape(4, 256, 4, 2000, 128), batch_size=32, mini_batch_size=8, grad_accum_steps=1,
                prompt_len=8, response_len=32, device="cpu", reference_on_device=True)
    sampled = base.with_(scores_from_sampling=True)
    assert estimate_memory(sampled).stages["scoring"]["forward"] == estimate_memory(base).stages["scoring"]["forward"]


@pytest.mark.parametrize("onednn", [True, False], ids=["onednn", "blas"])
def test_nograd_forward_peak_matches_the_traced_allocations(monkeypatch: pytest.MonkeyPatch, onednn: bool) -> None:
    """A scoring forward on the lean path peaks at the LM head (hidden state, the response rows,
    logits and log-softmax), not at trunk + head: the model takes the larger of the two. On either
    matmul library (oneDNN fuses the MLP's activation into its matmul; the BLAS path does not).

    The process's oneDNN row-count budget starts empty here, as in a run's own process: in a test
    session earlier tests have used it up and these matmuls would go to addmm (other allocations)."""
    from torch.profiler import ProfilerActivity, profile

    from rlhfkit import fastgpt2

    if onednn and not fastgpt2.ONEDNN_AVAILABLE:
        pytest.skip("oneDNN unavailable")
    monkeypatch.setattr(fastgpt2, "_ONEDNN", onednn)
    monkeypatch.setattr(fastgpt2, "_onednn_rows", set())
    from rlhfkit.memopt.model import nograd_forward_bytes
    from rlhfkit.policy import GPT2Policy

    L, D, H, V, B, P, R = 4, 256, 4, 1599, 64, 8, 24
    torch.manual_seed(0)
    policy = GPT2Policy(model_size="custom", n_layer=L, n_embd=D, n_head=H, vocab_size=V, max_length=P + R,
                        warm_start=False)
    policy.eval()
    ids = torch.randint(V, (B, P + R))
    attn = torch.ones_like(ids)
    with torch.no_grad():
        policy.forward_scores(ids, attn, P)
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            policy.forward_scores(ids, attn, P)
    traced = _traced_peak(prof)
    plan = Plan(shape=ModelShape(L, D, H, V, 1024), batch_size=B, mini_batch_size=16, grad_accum_steps=1,
                prompt_len=P, response_len=R)
    predicted = nograd_forward_bytes(plan, B, P + R, R, plan.shape)
    assert abs(predicted - traced) / traced < 0.15, (predicted / 2**20, traced / 2**20)
    # the sum of both moments, the rule for transformers' forward, would be far off here
    assert nograd_forward_bytes(plan.with_(lean_forward=False), B, P + R, R, plan.shape) > 1.5 * traced


def test_critic_free_plans_have_no_value_head_and_count_g_sequences() -> None:
    ppo = load_config("smoke", {"model.shared_value_trunk": False})
    grpo = load_config("smoke", {"model.shared_value_trunk": False, "algorithm": "grpo",
                                 "generation.samples_per_prompt": 4})
    p_ppo, p_grpo = plan_from_config(ppo, device="cpu"), plan_from_config(grpo, device="cpu")
    assert p_ppo.critic and not p_grpo.critic
    assert p_grpo.sequences == 128 and p_grpo.gen_batch == 128 and p_grpo.micro_batch == 64
    assert p_ppo.value_trunks == 2 and p_grpo.value_trunks == 1  # a separate critic only for PPO
    e_ppo, e_grpo = estimate_memory(p_ppo), estimate_memory(p_grpo)
    assert e_grpo.models["value"] == {"weights": 0, "grads": 0, "optimizer": 0}
    assert e_ppo.models["value"]["weights"] > 4 * p_ppo.shape.trunk_params()
    # G=4 responses per prompt: four times the KV cache of one response per prompt, same prompts
    g1 = estimate_memory(p_grpo.with_(samples_per_prompt=1))
    assert e_grpo.stages["generation"]["kv_cache"] == 4 * g1.stages["generation"]["kv_cache"]
    # same sequences per step: the critic-free run needs less (no critic's weights, moments, pass)
    same = estimate_memory(p_ppo.with_(batch_size=128, mini_batch_size=64))
    assert e_grpo.peak < same.peak - 4 * 4 * p_ppo.shape.trunk_params()


def test_cuda_predictions_match_the_recorded_gpu_measurements() -> None:
    """The model against real CUDA peaks: ``benchmarks/results/gpu_check.json`` holds
    ``max_memory_allocated`` per case as ``scripts/gpu_check.sh`` measured it on a GPU (2026-12-04,
    H200, this engine). Before the fix this test came with, three cases read −11% to −16%: the
    autograd thread's second cuBLAS workspace and, under autocast, the fp32 copy of the logits that
    ``log_softmax`` makes were not counted."""
    import importlib.util
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("gpu_check", root / "scripts" / "gpu_check.py")
    assert spec and spec.loader
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    recorded = json.loads((root / "benchmarks" / "results" / "gpu_check.json").read_text())
    rows = gpu_check.recompute_rows(recorded)
    assert len(rows) >= 6 and any("grpo" in case for case, *_ in rows)
    errors = {case: round((pred - meas) / meas, 3) for case, pred, meas, _ in rows}
    assert all(abs(e) <= 0.10 for e in errors.values()), errors


def test_decode_rows_are_the_generation_chunks_and_the_evaluation_chunks() -> None:
    """Packing for decoding depends on the row count, so the model counts every decode the run takes:
    a short last chunk in rollout or in evaluation packs where the full chunks do not."""
    shape = ModelShape(2, 64, 2, 100, 64)
    plan = Plan(shape=shape, batch_size=32, mini_batch_size=16, grad_accum_steps=1, prompt_len=8, response_len=8,
                eval_batch=32, eval_prompts=8)
    assert plan.decode_rows() == {32, 8}
    assert plan.with_(generation_batch=12, eval_prompts=0).decode_rows() == {12, 8}
    assert plan.with_(samples_per_prompt=4, generation_batch=4, eval_prompts=70).decode_rows() == {16, 32, 6}
    cfg = load_config("smoke", {"train.eval_prompts": 5})
    assert plan_from_config(cfg, device="cpu").eval_prompts == 5


def test_an_evaluation_that_packs_counts_the_packed_copy_where_rollout_does_not(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from rlhfkit import fastgpt2

    if not fastgpt2._PACK_OPS:
        pytest.skip("oneDNN's packing ops unavailable")
    monkeypatch.setattr(fastgpt2, "_ONEDNN", False)
    monkeypatch.setattr(fastgpt2, "_ONEDNN_SKINNY", False)
    monkeypatch.setattr(fastgpt2, "_PACKED_SKINNY", True)  # an Intel CPU with AVX-512
    monkeypatch.setattr(fastgpt2, "PACK_DECODE", True)
    plan = Plan(shape=ModelShape(2, 64, 2, 100, 64), batch_size=32, mini_batch_size=16, grad_accum_steps=1,
                prompt_len=8, response_len=8, eval_batch=32)
    assert "policy_packed" not in estimate_memory(plan).models  # 32-row decodes: weights as stored
    packed = estimate_memory(plan.with_(eval_prompts=8)).models["policy_packed"]["weights"]
    assert packed == fastgpt2.packed_decode_bytes(2, 64, 100, 8) > 4 * 2 * 12 * 64 * 64


def test_a_pretrained_checkpoints_plan_follows_the_engine_that_turns_its_dropout_off(tmp_path: Path) -> None:
    """Checkpoints ship with dropout 0.1; the engine turns it off (``runtime.disable_dropout``) and
    keeps its lean forward, so the plan counts neither dropout masks nor transformers' activations."""
    from rlhfkit.policy import GPT2Policy
    from tests.unit.test_lab_path import save_checkpoint_with_dropout

    ckpt = save_checkpoint_with_dropout(tmp_path / "gpt2-dropout")
    cfg = load_config("smoke", fast_overrides(**{"model.pretrained": str(ckpt), "model.size": "custom"}))
    plan = plan_from_config(cfg, device="cpu")
    policy = GPT2Policy(pretrained=ckpt, warm_start=False)
    policy.train()
    assert fastgpt2.supports(policy.model.transformer)
    assert plan.fast_path and not plan.dropout
