"""The lean GPT-2 forward computes what transformers' GPT-2 computes, on the same parameters."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from rlhfkit import fastgpt2
from rlhfkit.policy import sample
from rlhfkit.ppo_ops import entropy_from_logits, logprobs_from_logits

V = 97


def tiny_lm(seed: int = 0, **kw: Any) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    args: dict[str, Any] = {"vocab_size": V, "n_layer": 3, "n_embd": 48, "n_head": 4, "n_positions": 64,
                            "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, **kw}
    cfg = GPT2Config(bos_token_id=0, eos_token_id=0, pad_token_id=1, **args)
    return GPT2LMHeadModel(cfg).eval()


def left_padded(B: int = 4, T: int = 11, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, V, (B, T), generator=g)
    mask = torch.ones_like(ids)
    for row, pad in enumerate([0, 3, 1, 5][:B]):  # no row is all padding
        mask[row, :pad] = 0
        ids[row, :pad] = 1
    return ids, mask


def hf_logits(model: GPT2LMHeadModel, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    pos = fastgpt2.position_ids_from_mask(mask)
    return model(input_ids=ids, attention_mask=mask, position_ids=pos).logits


def test_lean_forward_matches_transformers_logits_with_left_padding() -> None:
    model = tiny_lm()
    ids, mask = left_padded()
    ref = hf_logits(model, ids, mask)
    lean = model.lm_head(fastgpt2.hidden_states(model.transformer, ids, mask))
    real = mask.bool()
    assert torch.isfinite(lean).all()  # pad rows stay finite: they must not poison real rows
    torch.testing.assert_close(lean[real], ref[real], atol=1e-5, rtol=1e-5)


def test_lean_forward_without_padding_and_after_eos_padding() -> None:
    model = tiny_lm(seed=3)
    ids, _ = left_padded(seed=4)
    mask = torch.ones_like(ids)
    mask[2, 7:] = 0  # padding after an EOS is never a key of a real position: no mask needed
    assert fastgpt2._padding_mask(mask) is None
    ref = hf_logits(model, ids, mask)
    lean = model.lm_head(fastgpt2.hidden_states(model.transformer, ids, mask))
    torch.testing.assert_close(lean[mask.bool()], ref[mask.bool()], atol=1e-5, rtol=1e-5)
    mask[1, 3:5] = 0  # a hole in the middle is masked exactly as transformers masks it
    ref = hf_logits(model, ids, mask)
    lean = model.lm_head(fastgpt2.hidden_states(model.transformer, ids, mask))
    torch.testing.assert_close(lean[mask.bool()], ref[mask.bool()], atol=1e-5, rtol=1e-5)


def test_gradients_reach_the_transformers_parameters_and_match() -> None:
    model = tiny_lm(seed=5).train()
    ids, mask = left_padded(seed=6)
    real = mask.bool()

    def grads(lean: bool) -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        if lean:
            logits = model.lm_head(fastgpt2.hidden_states(model.transformer, ids, mask))
        else:
            logits = hf_logits(model, ids, mask)
        logits[real].logsumexp(-1).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    assert fastgpt2.supports(model.transformer)
    ref, lean = grads(False), grads(True)
    assert ref.keys() == lean.keys() and len(ref) > 10
    for name in ref:
        torch.testing.assert_close(lean[name], ref[name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("G", [1, 3], ids=["distinct", "groups"])
def test_decoder_steps_match_a_full_forward(G: int) -> None:
    """G = 3: each prompt three times in adjacent rows, prefilled once and its cache copied."""
    model = tiny_lm(seed=7)
    ids, mask = left_padded(T=6, seed=8)
    ids, mask = ids.repeat_interleave(G, 0), mask.repeat_interleave(G, 0)
    assert (fastgpt2.distinct_rows(ids, mask) is None) == (G == 1)
    g = torch.Generator().manual_seed(9)
    new = torch.randint(2, V, (ids.shape[0], 5), generator=g)
    dec = fastgpt2.Decoder(model, ids, mask, max_new_tokens=5)
    steps = [dec.logits]
    for t in range(4):
        steps.append(dec.step(new[:, t]))
    full_ids = torch.cat([ids, new], 1)
    full_mask = torch.cat([mask, torch.ones_like(new)], 1)
    ref = hf_logits(model, full_ids, full_mask)[:, ids.shape[1] - 1 : -1]  # (B, 5, V)
    torch.testing.assert_close(torch.stack(steps, 1), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("stop_at_eos", [True, False])
def test_lean_sampling_gives_the_same_tokens_as_the_transformers_loop(stop_at_eos: bool) -> None:
    model = tiny_lm(seed=10)
    ids, mask = left_padded(seed=11)
    kw = {"eos_token_id": 5, "pad_token_id": 1, "temperature": 0.9, "top_p": 0.95, "stop_at_eos": stop_at_eos}
    ref = sample(model, ids, mask, 16, generator=torch.Generator().manual_seed(12), lean=False, **kw)  # type: ignore[arg-type]
    lean = sample(model, ids, mask, 16, generator=torch.Generator().manual_seed(12), lean=True, **kw)  # type: ignore[arg-type]
    assert torch.equal(lean.tokens, ref.tokens) and torch.equal(lean.mask, ref.mask)


def test_unsupported_configurations_fall_back() -> None:
    assert not fastgpt2.supports(tiny_lm(resid_pdrop=0.1).train().transformer)  # active dropout
    assert fastgpt2.supports(tiny_lm(resid_pdrop=0.1).eval().transformer)  # inactive in eval mode
    ckpt = tiny_lm().train()
    ckpt.gradient_checkpointing_enable()
    assert not fastgpt2.supports(ckpt.transformer)
    assert not fastgpt2.supports(tiny_lm(activation_function="silu").transformer)
    assert not fastgpt2.supports(torch.nn.Linear(2, 2))


def test_fused_logprobs_and_entropy_match_the_separate_functions() -> None:
    g = torch.Generator().manual_seed(13)
    logits = torch.randn(3, 5, V, generator=g) * 3
    labels = torch.randint(0, V, (3, 5), generator=g)
    lp, ent = fastgpt2.logprobs_and_entropy(logits, labels)
    assert ent is not None
    torch.testing.assert_close(lp, logprobs_from_logits(logits, labels))
    torch.testing.assert_close(ent, entropy_from_logits(logits))
    lp2, none = fastgpt2.logprobs_and_entropy(logits, labels, with_entropy=False)
    assert none is None
    torch.testing.assert_close(lp2, lp)


def test_logprobs_and_entropy_backward_matches_autograd() -> None:
    """The hand-written backward equals autograd through the naive formulas, for any mix of
    upstream gradients on the two outputs (including one output unused)."""
    g = torch.Generator().manual_seed(21)
    logits = (torch.randn(2, 4, V, generator=g, dtype=torch.float64) * 3)
    labels = torch.randint(0, V, (2, 4), generator=g)
    w_lp, w_ent = torch.randn(2, 4, generator=g, dtype=torch.float64), torch.randn(2, 4, generator=g, dtype=torch.float64)
    for use_lp, use_ent in ((True, True), (True, False), (False, True)):
        z1 = logits.clone().requires_grad_()
        lp, ent = fastgpt2.logprobs_and_entropy(z1, labels)
        assert ent is not None
        ((lp * w_lp).sum() * use_lp + (ent * w_ent).sum() * use_ent).backward()
        z2 = logits.clone().requires_grad_()
        logp = torch.log_softmax(z2, -1)
        naive_lp = logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
        naive_ent = -(logp.exp() * logp).sum(-1)
        ((naive_lp * w_lp).sum() * use_lp + (naive_ent * w_ent).sum() * use_ent).backward()
        torch.testing.assert_close(lp, naive_lp)
        torch.testing.assert_close(z1.grad, z2.grad)
    assert torch.autograd.gradcheck(lambda z: fastgpt2.logprobs_and_entropy(z, labels[:1, :2] % 9),
                                    (logits[:1, :2, :9].clone().requires_grad_(),))


def test_inverse_cdf_draw_follows_the_probabilities_and_skips_zeros() -> None:
    from rlhfkit.policy import _draw

    probs = torch.tensor([[0.0, 0.5, 0.0, 0.3, 0.2, 0.0]]).repeat(20_000, 1)
    tok = _draw(probs, torch.Generator().manual_seed(14))
    freq = torch.bincount(tok, minlength=6).double() / tok.numel()
    assert set(tok.unique().tolist()) <= {1, 3, 4}
    torch.testing.assert_close(freq, probs[0].double(), atol=0.015, rtol=0.0)


# ----------------------------------------------------------------------------- oneDNN matmuls
needs_onednn = pytest.mark.skipif(not fastgpt2.ONEDNN_AVAILABLE, reason="oneDNN unavailable")


@pytest.mark.parametrize(("setting", "vendor", "avx512", "expected"), [
    ("auto", "GenuineIntel", True, False), ("auto", "AuthenticAMD", True, True), ("auto", "", True, True),
    ("auto", "AuthenticAMD", False, False), ("auto", "GenuineIntel", False, False),
    ("onednn", "GenuineIntel", False, True), ("blas", "AuthenticAMD", True, False), (" BLAS ", "", True, False),
])
def test_the_matmul_library_follows_the_setting_then_the_cpu(setting: str, vendor: str, avx512: bool,
                                                            expected: bool) -> None:
    assert fastgpt2.prefer_onednn(setting, vendor, avx512) is expected


@pytest.mark.parametrize(("setting", "vendor", "avx512", "expected"), [
    ("auto", "AuthenticAMD", False, True), ("auto", "AuthenticAMD", True, False),
    ("auto", "GenuineIntel", False, False), ("blas", "AuthenticAMD", False, False),
    ("onednn", "AuthenticAMD", False, False),
    # measured on AMD only: an unknown vendor (an ARM server, macOS: no vendor_id to read) keeps ATen's BLAS
    ("auto", "", False, False), ("auto", "HygonGenuine", False, False),
])
def test_skinny_matmuls_alone_go_to_onednn_on_an_amd_cpu_without_avx512(
        setting: str, vendor: str, avx512: bool, expected: bool) -> None:
    assert fastgpt2.prefer_onednn_skinny(setting, vendor, avx512) is expected


@pytest.mark.parametrize(("setting", "vendor", "avx512", "expected"), [
    ("auto", "GenuineIntel", True, True), ("auto", "GenuineIntel", False, False),
    ("auto", "AuthenticAMD", True, False), ("auto", "AuthenticAMD", False, False),
    ("blas", "GenuineIntel", True, False), ("onednn", "GenuineIntel", True, False),
])
def test_packed_skinny_matmuls_go_to_onednn_on_an_intel_cpu_with_avx512(
        setting: str, vendor: str, avx512: bool, expected: bool) -> None:
    assert fastgpt2.prefer_packed_skinny(setting, vendor, avx512) is expected


@needs_onednn
def test_where_only_packed_skinny_matmuls_go_to_onednn_decoding_packs_and_nothing_else_moves(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An Intel CPU with AVX-512: a decode of at most ONEDNN_SKINNY_ROWS rows multiplies by packed
    weights on oneDNN, every matmul on a weight as stored stays on addmm, and the logits are the
    ones the weights as stored give (to fp32 rounding: another library sums in another order)."""
    monkeypatch.setattr(fastgpt2, "_ONEDNN", False)
    monkeypatch.setattr(fastgpt2, "_ONEDNN_SKINNY", False)
    monkeypatch.setattr(fastgpt2, "_PACKED_SKINNY", True)
    monkeypatch.setattr(fastgpt2, "PACK_DECODE", True)
    monkeypatch.setattr(fastgpt2, "_onednn_rows", set())
    model = tiny_lm(seed=36, n_embd=64, n_head=4)
    ids, mask = left_padded(seed=37)
    rows = ids.shape[0]
    assert rows <= fastgpt2.ONEDNN_SKINNY_ROWS
    w = torch.randn(64, 192)
    assert not fastgpt2._use_onednn(torch.randn(rows, 64), w)  # a weight as stored: addmm
    assert fastgpt2.onednn_skinny_in_use()
    assert fastgpt2.packed_decode_bytes(3, 64, V, rows) > 0
    assert fastgpt2.packed_decode_bytes(3, 64, V, fastgpt2.ONEDNN_SKINNY_ROWS + 1) == 0
    dec = fastgpt2.Decoder(model, ids, mask, max_new_tokens=3)
    assert dec.packed is not None and dec.packed_head is not None and dec.layers is not None
    tok = torch.randint(V, (rows,))
    packed_logits = dec.step(tok)
    monkeypatch.setattr(fastgpt2, "_PACKED_SKINNY", False)
    assert not fastgpt2.onednn_skinny_in_use()
    plain = fastgpt2.Decoder(model, ids, mask, max_new_tokens=3)
    assert plain.packed is None and plain.packed_head is None
    torch.testing.assert_close(packed_logits, plain.step(tok), rtol=1e-4, atol=1e-4)


