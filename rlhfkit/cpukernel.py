"""Compiled kernels for CPU runs on AVX2 CPUs, built with the system C compiler on first use.

Why: a GPT-2-small decode step multiplies 8–16 rows by every weight of the model, so it streams
~340 MB from memory per token; on the AMD CPUs measured (with and without AVX-512) oneDNN's matmul
over the packed weights (:func:`rlhfkit.fastgpt2.packed_decode_weight`) reaches neither the
machine's read bandwidth nor its FMA rate there. ``cpukernel.c`` multiplies the same packed bytes
with register tiles and prefetches the next chunk of the weight while it computes. On AVX-512 CPUs
a second form takes decodes of up to 128 rows (L4/D256's 64), where oneDNN's fixed cost per call
weighs; both forms compute the tanh GELU in their epilogue, as oneDNN's post-op does. A step's
attention is one pass over each row and head's cache instead of two batched matmuls of B * H tiny
products with a softmax between, and training forwards take the GELU and its backward from here,
and their causal attention over whole sequences (forward and backward; SDPA's CPU flash kernel
calls the BLAS once per block of 32 queries, which at these sequence lengths costs more than the
products).
benchmarks/NOTES_grpo_vs_trl.md (changes 23, 25–28) and NOTES_ppo_vs_trl.md (changes 29–36) have
the measurements and the rules :func:`rlhfkit.fastgpt2.prefer_kernels` (the kernels that replace
ATen's loops: any CPU the library builds for) and :func:`rlhfkit.fastgpt2.prefer_decode_kernel`
(the matmuls: AMD CPUs, where they were measured against oneDNN) follow.

How it is built: ``cc -O3 -mavx2 -mfma -fopenmp -shared`` into ``$RLHFKIT_CACHE/kernels`` (default
``~/.cache/rlhfkit``), keyed by a hash of the source and the flags, renamed into place so that
workers starting together never load a half-written file. The library links the OpenMP runtime
PyTorch already loaded (``libgomp.so.1``), so both share one thread pool. Where there is no
compiler, the CPU lacks AVX2 or FMA, or the compile fails, :func:`load` returns None and says why
once (:func:`reason`); decoding then stays on oneDNN and the GELU on ATen. ``CC`` picks the
compiler.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from rlhfkit.tiny.warmstart import default_cache_dir

Tensor = torch.Tensor
MAX_ROWS = 16  # the most rows the AVX2 matmul takes (MAX_ROWS in cpukernel.c)
MAX_ROWS_WIDE = 128  # the most the AVX-512 one takes, on blocks of 64 columns (MAX_ROWS_512)
SOURCE = Path(__file__).with_name("cpukernel.c")
FLAGS = ("-O3", "-mavx2", "-mfma", "-fopenmp", "-shared", "-fPIC")

_lib: ctypes.CDLL | None = None
_wide = False  # the CPU has AVX-512: decodes on blocks of 64 columns take that form, up to MAX_ROWS_WIDE rows
_tried = False
_reason = ""


def reason() -> str:
    """Why :func:`load` gave None ("" before it was called, or when it loaded)."""
    return _reason


def cache_dir() -> Path:
    return default_cache_dir() / "kernels"


def _compiler() -> str | None:
    cc = os.environ.get("CC") or "cc"
    return shutil.which(cc)


def build(out_dir: Path | None = None) -> Path:
    """Compile ``cpukernel.c`` (or find it compiled) and return the library's path; raises
    ``RuntimeError`` with the compiler's message where it cannot."""
    cc = _compiler()
    if cc is None:
        raise RuntimeError(f"no C compiler ({os.environ.get('CC') or 'cc'} is not on PATH)")
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source + " ".join((cc, *FLAGS)).encode()).hexdigest()[:16]
    out_dir = out_dir or cache_dir()
    target = out_dir / f"cpukernel-{digest}.so"
    if target.exists():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        partial = Path(tmp) / target.name
        done = subprocess.run([cc, *FLAGS, str(SOURCE), "-o", str(partial)], capture_output=True, text=True,
                              timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{cc} failed: {(done.stderr or done.stdout).strip()[-400:]}")
        os.replace(partial, target)
    return target


def load(cpu_flags: frozenset[str]) -> ctypes.CDLL | None:
    """The compiled kernel, built on first call; None where it cannot be (see :func:`reason`).
    ``cpu_flags``: this CPU's (``/proc/cpuinfo``'s, as :func:`rlhfkit.fastgpt2.cpu_flags` reads them)."""
    global _lib, _tried, _reason, _wide
    if _tried:
        return _lib
    _tried = True
    if not {"avx2", "fma"} <= cpu_flags:
        _reason = "this CPU lacks AVX2 or FMA"
    else:
        try:
            lib = ctypes.CDLL(str(build()))
            p, i, n, f = ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_float  # pointer, int, long, float
            signatures: dict[str, list[Any]] = {
                "linear_rows": [p, i, i, p, i, i, p, p, p, i, p, i, i],
                "decode_attention": [p, i, p, p, n, i, i, i, i, p, i, f, p, i, i],
                "decode_block": [p] * 11 + [i, i, p, i, f, i, i, i, i, f, i, i],
                "gelu_forward": [p, p, n, i],
                "gelu_backward": [p, p, p, n, i],
                # attention: pointers, then the sizes, offset, mask, its row stride, scale, threads
                "attention_forward": [p] * 6 + [i] * 6 + [p, n, f, i],
                "attention_backward": [p] * 10 + [i] * 6 + [p, n, f, i],
                "sample_rows": [p, n, i, i, p, p, p, i],
                "logprob_entropy_forward": [p, i, i, p, p, p, p, p, i],
                "logprob_entropy_backward": [p, p, p, p, p, p, p, i, i, i],
                "weight_grad512": [p, n, p, n, i, i, i, p, i],
            }
            for name, args in signatures.items():
                fn = getattr(lib, name)
                fn.restype, fn.argtypes = ctypes.c_int, args
            _lib = lib
            _wide = "avx512f" in cpu_flags
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            _reason = f"decode kernel not built: {exc}"
    if _lib is None:
        print(f"rlhfkit: {_reason}; decoding stays on oneDNN", file=sys.stderr, flush=True)
    return _lib


def max_rows() -> int:
    """The most rows :func:`linear` takes on this CPU (:data:`MAX_ROWS_WIDE` with AVX-512, on blocks
    of 64 columns; else :data:`MAX_ROWS`)."""
    return MAX_ROWS_WIDE if _lib is not None and _wide else MAX_ROWS


def fits(blocks: Tensor, rows: int = 1) -> bool:
    """Whether the kernel reads a weight laid out as these blocks in a ``rows``-row product: fp32 on
    the CPU, (n, in, Y) with Y 16, 32, 48 or 64 (oneDNN picks 8 or 24 for some shapes: those stay on
    oneDNN), and Y = 64 past :data:`MAX_ROWS` rows."""
    ok = blocks.dim() == 3 and blocks.dtype == torch.float32 and blocks.device.type == "cpu"
    if rows <= MAX_ROWS:
        return ok and blocks.shape[2] in (16, 32, 48, 64)
    return ok and rows <= max_rows() and blocks.shape[2] == 64


def takes(x: Tensor, blocks: Tensor) -> bool:
    """Whether :func:`linear` computes ``x @ W`` for these operands (the library loaded)."""
    return (_lib is not None and x.dim() == 2 and x.shape[0] >= 1 and x.dtype == torch.float32
            and x.device.type == "cpu" and fits(blocks, x.shape[0]) and blocks.shape[1] == x.shape[1])


def linear(x: Tensor, blocks: Tensor, n_out: int, bias: Tensor | None = None,
           residual: Tensor | None = None, gelu: bool = False) -> Tensor:
    """``x @ W + bias (+ residual)``, (M, n_out), with ``W`` given as its packed ``blocks``
    (ceil(n_out / Y), K, Y) (:func:`rlhfkit.fastgpt2.packed_decode_weight`'s bytes); with ``gelu``,
    the tanh-approximated GELU of that (GPT-2's ``gelu_new``); only where :func:`takes` holds."""
    return _linear(x, blocks, n_out, bias, residual, gelu, None)


def linear_gelu(x: Tensor, blocks: Tensor, n_out: int, bias: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``f = x @ W + bias`` and ``gelu(f)`` (tanh-approximated), both (M, n_out), in one pass: a
    decode that keeps the activation's input for the update's backward."""
    act = torch.empty(x.shape[0], n_out, dtype=x.dtype)
    return _linear(x, blocks, n_out, bias, None, True, act), act


def _linear(x: Tensor, blocks: Tensor, n_out: int, bias: Tensor | None, residual: Tensor | None, gelu: bool,
            act_out: Tensor | None) -> Tensor:
    assert _lib is not None
    x = x.contiguous()
    M, K = x.shape
    out = torch.empty(M, n_out, dtype=x.dtype)
    if bias is not None:
        bias = bias.detach().contiguous()
    if residual is not None:
        residual = residual.contiguous()
        assert residual.shape == out.shape
    rc = _lib.linear_rows(x.data_ptr(), M, K, blocks.data_ptr(), n_out, blocks.shape[2],
                          None if bias is None else bias.data_ptr(), None if residual is None else residual.data_ptr(),
                          out.data_ptr(), int(gelu), None if act_out is None else act_out.data_ptr(), int(_wide),
                          torch.get_num_threads())
    if rc != 0:
        raise ValueError(f"linear_rows refused rows={M}, in={K}, out={n_out}, block={blocks.shape[2]}")
    return out


MAX_KEYS = 16384  # the most cached positions decode_attention takes (cpukernel.c)


def attends(kv: Tensor) -> bool:
    """Whether :func:`attention` reads a layer's cache ``kv`` (2, B, H, T, hs) (the library loaded)."""
    return (_lib is not None and kv.dim() == 5 and kv.dtype == torch.float32 and kv.device.type == "cpu"
            and kv.is_contiguous() and kv.shape[4] % 8 == 0 and kv.shape[3] <= MAX_KEYS)


def attention(qkv: Tensor, kv: Tensor, n: int, invalid: Tensor | None, scale: float) -> Tensor:
    """One decode step's attention, (B, D): for each row b and head h, the query in ``qkv``'s first D
    columns against the first ``n`` keys and values of the cache ``kv`` (2, B, H, T, hs), scores
    scaled by ``scale``, positions where ``invalid`` (B, T) bool is True left out; only where
    :func:`attends` holds. The same arithmetic as ``softmax(scale * q @ K^T) @ V``, rounded apart."""
    assert _lib is not None
    _, B, H, T, hs = kv.shape
    assert qkv.dtype == torch.float32 and qkv.stride(1) == 1 and qkv.shape[0] == B and qkv.shape[1] >= H * hs
    if not 1 <= n <= T:
        raise ValueError(f"decode_attention: {n} keys for a cache of {T}")
    if invalid is not None:
        assert invalid.dtype == torch.bool and invalid.shape[0] == B and invalid.shape[1] >= n and invalid.stride(1) == 1
    y = torch.empty(B, H * hs, dtype=kv.dtype)
    rc = _lib.decode_attention(qkv.data_ptr(), qkv.stride(0), kv[0].data_ptr(), kv[1].data_ptr(), T * hs, B, H, hs, n,
                               None if invalid is None else invalid.data_ptr(),
                               0 if invalid is None else invalid.stride(0), scale, y.data_ptr(), H * hs,
                               torch.get_num_threads())
    if rc != 0:
        raise ValueError(f"decode_attention refused rows={B}, heads={H}, head size={hs}, keys={n}")
    return y


def gelu_takes(x: Tensor) -> bool:
    """Whether :func:`gelu` and :func:`gelu_backward` take ``x`` (the library loaded)."""
    return _lib is not None and x.dtype == torch.float32 and x.device.type == "cpu" and x.is_contiguous()


def gelu(x: Tensor) -> Tensor:
    """GPT-2's tanh-approximated GELU of ``x``, elementwise; only where :func:`gelu_takes` holds."""
    assert _lib is not None
    y = torch.empty_like(x)
    if _lib.gelu_forward(x.data_ptr(), y.data_ptr(), x.numel(), torch.get_num_threads()) != 0:
        raise ValueError("gelu_forward refused its arguments")
    return y


def gelu_backward(g: Tensor, x: Tensor) -> Tensor:
    """``g * d gelu(x) / dx`` for :func:`gelu`'s ``x``; ``g`` is made contiguous like ``x``."""
    assert _lib is not None
    g = g.contiguous()
    assert g.shape == x.shape and g.dtype == x.dtype
    dx = torch.empty_like(x)
    if _lib.gelu_backward(g.data_ptr(), x.data_ptr(), dx.data_ptr(), x.numel(), torch.get_num_threads()) != 0:
        raise ValueError("gelu_backward refused its arguments")
    return dx


MAX_SEQ = 256  # the most queries or keys attention_forward takes (ATT_MAX_T in cpukernel.c)


def sequence_attends(q: Tensor, k: Tensor, v: Tensor) -> bool:
    """Whether :func:`attention_forward` and :func:`attention_backward` take these (B, H, T, hs)
    queries, keys and values (the library loaded)."""
    if _lib is None or q.dim() != 4 or k.shape != v.shape or k.dim() != 4:
        return False
    B, H, Tq, hs = q.shape
    return (all(t.dtype == torch.float32 and t.device.type == "cpu" and t.stride(-1) == 1 for t in (q, k, v))
            and k.shape[:2] == (B, H) and k.shape[3] == hs and hs % 16 == 0 and 16 <= hs <= 256
            and 1 <= Tq <= MAX_SEQ and 1 <= k.shape[2] <= MAX_SEQ)


def _strides(*ts: Tensor) -> ctypes.Array[ctypes.c_long]:
    """(batch, head, position) strides of each (B, H, T, hs) tensor, in elements."""
    flat = [s for t in ts for s in t.stride()[:3]]
    return (ctypes.c_long * len(flat))(*flat)


def _mask_args(mask: Tensor | None, B: int, Tq: int, Tk: int) -> tuple[Tensor | None, int]:
    """``mask`` (B or 1, 1, Tq, Tk) bool as contiguous bytes and its per-row stride (0: shared)."""
    if mask is None:
        return None, 0
    assert mask.dtype == torch.bool and mask.shape[-2:] == (Tq, Tk) and mask.shape[0] in (1, B)
    m = mask.reshape(mask.shape[0], Tq, Tk).contiguous()
    return m, (Tq * Tk if m.shape[0] == B else 0)


def attention_forward(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float, offset: int = 0,
                      with_lse: bool = False) -> tuple[Tensor, Tensor | None]:
    """``softmax(scale * q @ k^T) @ v`` over (B, H, T, hs) views, query i at position ``offset + i``
    seeing key j where j <= offset + i and, with ``mask`` (B or 1, 1, Tq, Tk) bool, where it is
    True; a query that sees no key gives zeros. Returns the output (B, H, Tq, hs), a view of a
    (B, Tq, H, hs) tensor (so that merging the heads is free), and with ``with_lse`` each query's
    log-sum-exp (B, H, Tq), which :func:`attention_backward` takes; only where
    :func:`sequence_attends` holds."""
    assert _lib is not None
    B, H, Tq, hs = q.shape
    Tk = k.shape[2]
    out = torch.empty(B, Tq, H, hs, dtype=q.dtype).transpose(1, 2)
    lse = torch.empty(B, H, Tq, dtype=q.dtype) if with_lse else None
    m, m_stride = _mask_args(mask, B, Tq, Tk)
    rc = _lib.attention_forward(q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(),
                                None if lse is None else lse.data_ptr(), _strides(q, k, v, out), B, H, Tq, Tk, hs,
                                offset, None if m is None else m.data_ptr(), m_stride, scale, torch.get_num_threads())
    if rc != 0:
        raise ValueError(f"attention_forward refused batch={B}, heads={H}, queries={Tq}, keys={Tk}, head size={hs}")
    return out, lse


def attention_backward(q: Tensor, k: Tensor, v: Tensor, out: Tensor, grad: Tensor, lse: Tensor,
                       mask: Tensor | None, scale: float, offset: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """The gradients of :func:`attention_forward`'s output with respect to q, k and v, given the
    gradient ``grad`` of that output and the ``out`` and ``lse`` it returned (same ``mask``,
    ``scale`` and ``offset``). Each is a (B, H, T, hs) view of a (B, T, H, hs) tensor."""
    assert _lib is not None
    B, H, Tq, hs = q.shape
    Tk = k.shape[2]
    if grad.stride(-1) != 1:
        grad = grad.contiguous()
    dq = torch.empty(B, Tq, H, hs, dtype=q.dtype).transpose(1, 2)
    dk = torch.empty(B, Tk, H, hs, dtype=q.dtype).transpose(1, 2)
    dv = torch.empty(B, Tk, H, hs, dtype=q.dtype).transpose(1, 2)
    m, m_stride = _mask_args(mask, B, Tq, Tk)
    rc = _lib.attention_backward(q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), grad.data_ptr(),
                                 lse.contiguous().data_ptr(), dq.data_ptr(), dk.data_ptr(), dv.data_ptr(),
                                 _strides(q, k, v, out, grad, dq, dk, dv), B, H, Tq, Tk, hs, offset,
                                 None if m is None else m.data_ptr(), m_stride, scale, torch.get_num_threads())
    if rc != 0:
        raise ValueError(f"attention_backward refused batch={B}, heads={H}, queries={Tq}, keys={Tk}, head size={hs}")
    return dq, dk, dv


def samples(logits: Tensor) -> bool:
    """Whether :func:`sample` takes these (B, V) logits (the library loaded)."""
    return (_lib is not None and logits.dim() == 2 and logits.dtype == torch.float32 and logits.device.type == "cpu"
            and logits.stride(1) == 1 and logits.shape[0] >= 1 and logits.shape[1] >= 1)


def sample(logits: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """One token per row of ``logits`` (B, V) and its log-softmax, (B,) int64 and (B,) float32: the
    first token whose running sum of ``exp(logits - max)`` passes ``u * total``, ``u`` (B,) float64
    uniforms in [0, 1), as :func:`rlhfkit.policy._draw` inverts the CDF (tokens without mass are
    never drawn); only where :func:`samples` holds. Raises ``ValueError`` for a row with no finite
    logit."""
    assert _lib is not None
    B, V = logits.shape
    u = u.reshape(B).to(torch.float64).contiguous()
    tokens = torch.empty(B, dtype=torch.int64)
    logprob = torch.empty(B, dtype=torch.float32)
    rc = _lib.sample_rows(logits.data_ptr(), logits.stride(0), B, V, u.data_ptr(), tokens.data_ptr(),
                          logprob.data_ptr(), torch.get_num_threads())
    if rc != 0:
        raise ValueError("sample_rows: a row without a finite logit" if rc == -2 else
                         f"sample_rows refused rows={B}, vocabulary={V}")
    return tokens, logprob


class DecodeBlock:
    """One GPT-2 block of a decode step (tanh GELU, kernel matmuls and attention) in one call of
    ``decode_block``: from Python, each of the block's dozen ops costs a dispatch about as long as
    the small kernels themselves. Holds the addresses of the block's layer norms, packed weights
    (:func:`linear`'s blocks) and biases, read once; valid while those tensors are neither freed
    nor replaced (a :class:`rlhfkit.fastgpt2.Decoder` makes one per block for one generation).

    ``tensors``: the 12 tensors of :class:`rlhfkit.fastgpt2._StepLayer` in its order (layer norm 1
    weight and bias, qkv blocks and bias, projection blocks and bias, layer norm 2, fc, fc
    projection).
    """

    def __init__(self, tensors: tuple[Tensor, ...], n_head: int, scale: float, eps: float) -> None:
        assert _lib is not None and len(tensors) == 12
        self._tensors = tuple(t.detach() for t in tensors)
        assert all(t.dtype == torch.float32 and t.device.type == "cpu" and t.is_contiguous() for t in self._tensors)
        self._ptrs = (ctypes.c_void_p * 12)(*(t.data_ptr() for t in self._tensors))
        self._ys = (ctypes.c_int * 4)(*(self._tensors[j].shape[2] for j in (2, 4, 8, 10)))
        self.D, self.F = self._tensors[0].shape[0], self._tensors[9].shape[0]
        self.n_head, self.scale, self.eps = n_head, scale, eps

    def __call__(self, x: Tensor, kv: Tensor, t: int, invalid: Tensor | None,
                 keep: bool) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """The block for ``x`` (B, D) at cache slot ``t`` of ``kv`` (2, B, H, T, hs) (where
        :func:`attends`), keys where ``invalid`` (B, T) bool is True left out. Returns the residual
        stream after the block and, as a step keeps them, the qkv output (B, 3D), the stream after
        the attention (B, D) and, with ``keep``, the activation's input (B, F)."""
        assert _lib is not None
        x = x.contiguous()
        B, D = x.shape
        T = kv.shape[3]
        x_attn, x_out, h, y = (torch.empty(B, D) for _ in range(4))
        qkv, act = torch.empty(B, 3 * D), torch.empty(B, self.F)
        fc = torch.empty(B, self.F) if keep else None
        rc = _lib.decode_block(x.data_ptr(), x_attn.data_ptr(), x_out.data_ptr(), qkv.data_ptr(),
                               None if fc is None else fc.data_ptr(), h.data_ptr(), y.data_ptr(), act.data_ptr(),
                               self._ptrs, self._ys, kv.data_ptr(), T, t,
                               None if invalid is None else invalid.data_ptr(),
                               0 if invalid is None else invalid.stride(0), self.scale, B, D, self.n_head, self.F,
                               self.eps, int(_wide), torch.get_num_threads())
        if rc != 0:
            raise ValueError(f"decode_block refused rows={B}, width={D}, heads={self.n_head}, slot={t} of {T}")
        return x_out, qkv, x_attn, fc


def rows_take(z: Tensor) -> bool:
    """Whether :func:`logprob_entropy` takes these (N, V) logits (the library loaded)."""
    return (_lib is not None and z.dim() == 2 and z.dtype == torch.float32 and z.device.type == "cpu"
            and z.is_contiguous() and z.shape[0] >= 1 and z.shape[1] >= 1)


def logprob_entropy(z: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """For (N, V) logits and (N,) labels: the log-softmax ``logp`` and its exp ``p`` (N, V), the
    labels' log-probabilities and the entropies (N,); only where :func:`rows_take` holds."""
    assert _lib is not None
    N, V = z.shape
    labels = labels.reshape(N).to(torch.int64).contiguous()
    logp, p = torch.empty_like(z), torch.empty_like(z)
    lp, ent = torch.empty(N, dtype=z.dtype), torch.empty(N, dtype=z.dtype)
    rc = _lib.logprob_entropy_forward(z.data_ptr(), N, V, labels.data_ptr(), logp.data_ptr(), p.data_ptr(),
                                      lp.data_ptr(), ent.data_ptr(), torch.get_num_threads())
    if rc != 0:
        raise ValueError(f"logprob_entropy_forward: a label outside 0..{V - 1}" if rc == -2 else
                         f"logprob_entropy_forward refused rows={N}, vocabulary={V}")
    return logp, p, lp, ent


def logprob_entropy_backward(logp: Tensor, p: Tensor, ent: Tensor, labels: Tensor, g_lp: Tensor,
                             g_ent: Tensor) -> Tensor:
    """The logits' gradient (N, V) from the gradients of :func:`logprob_entropy`'s log-probabilities
    and entropies (N,): ``p * (c - g_ent log p)`` plus ``g_lp`` at the label, ``c = -(g_lp + g_ent H)``."""
    assert _lib is not None
    N, V = logp.shape
    labels = labels.reshape(N).to(torch.int64).contiguous()
    g_lp, g_ent = g_lp.reshape(N).to(logp.dtype).contiguous(), g_ent.reshape(N).to(logp.dtype).contiguous()
    dz = torch.empty_like(logp)
    rc = _lib.logprob_entropy_backward(logp.data_ptr(), p.data_ptr(), ent.contiguous().data_ptr(), labels.data_ptr(),
                                       g_lp.data_ptr(), g_ent.data_ptr(), dz.data_ptr(), N, V, torch.get_num_threads())
    if rc != 0:
        raise ValueError(f"logprob_entropy_backward refused rows={N}, vocabulary={V}")
    return dz


def weight_grad_takes(a: Tensor, b: Tensor) -> bool:
    """Whether :func:`weight_grad` computes ``a^T @ b`` for these (K, M) and (K, N) matrices: the
    library loaded on an AVX-512 CPU, fp32 rows with unit stride, N a multiple of 64."""
    return (_lib is not None and _wide and a.dim() == 2 and b.dim() == 2 and a.shape[0] == b.shape[0] >= 1
            and all(t.dtype == torch.float32 and t.device.type == "cpu" and t.stride(1) == 1 for t in (a, b))
            and b.shape[1] % 64 == 0 and b.shape[1] >= 64)


def weight_grad(a: Tensor, b: Tensor) -> Tensor:
    """``a^T @ b`` (M, N) for ``a`` (K, M) and ``b`` (K, N): a weight's gradient from a layer's input
    and its output's gradient over K tokens; only where :func:`weight_grad_takes` holds."""
    assert _lib is not None
    K, M = a.shape
    N = b.shape[1]
    out = torch.empty(M, N, dtype=a.dtype)
    if _lib.weight_grad512(a.data_ptr(), a.stride(0), b.data_ptr(), b.stride(0), K, M, N, out.data_ptr(),
                           torch.get_num_threads()) != 0:
        raise ValueError(f"weight_grad512 refused tokens={K}, rows={M}, columns={N}")
    return out
