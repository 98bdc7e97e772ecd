"""The compiled decode kernels (rlhfkit/cpukernel.c), built with this machine's C compiler.

The matmul against float64 references on oneDNN's packed layout and on hand-built blocks (every
block width it takes, partial last blocks, K not a multiple of its chunk); the attention against a
plain loop over rows and heads (masks, head sizes, key counts off its 4- and 8-wide steps); the
same bits at any thread count; the decoder's kernel steps against its oneDNN steps; and the
fallback where no compiler is found."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rlhfkit import cpukernel, fastgpt2
from tests.unit.test_fastgpt2 import V, left_padded, tiny_lm

needs_kernel = pytest.mark.skipif(not {"avx2", "fma"} <= fastgpt2.cpu_flags(), reason="the kernel needs AVX2 and FMA")
needs_avx512 = pytest.mark.skipif(not {"avx2", "fma", "avx512f"} <= fastgpt2.cpu_flags(),
                                  reason="the wide matmul needs AVX-512")
needs_packing = pytest.mark.skipif(not fastgpt2._PACK_OPS, reason="oneDNN's reorder and data_ptr ops unavailable")


@pytest.fixture(scope="module")
def lib() -> object:
    loaded = cpukernel.load(fastgpt2.cpu_flags())
    assert loaded is not None, cpukernel.reason()
    return loaded


def switch(monkeypatch: pytest.MonkeyPatch, on: bool, matmuls: bool | None = None) -> None:
    """Every compiled kernel on or off in this process (``matmuls``: the matmuls' apart)."""
    monkeypatch.setattr(fastgpt2, "_KERNELS", on)
    monkeypatch.setattr(fastgpt2, "_MATMUL_KERNELS", on if matmuls is None else matmuls)


def blocks_of(w: torch.Tensor, y: int) -> torch.Tensor:
    """(in, out) ``w`` laid out as (ceil(out / y), in, y) blocks, zeros past ``out``."""
    n_in, n_out = w.shape
    blocks = torch.zeros(-(-n_out // y), n_in, y)
    fastgpt2._fill_blocks(blocks, w)
    return blocks


def reference(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, r: torch.Tensor | None) -> torch.Tensor:
    out = x.double() @ w.double()
    if b is not None:
        out = out + b.double()
    if r is not None:
        out = out + r.double()
    return out.float()


@needs_kernel
@pytest.mark.parametrize("y", [16, 32, 48, 64])
@pytest.mark.parametrize(("rows", "n_in", "n_out"), [(1, 64, 64), (5, 100, 97), (16, 300, 200), (7, 513, 130),
                                                     (12, 768, 33)])
def test_the_kernel_multiplies_blocked_weights(monkeypatch: pytest.MonkeyPatch, lib: object, y: int, rows: int,
                                               n_in: int, n_out: int) -> None:
    """Both forms where this CPU has both: blocks of 64 take the AVX-512 one on such a CPU (``_wide``)."""
    g = torch.Generator().manual_seed(rows * 1000 + n_in)
    x, w = torch.randn(rows, n_in, generator=g), torch.randn(n_in, n_out, generator=g)
    b, r = torch.randn(n_out, generator=g), torch.randn(rows, n_out, generator=g)
    blocks = blocks_of(w, y)
    tol = {"atol": 1e-4 * n_in ** 0.5, "rtol": 1e-5}
    for wide in sorted({False, cpukernel._wide}):
        monkeypatch.setattr(cpukernel, "_wide", wide)
        assert cpukernel.takes(x, blocks)
        torch.testing.assert_close(cpukernel.linear(x, blocks, n_out), reference(x, w, None, None), **tol)
        torch.testing.assert_close(cpukernel.linear(x, blocks, n_out, b), reference(x, w, b, None), **tol)
        torch.testing.assert_close(cpukernel.linear(x, blocks, n_out, b, r), reference(x, w, b, r), **tol)


@needs_kernel
@needs_packing
def test_the_kernel_reads_onednn_packed_weights_and_gives_the_same_bits_at_any_thread_count(
        monkeypatch: pytest.MonkeyPatch, lib: object) -> None:
    # the row counts oneDNN has served in this process so far are capped: earlier tests' must not count
    monkeypatch.setattr(fastgpt2, "_onednn_rows", set())
    g = torch.Generator().manual_seed(7)
    rows, n_in, n_out = 16, 768, 2023  # GPT-2-small's width, a vocabulary oneDNN pads
    w = torch.randn(n_in, n_out, generator=g)
    x, b = torch.randn(rows, n_in, generator=g), torch.randn(n_out, generator=g)
    packed = fastgpt2.packed_decode_weight(w, rows)
    if packed is None:
        pytest.skip("this CPU's rule does not pack a 16-row decode")
    blocks = fastgpt2._blocks(w)
    threads = torch.get_num_threads()
    try:
        outs = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            outs.append(cpukernel.linear(x, blocks, n_out, b))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(outs[0], o) for o in outs[1:])
    torch.testing.assert_close(outs[0], reference(x, w, b, None), atol=3e-3, rtol=1e-5)
    onednn = torch.ops.mkldnn._linear_pointwise(x, packed, b, "none", [], "")
    torch.testing.assert_close(outs[0], onednn, atol=1e-4, rtol=1e-5)


@needs_kernel
def test_the_kernel_refuses_what_it_does_not_take(lib: object) -> None:
    blocks = blocks_of(torch.randn(32, 40), 16)
    assert not cpukernel.takes(torch.randn(cpukernel.MAX_ROWS + 1, 32), blocks)  # too many rows
    assert not cpukernel.takes(torch.randn(4, 32), blocks_of(torch.randn(32, 40), 8))  # block of 8
    assert not cpukernel.takes(torch.randn(4, 31), blocks)  # widths disagree
    with pytest.raises(ValueError, match="rows=17"):
        cpukernel.linear(torch.randn(cpukernel.MAX_ROWS + 1, 32), blocks, 40)


def assert_same_kept(one: fastgpt2.Decoder, other: fastgpt2.Decoder, atol: float) -> None:
    """Both decoders kept the same block outputs, to ``atol``."""
    a, b = one.activations(), other.activations()
    assert a is not None and b is not None
    for kind in ("qkv", "attn", "fc", "mlp"):
        for x, y in zip(getattr(a, kind), getattr(b, kind), strict=True):
            torch.testing.assert_close(x, y, atol=atol, rtol=1e-5)


@needs_kernel
@needs_packing
@pytest.mark.parametrize("keep", [False, True])
@pytest.mark.parametrize("group", [2, 10])
def test_decoding_with_the_kernel_gives_the_onednn_steps_results(monkeypatch: pytest.MonkeyPatch, lib: object,
                                                                  keep: bool, group: int) -> None:
    """The same decoder on packed weights with the kernel and with oneDNN: logits, hidden states and
    kept activations agree to fp32 rounding at every step, the LM head's padded block included; 8
    rows (the AVX2 matmul) and 40 (the AVX-512 one, where the CPU has it)."""
    if group * 4 > cpukernel.max_rows():
        pytest.skip(f"this CPU's kernel takes at most {cpukernel.max_rows()} rows")
    monkeypatch.setattr(fastgpt2, "_ONEDNN", True)
    monkeypatch.setattr(fastgpt2, "_onednn_rows", set())
    model = tiny_lm(seed=51, n_embd=64, n_head=4)
    ids, mask = left_padded(seed=52)
    ids, mask = ids.repeat_interleave(group, 0), mask.repeat_interleave(group, 0)  # groups sharing a prompt
    new = torch.randint(2, V, (ids.shape[0], 5), generator=torch.Generator().manual_seed(53))
    decoders = []
    for on in (True, False):
        switch(monkeypatch, on)
        dec = fastgpt2.Decoder(model, ids, mask, max_new_tokens=6, keep=keep)
        if dec.layers is None:
            pytest.skip(f"this CPU's rule does not pack a {ids.shape[0]}-row decode")
        assert dec.kernel is on and (dec.head_blocks is not None) is on
        assert dec.attend is on and (dec.blocks is not None) is on  # each block one call of the kernel
        decoders.append(dec)
    kernel, onednn = decoders
    for t in range(new.shape[1]):
        torch.testing.assert_close(kernel.step(new[:, t]), onednn.step(new[:, t]), atol=1e-5, rtol=1e-5)
        assert kernel.hidden is not None and onednn.hidden is not None
        torch.testing.assert_close(kernel.hidden, onednn.hidden, atol=1e-5, rtol=1e-5)
    if keep:
        assert_same_kept(kernel, onednn, atol=1e-5)


@needs_kernel
@needs_packing
@pytest.mark.parametrize("keep", [False, True])
def test_a_block_in_one_call_gives_the_block_op_by_op(monkeypatch: pytest.MonkeyPatch, lib: object,
                                                     keep: bool) -> None:
    """``decode_block`` (layer norms, matmuls, the cache write and the attention in one call)
    against the same kernels called op by op from Python: logits, the cache and what is kept."""
    monkeypatch.setattr(fastgpt2, "_ONEDNN", True)
    switch(monkeypatch, True)
    model = tiny_lm(seed=81, n_embd=64, n_head=4)
    ids, mask = left_padded(seed=82)
    new = torch.randint(2, V, (ids.shape[0], 4), generator=torch.Generator().manual_seed(83))
    fused = fastgpt2.Decoder(model, ids, mask, max_new_tokens=5, keep=keep)
    ops = fastgpt2.Decoder(model, ids, mask, max_new_tokens=5, keep=keep)
    if fused.blocks is None:
        pytest.skip("this CPU's rule does not pack the decode")
    ops.blocks = None
    for t in range(new.shape[1]):
        torch.testing.assert_close(fused.step(new[:, t]), ops.step(new[:, t]), atol=2e-6, rtol=1e-5)
    for a, b in zip(fused.kv, ops.kv, strict=True):
        torch.testing.assert_close(a[:, :, :, : fused.t], b[:, :, :, : ops.t], atol=2e-6, rtol=1e-5)
    if keep:
        assert_same_kept(fused, ops, atol=2e-6)


def test_the_kernel_rule_and_setting() -> None:
    assert fastgpt2.prefer_decode_kernel("auto", "AuthenticAMD", False)
    assert fastgpt2.prefer_decode_kernel("auto", "AuthenticAMD", True)
    assert not fastgpt2.prefer_decode_kernel("auto", "GenuineIntel", False)
    assert fastgpt2.prefer_decode_kernel("1", "GenuineIntel", True)
    assert not fastgpt2.prefer_decode_kernel("0", "AuthenticAMD", False)
    with pytest.raises(ValueError, match="RLHFKIT_CPU_DECODE_KERNEL"):
        fastgpt2.prefer_decode_kernel("yes")
    x86, arm = frozenset({"avx2", "fma", "sse4_2"}), frozenset({"neon", "asimd"})
    assert fastgpt2.prefer_kernels("auto", x86) and not fastgpt2.prefer_kernels("auto", arm)
    assert fastgpt2.prefer_kernels("1", arm) and not fastgpt2.prefer_kernels("0", x86)
    with pytest.raises(ValueError, match="RLHFKIT_CPU_DECODE_KERNEL"):
        fastgpt2.prefer_kernels("yes")


def test_work_off_the_cpu_never_builds_the_library(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CUDA run's GELU, attention and weight gradients (here on the meta device) take ATen's path
    without asking for the library, so a GPU image without a C compiler builds nothing and says
    nothing about it."""
    monkeypatch.setattr(fastgpt2, "_KERNELS", True)
    monkeypatch.setattr(fastgpt2, "_MATMUL_KERNELS", True)
    asked: list[int] = []
    monkeypatch.setattr(cpukernel, "load", lambda flags: asked.append(1))
    x = torch.empty(6, 40, device="meta")
    assert fastgpt2._ACTIVATIONS["gelu_new"](x).device.type == "meta"
    q = torch.empty(2, 2, 9, 16, device="meta")
    assert fastgpt2._attention(q, q, q, None, 0.25).shape == q.shape
    _, gw, _ = fastgpt2._linear_grads(torch.empty(8, 32, device="meta"), torch.empty(8, 16, device="meta"),
                                      torch.empty(16, 32, device="meta"), True, need_x=False, need_w=True,
                                      need_b=False, onednn=False)
    assert gw is not None and gw.shape == (16, 32)
    assert not fastgpt2.kernels_for(x) and asked == []
    assert fastgpt2.kernels_for(torch.empty(2)) is False and asked == [1]  # a CPU tensor asks (and here gets None)


def test_without_a_compiler_decoding_stays_on_onednn(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A worker with no C compiler: the build says which compiler it looked for, the decoder runs its
    oneDNN steps and says why once, on stderr."""
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("RLHFKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(cpukernel, "_lib", None)
    monkeypatch.setattr(cpukernel, "_tried", False)
    monkeypatch.setattr(cpukernel, "_reason", "")
    with pytest.raises(RuntimeError, match="no-such-cc"):
        cpukernel.build()
    assert cpukernel.load(fastgpt2.cpu_flags()) is None
    assert "no-such-cc" in cpukernel.reason() or "AVX2" in cpukernel.reason()
    assert "decoding stays on oneDNN" in capsys.readouterr().err
    switch(monkeypatch, True)
    assert not fastgpt2._kernel_decodes(4)
    assert cpukernel.load(fastgpt2.cpu_flags()) is None and capsys.readouterr().err == ""  # said once


@needs_kernel
def test_a_build_is_reused_and_a_broken_compiler_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = cpukernel.build(tmp_path)
    stamp = first.stat().st_mtime_ns
    assert cpukernel.build(tmp_path) == first and first.stat().st_mtime_ns == stamp  # not compiled again
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no partial file left behind
    broken = tmp_path / "cc"
    broken.write_text("#!/bin/sh\necho 'cc: error: this compiler is broken' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("CC", str(broken))
    with pytest.raises(RuntimeError, match="this compiler is broken"):
        cpukernel.build(tmp_path / "other")


@needs_kernel
@needs_packing
def test_weights_laid_out_in_blocks_the_kernel_does_not_read_stay_on_onednn(monkeypatch: pytest.MonkeyPatch,
                                                                             lib: object) -> None:
    """oneDNN lays some shapes out in blocks of 8 or 24 columns: a decoder whose trunk has one decodes
    on oneDNN; an LM head with one stays on oneDNN while the trunk takes the kernel."""
    monkeypatch.setattr(fastgpt2, "_ONEDNN", True)
    monkeypatch.setattr(fastgpt2, "_onednn_rows", set())
    switch(monkeypatch, True)
    model = tiny_lm(seed=57, n_embd=64, n_head=4)
    ids, mask = left_padded(seed=58)
    tok = torch.randint(2, V, (ids.shape[0],), generator=torch.Generator().manual_seed(59))
    reference = fastgpt2.Decoder(model, ids, mask, max_new_tokens=3)
    assert reference.kernel and reference.head_blocks is not None
    expected = reference.step(tok)
    fits = cpukernel.fits
    head = model.lm_head.weight
    for refused, kernel in (("trunk", False), ("head", True)):
        def blocks(w: torch.Tensor, refused: str = refused) -> torch.Tensor:
            b = fastgpt2._packed[w].blocks
            return b.reshape(b.shape[0], b.shape[1], 8, -1)[..., 0] if (w is head) == (refused == "head") else b

        monkeypatch.setattr(fastgpt2, "_blocks", blocks)
        dec = fastgpt2.Decoder(model, ids, mask, max_new_tokens=3)
        assert dec.layers is not None and dec.kernel is kernel and dec.head_blocks is None
        assert not fits(blocks(head if refused == "head" else model.transformer.h[0].mlp.c_fc.weight))
        torch.testing.assert_close(dec.step(tok), expected, atol=1e-5, rtol=1e-5)


def naive_attention(qkv: torch.Tensor, kv: torch.Tensor, n: int, invalid: torch.Tensor | None,
                    scale: float) -> torch.Tensor:
    """One query per (row, head), in float64, one (row, head) at a time."""
    _, B, H, _, hs = kv.shape
    y = torch.zeros(B, H * hs, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            q = qkv[b, h * hs:(h + 1) * hs].double()
            keep = [j for j in range(n) if invalid is None or not invalid[b, j]]
            scores = torch.tensor([scale * float(q @ kv[0, b, h, j].double()) for j in keep], dtype=torch.float64)
            p = torch.softmax(scores, 0)
            y[b, h * hs:(h + 1) * hs] = sum((p[i] * kv[1, b, h, j].double() for i, j in enumerate(keep)),
                                            torch.zeros(hs, dtype=torch.float64))
    return y.float()


@needs_kernel
@pytest.mark.parametrize(("rows", "heads", "hs", "n"), [(3, 4, 64, 1), (5, 2, 64, 13), (4, 3, 16, 8), (2, 2, 24, 30),
                                                        (6, 1, 64, 67)])
@pytest.mark.parametrize("masked", [False, True])
def test_the_attention_kernel_against_a_plain_loop(lib: object, rows: int, heads: int, hs: int, n: int,
                                                   masked: bool) -> None:
    g = torch.Generator().manual_seed(rows * 100 + n)
    T = n + 5  # the cache holds more positions than are filled
    kv = torch.randn(2, rows, heads, T, hs, generator=g) * 2
    qkv = torch.randn(rows, 3 * heads * hs, generator=g)
    invalid = None
    if masked:  # left padding: some rows' first keys left out, never a row's last
        invalid = torch.zeros(rows, T, dtype=torch.bool)
        for b in range(rows):
            invalid[b, : b % max(n, 1)] = True
    assert cpukernel.attends(kv)
    scale = hs ** -0.5
    got = cpukernel.attention(qkv, kv, n, invalid, scale)
    torch.testing.assert_close(got, naive_attention(qkv, kv, n, invalid, scale), atol=2e-6, rtol=2e-5)


@needs_kernel
def test_the_attention_kernel_gives_the_same_bits_at_any_thread_count(lib: object) -> None:
    g = torch.Generator().manual_seed(9)
    kv, qkv = torch.randn(2, 16, 12, 40, 64, generator=g), torch.randn(16, 3 * 768, generator=g)
    threads = torch.get_num_threads()
    try:
        outs = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            outs.append(cpukernel.attention(qkv, kv, 37, None, 0.125))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(outs[0], o) for o in outs[1:])


@needs_kernel
def test_the_attention_kernel_refuses_what_it_does_not_take(lib: object) -> None:
    assert not cpukernel.attends(torch.randn(2, 3, 4, 10, 12))  # head size not a multiple of 8
    assert not cpukernel.attends(torch.randn(2, 3, 4, 10, 16).transpose(2, 3))  # not one block of memory
    assert not cpukernel.attends(torch.randn(2, 3, 4, 10, 16, dtype=torch.float64))
    with pytest.raises(ValueError, match="11 keys"):
        cpukernel.attention(torch.randn(3, 3 * 64), torch.randn(2, 3, 4, 10, 16), 11, None, 0.25)


@needs_kernel
@needs_packing
def test_a_decode_wider_than_the_matmul_tiles_attends_with_the_kernel(monkeypatch: pytest.MonkeyPatch,
                                                                       lib: object) -> None:
    """More rows than the matmul takes on this CPU (:func:`cpukernel.max_rows`): the matmuls stay on
    oneDNN, the attention runs in the kernel, and the steps give the batched matmuls' logits."""
    monkeypatch.setattr(fastgpt2, "_ONEDNN", True)
    monkeypatch.setattr(fastgpt2, "_onednn_rows", set())
    model = tiny_lm(seed=61, n_embd=64, n_head=4)
    ids, mask = left_padded(seed=62)
    reps = -(-(cpukernel.max_rows() + 1) // ids.shape[0])
    ids, mask = ids.repeat(reps, 1), mask.repeat(reps, 1)
    new = torch.randint(2, V, (ids.shape[0], 4), generator=torch.Generator().manual_seed(63))
    switch(monkeypatch, True)
    on = fastgpt2.Decoder(model, ids, mask, max_new_tokens=5)
    switch(monkeypatch, False)
    off = fastgpt2.Decoder(model, ids, mask, max_new_tokens=5)
    if on.layers is None:
        pytest.skip(f"this CPU's rule does not pack a {ids.shape[0]}-row decode")
    assert on.attend and not on.kernel and not off.attend
    for t in range(new.shape[1]):
        torch.testing.assert_close(on.step(new[:, t]), off.step(new[:, t]), atol=1e-5, rtol=1e-5)


@needs_kernel
@needs_packing
def test_with_the_matmul_kernels_off_the_others_still_run(monkeypatch: pytest.MonkeyPatch, lib: object) -> None:
    """The rule of an Intel CPU under ``auto`` (:func:`fastgpt2.prefer_decode_kernel` false,
    :func:`fastgpt2.prefer_kernels` true): the decode multiplies on oneDNN and attends in the kernel,
    giving the all-off decoder's logits; the GELU runs in the kernel and the weight gradient in ATen."""
    monkeypatch.setattr(fastgpt2, "_ONEDNN", True)
    monkeypatch.setattr(fastgpt2, "_onednn_rows", set())
    model = tiny_lm(seed=64, n_embd=64, n_head=4)
    ids, mask = left_padded(seed=65)
    new = torch.randint(2, V, (ids.shape[0], 4), generator=torch.Generator().manual_seed(66))
    switch(monkeypatch, True, matmuls=False)
    assert fastgpt2.kernels_in_use() and not fastgpt2.matmul_kernels_in_use()
    split = fastgpt2.Decoder(model, ids, mask, max_new_tokens=5)
    x = torch.randn(6, 40, requires_grad=True)
    assert "KernelGelu" in type(fastgpt2._ACTIVATIONS["gelu_new"](x).grad_fn).__name__
    calls = counted(monkeypatch, "weight_grad")
    up, x64 = torch.randn(200, 128), torch.randn(200, 64)
    fastgpt2._linear_grads(up, x64, torch.randn(64, 128), True, need_x=False, need_w=True, need_b=False, onednn=False)
    assert calls == []
    switch(monkeypatch, True)  # the same call with the matmuls' kernels on takes the kernel where it can
    fastgpt2._linear_grads(up, x64, torch.randn(64, 128), True, need_x=False, need_w=True, need_b=False, onednn=False)
    assert calls == ([1] if cpukernel.weight_grad_takes(x64, up) else [])
    switch(monkeypatch, False)
    off = fastgpt2.Decoder(model, ids, mask, max_new_tokens=5)
    if split.layers is None:
        pytest.skip(f"this CPU's rule does not pack a {ids.shape[0]}-row decode")
    assert split.attend and not split.kernel and split.blocks is None and not off.attend
    for t in range(new.shape[1]):
        torch.testing.assert_close(split.step(new[:, t]), off.step(new[:, t]), atol=1e-5, rtol=1e-5)


@needs_avx512
@pytest.mark.parametrize(("rows", "n_in", "n_out"), [(17, 64, 64), (64, 256, 2023), (128, 300, 130), (40, 1024, 256)])
def test_the_wide_kernel_multiplies_blocks_of_64(lib: object, rows: int, n_in: int, n_out: int) -> None:
    g = torch.Generator().manual_seed(rows + n_in)
    x, w = torch.randn(rows, n_in, generator=g), torch.randn(n_in, n_out, generator=g)
    b, r = torch.randn(n_out, generator=g), torch.randn(rows, n_out, generator=g)
    blocks = blocks_of(w, 64)
    assert cpukernel.takes(x, blocks) and not cpukernel.takes(x, blocks_of(w, 32))  # past 16 rows: Y = 64 only
    tol = {"atol": 1e-4 * n_in ** 0.5, "rtol": 1e-5}
    torch.testing.assert_close(cpukernel.linear(x, blocks, n_out, b), reference(x, w, b, None), **tol)
    torch.testing.assert_close(cpukernel.linear(x, blocks, n_out, b, r), reference(x, w, b, r), **tol)
    assert not cpukernel.takes(torch.randn(cpukernel.MAX_ROWS_WIDE + 1, n_in), blocks)


@needs_kernel
@pytest.mark.parametrize("rows", [1, 7, 16, 64])
def test_the_kernels_gelu_is_gpt2s(lib: object, rows: int) -> None:
    """The epilogue's tanh GELU against ATen's, over the range a pre-activation takes and past it
    (large magnitudes, where tanh saturates), alone and with its input kept."""
    if rows > cpukernel.max_rows():
        pytest.skip(f"this CPU's kernel takes at most {cpukernel.max_rows()} rows")
    g = torch.Generator().manual_seed(rows)
    n_in, n_out = 96, 200
    x, w, b = torch.randn(rows, n_in, generator=g), torch.randn(n_in, n_out, generator=g), torch.randn(n_out, generator=g)
    w[:, :8] *= 20  # some columns far out, both signs
    blocks = blocks_of(w, 64)
    pre = cpukernel.linear(x, blocks, n_out, b)
    want = torch.nn.functional.gelu(pre, approximate="tanh")
    torch.testing.assert_close(cpukernel.linear(x, blocks, n_out, b, gelu=True), want, atol=1e-6, rtol=1e-5)
    f, a = cpukernel.linear_gelu(x, blocks, n_out, b)
    assert torch.equal(f, pre)
    torch.testing.assert_close(a, want, atol=1e-6, rtol=1e-5)
    assert (a[:, :8].abs() > 10).any() and torch.isfinite(a).all()


@needs_kernel
@pytest.mark.parametrize("n", [1, 7, 8, 4096 + 5, 3 * 4096])
def test_the_training_gelu_and_its_backward_match_atens(lib: object, n: int) -> None:
    """The kernel's GELU forward and backward against ATen's tanh GELU over a wide range (tanh
    saturated at both ends), lengths off its 8-wide vectors and 4096-wide chunks included."""
    g = torch.Generator().manual_seed(n)
    x = (torch.randn(n, generator=g) * 4).requires_grad_(True)
    up = torch.randn(n, generator=g)
    x_ref = x.detach().clone().requires_grad_(True)
    want = torch.nn.functional.gelu(x_ref, approximate="tanh")
    want.backward(up)
    got = fastgpt2._KernelGelu.apply(x)
    got.backward(up)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    assert x.grad is not None and x_ref.grad is not None
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-5, rtol=1e-5)


@needs_kernel
def test_training_forwards_take_the_kernels_gelu_where_it_runs(monkeypatch: pytest.MonkeyPatch, lib: object) -> None:
    """GPT-2's activation goes to the kernel under the rule, and to ATen where the rule is off or
    the tensor is not one the kernel reads (fp64, not contiguous); both give ATen's values."""
    x = torch.randn(6, 40)
    switch(monkeypatch, True)
    y = fastgpt2._ACTIVATIONS["gelu_new"](x.requires_grad_(True))
    assert y.grad_fn is not None and "KernelGelu" in type(y.grad_fn).__name__
    ys = fastgpt2._ACTIVATIONS["gelu_new"](x.detach().t())  # not contiguous
    assert torch.equal(ys, torch.nn.functional.gelu(x.detach().t(), approximate="tanh"))
    switch(monkeypatch, False)
    z = fastgpt2._ACTIVATIONS["gelu_new"](x)
    assert "KernelGelu" not in type(z.grad_fn).__name__
    torch.testing.assert_close(y, z, atol=1e-6, rtol=1e-5)


# ----------------------------------------------------------------------------- whole-sequence attention
def naive_sequence_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                             scale: float, offset: int) -> torch.Tensor:
    """Float64, one (row, head, query) at a time: softmax over the keys it sees, zeros where none."""
    B, H, Tq, hs = q.shape
    out = torch.zeros(B, H, Tq, hs, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            for i in range(Tq):
                seen = [j for j in range(k.shape[2])
                        if j <= offset + i and (mask is None or bool(mask[b if mask.shape[0] > 1 else 0, 0, i, j]))]
                if not seen:
                    continue
                s = torch.stack([scale * (q[b, h, i].double() @ k[b, h, j].double()) for j in seen])
                p = torch.softmax(s, 0)
                out[b, h, i] = sum((p[n] * v[b, h, j].double() for n, j in enumerate(seen)),
                                   torch.zeros(hs, dtype=torch.float64))
    return out


def qkv_views(B: int, H: int, Tq: int, Tk: int, hs: int, seed: int) -> tuple[torch.Tensor, ...]:
    """q, k, v (B, H, T, hs) as the trunk makes them: head views of wider rows (strided, last dim contiguous)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, Tq, 3, H, hs, generator=g)[:, :, 1].transpose(1, 2)
    kv = torch.randn(B, Tk, 2, H, hs, generator=g) * 1.5
    return q, kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)


@needs_kernel
@pytest.mark.parametrize(("B", "H", "Tq", "Tk", "hs", "offset"), [
    (2, 3, 13, 13, 16, 0),  # queries off the 6-row tiles, keys off the 16-wide strips
    (1, 2, 71, 71, 64, 0),  # the benchmark's sequence
    (3, 1, 7, 12, 48, 5),  # later queries over a prompt's keys (a shared prompt's rows)
    (2, 2, 1, 1, 32, 0),
])
@pytest.mark.parametrize("masked", [False, True])
def test_the_sequence_attention_kernel_and_its_gradients_against_a_plain_loop(
        lib: object, B: int, H: int, Tq: int, Tk: int, hs: int, offset: int, masked: bool) -> None:
    q, k, v = qkv_views(B, H, Tq, Tk, hs, seed=Tq * 10 + hs)
    mask = None
    if masked:  # random holes, each query still seeing itself, and one query of row 0 seeing nothing
        g = torch.Generator().manual_seed(3)
        mask = torch.rand(B, 1, Tq, Tk, generator=g) > 0.4
        for i in range(Tq):
            mask[:, 0, i, min(offset + i, Tk - 1)] = True
        mask[0, 0, Tq - 1] = False
    scale = hs ** -0.5
    assert cpukernel.sequence_attends(q, k, v)
    out, lse = cpukernel.attention_forward(q, k, v, mask, scale, offset, with_lse=True)
    want = naive_sequence_attention(q, k, v, mask, scale, offset)
    torch.testing.assert_close(out.double(), want, atol=2e-6, rtol=2e-5)
    assert lse is not None and out.transpose(1, 2).is_contiguous()  # heads merge without a copy
    # gradients against autograd through the float64 loop
    leaves = [t.detach().double().requires_grad_(True) for t in (q, k, v)]
    up = torch.randn(B, H, Tq, hs, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    naive_sequence_attention(*leaves, mask, scale, offset).backward(up)
    got = cpukernel.attention_backward(q, k, v, out, up.float(), lse, mask, scale, offset)
    for name, mine, leaf in zip("qkv", got, leaves, strict=True):
        assert leaf.grad is not None
        torch.testing.assert_close(mine.double(), leaf.grad, atol=1e-5, rtol=1e-4, msg=f"d{name}")


@needs_kernel
def test_the_sequence_attention_kernel_gives_the_same_bits_at_any_thread_count(lib: object) -> None:
    q, k, v = qkv_views(5, 4, 30, 30, 64, seed=8)
    up = torch.randn(5, 4, 30, 64, generator=torch.Generator().manual_seed(9))
    threads = torch.get_num_threads()
    try:
        runs = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            out, lse = cpukernel.attention_forward(q, k, v, None, 0.125, 0, with_lse=True)
            assert lse is not None
            runs.append((out, *cpukernel.attention_backward(q, k, v, out, up, lse, None, 0.125, 0)))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for run in runs[1:] for a, b in zip(runs[0], run, strict=True))


@needs_kernel
def test_the_sequence_attention_kernel_refuses_what_it_does_not_take(lib: object) -> None:
    q, k, v = qkv_views(2, 2, 5, 5, 16, seed=1)
    assert not cpukernel.sequence_attends(*qkv_views(2, 2, 5, 5, 24, seed=1))  # head size not a multiple of 16
    assert not cpukernel.sequence_attends(*qkv_views(1, 1, cpukernel.MAX_SEQ + 1, 4, 16, seed=1))
    assert not cpukernel.sequence_attends(q.double(), k.double(), v.double())
    assert not cpukernel.sequence_attends(q.transpose(2, 3), k, v)  # last dim not contiguous
    with pytest.raises(ValueError, match="attention_forward refused"):
        cpukernel.attention_forward(q, k, v, None, 0.25, offset=-1)


@needs_kernel
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("shared", [False, True])
def test_training_forwards_attend_in_the_kernel_where_it_runs(monkeypatch: pytest.MonkeyPatch, lib: object,
                                                             padded: bool, shared: bool) -> None:
    """A trunk forward and backward (causal, left padding, a shared prompt's rows attending to its
    keys) with the kernel's attention gives SDPA's hidden states and parameter gradients."""
    from tests.unit.test_fastgpt2 import grouped

    model = tiny_lm(seed=71, n_embd=64, n_head=4)  # head size 16: one the kernel takes
    ids, mask = grouped(seed=72) if shared else left_padded(seed=72)
    if not padded:
        mask = torch.ones_like(mask)
    P = 6 if shared else 0
    results = []
    for on in (True, False):
        switch(monkeypatch, on)
        model.zero_grad()
        h = fastgpt2.hidden_states(model.transformer, ids, mask, prefix_len=P, start=max(P - 1, 0))
        (h * torch.linspace(-1, 1, h.shape[-1])).sum().backward()
        results.append((h.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (h_on, g_on), (h_off, g_off) = results
    torch.testing.assert_close(h_on, h_off, atol=2e-5, rtol=1e-4)
    assert len(g_on) == len(g_off) > 0
    for a, b in zip(g_on, g_off, strict=True):
        torch.testing.assert_close(a, b, atol=5e-5, rtol=1e-4)


@needs_kernel
def test_the_attention_routes_to_the_kernel_only_under_the_rule(monkeypatch: pytest.MonkeyPatch, lib: object) -> None:
    q, k, v = (t.requires_grad_(True) for t in (t.clone() for t in qkv_views(2, 2, 9, 9, 16, seed=5)))
    switch(monkeypatch, True)
    assert "KernelAttention" in type(fastgpt2._attention(q, k, v, None, 0.25).grad_fn).__name__
    switch(monkeypatch, False)
    assert "KernelAttention" not in type(fastgpt2._attention(q, k, v, None, 0.25).grad_fn).__name__


# ----------------------------------------------------------------------------- sampling
@needs_kernel
@pytest.mark.parametrize("V", [1, 7, 64, 2023])
def test_the_sampling_kernel_draws_what_the_inverse_cdf_draws(lib: object, V: int) -> None:
    """The same token as :func:`rlhfkit.policy._draw` for the same uniform (u at both ends and
    between), never a token without mass, and the token's log-softmax."""
    from rlhfkit.policy import _draw

    g = torch.Generator().manual_seed(V)
    logits = torch.randn(33, V, generator=g) * 3
    logits[::3, :: max(V // 5, 2)] = float("-inf")  # tokens without mass
    logits[::3, -1] = 0.5  # each row keeps some mass
    for u in (torch.zeros(33, 1, dtype=torch.float64), torch.full((33, 1), 1 - 2**-53, dtype=torch.float64),
              torch.rand(33, 1, generator=g, dtype=torch.float64)):
        tok, logprob = cpukernel.sample(logits, u)
        want = _draw(torch.softmax(logits, -1), torch.Generator().manual_seed(0), u=u)
        assert torch.equal(tok, want)
        assert bool(torch.isfinite(logits.gather(1, tok[:, None])).all())
        torch.testing.assert_close(logprob, torch.log_softmax(logits, -1).gather(1, tok[:, None])[:, 0],
                                   atol=2e-6, rtol=1e-5)


@needs_kernel
def test_the_sampling_kernel_gives_the_same_bits_at_any_thread_count_and_refuses_empty_rows(lib: object) -> None:
    logits = torch.randn(40, 500, generator=torch.Generator().manual_seed(2))
    u = torch.rand(40, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    threads = torch.get_num_threads()
    try:
        runs = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            runs.append(cpukernel.sample(logits, u))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for run in runs[1:] for a, b in zip(runs[0], run, strict=True))
    logits[5] = float("-inf")
    with pytest.raises(ValueError, match="without a finite logit"):
        cpukernel.sample(logits, u)
    assert not cpukernel.samples(logits.double()) and not cpukernel.samples(logits.t())


@needs_kernel
def test_a_sampling_step_scores_the_token_before_top_p_on_either_path(monkeypatch: pytest.MonkeyPatch,
                                                                       lib: object) -> None:
    """With a top-p filter the token comes from the filtered logits and its log-probability from the
    unfiltered ones, kernel or ATen; both draw the same tokens from the same generator."""
    from rlhfkit.policy import _filter_logits, _sample_step

    logits = torch.randn(16, 300, generator=torch.Generator().manual_seed(4)) * 2
    filtered = _filter_logits(logits, top_p=0.8, top_k=0)
    results = []
    for on in (True, False):
        switch(monkeypatch, on)
        results.append(_sample_step(logits, filtered, torch.Generator().manual_seed(5), scored=True))
    (tok_on, lp_on), (tok_off, lp_off) = results
    assert torch.equal(tok_on, tok_off) and bool(torch.isfinite(filtered.gather(1, tok_on[:, None])).all())
    assert lp_on is not None and lp_off is not None
    torch.testing.assert_close(lp_on, torch.log_softmax(logits, -1).gather(1, tok_on[:, None])[:, 0])
    torch.testing.assert_close(lp_on, lp_off)


# ----------------------------------------------------------------------------- log-probabilities and entropy
def counted(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    """Count the calls of ``cpukernel.<name>`` (which still runs) for the rest of the test."""
    calls: list[int] = []
    kernel = getattr(cpukernel, name)
    monkeypatch.setattr(cpukernel, name, lambda *a: calls.append(1) or kernel(*a))
    return calls


@needs_kernel
@pytest.mark.parametrize(("N", "V"), [(1, 5), (37, 2023), (8, 64)])
def test_the_logprob_entropy_kernel_and_its_backward_match_atens(monkeypatch: pytest.MonkeyPatch, lib: object,
                                                                  N: int, V: int) -> None:
    """Log-probabilities, entropies, the saved log-softmax and its exp, and the logits' gradient,
    kernel against ATen's passes (vocabularies off the 8-wide vectors, probabilities that underflow)."""
    g = torch.Generator().manual_seed(N * V)
    z = torch.randn(N, V, generator=g) * 4
    z[0, : V // 2] = -1e4  # tokens whose probability underflows to 0
    y = torch.randint(V // 2, V, (N,), generator=g)
    up_lp, up_ent = torch.randn(N, generator=g), torch.randn(N, generator=g)
    calls = counted(monkeypatch, "logprob_entropy")
    results = []
    for on in (True, False):
        switch(monkeypatch, on)
        zz = z.clone().requires_grad_(True)
        lp, ent = fastgpt2.logprobs_and_entropy(zz, y)
        assert ent is not None and len(calls) == 1  # the kernel's forward ran under the rule only
        (lp * up_lp + ent * up_ent).sum().backward()
        results.append((lp.detach(), ent.detach(), zz.grad))
    for mine, atens in zip(*results, strict=True):
        assert mine is not None and atens is not None
        torch.testing.assert_close(mine, atens, atol=2e-6, rtol=2e-5)
    logp, p, _, _ = cpukernel.logprob_entropy(z, y)
    torch.testing.assert_close(logp[1:], torch.log_softmax(z[1:], -1), atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(p, torch.softmax(z, -1), atol=1e-7, rtol=1e-5)
    with pytest.raises(ValueError, match="a label outside"):
        cpukernel.logprob_entropy(z, torch.full((N,), V))
    assert not cpukernel.rows_take(torch.randn(4, 6)[:, ::2]) and not cpukernel.rows_take(z.double())


# ----------------------------------------------------------------------------- weight gradients
@needs_avx512
@pytest.mark.parametrize(("K", "M", "N"), [(1, 1, 64), (300, 13, 128), (1136, 256, 768), (129, 2023, 256)])
def test_the_weight_gradient_kernel_against_float64(lib: object, K: int, M: int, N: int) -> None:
    """x^T g over token counts off its 128-token chunks, row counts off its 6-row tiles (the LM
    head's vocabulary), strided rows; the same bits at any thread count."""
    g = torch.Generator().manual_seed(K + M)
    a = torch.randn(K, M + 3, generator=g)[:, 1 : M + 1]  # rows wider than the matrix
    b = torch.randn(K, N, generator=g)
    assert cpukernel.weight_grad_takes(a, b)
    got = cpukernel.weight_grad(a, b)
    torch.testing.assert_close(got.double(), a.double().t() @ b.double(), atol=1e-4 * K**0.5, rtol=1e-5)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(cpukernel.weight_grad(a, b), got)
    finally:
        torch.set_num_threads(threads)
    assert not cpukernel.weight_grad_takes(a, b[:, :50])  # columns not a multiple of 64
    assert not cpukernel.weight_grad_takes(a.double(), b.double())


@needs_avx512
@pytest.mark.parametrize("conv1d", [True, False])
def test_a_training_matmul_takes_its_weight_gradient_from_the_kernel_where_it_runs(
        monkeypatch: pytest.MonkeyPatch, lib: object, conv1d: bool) -> None:
    x = torch.randn(200, 64, generator=torch.Generator().manual_seed(6))
    w = torch.randn(64, 128) if conv1d else torch.randn(128, 64)  # Conv1D (in, out) or Linear (out, in)
    up = torch.randn(200, 128, generator=torch.Generator().manual_seed(7))
    calls = counted(monkeypatch, "weight_grad")
    grads = []
    for on in (True, False):
        switch(monkeypatch, on)
        _, gw, _ = fastgpt2._linear_grads(up, x, w, conv1d, need_x=False, need_w=True, need_b=False, onednn=False)
        grads.append(gw)
    assert len(calls) == 1 and grads[0] is not None and grads[1] is not None
    assert grads[0].shape == w.shape
    torch.testing.assert_close(grads[0], grads[1], atol=1e-4, rtol=1e-5)