@needs_onednn
def test_skinny_onednn_takes_only_the_row_counts_decoding_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastgpt2, "_ONEDNN", False)
    monkeypatch.setattr(fastgpt2, "_ONEDNN_SKINNY", True)
    monkeypatch.setattr(fastgpt2, "_onednn_rows", set())
    w = torch.randn(8, 4)
    assert fastgpt2._use_onednn(torch.randn(fastgpt2.ONEDNN_SKINNY_ROWS, 8), w)
    assert not fastgpt2._use_onednn(torch.randn(fastgpt2.ONEDNN_SKINNY_ROWS + 1, 8), w)
    # decoding on packed weights: up to ONEDNN_PACKED_ROWS_AMD rows
    assert fastgpt2._onednn_takes(fastgpt2.ONEDNN_PACKED_ROWS_AMD, packed=True)
    assert not fastgpt2._onednn_takes(fastgpt2.ONEDNN_PACKED_ROWS_AMD + 1, packed=True)
    monkeypatch.setattr(fastgpt2, "_ONEDNN_SKINNY", False)
    assert not fastgpt2._use_onednn(torch.randn(4, 8), w)


@needs_onednn
def test_on_an_amd_cpu_without_avx512_a_wide_decode_multiplies_by_packed_weights(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A decode wider than ONEDNN_SKINNY_ROWS (64 rows: L4/D256's GRPO batch) packs its weights and
    runs the packed one-token step, with the logits the weights as stored give (to fp32 rounding);
    the same width on an Intel CPU with AVX-512 keeps the weights as stored."""
    if not fastgpt2._PACK_OPS:
        pytest.skip("oneDNN's packing ops unavailable")
    monkeypatch.setattr(fastgpt2, "_ONEDNN", False)
    monkeypatch.setattr(fastgpt2, "_ONEDNN_SKINNY", True)
    monkeypatch.setattr(fastgpt2, "_PACKED_SKINNY", False)
    monkeypatch.setattr(fastgpt2, "PACK_DECODE", True)
    monkeypatch.setattr(fastgpt2, "_onednn_rows", set())
    rows = 64
    assert fastgpt2.ONEDNN_SKINNY_ROWS < rows <= fastgpt2.ONEDNN_PACKED_ROWS_AMD == fastgpt2.skinny_rows()
    model = tiny_lm(seed=38, n_embd=64, n_head=4)
    gen = torch.Generator().manual_seed(39)
    ids = torch.randint(V, (rows, 5), generator=gen)
    mask = torch.ones_like(ids)
    mask[::3, :2] = 0  # left padding on every third row
    assert not fastgpt2._use_onednn(torch.randn(rows, 64), torch.randn(64, 192))  # a weight as stored: addmm
    dec = fastgpt2.Decoder(model, ids, mask, max_new_tokens=3)
    assert dec.packed is not None and dec.packed_head is not None and dec.layers is not None
    assert fastgpt2.packed_decode_bytes(3, 64, V, rows) > 0
    tok = torch.randint(V, (rows,), generator=gen)
    packed_logits = dec.step(tok)
    monkeypatch.setattr(fastgpt2, "PACK_DECODE", False)
    assert fastgpt2.skinny_rows() == fastgpt2.ONEDNN_SKINNY_ROWS
    plain = fastgpt2.Decoder(model, ids, mask, max_new_tokens=3)
    assert plain.packed is None and plain.packed_head is None
    torch.testing.assert_close(packed_logits, plain.step(tok), rtol=1e-4, atol=1e-4)
    monkeypatch.setattr(fastgpt2, "PACK_DECODE", True)
    monkeypatch.setattr(fastgpt2, "_ONEDNN_SKINNY", False)  # an Intel CPU with AVX-512: 16 rows at most
    monkeypatch.setattr(fastgpt2, "_PACKED_SKINNY", True)
    assert fastgpt2.skinny_rows() == fastgpt2.ONEDNN_SKINNY_ROWS
    assert fastgpt2.Decoder(model, ids, mask, max_new_tokens=3).packed is None


def test_the_cpu_flags_are_read_from_proc_cpuinfo() -> None:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        listed = any(line.startswith("flags") and "avx512f" in line.split() for line in f)
    assert fastgpt2.cpu_has_avx512() is listed


def test_an_unknown_matmul_setting_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="RLHFKIT_CPU_MATMUL"):
        fastgpt2.prefer_onednn("mkl", "GenuineIntel")


@needs_onednn
def test_onednn_serves_fp32_matmuls_only_where_this_cpu_prefers_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastgpt2, "_ONEDNN", True)  # whichever library this CPU prefers
    monkeypatch.setattr(fastgpt2, "_onednn_rows", set())
    x, w = torch.randn(3, 8), torch.randn(8, 4, requires_grad=True)
    assert fastgpt2._use_onednn(x, w)  # a weight that needs a gradient too (_OnednnLinear)
    assert not fastgpt2._use_onednn(x.double(), w.double())  # fp32 only
    monkeypatch.setattr(fastgpt2, "_ONEDNN", False)  # the CPU's BLAS preferred: addmm serves everything
    monkeypatch.setattr(fastgpt2, "_ONEDNN_SKINNY", False)
    with torch.no_grad():
        assert not fastgpt2._use_onednn(x, w)


@needs_onednn
@pytest.mark.parametrize("conv1d", [True, False])
@pytest.mark.parametrize("act", [None, "gelu_new"])
@pytest.mark.parametrize("bias", [True, False])
def test_onednn_training_matmul_has_the_gradients_of_the_plain_one(
        monkeypatch: pytest.MonkeyPatch, conv1d: bool, act: str | None, bias: bool) -> None:
    """``_linear`` with a weight that needs a gradient, on oneDNN (its own backward), against the same
    function in float64 through autograd: output and the three gradients."""
    monkeypatch.setattr(fastgpt2, "_ONEDNN", True)
    monkeypatch.setattr(fastgpt2, "_onednn_rows", set())
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(37, 24, generator=gen, requires_grad=True)
    w = (torch.randn(24, 40, generator=gen) if conv1d else torch.randn(40, 24, generator=gen)).requires_grad_()
    b = torch.randn(40, generator=gen).requires_grad_() if bias else None
    g = torch.randn(37, 40, generator=gen)
    y = fastgpt2._linear(x, w, b, conv1d, act)
    node = y.grad_fn if act is None else y.grad_fn.next_functions[0][0]  # type: ignore[union-attr]
    assert type(node).__name__ == "_OnednnLinearBackward"
    y.backward(g)

    x64, w64 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    b64 = b.detach().double().requires_grad_() if b is not None else None
    y64 = x64 @ w64 if conv1d else x64 @ w64.t()
    y64 = y64 + b64 if b64 is not None else y64
    y64 = torch.nn.functional.gelu(y64, approximate="tanh") if act else y64
    y64.backward(g.double())
    torch.testing.assert_close(y.double(), y64, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-5, atol=1e-4)  # type: ignore[union-attr]
    torch.testing.assert_close(w.grad.double(), w64.grad, rtol=1e-5, atol=1e-4)  # type: ignore[union-attr]
    if b is not None:
        torch.testing.assert_close(b.grad.double(), b64.grad, rtol=1e-5, atol=1e-4)  # type: ignore[union-attr]


@needs_onednn
def test_onednn_serves_a_bounded_set_of_row_counts_with_the_same_results(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastgpt2, "_ONEDNN", True)
    monkeypatch.setattr(fastgpt2, "_onednn_rows", set())
    monkeypatch.setattr(fastgpt2, "ONEDNN_ROW_COUNTS", 2)
    real = fastgpt2._onednn_linear
    assert real is not None
    rows: list[int] = []

    def counting(x: torch.Tensor, *args: Any) -> torch.Tensor:
        rows.append(x.shape[0])
        return real(x, *args)

    monkeypatch.setattr(fastgpt2, "_onednn_linear", counting)
    model = tiny_lm(seed=5)
    ids, mask = left_padded(seed=6)
    for T in (7, 9, 11):  # 4 rows each: 28, 36 and 44 matmul rows
        with torch.no_grad():
            lean = model.lm_head(fastgpt2.hidden_states(model.transformer, ids[:, :T], mask[:, :T]))
        real_pos = mask[:, :T].bool()
        torch.testing.assert_close(lean[real_pos], hf_logits(model, ids[:, :T], mask[:, :T])[real_pos],
                                   atol=1e-5, rtol=1e-5)
    assert set(rows) == {28, 36}  # the third row count went to addmm: the shape budget is spent
    assert len(rows) == 2 * 4 * model.config.n_layer


def test_hidden_states_at_one_position_per_row_matches_the_full_forward() -> None:
    model = tiny_lm(seed=11)
    ids, mask = left_padded(seed=12)
    mask[0, 8:] = 0  # right padding after a response too
    last = mask.shape[1] - 1 - mask.flip(-1).argmax(-1)
    with torch.no_grad():
        full = fastgpt2.hidden_states(model.transformer, ids, mask)
        at = fastgpt2.hidden_states(model.transformer, ids, mask, at=last)
        hf = model.transformer(input_ids=ids, attention_mask=mask,
                               position_ids=fastgpt2.position_ids_from_mask(mask)).last_hidden_state
    rows = torch.arange(ids.shape[0])
    assert at.shape == (ids.shape[0], model.config.n_embd)
    torch.testing.assert_close(at, full[rows, last], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(at, hf[rows, last], atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- shared prompts
def grouped(U: int = 3, G: int = 4, P: int = 6, R: int = 7, seed: int = 21) -> tuple[torch.Tensor, torch.Tensor]:
    """U left-padded prompts, each repeated for G adjacent rows (as rollout() lays out a GRPO batch),
    then R response tokens per row: some right-padded after their end, one with a hole."""
    g = torch.Generator().manual_seed(seed)
    prompts, pmask = left_padded(B=U, T=P, seed=seed)
    ids = torch.cat([prompts.repeat_interleave(G, 0), torch.randint(2, V, (U * G, R), generator=g)], 1)
    mask = torch.cat([pmask.repeat_interleave(G, 0), torch.ones(U * G, R, dtype=torch.long)], 1)
    mask[1, P + 4:] = 0
    mask[G + 2, P + 2] = 0
    return ids, mask


def test_rows_share_a_prompt_when_its_real_tokens_and_mask_agree() -> None:
    ids, mask = grouped(U=3, G=4, P=6)
    rep, inverse = fastgpt2.shared_prefix(ids, mask, 6)
    assert rep.tolist() == [0, 4, 8]
    assert inverse.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    ids[5, 0] = 50  # a pad position's id is never read: still the same prompt
    assert fastgpt2.shared_prefix(ids, mask, 6)[1].tolist() == inverse.tolist()
    ids[6, 5] = (ids[6, 5] + 1) % V  # a real token differs: row 6 has its own prompt now
    assert fastgpt2.shared_prefix(ids, mask, 6)[0].tolist() == [0, 4, 6, 8]
    assert fastgpt2.shared_prefix(*left_padded(), 5) is None  # every prompt distinct: the plain forward
    assert fastgpt2.shared_prefix(ids, mask, ids.shape[1]) is None  # nothing after the prefix


def test_a_shared_prompt_run_once_gives_every_row_the_same_hidden_states() -> None:
    model = tiny_lm(seed=22)
    ids, mask = grouped()
    P = 6
    with torch.no_grad():
        full = fastgpt2.hidden_states(model.transformer, ids, mask)
        shared = fastgpt2.hidden_states(model.transformer, ids, mask, start=P - 1, prefix_len=P)
        last = ids.shape[1] - 1 - mask.flip(-1).argmax(-1)
        last[3] = 4  # a row whose read position lies in its prompt
        at = fastgpt2.hidden_states(model.transformer, ids, mask, at=last)
        at_shared = fastgpt2.hidden_states(model.transformer, ids, mask, at=last, prefix_len=P)
    real = mask[:, P - 1:].bool()
    assert shared.shape == (ids.shape[0], ids.shape[1] - P + 1, model.config.n_embd)
    torch.testing.assert_close(shared[real], full[:, P - 1:][real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(at_shared, at, atol=1e-5, rtol=1e-5)


def test_a_shared_prompt_collects_the_gradient_of_every_row_that_reads_it() -> None:
    model = tiny_lm(seed=23).train()
    ids, mask = grouped(seed=24)
    P = 6
    weight = mask[:, P - 1:, None].float()

    def grads(prefix_len: int) -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        h = fastgpt2.hidden_states(model.transformer, ids, mask, start=P - 1, prefix_len=prefix_len)
        (model.lm_head(h).logsumexp(-1, keepdim=True) * weight).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain, shared = grads(0), grads(P)
    assert plain.keys() == shared.keys() and "transformer.wte.weight" in plain
    for name in plain:
        torch.testing.assert_close(shared[name], plain[name], atol=1e-5, rtol=1e-4, msg=name)


def test_the_gradient_through_a_shared_prompt_is_the_same_every_time() -> None:
    """Rows of many groups in shuffled order (as a minibatch draws them), with more prompt rows than one
    thread's share: the gradient is bit-identical from one backward to the next. Advanced indexing
    (``x[inverse]``) adds a repeated row's gradients with concurrent atomic adds on the CPU, in
    whatever order the threads reach them; same-seed runs then drifted apart from the first update."""
    model = tiny_lm(seed=25, n_embd=64, n_head=4).train()
    U, G, P, R = 32, 4, 8, 4
    g = torch.Generator().manual_seed(26)
    prompts = torch.randint(2, V, (U, P), generator=g)
    order = torch.randperm(U * G, generator=g)
    ids = torch.cat([prompts.repeat_interleave(G, 0), torch.randint(2, V, (U * G, R), generator=g)], 1)[order]
    mask = torch.ones_like(ids)
    assert fastgpt2.shared_prefix(ids, mask, P) is not None

    def grads() -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        h = fastgpt2.hidden_states(model.transformer, ids, mask, start=P - 1, prefix_len=P)
        model.lm_head(h).logsumexp(-1).sum().backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    first = grads()
    for _ in range(8):
        assert torch.equal(grads(), first)


# ----------------------------------------------------------------------------- packed decode weights
needs_packing = pytest.mark.skipif(not fastgpt2._PACK_OPS, reason="oneDNN's reorder and data_ptr ops unavailable")


def decode_logits(model: GPT2LMHeadModel, ids: torch.Tensor, mask: torch.Tensor, new: torch.Tensor,
                  packed: bool) -> tuple[torch.Tensor, bool]:
    """Each step's logits of a Decoder fed ``new`` (B, n), and whether its steps ran on packed weights."""
    dec = fastgpt2.Decoder(model, ids, mask, max_new_tokens=new.shape[1] + 1)
    assert (dec.packed is not None) == packed and (dec.packed_head is not None) == packed
    assert (dec.layers is not None) == packed  # packed steps run the one-token step
    steps = [dec.logits] + [dec.step(new[:, t]) for t in range(new.shape[1])]
    return torch.stack(steps, 1), dec.packed is not None


@needs_packing
@pytest.mark.parametrize("G", [1, 3], ids=["distinct", "groups"])
@pytest.mark.parametrize("act", ["gelu_new", "relu"])
def test_the_one_token_step_computes_what_the_general_forward_does(monkeypatch: pytest.MonkeyPatch, G: int,
                                                                   act: str) -> None:
    """Decoder._packed_step (fused residual adds, one cache copy) against _forward on the same packed
    weights, left-padded prompts: the same logits and hidden states, bit for bit, at every step (both on
    oneDNN: the compiled kernel's step is checked in test_cpukernel.py, to rounding)."""
    monkeypatch.setattr(fastgpt2, "_ONEDNN", True)
    monkeypatch.setattr(fastgpt2, "_KERNELS", False)
    monkeypatch.setattr(fastgpt2, "_onednn_rows", set())
    model = tiny_lm(seed=41, n_embd=64, n_head=4)
    model.config.activation_function = act
    ids, mask = left_padded(seed=42)
    ids, mask = ids.repeat_interleave(G, 0), mask.repeat_interleave(G, 0)
    new = torch.randint(2, V, (ids.shape[0], 6), generator=torch.Generator().manual_seed(43))
    one, general = (fastgpt2.Decoder(model, ids, mask, max_new_tokens=7) for _ in range(2))
    assert one.layers is not None and one.masked
    general.layers = None
    for t in range(new.shape[1]):
        assert torch.equal(one.step(new[:, t]), general.step(new[:, t]))
        assert one.hidden is not None and general.hidden is not None and torch.equal(one.hidden, general.hidden)
    for a, b in zip(one.kv, general.kv, strict=True):
        assert torch.equal(a[:, :, :, : one.t], b[:, :, :, : general.t])


@needs_packing
def test_decoding_on_packed_weights_gives_the_strided_results_and_follows_updates(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A width whose weights oneDNN blocks by 64 output columns, a vocabulary it pads (97 -> 128): the
    packed steps give the strided steps' logits, and after an in-place change of every weight (as the
    optimizer makes) the next decoder's packed copies hold the new weights, not the ones packed before."""
    monkeypatch.setattr(fastgpt2, "_ONEDNN", True)
    monkeypatch.setattr(fastgpt2, "_onednn_rows", set())
    model = tiny_lm(seed=31, n_embd=64, n_head=4)
    ids, mask = left_padded(seed=32)
    new = torch.randint(2, V, (ids.shape[0], 6), generator=torch.Generator().manual_seed(33))
    assert fastgpt2.packed_decode_bytes(3, 64, V, ids.shape[0]) == 4 * (3 * 12 * 64 * 64 + 128 * 64)
    for _ in range(2):
        monkeypatch.setattr(fastgpt2, "PACK_DECODE", False)
        strided, _ = decode_logits(model, ids, mask, new, packed=False)
        monkeypatch.setattr(fastgpt2, "PACK_DECODE", True)
        packed, _ = decode_logits(model, ids, mask, new, packed=True)
        torch.testing.assert_close(packed, strided, atol=1e-5, rtol=1e-5)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1.5).add_(0.01)
    full_ids, full_mask = torch.cat([ids, new], 1), torch.cat([mask, torch.ones_like(new)], 1)
    ref = hf_logits(model, full_ids, full_mask)[:, ids.shape[1] - 1:]
    changed, _ = decode_logits(model, ids, mask, new, packed=True)
    assert not torch.allclose(changed, packed, atol=1e-3)  # the weights did change
    torch.testing.assert_close(changed, ref, atol=1e-4, rtol=1e-4)


@needs_packing
def test_a_packed_weight_is_one_copy_rewritten_in_place_and_repacked_for_another_row_count(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastgpt2, "_ONEDNN", True)
    monkeypatch.setattr(fastgpt2, "_onednn_rows", set())
    monkeypatch.setattr(fastgpt2, "PACK_DECODE", True)
    w = torch.randn(64, 192)
    x = torch.randn(16, 64)
    first = fastgpt2.packed_decode_weight(w, 16)
    assert first is not None and first.is_mkldnn
    w.mul_(-2.0)
    again = fastgpt2.packed_decode_weight(w, 16)
    assert again is first  # the same oneDNN tensor, its bytes rewritten
    y = torch.ops.mkldnn._linear_pointwise(x, again, None, "none", [], "")
    torch.testing.assert_close(y, x @ w, atol=1e-4, rtol=1e-5)
    other = fastgpt2.packed_decode_weight(w, 8)
    assert other is not None and other is not first
    torch.testing.assert_close(torch.ops.mkldnn._linear_pointwise(x[:8], other, None, "none", [], ""), x[:8] @ w,
                               atol=1e-4, rtol=1e-5)
    # an (out, in) weight whose 100 outputs fill one block of 64 and part of another (padding)
    head = torch.randn(100, 64)
    assert fastgpt2.packed_decode_weight(head, 16, conv1d=False) is not None
    head.mul_(3.0).add_(1.0)
    packed = fastgpt2.packed_decode_weight(head, 16, conv1d=False)
    assert packed is not None
    torch.testing.assert_close(torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], ""), x @ head.t(),
                               atol=1e-4, rtol=1e-5)


@needs_onednn
def test_decoding_keeps_the_weights_as_stored_where_packing_is_off_or_cannot_serve(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastgpt2, "_ONEDNN", True)
    monkeypatch.setattr(fastgpt2, "_onednn_rows", set())
    model = tiny_lm(seed=34, n_embd=64, n_head=4)
    ids, mask = left_padded(seed=35)
    monkeypatch.setattr(fastgpt2, "PACK_DECODE", False)  # RLHFKIT_CPU_PACKED_DECODE=0
    assert fastgpt2.packed_decode_bytes(3, 64, V, 4) == 0
    assert fastgpt2.packed_decode_weight(torch.randn(64, 192), 4) is None
    dec = fastgpt2.Decoder(model, ids, mask, max_new_tokens=3)
    assert dec.packed is None and dec.packed_head is None
    monkeypatch.setattr(fastgpt2, "PACK_DECODE", True)
    assert fastgpt2.packed_decode_weight(torch.randn(64, 192).double(), 4) is None  # fp32 only
    assert fastgpt2.Decoder(model, ids, mask, max_new_tokens=1).packed is None  # no step to run
    monkeypatch.setattr(fastgpt2, "_ONEDNN", False)  # the CPU's BLAS serves decoding: nothing to pack
    monkeypatch.setattr(fastgpt2, "_ONEDNN_SKINNY", False)
    monkeypatch.setattr(fastgpt2, "_PACKED_SKINNY", False)
    assert fastgpt2.packed_decode_bytes(3, 64, V, 4) == 0
    dec = fastgpt2.Decoder(model, ids, mask, max_new_tokens=3)
    assert dec.packed is None and dec.packed_head is None


def test_the_packing_setting_is_0_or_1_and_anything_else_is_refused_by_name() -> None:
    assert fastgpt2._pack_setting("1") and fastgpt2._pack_setting(" 1\n") and not fastgpt2._pack_setting("0")
    with pytest.raises(ValueError, match="RLHFKIT_CPU_PACKED_DECODE"):
        fastgpt2._pack_setting("yes")


# ----------------------------------------------------------------------------- the update's forward on the decode's outputs
def kept_decode(model: GPT2LMHeadModel, prompts: torch.Tensor, pmask: torch.Tensor, new: torch.Tensor,
                max_new_tokens: int) -> fastgpt2.SamplingActivations:
    """A keeping Decoder fed ``new`` (B, n) after the prompts (n < max_new_tokens: an early stop)."""
    dec = fastgpt2.Decoder(model, prompts, pmask, max_new_tokens=max_new_tokens, keep=True)
    for t in range(new.shape[1]):
        dec.step(new[:, t])
    acts = dec.activations()
    assert acts is not None and dec.kept == {}  # laid out once, and the decoder holds no more of it
    return acts


def full_and_kept_grads(model: GPT2LMHeadModel, acts: fastgpt2.SamplingActivations, ids: torch.Tensor,
                        mask: torch.Tensor, P: int) -> list[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """(logits at positions P-1 .. T-2, parameter gradients) of a loss over them, by a full training
    forward and by one on the kept outputs."""
    model.train()
    w = torch.randn(ids.shape[0], ids.shape[1] - P, model.config.vocab_size, generator=torch.Generator().manual_seed(5))
    out = []
    for kept in (False, True):
        model.zero_grad(set_to_none=True)
        if kept:
            h = fastgpt2.sampled_hidden_states(model.transformer, acts)
            logits = fastgpt2.sampled_logits(model.lm_head, h, acts)
        else:
            h = fastgpt2.hidden_states(model.transformer, ids, mask, start=P - 1, prefix_len=P)[:, :-1]
            logits = fastgpt2.lm_logits(model.lm_head, h)
        lp, ent = fastgpt2.logprobs_and_entropy(logits, ids[:, P:])
        ((logits.log_softmax(-1) * w).sum() + lp.sum() + ent.sum()).backward()
        out.append((logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    model.eval()
    return out


@pytest.mark.parametrize("packing", [True, False], ids=["packed-steps", "general-steps"])
@pytest.mark.parametrize("G", [1, 3], ids=["distinct", "groups"])
def test_the_update_forward_on_the_decodes_outputs_has_a_full_forwards_values_and_gradients(
        monkeypatch: pytest.MonkeyPatch, packing: bool, G: int) -> None:
    """Left-padded prompts, each shared by G rows or not, decoded by the one-token packed step or by
    the general step: the logits and every parameter's gradient agree with a full training forward's
    to fp32 rounding."""
    if packing and not fastgpt2._PACK_OPS:
        pytest.skip("oneDNN's reorder and data_ptr ops unavailable")
    monkeypatch.setattr(fastgpt2, "_ONEDNN", packing)
    monkeypatch.setattr(fastgpt2, "PACK_DECODE", packing)
    monkeypatch.setattr(fastgpt2, "_onednn_rows", set())
    model = tiny_lm(seed=51, n_embd=64, n_head=4)
    prompts, pmask = left_padded(seed=52)
    prompts, pmask = prompts.repeat_interleave(G, 0), pmask.repeat_interleave(G, 0)
    P, R = prompts.shape[1], 6
    new = torch.randint(2, V, (prompts.shape[0], R), generator=torch.Generator().manual_seed(53))
    acts = kept_decode(model, prompts, pmask, new[:, :-1], max_new_tokens=R)  # the last token is never fed
    decoder = fastgpt2.Decoder(model, prompts, pmask, max_new_tokens=R)
    assert (decoder.layers is not None) == packing
    assert acts.rep.shape[0] == 4 and acts.fed == R - 1  # G rows of a prompt: its prefill ran once
    ids = torch.cat([prompts, new], 1)
    mask = torch.cat([pmask, torch.ones_like(new)], 1)
    assert acts.matches(ids, mask)
    (full, g_full), (kept, g_kept) = full_and_kept_grads(model, acts, ids, mask, P)
    torch.testing.assert_close(kept, full, atol=1e-5, rtol=1e-5)
    assert g_kept.keys() == g_full.keys() and "transformer.wte.weight" in g_kept
    for name, g in g_full.items():
        torch.testing.assert_close(g_kept[name], g, atol=1e-6 * float(g.abs().max()), rtol=1e-4, msg=name)


def test_kept_outputs_of_an_early_stop_cover_the_steps_fed_and_match_only_their_sequences() -> None:
    model = tiny_lm(seed=54)
    prompts, pmask = left_padded(B=2, T=5, seed=55)
    prompts, pmask = prompts.repeat_interleave(3, 0), pmask.repeat_interleave(3, 0)
    new = torch.randint(2, V, (6, 4), generator=torch.Generator().manual_seed(56))
    acts = kept_decode(model, prompts, pmask, new[:, :3], max_new_tokens=9)  # stopped after 4 of 9 tokens
    assert acts.fed == 3 and acts.logits.shape == (6, 4, V) and acts.qkv[0].shape == (2 * 5 + 6 * 3, 3 * 48)
    ids, mask = torch.cat([prompts, new], 1), torch.cat([pmask, torch.ones_like(new)], 1)
    assert acts.matches(ids, mask)
    (full, g_full), (kept, g_kept) = full_and_kept_grads(model, acts, ids, mask, 5)
    torch.testing.assert_close(kept, full, atol=1e-5, rtol=1e-5)
    for name, g in g_full.items():
        torch.testing.assert_close(g_kept[name], g, atol=1e-6 * float(g.abs().max()), rtol=1e-4, msg=name)
    # a token after a stop, set to padding and masked (truncate_at_token): nothing real reads it
    other, cut = ids.clone(), mask.clone()
    other[1, 6:], cut[1, 6:] = 1, 0
    assert acts.matches(other, cut)
    other[1, 6] = 2  # ... but a real token that differs is another sequence
    assert not acts.matches(other, mask)
    assert not acts.matches(ids[:, :-1], mask[:, :-1])  # another length
    assert not acts.matches(torch.cat([ids[:, :1] + 1, ids[:, 1:]], 1), mask)  # another prompt


@pytest.mark.parametrize(("planned", "fed"), [(4, 4), (4, 2), (4, 0), (2, 5), (0, 3)])
@pytest.mark.parametrize("prefill", [True, False])
def test_kept_rows_lay_out_the_prefill_then_each_rows_steps(planned: int, fed: int, prefill: bool) -> None:
    """Outputs written as they come give the layout of gathering them at the end: the prefill's rows,
    then each batch row's steps in order, whether the decode fed as many steps as planned, fewer
    (an early stop) or more."""
    B, W = 3, 5
    g = torch.Generator().manual_seed(61)
    head = torch.randn(7, W, generator=g)
    steps = [torch.randn(B, W, generator=g) for _ in range(fed)]
    kept = fastgpt2._KeptRows(B, planned, prefill=prefill)
    if prefill:
        kept.append(head)
    for s in steps:
        kept.append(s)
    expected = torch.stack(steps, 1).reshape(B * fed, W) if steps else torch.empty(0, W)
    if prefill:
        expected = torch.cat([head, expected])
    if not prefill and not steps:
        assert kept.buf is None  # nothing kept, nothing allocated
        return
    out = kept.laid_out()
    assert torch.equal(out, expected) and out.is_contiguous() and kept.buf is None
