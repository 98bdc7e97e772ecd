"""Lean GPT-2 forward passes on a transformers GPT-2's own parameters.

Why: at the shapes rlhfkit trains on a CPU (4–12 layers, 256–768 wide, batches of 8–64) a
transformers ``GPT2Model`` spends a large share of its time outside the matmuls: building 4-D
masks, cache objects and output dataclasses on every call, and computing ``gelu_new`` as seven
elementwise kernels (each one a full pass over the (B, T, 4D) activations, and seven saved tensors
for the backward pass). During sampling that per-call overhead is paid once per new token. This
module computes the same function the way nanoGPT does — one fused qkv matmul, one
``F.scaled_dot_product_attention`` call, ``F.gelu(approximate="tanh")`` as one kernel, and a static,
preallocated KV cache written in place — directly on the module's parameters.

Nothing is copied: the functions read ``transformer.h[i].attn.c_attn.weight`` and friends, so
gradients land in the transformers module, and checkpoints, ``from_pretrained`` weights and the
optimizer are untouched. :func:`supports` says when the lean path computes exactly the module's
function (no cross-attention, no active dropout, no gradient checkpointing, a known activation);
callers fall back to the transformers forward otherwise.

Departures from transformers, all within fp32 rounding (``tests/unit/test_fastgpt2.py``):

* ``gelu_new`` is ``F.gelu(approximate="tanh")`` — the same formula in one kernel;
* a padding *query* position attends to itself instead of to nothing. Its output is never read,
  but a fully masked row would be NaN, and NaN values poison real rows through ``0 * NaN`` in the
  attention-weighted sum;
* padding *after* a response's EOS is not masked: causality already hides those keys from every
  real position, and skipping the mask lets SDPA take its ``is_causal`` fast path.

Shapes in comments: B batch, T sequence, H heads, hs head size, D width, V vocabulary.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import math
import os
from collections.abc import Callable
from typing import Any, NamedTuple, cast

import torch
import torch.nn.functional as F
from torch.utils.weak import WeakIdKeyDictionary

from rlhfkit import cpukernel
from rlhfkit import ppo_ops as ops

Tensor = torch.Tensor
# transformers GPT-2 modules (GPT2Model, GPT2Block, Conv1D, ...), read by attribute name only
Module = Any

class _KernelGelu(torch.autograd.Function):
    """The tanh GELU and its backward in :mod:`rlhfkit.cpukernel` (saves its input, as ATen's does)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return cpukernel.gelu(x)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return cpukernel.gelu_backward(g, x)


def _tanh_gelu(x: Tensor) -> Tensor:
    """GPT-2's GELU: in the compiled kernel where it runs in this process (:func:`kernels_in_use`),
    else ATen's, which computes about one element a nanosecond on the CPUs measured."""
    if kernels_for(x) and cpukernel.gelu_takes(x):
        return cast(Tensor, _KernelGelu.apply(x))
    return F.gelu(x, approximate="tanh")


_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu_new": _tanh_gelu,
    "gelu_pytorch_tanh": _tanh_gelu,
    "gelu_fast": _tanh_gelu,
    "gelu": F.gelu,
    "relu": F.relu,
}


_TANH_GELU = frozenset({"gelu_new", "gelu_pytorch_tanh", "gelu_fast"})  # what cpukernel's GELU computes

# activation name -> (oneDNN post-op, algorithm) for a matmul with the activation fused in
_FUSED_ACT: dict[str, tuple[str, str]] = {
    "gelu_new": ("gelu", "tanh"), "gelu_pytorch_tanh": ("gelu", "tanh"), "gelu_fast": ("gelu", "tanh"),
    "gelu": ("gelu", "none"), "relu": ("relu", ""),
}


def supports(transformer: Module, training: bool | None = None) -> bool:
    """True when the lean forward computes exactly ``transformer``'s function (a ``GPT2Model``), in
    its current mode or, given ``training``, in that one."""
    cfg = getattr(transformer, "config", None)
    if cfg is None or not hasattr(transformer, "h") or not hasattr(transformer, "wte"):
        return False
    if getattr(cfg, "add_cross_attention", False) or cfg.activation_function not in _ACTIVATIONS:
        return False
    if transformer.training if training is None else training:
        if getattr(transformer, "gradient_checkpointing", False):
            return False
        if max(cfg.resid_pdrop, cfg.embd_pdrop, cfg.attn_pdrop) > 0:
            return False
    return True


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """0, 1, 2, ... over the real tokens of left-padded rows (pads get 0), as rlhfkit feeds GPT-2."""
    return (attention_mask.cumsum(-1) - 1).clamp_min(0)


def _scaling(attn: Module, layer_idx: int) -> float:
    scaling = getattr(attn, "scaling", None)  # transformers >= 4.5x precomputes it
    if scaling is not None:
        return float(scaling)
    cfg = attn.config
    s = 1.0 / math.sqrt(cfg.n_embd // cfg.n_head) if cfg.scale_attn_weights else 1.0
    return s / (layer_idx + 1) if cfg.scale_attn_by_inverse_layer_idx else s


# ----------------------------------------------------------------------------- oneDNN matmuls
# Why: a decode step multiplies a handful of rows (the batch) by every weight matrix, so generation
# is bound by how fast the weights stream from memory. For (8 x 768) @ (768 x 2304) MKL's sgemm
# (what ``addmm`` calls) streams them at ~8 GB/s on an AMD EPYC; oneDNN's matmul, handed the
# same weight as a transposed view (no copy, no repacking), runs the matmuls of a GPT-2-small decode
# step in 21 ms instead of 43 ms with 2 threads, and full-sequence no-grad forwards (scoring) ~15%
# faster (benchmarks/NOTES_ppo_vs_trl.md). Same fp32 math, sums accumulated in a different order
# (tests/unit/test_fastgpt2.py). The op has no autograd formula; training forwards get one from
# _OnednnLinear (the input's gradient on oneDNN too, the weight's on ``mm``, which measured no
# faster on oneDNN), so the update runs on the faster library as well (benchmarks/NOTES_grpo_vs_trl.md).
#
# Bounded: oneDNN (through ideep) keeps ~0.6 MiB of generated code per distinct matmul shape for
# the life of the process, even past its primitive-cache capacity, and a full-sequence forward has
# a new row count (batch x padded length) whenever the length changes. So oneDNN serves at most
# ONEDNN_ROW_COUNTS distinct row counts per process (the first ones seen: a run's decode batch,
# its usual lengths); other row counts go to addmm. Worst case 16 row counts x ~14 weight shapes
# (5 forward, 5 input-gradient, a few of the reward model's) x 0.6 MiB ~ 135 MiB
# (rlhfkit.memopt.model.ONEDNN_PER_SHAPE counts one step's share). Which kernel a matmul gets thus depends on the row counts
# the process saw first: two identical runs in one process stay bit-identical, while a run resumed
# in a fresh process may take the other kernel for some shapes and agree to fp32 rounding only.
#
# Which library is faster depends on the CPU more than on the shape: MKL (behind ``addmm``) takes its
# fast AVX-512 code only on Intel processors, where it beats oneDNN at nearly every shape here; on AMD
# EPYC it is the slower of the two (benchmarks/NOTES_ppo_vs_trl.md, "Which matmul"). So by default
# oneDNN serves these matmuls on non-Intel CPUs with AVX-512, MKL everywhere else;
# ``RLHFKIT_CPU_MATMUL=onednn`` or ``=blas`` overrides the choice. The choice is made once per
# process, from the CPU's vendor and flags (no timing), so it cannot differ between two runs on one
# machine. Why these two facts: MKL picks its AVX-512 kernels by vendor, so on an AMD CPU with
# AVX-512 it runs AVX2 code and oneDNN is the faster library; without AVX-512 both run AVX2 code
# and MKL is the faster one on the MLP's matmuls, except decoding's (any of at most 16 rows, and on
# packed weights up to 128), which still go to oneDNN on AMD CPUs there
# (benchmarks/NOTES_grpo_vs_trl.md has the tables; on a CPU of another or unknown vendor, an ARM
# server or macOS, ATen's BLAS keeps them: not measured). On Intel CPUs with AVX-512 decoding's
# skinny matmuls go to oneDNN only on weights packed for it (below): MKL beats oneDNN on a weight as
# stored, not on a packed one.
ONEDNN_AVAILABLE = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _cpuinfo(field: str) -> str:
    """The first ``field`` line's value in ``/proc/cpuinfo``, or ``""``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(field) and line[len(field):].lstrip().startswith(":"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_vendor() -> str:
    """The CPU vendor string from ``/proc/cpuinfo`` (``GenuineIntel``, ``AuthenticAMD``, ...), or ``""``."""
    return _cpuinfo("vendor_id")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as ``/proc/cpuinfo`` lists them (empty where it cannot be read), read
    once: the kernels' rule asks at every GELU of a training forward."""
    return frozenset(_cpuinfo("flags").split())


def cpu_has_avx512() -> bool:
    """Whether ``/proc/cpuinfo`` lists the AVX-512 foundation (``avx512f``)."""
    return "avx512f" in cpu_flags()


def _matmul_setting(setting: str | None) -> str:
    """``setting``, or ``RLHFKIT_CPU_MATMUL`` (default ``auto``), normalised and checked."""
    setting = (os.environ.get("RLHFKIT_CPU_MATMUL", "auto") if setting is None else setting).strip().lower()
    if setting not in ("auto", "onednn", "blas"):
        raise ValueError(f"RLHFKIT_CPU_MATMUL must be auto, onednn or blas, not {setting!r}")
    return setting


def prefer_onednn(setting: str | None = None, vendor: str | None = None, avx512: bool | None = None) -> bool:
    """Whether fp32 CPU matmuls go to oneDNN: ``RLHFKIT_CPU_MATMUL`` (``onednn``, ``blas`` or
    ``auto``, the default), and under ``auto`` a non-Intel CPU with AVX-512."""
    setting = _matmul_setting(setting)
    if setting != "auto":
        return setting == "onednn"
    vendor = cpu_vendor() if vendor is None else vendor
    return vendor != "GenuineIntel" and (cpu_has_avx512() if avx512 is None else avx512)


def prefer_onednn_skinny(setting: str | None = None, vendor: str | None = None, avx512: bool | None = None) -> bool:
    """Whether matmuls of at most :data:`ONEDNN_SKINNY_ROWS` rows, and decoding's on packed weights
    (:func:`packed_decode_weight`) of at most :data:`ONEDNN_PACKED_ROWS_AMD`, go to oneDNN although
    the others do not: under ``auto``, on an AMD CPU without AVX-512, where oneDNN is the faster
    library for decoding's matmuls and MKL for the rest (benchmarks/NOTES_grpo_vs_trl.md, changes 12
    and 22). Where the vendor is another or unknown (an ARM server, macOS: no ``vendor_id`` to read)
    nothing was measured, and ATen's BLAS keeps every matmul."""
    setting = _matmul_setting(setting)
    if setting != "auto" or prefer_onednn(setting, vendor, avx512):
        return False
    return (cpu_vendor() if vendor is None else vendor) == "AuthenticAMD"


def prefer_packed_skinny(setting: str | None = None, vendor: str | None = None, avx512: bool | None = None) -> bool:
    """Whether decoding's skinny matmuls go to oneDNN when, and only when, their weights are packed
    for it (:func:`packed_decode_weight`): under ``auto``, on an Intel CPU with AVX-512, where MKL
    beats oneDNN on weights as stored but oneDNN on packed weights beats MKL (GPT-2-small decode,
    8 and 16 rows; benchmarks/NOTES_grpo_vs_trl.md, change 16)."""
    setting = _matmul_setting(setting)
    if setting != "auto":
        return False
    vendor = cpu_vendor() if vendor is None else vendor
    return vendor == "GenuineIntel" and (cpu_has_avx512() if avx512 is None else avx512)


def _kernel_setting(value: str | None) -> str:
    """``value``, or where None ``RLHFKIT_CPU_DECODE_KERNEL``: ``auto`` (the default), ``1`` or ``0``;
    anything else is refused."""
    value = (os.environ.get("RLHFKIT_CPU_DECODE_KERNEL", "auto") if value is None else value).strip().lower()
    if value not in ("auto", "0", "1"):
        raise ValueError(f"RLHFKIT_CPU_DECODE_KERNEL must be auto, 0 or 1, not {value!r}")
    return value


def prefer_kernels(setting: str | None = None, flags: frozenset[str] | None = None) -> bool:
    """Whether the compiled kernels that stand in for ATen's own loops run (:func:`kernels_in_use`
    lists them: attention, sampling, the GELU, log-probs with entropy): ``RLHFKIT_CPU_DECODE_KERNEL``
    ``1``, or ``auto`` (the default) on any CPU the library builds for (``flags`` with AVX2 and FMA;
    elsewhere, an ARM machine say, nothing is tried and nothing said), ``0`` never. They replace the
    same ATen and SDPA code whatever the CPU's vendor, not a vendor's BLAS, so no vendor is left out;
    the matmuls' kernels follow :func:`prefer_decode_kernel`."""
    setting = _kernel_setting(setting)
    if setting != "auto":
        return setting == "1"
    return {"avx2", "fma"} <= (cpu_flags() if flags is None else flags)


def prefer_decode_kernel(setting: str | None = None, vendor: str | None = None, avx512: bool | None = None) -> bool:
    """Whether the matmuls run in rlhfkit's compiled kernel (:mod:`rlhfkit.cpukernel`) instead of
    the BLAS: decodes on packed weights (of as many rows as :func:`rlhfkit.cpukernel.max_rows`
    allows), whole decode blocks in one call, and the training matmuls' weight gradients.
    ``RLHFKIT_CPU_DECODE_KERNEL`` ``1`` or ``0``, and under ``auto`` (the default) on an AMD CPU,
    with or without AVX-512, the kinds they were measured faster on (benchmarks/NOTES_grpo_vs_trl.md,
    changes 23 and 25; NOTES_ppo_vs_trl.md, change 33); an Intel CPU's matmuls stay with oneDNN and
    MKL until measured there. ``avx512`` is taken for the signature the other rules share and does
    not change the answer."""
    setting = _kernel_setting(setting)
    if setting != "auto":
        return setting == "1"
    return (cpu_vendor() if vendor is None else vendor) == "AuthenticAMD"


ONEDNN_SKINNY_ROWS = 16
ONEDNN_PACKED_ROWS_AMD = 128  # the widest decode measured faster on packed oneDNN weights there (change 22)
_ONEDNN = ONEDNN_AVAILABLE and prefer_onednn()
_ONEDNN_SKINNY = ONEDNN_AVAILABLE and prefer_onednn_skinny()
_PACKED_SKINNY = ONEDNN_AVAILABLE and prefer_packed_skinny()
_KERNELS = prefer_kernels()
_MATMUL_KERNELS = ONEDNN_AVAILABLE and prefer_decode_kernel()  # they multiply oneDNN's packed weights
_onednn_linear: Callable[..., Tensor] | None = torch.ops.mkldnn._linear_pointwise if ONEDNN_AVAILABLE else None
ONEDNN_ROW_COUNTS = 16
_onednn_rows: set[int] = set()


def onednn_in_use() -> bool:
    """Whether this process sends no-grad fp32 matmuls to oneDNN (the memory model counts its code cache)."""
    return _ONEDNN


def skinny_rows() -> int:
    """The most rows a decode may multiply on oneDNN in this process where oneDNN serves decoding
    alone (:func:`onednn_skinny_in_use`; 0 where it does not)."""
    if not onednn_skinny_in_use():
        return 0
    return ONEDNN_PACKED_ROWS_AMD if _packs(ONEDNN_PACKED_ROWS_AMD) else ONEDNN_SKINNY_ROWS


def onednn_skinny_in_use() -> bool:
    """Whether this process sends only skinny matmuls (decoding's) to oneDNN, all of them or those
    on packed weights (never where :func:`onednn_in_use`: :func:`prefer_onednn_skinny` and
    :func:`prefer_packed_skinny` exclude it)."""
    return _ONEDNN_SKINNY or (_PACKED_SKINNY and PACK_DECODE and _PACK_OPS)


def _use_onednn(x: Tensor, weight: Tensor) -> bool:
    """oneDNN computes ``x @ W`` here: fp32 on the CPU, this CPU prefers oneDNN (for every row count,
    or for skinny ones: :func:`prefer_onednn_skinny`) and the row count is one of the process's first
    ONEDNN_ROW_COUNTS. (With a gradient to compute, :class:`_OnednnLinear` supplies the
    backward the op lacks.)"""
    return _onednn_serves(x.shape[0], x, weight)


def _onednn_takes(rows: int, packed: bool) -> bool:
    """This CPU's rule: oneDNN computes a ``rows``-row matmul (``packed``: over a weight packed for
    decoding, :func:`prefer_onednn_skinny`, :func:`prefer_packed_skinny`)."""
    if _ONEDNN:
        return True
    if _ONEDNN_SKINNY:
        return rows <= (ONEDNN_PACKED_ROWS_AMD if packed else ONEDNN_SKINNY_ROWS)
    return packed and _PACKED_SKINNY and rows <= ONEDNN_SKINNY_ROWS


def _onednn_serves(rows: int, *tensors: Tensor, packed: bool = False) -> bool:
    """:func:`_use_onednn` for a matmul of ``rows`` rows over ``tensors`` (its input and weight);
    ``packed`` as in :func:`_onednn_takes`."""
    if not _onednn_takes(rows, packed):
        return False
    if not all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors):
        return False
    if rows not in _onednn_rows:
        if len(_onednn_rows) >= ONEDNN_ROW_COUNTS:
            return False
        _onednn_rows.add(rows)
    return True


def _linear(x2: Tensor, weight: Tensor, bias: Tensor | None, conv1d: bool, act: str | None = None,
            packed: Tensor | None = None) -> Tensor:
    """(N, in) @ W + b, then ``act``: one oneDNN matmul with the activation fused in where
    :func:`_use_onednn` holds, else ``addmm`` / ``F.linear``.

    ``conv1d``: the weight is stored (in, out) as in transformers' Conv1D, else (out, in).
    ``packed``: the weight's :func:`packed_decode_weight` (no-grad), multiplied instead of it.
    """
    if _onednn_linear is not None and packed is not None and x2.dtype == torch.float32:
        w = packed
    elif _onednn_linear is not None and _use_onednn(x2, weight):
        if torch.is_grad_enabled() and (x2.requires_grad or weight.requires_grad
                                        or (bias is not None and bias.requires_grad)):
            out = _OnednnLinear.apply(x2, weight, bias, conv1d)
            return _ACTIVATIONS[act](out) if act is not None else out
        w = weight.t() if conv1d else weight
    else:
        w = None
    if w is not None:
        assert _onednn_linear is not None
        attr, algo = _FUSED_ACT[act] if act is not None else ("none", "")
        return _onednn_linear(x2, w, bias, attr, [], algo)
    if conv1d:
        out = torch.addmm(bias, x2, weight) if bias is not None else x2 @ weight
    else:
        out = F.linear(x2, weight, bias)
    return _ACTIVATIONS[act](out) if act is not None else out


class _OnednnLinear(torch.autograd.Function):
    """``x @ W + b`` on oneDNN with its backward, for training forwards where oneDNN is the faster
    library (:func:`prefer_onednn`): the oneDNN op has no autograd formula of its own.

    ``W`` as in :func:`_linear` (``conv1d``: stored (in, out), else (out, in)). Backward: the input's
    gradient ``g @ W^T`` is a oneDNN matmul too (its weight argument is then ``W`` as stored, no
    copy), the weight's ``x^T @ g`` (or ``g^T @ x``) a plain ``mm``, the bias's a column sum. The
    activation, if any, stays outside (autograd needs its input); only the bias is fused.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, conv1d: bool) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.conv1d = conv1d
        assert _onednn_linear is not None
        return _onednn_linear(x, weight.t() if conv1d else weight, bias, "none", [], "")

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None, None]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b, _ = ctx.needs_input_grad
        return (*_linear_grads(g, x, weight, ctx.conv1d, need_x, need_w, need_b, onednn=True), None)


def _linear_grads(g: Tensor, x: Tensor, weight: Tensor, conv1d: bool, need_x: bool, need_w: bool, need_b: bool,
                  onednn: bool) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Gradients of ``x @ W + b`` (W as in :func:`_linear`) for the output gradient ``g``: the
    input's ``g @ W^T`` (a oneDNN matmul with ``onednn``, ``W`` as stored, else ``mm``), the
    weight's ``x^T @ g`` (or ``g^T @ x``: in the compiled kernel where it runs and takes the
    shapes, else ``mm``) and the bias's column sum; None where not needed."""
    g = g.contiguous()
    gx = gw = gb = None
    if need_x:
        if onednn:
            assert _onednn_linear is not None
            gx = _onednn_linear(g, weight if conv1d else weight.t(), None, "none", [], "")
        else:
            gx = g.mm(weight.t()) if conv1d else g.mm(weight)
    if need_w:  # (in, out) x^T g for a Conv1D weight, (out, in) g^T x for a Linear one
        a, b = (x, g) if conv1d else (g, x)
        kernel = a.device.type == "cpu" and matmul_kernels_in_use() and cpukernel.weight_grad_takes(a, b)
        gw = cpukernel.weight_grad(a, b) if kernel else a.t().mm(b)
    if need_b:
        gb = g.sum(0)
    return gx, gw, gb


# ----------------------------------------------------------------------------- packed decode weights
# Why: a decode step multiplies a few rows by every weight, so it streams each weight from memory
# once per token. oneDNN reads a transformers Conv1D weight, stored (in, out), as a strided view:
# for each block of output columns, a short piece of every one of the ``in`` rows, rows 4 x out
# bytes apart. In oneDNN's own blocked layout each block is one contiguous run, and the same
# matmuls stream faster (benchmarks/NOTES_grpo_vs_trl.md, change 14). oneDNN's reorder into that
# layout reads the weight transposed and costs more per generation than the packed matmuls save,
# but the layouts it picks for these matmuls (``ABxbYa``: Y output columns innermost, whole input
# rows inside a block) hold a plain permutation of the (in, out) weight, (ceil(out / Y), in, Y), the
# last block zero-padded (the LM head's vocabulary). So each weight is packed once by oneDNN's
# reorder, and at every later generation its packed bytes are rewritten in place from the weight by
# one copy (the optimizer changed the weight in between). The layout is confirmed once per
# (in, out, rows) by packing a random probe with oneDNN's reorder and comparing bytes; where it is
# some other layout, or the private ops are missing, decoding keeps the weights as stored. Cost: one
# more copy of the blocks' matmul weights and the LM head, held while the policy lives
# (rlhfkit.memopt.model counts it). ``RLHFKIT_CPU_PACKED_DECODE=0`` turns packing off.
_PACK_OPS = ONEDNN_AVAILABLE and all(hasattr(torch.ops.mkldnn, op)
                                     for op in ("_reorder_linear_weight", "data_ptr", "_nbytes"))


def _pack_setting(value: str) -> bool:
    """``RLHFKIT_CPU_PACKED_DECODE``: ``1`` (the default) packs, ``0`` does not; anything else is refused."""
    if value.strip() not in ("0", "1"):
        raise ValueError(f"RLHFKIT_CPU_PACKED_DECODE must be 0 or 1, not {value!r}")
    return value.strip() == "1"


PACK_DECODE = _pack_setting(os.environ.get("RLHFKIT_CPU_PACKED_DECODE", "1"))
_PACK_BLOCKS = (64, 48, 32, 24, 16, 8)  # candidate Y: output columns innermost in oneDNN's block
_pack_block_of: dict[tuple[int, int, int], int] = {}  # (in, out, rows) -> Y, 0 where none fits


class _Packed(NamedTuple):
    packed: Tensor  # oneDNN's blocked weight (an opaque mkldnn tensor)
    blocks: Tensor  # the same bytes as a plain (ceil(out / Y), in, Y) tensor, to rewrite in place
    rows: int  # the row count oneDNN packed it for


_packed: WeakIdKeyDictionary = WeakIdKeyDictionary()  # weight -> _Packed (tensors compare elementwise: by id)
# A block's four matmul weights packed for decoding: c_attn, attn c_proj, c_fc, mlp c_proj
BlockWeights = tuple[Tensor, Tensor, Tensor, Tensor]
# x + (a @ W + b) in one oneDNN call (its "binary add" post-op), for a decode step's residual adds
_onednn_linear_add: Callable[..., Tensor] | None = (
    torch.ops.mkldnn._linear_pointwise.binary
    if ONEDNN_AVAILABLE and "binary" in torch.ops.mkldnn._linear_pointwise.overloads() else None)


class _StepLayer(NamedTuple):
    """What :meth:`Decoder._packed_step` reads of one block: layer norms, packed weights, biases."""

    ln1_w: Tensor
    ln1_b: Tensor
    qkv: Tensor
    qkv_b: Tensor
    proj: Tensor
    proj_b: Tensor
    ln2_w: Tensor
    ln2_b: Tensor
    fc: Tensor
    fc_b: Tensor
    fc_proj: Tensor
    fc_proj_b: Tensor
    scale: float


def _bytes_of(packed: Tensor) -> Tensor:
    """A plain fp32 tensor over an mkldnn tensor's bytes (``packed`` must outlive it)."""
    n = torch.ops.mkldnn._nbytes(packed) // 4
    return torch.frombuffer((ctypes.c_float * n).from_address(torch.ops.mkldnn.data_ptr(packed)),
                            dtype=torch.float32)


def _fill_blocks(blocks: Tensor, w: Tensor) -> None:
    """Write the (in, out) matrix ``w`` into oneDNN's blocks, (ceil(out / Y), in, Y); the padding of
    a last, partial block stays as it is (zeros, as oneDNN's reorder leaves it)."""
    n_in, n_out = w.shape
    y = blocks.shape[2]
    full = n_out // y
    if full:
        blocks[:full].copy_(w[:, : full * y].reshape(n_in, full, y).transpose(0, 1))
    if n_out % y:
        blocks[full, :, : n_out % y].copy_(w[:, full * y:])


def _pack_block(n_in: int, n_out: int, rows: int) -> int:
    """Y where oneDNN's layout for an (in, out) weight at ``rows`` rows is its (ceil(out / Y), in, Y)
    blocks (:func:`_fill_blocks`); 0 where it is laid out some other way."""
    key = (n_in, n_out, rows)
    if key not in _pack_block_of:
        probe = torch.randn(n_in, n_out, generator=torch.Generator().manual_seed(0))
        packed = torch.ops.mkldnn._reorder_linear_weight(probe.t(), rows)
        flat = _bytes_of(packed)
        _pack_block_of[key] = 0
        for y in _PACK_BLOCKS:
            n_blocks = -(-n_out // y)
            if flat.numel() == n_blocks * n_in * y:
                expected = torch.zeros(n_blocks, n_in, y)
                _fill_blocks(expected, probe)
                if torch.equal(flat.view(n_blocks, n_in, y), expected):
                    _pack_block_of[key] = y
                    break
        del flat, packed
    return _pack_block_of[key]


def _packs(rows: int) -> bool:
    """Decoding ``rows`` rows packs weights in this process: oneDNN serves it, packing is on and possible."""
    return PACK_DECODE and _PACK_OPS and _onednn_takes(rows, packed=True)


def _trunk_shapes(n_embd: int) -> tuple[tuple[int, int], ...]:
    D = n_embd
    return (D, 3 * D), (D, D), (D, 4 * D), (4 * D, D)  # (in, out): c_attn, attn c_proj, c_fc, mlp c_proj


def _trunk_packs(n_embd: int, rows: int) -> bool:
    """All four of a block's weights have a layout :func:`packed_decode_weight` rewrites."""
    return all(_pack_block(i, o, rows) for i, o in _trunk_shapes(n_embd))


def packed_decode_bytes(n_layer: int, n_embd: int, vocab_size: int, rows: int) -> int:
    """Bytes of the packed copies a ``rows``-row decode of this GPT-2 shape keeps in this process
    (:class:`Decoder`): each block's four matmul weights when all four pack, and the LM head's;
    0 where decoding multiplies by the weights as stored."""
    if not _packs(rows):
        return 0
    trunk = n_layer * sum(i * o for i, o in _trunk_shapes(n_embd)) if _trunk_packs(n_embd, rows) else 0
    y = _pack_block(n_embd, vocab_size, rows)
    head = -(-vocab_size // y) * y * n_embd if y else 0
    return 4 * (trunk + head)


@torch.no_grad()
def packed_decode_weight(weight: Tensor, rows: int, conv1d: bool = True) -> Tensor | None:
    """oneDNN's packed copy of ``weight`` for ``rows``-row matmuls, rewritten from ``weight`` now;
    None where decoding multiplies by the weight as stored.

    ``conv1d``: stored (in, out) as transformers' Conv1D, else (out, in) as ``nn.Linear`` (the LM
    head). One copy per weight: packed by oneDNN's reorder the first time (and again when ``rows``
    changes), rewritten in place by one permuting copy after that."""
    if not _packs(rows) or weight.dim() != 2 or not _onednn_serves(rows, weight, packed=True):
        return None
    w = weight.detach() if conv1d else weight.detach().t()  # (in, out)
    n_in, n_out = w.shape
    y = _pack_block(n_in, n_out, rows)
    if not y:
        return None
    entry = _packed.get(weight)
    if entry is None or entry.rows != rows:
        packed = torch.ops.mkldnn._reorder_linear_weight(w.t(), rows)
        _packed[weight] = _Packed(packed, _bytes_of(packed).view(-1, n_in, y), rows)
        return packed
    _fill_blocks(entry.blocks, w)
    return entry.packed


def _blocks(weight: Tensor) -> Tensor:
    """The bytes of ``weight``'s packed copy (:func:`packed_decode_weight` made it) as a plain
    (ceil(out / Y), in, Y) tensor: what :func:`rlhfkit.cpukernel.linear` multiplies by."""
    return cast(_Packed, _packed[weight]).blocks


def _kernel_decodes(rows: int) -> bool:
    """A ``rows``-row decode on packed weights multiplies with :mod:`rlhfkit.cpukernel` in this
    process (:func:`matmul_kernels_in_use`)."""
    return matmul_kernels_in_use() and rows <= cpukernel.max_rows()


def kernels_in_use() -> bool:
    """The compiled kernels that stand in for ATen's loops run in this process (:func:`prefer_kernels`,
    and the library built): a decode step's attention at any row count and its sampling, and the
    tanh GELU, causal attention and log-probs with entropy of training forwards and their backward.
    The memory model asks it too (what the kernels leave out)."""
    return _KERNELS and cpukernel.load(cpu_flags()) is not None


def kernels_for(t: Tensor) -> bool:
    """:func:`kernels_in_use` for work on ``t``: only a CPU tensor asks, so that a CUDA run never
    builds the library nor reports that it could not."""
    return t.device.type == "cpu" and kernels_in_use()


def matmul_kernels_in_use() -> bool:
    """The compiled kernels also run matmuls in this process (:func:`prefer_decode_kernel`): the
    decode's (up to :func:`rlhfkit.cpukernel.max_rows`, :func:`_kernel_decodes`) and the training
    matmuls' weight gradients where :func:`rlhfkit.cpukernel.weight_grad_takes`."""
    return _MATMUL_KERNELS and kernels_in_use()


def _onednn_mm(x: Tensor, w: Tensor, b: Tensor | None, residual: Tensor | None = None) -> Tensor:
    """``x @ W + b`` (``+ residual``) on oneDNN, ``w`` its packed weight."""
    assert _onednn_linear is not None and _onednn_linear_add is not None
    if residual is None:
        return _onednn_linear(x, w, b, "none", [], "")
    return _onednn_linear_add(x, residual, w, b, "add")


def _kernel_mm(x: Tensor, w: Tensor, b: Tensor, residual: Tensor | None = None) -> Tensor:
    """``x @ W + b`` (``+ residual``) with the compiled kernel, ``w`` the packed weight's :func:`_blocks`."""
    return cpukernel.linear(x, w, b.shape[0], b, residual)


def _packed_block(block: Module, rows: int) -> BlockWeights | None:
    """A GPT-2 block's four matmul weights packed for ``rows``-row decoding (where
    :func:`_trunk_packs`), or None."""
    qkv, proj, fc, mlp_proj = (packed_decode_weight(m.weight, rows) for m in (
        block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj))
    if qkv is None or proj is None or fc is None or mlp_proj is None:
        return None
    return qkv, proj, fc, mlp_proj


def _conv1d(x: Tensor, mod: Module, act: str | None = None, packed: Tensor | None = None) -> Tensor:
    """transformers' Conv1D (weight stored (in, out)): x @ W + b, then ``act`` when given
    (``packed``: as in :func:`_linear`)."""
    out = _linear(x.reshape(-1, x.shape[-1]), mod.weight, mod.bias, True, act, packed)
    return out.view(*x.shape[:-1], out.shape[-1])


def lm_logits(lm_head: Module, h: Tensor, packed: Tensor | None = None) -> Tensor:
    """``lm_head(h)``, logits (..., V), through :func:`_linear` (``packed``: as there)."""
    out = _linear(h.reshape(-1, h.shape[-1]), lm_head.weight, lm_head.bias, False, packed=packed)
    return out.view(*h.shape[:-1], out.shape[-1])


def _embed(transformer: Module, input_ids: Tensor, position_ids: Tensor) -> Tensor:
    return F.embedding(input_ids, transformer.wte.weight) + F.embedding(position_ids, transformer.wpe.weight)


def _mlp(block: Module, x: Tensor, act: str, eps: float, packed: BlockWeights | None = None,
         keep: _KeptRows | None = None) -> Tensor:
    """x + the block's MLP of ln_2(x). ``keep``: append the activation's input (N, 4D) to it; the
    activation then runs apart from the matmul (a training forward's backward needs its input)."""
    h = F.layer_norm(x, (x.shape[-1],), block.ln_2.weight, block.ln_2.bias, eps)
    fc, proj = (packed[2], packed[3]) if packed is not None else (None, None)
    if keep is None:
        a = _conv1d(h, block.mlp.c_fc, act, fc)
    else:
        f = _conv1d(h, block.mlp.c_fc, packed=fc)
        keep.append(f.reshape(-1, f.shape[-1]))
        a = _ACTIVATIONS[act](f)
    return x + _conv1d(a, block.mlp.c_proj, packed=proj)


def _qkv(block: Module, x: Tensor, n_head: int, eps: float, packed: BlockWeights | None = None,
         keep: _KeptRows | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """q, k, v (B, H, T, hs) of ln_1(x); ``keep``: append the fused qkv output (N, 3D) to it."""
    B, T, D = x.shape
    h = F.layer_norm(x, (D,), block.ln_1.weight, block.ln_1.bias, eps)
    qkv = _conv1d(h, block.attn.c_attn, packed=packed[0] if packed is not None else None)
    if keep is not None:
        keep.append(qkv.reshape(-1, 3 * D))
    q, k, v = qkv.split(D, dim=-1)
    hs = D // n_head
    return (q.view(B, T, n_head, hs).transpose(1, 2),  # (B, H, T, hs)
            k.view(B, T, n_head, hs).transpose(1, 2),
            v.view(B, T, n_head, hs).transpose(1, 2))


def _attn_out(block: Module, x: Tensor, y: Tensor, packed: BlockWeights | None = None) -> Tensor:
    B, _, T, _ = y.shape
    return x + _conv1d(y.transpose(1, 2).reshape(B, T, x.shape[-1]), block.attn.c_proj,
                       packed=packed[1] if packed is not None else None)


def _padding_mask(attention_mask: Tensor) -> Tensor | None:
    """(B, 1, T, T) boolean SDPA mask, or None when plain causal attention gives the same result.

    Padding *after* the last real token of a row is never a key of a real position (causality), so
    rows padded only on the right need no mask. Otherwise (left padding, or a hole) a query attends
    to the real keys at or before it and always to itself, so that pad rows stay finite.
    """
    valid = attention_mask.bool()
    before_last = valid.flip(-1).long().cumsum(-1).flip(-1) > 0  # a real token at or after here
    if not bool((before_last & ~valid).any()):  # one host sync per forward; it buys SDPA's causal path
        return None
    T = attention_mask.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=attention_mask.device).tril()
    eye = torch.eye(T, dtype=torch.bool, device=attention_mask.device)
    return (causal & (valid[:, None, :] | eye))[:, None]  # (B, 1, T, T)


class _KernelAttention(torch.autograd.Function):
    """:func:`rlhfkit.cpukernel.attention_forward` and its backward. Saves what SDPA's flash kernel
    saves: the inputs, the output and each query's log-sum-exp."""

    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float,  # type: ignore[override]
                offset: int) -> Tensor:
        out, lse = cpukernel.attention_forward(q, k, v, mask, scale, offset, with_lse=True)
        ctx.save_for_backward(q, k, v, out, lse, mask)
        ctx.scale, ctx.offset = scale, offset
        return out

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        q, k, v, out, lse, mask = ctx.saved_tensors
        dq, dk, dv = cpukernel.attention_backward(q, k, v, out, g, lse, mask, ctx.scale, ctx.offset)
        return dq, dk, dv, None, None, None


def _attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float, offset: int = 0) -> Tensor:
    """Attention of queries at positions ``offset`` .. ``offset + Tq - 1`` over keys from position 0,
    each seeing the keys at or before it, and with ``mask`` (B or 1, 1, Tq, Tk) bool only where it
    is True (it never lets a query see a later key). In the compiled kernel where it runs in this
    process (:func:`kernels_in_use`) and takes the shapes; else SDPA, whose CPU flash kernel calls the
    BLAS once per block of 32 queries (``benchmarks/NOTES_ppo_vs_trl.md``, change 29)."""
    if kernels_for(q) and cpukernel.sequence_attends(q, k, v):
        if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
            return cast(Tensor, _KernelAttention.apply(q, k, v, mask, scale, offset))
        return cpukernel.attention_forward(q, k, v, mask, scale, offset)[0]
    if mask is None:
        assert offset == 0 and q.shape[2] == k.shape[2], "SDPA's is_causal needs queries and keys aligned"
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def shared_prefix(input_ids: Tensor, attention_mask: Tensor, prefix_len: int) -> tuple[Tensor, Tensor] | None:
    """Which rows share their first ``prefix_len`` columns: ``(rep, inverse)`` or None when none do.

    Two rows share a prefix when their masks agree there and so do their ids at the real positions
    (a pad's id is never read). ``rep`` (U,) holds one row per distinct prefix (its first, in row
    order), and ``inverse`` (B,) each row's index into ``rep``. A GRPO batch of B = U x G rows, a
    prompt's G samples in a row, has U distinct prefixes.
    """
    if not 0 < prefix_len < input_ids.shape[1]:
        return None
    return distinct_rows(input_ids[:, :prefix_len], attention_mask[:, :prefix_len])


def distinct_rows(input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor] | None:
    """:func:`shared_prefix` over whole rows (left-padded prompts): ``(rep, inverse)`` or None."""
    B = input_ids.shape[0]
    if B < 2:
        return None
    key = torch.where(attention_mask.bool(), input_ids, -1)
    _, inverse = torch.unique(key, dim=0, return_inverse=True)
    U = int(inverse.max()) + 1  # one host sync per forward
    if U == B:
        return None
    rows = torch.arange(B, device=input_ids.device)
    first = torch.full((U,), B, dtype=rows.dtype, device=rows.device).scatter_reduce_(0, inverse, rows, "amin")
    rep, order = first.sort()  # number the prefixes in order of first appearance
    rank = torch.empty_like(order)
    rank[order] = torch.arange(U, device=order.device)
    return rep, rank[inverse]


def hidden_states(transformer: Module, input_ids: Tensor, attention_mask: Tensor | None = None,
                  position_ids: Tensor | None = None, *, at: Tensor | None = None, start: int = 0,
                  prefix_len: int = 0) -> Tensor:
    """The last hidden state (after ``ln_f``) of a GPT-2 trunk: (B, T) ids -> (B, T - start, D).

    Same result as ``transformer(input_ids, attention_mask=..., position_ids=...).last_hidden_state
    [:, start:]`` at every real position. With ``at`` (B,) real-token positions, returns only those
    rows, (B, D): the last layer still projects q/k/v at every position, but attends, projects and
    runs its MLP for one position per row — 3/4 of that layer's matmuls saved, for a reward model
    that reads one position per sequence.

    ``prefix_len``: the first ``prefix_len`` columns are a prompt that several rows may share (a
    GRPO group's G samples). Rows with the same prompt (:func:`shared_prefix`) then run it once:
    the prompt's positions go through the trunk once per distinct prompt, and each row's later
    positions attend to its prompt's keys and values. The same function, with U x P + B x R token
    rows in every matmul instead of B x (P + R); the gradient of a shared prompt position is the
    sum over the rows that read it, as autograd's index backward adds it up.
    """
    cfg = transformer.config
    eps, H = cfg.layer_norm_epsilon, cfg.n_head
    act = cfg.activation_function
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if position_ids is None:
        position_ids = position_ids_from_mask(attention_mask)
    share = shared_prefix(input_ids, attention_mask, prefix_len) if prefix_len else None
    if share is not None:
        return _shared_hidden_states(transformer, input_ids, attention_mask, position_ids, prefix_len, *share,
                                     at=at, start=start)
    mask = _padding_mask(attention_mask)
    x = _embed(transformer, input_ids, position_ids)  # (B, T, D)
    n = len(transformer.h)
    for i, block in enumerate(transformer.h):
        q, k, v = _qkv(block, x, H, eps)
        scale = _scaling(block.attn, i)
        if at is not None and i == n - 1:
            rows = torch.arange(x.shape[0], device=x.device)
            T = x.shape[1]
            keys = attention_mask.bool() & (torch.arange(T, device=x.device)[None, :] <= at[:, None])  # (B, T)
            y = F.scaled_dot_product_attention(q[rows, :, at].unsqueeze(2), k, v, attn_mask=keys[:, None, None, :],
                                               scale=scale)  # (B, H, 1, hs)
            x = _mlp(block, _attn_out(block, x[rows, at].unsqueeze(1), y), act, eps)[:, 0]  # (B, D)
            break
        y = _attention(q, k, v, mask, scale)
        x = _mlp(block, _attn_out(block, x, y), act, eps)
    if at is None and start:
        x = x[:, start:]
    return F.layer_norm(x, (x.shape[-1],), transformer.ln_f.weight, transformer.ln_f.bias, eps)


def _shared_hidden_states(transformer: Module, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor,
                          P: int, rep: Tensor, inverse: Tensor, *, at: Tensor | None, start: int) -> Tensor:
    """:func:`hidden_states` with each distinct prompt (the first ``P`` columns) run once.

    The activations are one flat (U*P + B*R, D) tensor — the U distinct prompts' positions, then
    every row's R later positions — so each matmul is one call over all of them. Attention splits
    it: a prompt's queries attend causally within the prompt; a row's later queries attend to its
    prompt's keys (gathered by ``inverse``) and causally to its own.
    """
    cfg = transformer.config
    eps, H, act = cfg.layer_norm_epsilon, cfg.n_head, cfg.activation_function
    B, T = input_ids.shape
    U, R, D = rep.shape[0], T - P, cfg.n_embd
    hs = D // H
    dev = input_ids.device
    n_p = U * P  # rows of the flat tensor that hold prompt positions
    x = torch.cat([_embed(transformer, input_ids[rep, :P], position_ids[rep, :P]).reshape(n_p, D),
                   _embed(transformer, input_ids[:, P:], position_ids[:, P:]).reshape(B * R, D)])
    prompt_mask = _padding_mask(attention_mask[rep, :P])  # (U, 1, P, P) or None
    valid = attention_mask.bool()
    own = torch.ones(R, R, dtype=torch.bool, device=dev).tril() & (valid[:, None, P:]
                                                                    | torch.eye(R, dtype=torch.bool, device=dev))
    later_mask = torch.cat([valid[:, None, :P].expand(B, R, P), own], -1)[:, None]  # (B, 1, R, T)

    def flat(t: Tensor) -> Tensor:
        """Flat row of position ``t`` (B, ...) of each row."""
        rows = torch.arange(B, device=dev).view(-1, *([1] * (t.dim() - 1)))
        return torch.where(t < P, inverse.view_as(rows) * P + t, n_p + rows * R + (t - P))

    n = len(transformer.h)
    for i, block in enumerate(transformer.h):
        h = F.layer_norm(x, (D,), block.ln_1.weight, block.ln_1.bias, eps)
        q, k, v = _conv1d(h, block.attn.c_attn).split(D, dim=-1)  # (N, D) each
        scale = _scaling(block.attn, i)

        def heads(t: Tensor, lo: int, rows: int, length: int) -> Tensor:
            return t[lo : lo + rows * length].view(rows, length, H, hs).transpose(1, 2)  # (rows, H, length, hs)

        # index_select, not x[inverse]: its backward adds a shared prompt's gradients in a fixed order
        # (advanced indexing's uses concurrent atomic adds on the CPU, a different sum every run)
        keys = torch.cat([heads(k, 0, U, P).index_select(0, inverse), heads(k, n_p, B, R)], 2)  # (B, H, T, hs)
        values = torch.cat([heads(v, 0, U, P).index_select(0, inverse), heads(v, n_p, B, R)], 2)
        if at is not None and i == n - 1:
            idx = flat(at)  # (B,)
            sel = (torch.arange(T, device=dev)[None, :] <= at[:, None]) & valid  # (B, T)
            y = F.scaled_dot_product_attention(q.index_select(0, idx).view(B, H, 1, hs), keys, values,
                                               attn_mask=sel[:, None, None, :], scale=scale)  # (B, H, 1, hs)
            x = x.index_select(0, idx) + _conv1d(y.reshape(B, D), block.attn.c_proj)
            x = _mlp(block, x, act, eps)  # (B, D)
            return F.layer_norm(x, (D,), transformer.ln_f.weight, transformer.ln_f.bias, eps)
        yp = _attention(heads(q, 0, U, P), heads(k, 0, U, P), heads(v, 0, U, P), prompt_mask, scale)
        yr = _attention(heads(q, n_p, B, R), keys, values, later_mask, scale, offset=P)
        y = torch.cat([yp.transpose(1, 2).reshape(n_p, D), yr.transpose(1, 2).reshape(B * R, D)])
        x = _mlp(block, x + _conv1d(y, block.attn.c_proj), act, eps)
    x = x.index_select(0, flat(torch.arange(start, T, device=dev).expand(B, -1)).flatten()).view(B, T - start, D)
    return F.layer_norm(x, (D,), transformer.ln_f.weight, transformer.ln_f.bias, eps)


# ----------------------------------------------------------------------------- the update's forward off the decode
# Why: with one optimizer step per rollout (GRPO's default, TRL's ``num_iterations=1``) the update's
# forward runs the very weights that just sampled, over the very tokens they sampled: every matmul
# output it computes, the decode computed already, one row per position. So the decode keeps them
# (:class:`SamplingActivations`), and the update builds its autograd graph on them
# (:func:`sampled_hidden_states`): each matmul is a :class:`_Precomputed` node, whose forward
# returns the kept output and whose backward is the matmul's; layer norms, attention and the
# activation run again (their backward needs what they save, and they cost little). The backward
# is unchanged. The kept outputs agree with a forward over the finished sequences to fp32 rounding
# (the decode sums in another order), as the old log-probs read off the sampling pass do.


@dataclasses.dataclass
class SamplingActivations:
    """What a :class:`Decoder` computed that a training forward over the same sequences needs.

    Rows are the flat token rows :func:`_shared_hidden_states` uses: first each distinct prompt's
    ``P`` positions once (``U = rep.shape[0]`` prompts), then each of the ``B`` rows' ``fed`` decoded
    positions (the sampled tokens that went back through the trunk: all but the last).
    Per block: ``qkv`` (N, 3D) = ln_1(x) @ W_attn + b, ``attn`` (N, D) the residual stream after
    attention, ``fc`` (N, 4D) the MLP's input to its activation, ``mlp`` (N, D) the residual stream
    after the MLP. ``logits`` (B, fed + 1, V): the LM head at positions P-1 .. P+fed-1, before any
    temperature. ``ids`` (B, fed): the tokens fed.
    """

    rep: Tensor  # (U,) the first row of each distinct prompt
    inverse: Tensor  # (B,) each row's prompt, an index into rep
    prompt_ids: Tensor  # (B, P)
    prompt_mask: Tensor  # (B, P)
    fed: int
    qkv: list[Tensor]
    attn: list[Tensor]
    fc: list[Tensor]
    mlp: list[Tensor]
    logits: Tensor
    ids: Tensor

    def matches(self, input_ids: Tensor, attention_mask: Tensor) -> bool:
        """Whether these are the activations of ``input_ids`` (B, P + fed + 1): the same prompts, and
        the same tokens wherever ``attention_mask`` holds (after a stop token a rollout may have
        replaced tokens by padding; no unmasked position reads them)."""
        B, P = self.prompt_ids.shape
        if input_ids.shape != (B, P + self.fed + 1) or not torch.equal(input_ids[:, :P], self.prompt_ids):
            return False
        fed = attention_mask[:, P : P + self.fed].bool()
        return not bool(((input_ids[:, P : P + self.fed] != self.ids) & fed).any())


_KEPT = ("qkv", "attn", "fc", "mlp")  # the kinds of block output a decoder keeps, as SamplingActivations names them


class _KeptRows:
    """One kept output of a decoder (one kind of one block, or the logits), written into the row
    layout :class:`SamplingActivations` hands on as it comes: with ``prefill``, the prefill's rows
    first (each distinct prompt's positions), then ``rows`` runs of ``steps`` rows, step t of batch
    row b at b * steps + t. A step's output is copied while it is still in cache; gathering all of
    them at the end read them back from memory (benchmarks/NOTES_grpo_vs_trl.md, change 24). Room
    for more steps than planned is made by one copy; fewer steps cost one copy at the end."""

    def __init__(self, rows: int, steps: int, prefill: bool = True) -> None:
        self.rows, self.steps = rows, steps
        self.buf: Tensor | None = None
        self.head = -1 if prefill else 0  # rows of the prefill, -1 until it comes
        self.fed = 0

    def append(self, out: Tensor) -> None:
        out = out.reshape(-1, out.shape[-1])
        if self.buf is None:
            if self.head < 0:
                self.head = out.shape[0]
            self.buf = out.new_empty(self.head + self.rows * self.steps, out.shape[1])
            if self.head:
                self.buf[: self.head].copy_(out)
                return
        if self.fed == self.steps:
            self._resize(2 * max(self.steps, 1))
        self._steps_view(self.steps)[:, self.fed].copy_(out)
        self.fed += 1

    def _steps_view(self, steps: int, buf: Tensor | None = None) -> Tensor:
        buf = self.buf if buf is None else buf
        assert buf is not None
        return buf[self.head :].view(self.rows, steps, buf.shape[1])

    def _resize(self, steps: int) -> None:
        assert self.buf is not None
        new = self.buf.new_empty(self.head + self.rows * steps, self.buf.shape[1])
        new[: self.head].copy_(self.buf[: self.head])
        self._steps_view(steps, new)[:, : self.fed].copy_(self._steps_view(self.steps)[:, : self.fed])
        self.buf, self.steps = new, steps

    def laid_out(self) -> Tensor:
        """(prefill rows + rows * steps fed, W), which this object then lets go."""
        assert self.buf is not None
        if self.fed != self.steps:
            self._resize(self.fed)
        buf, self.buf = self.buf, None
        return buf


class _Precomputed(torch.autograd.Function):
    """``x @ W + b`` (``+ residual``), whose value ``out`` was computed already (by the decode):
    the forward returns ``out`` and saves what the backward needs; the backward is the matmul's
    (:func:`_linear_grads`, on the library :func:`_linear` would take for ``x``)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, residual: Tensor | None,  # type: ignore[override]
                out: Tensor, conv1d: bool) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.conv1d = conv1d
        ctx.onednn = _onednn_linear is not None and _use_onednn(x, weight)
        return out.view_as(out)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b, need_r = ctx.needs_input_grad[:4]
        gx, gw, gb = _linear_grads(g, x, weight, ctx.conv1d, need_x, need_w, need_b, ctx.onednn)
        return gx, gw, gb, (g if need_r else None), None, None


def sampled_hidden_states(transformer: Module, acts: SamplingActivations) -> Tensor:
    """:func:`hidden_states` of the sequences ``acts`` was decoded from, at positions P-1 .. P+fed-1:
    (B, fed + 1, D), after ``ln_f``, with the autograd graph of a training forward, on the matmul
    outputs the decode kept (see above). The attention is the decode's: a prompt's padding is no
    key, every decoded position is one."""
    cfg = transformer.config
    eps, H, act = cfg.layer_norm_epsilon, cfg.n_head, _ACTIVATIONS[cfg.activation_function]
    rep, inverse = acts.rep, acts.inverse
    B, P = acts.prompt_ids.shape
    U, R, D = rep.shape[0], acts.fed, cfg.n_embd
    hs, dev = D // H, acts.prompt_ids.device
    n_p = U * P
    pos = position_ids_from_mask(acts.prompt_mask)  # (B, P)
    later_pos = pos[:, -1:] + 1 + torch.arange(R, device=dev)  # (B, R)
    x = torch.cat([_embed(transformer, acts.prompt_ids[rep], pos[rep]).reshape(n_p, D),
                   _embed(transformer, acts.ids, later_pos).reshape(B * R, D)])
    prompt_valid = acts.prompt_mask.bool()
    prompt_mask = _padding_mask(acts.prompt_mask[rep]) if not bool(prompt_valid.all()) else None
    later_mask = torch.cat([prompt_valid[:, None, :].expand(B, R, P),
                            torch.ones(R, R, dtype=torch.bool, device=dev).tril().expand(B, R, R)], -1)[:, None]

    def heads(t: Tensor, lo: int, rows: int, length: int) -> Tensor:
        return t[lo : lo + rows * length].view(rows, length, H, hs).transpose(1, 2)  # (rows, H, length, hs)

    for i, block in enumerate(transformer.h):
        h = F.layer_norm(x, (D,), block.ln_1.weight, block.ln_1.bias, eps)
        qkv = _Precomputed.apply(h, block.attn.c_attn.weight, block.attn.c_attn.bias, None, acts.qkv[i], True)
        q, k, v = qkv.split(D, dim=-1)  # (N, D) each
        scale = _scaling(block.attn, i)
        keys = torch.cat([heads(k, 0, U, P).index_select(0, inverse), heads(k, n_p, B, R)], 2)  # (B, H, P + R, hs)
        values = torch.cat([heads(v, 0, U, P).index_select(0, inverse), heads(v, n_p, B, R)], 2)
        yp = _attention(heads(q, 0, U, P), heads(k, 0, U, P), heads(v, 0, U, P), prompt_mask, scale)
        yr = _attention(heads(q, n_p, B, R), keys, values, later_mask, scale, offset=P)
        y = torch.cat([yp.transpose(1, 2).reshape(n_p, D), yr.transpose(1, 2).reshape(B * R, D)])
        x = _Precomputed.apply(y, block.attn.c_proj.weight, block.attn.c_proj.bias, x, acts.attn[i], True)
        h = F.layer_norm(x, (D,), block.ln_2.weight, block.ln_2.bias, eps)
        f = _Precomputed.apply(h, block.mlp.c_fc.weight, block.mlp.c_fc.bias, None, acts.fc[i], True)
        x = _Precomputed.apply(act(f), block.mlp.c_proj.weight, block.mlp.c_proj.bias, x, acts.mlp[i], True)
    rows = torch.cat([(inverse * P + P - 1)[:, None],
                      n_p + torch.arange(B, device=dev)[:, None] * R + torch.arange(R, device=dev)], 1)  # (B, R + 1)
    x = x.index_select(0, rows.flatten())
    return F.layer_norm(x, (D,), transformer.ln_f.weight, transformer.ln_f.bias, eps).view(B, R + 1, D)


def sampled_logits(lm_head: Module, h: Tensor, acts: SamplingActivations) -> Tensor:
    """``lm_logits(lm_head, h)`` for ``h`` from :func:`sampled_hidden_states`: the decode's logits,
    (B, fed + 1, V), as a :class:`_Precomputed` node."""
    lead = h.shape[:-1]
    out = _Precomputed.apply(h.reshape(-1, h.shape[-1]), lm_head.weight, lm_head.bias, None,
                             acts.logits.reshape(-1, acts.logits.shape[-1]), False)
    return out.view(*lead, out.shape[-1])


def logprobs_and_entropy(logits: Tensor, labels: Tensor, with_entropy: bool = True) -> tuple[Tensor, Tensor | None]:
    """log softmax(logits)[labels] and the entropy from one log-softmax: (B, R, V), (B, R) -> (B, R) x2.

    One fused ``log_softmax`` kernel serves both. Without the entropy it is still the fastest way
    to the log-probs: on this class of CPU ``log_softmax`` + gather takes half the time of gather
    minus ``logsumexp`` (whose max, subtract, exp and sum are four passes over the (B, R, V) logits).
    With the entropy, :class:`_LogprobsEntropy` supplies a hand-written backward.
    """
    if not with_entropy:
        return ops.logprobs_from_logits(logits, labels), None
    lead = logits.shape[:-1]
    lp, ent = _LogprobsEntropy.apply(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
    return lp.view(lead), ent.view(lead)


class _LogprobsEntropy(torch.autograd.Function):
    """(N, V) logits z, (N,) labels y -> log-prob of y and entropy, each (N,).

    Why a hand-written backward: autograd's backward of ``gather(log_softmax(z))`` and
    ``-(exp(logp) * logp).sum()`` runs about ten passes over the (N, V) tensors (a zero fill and a
    scatter for the gather, three multiplies, an add, the log-softmax backward); the closed form
    below runs three (same saved tensors: the log-softmax and its exp). Measured at N=1024, V=2023
    on 2 CPU threads: forward + backward 8.4 -> 4.2 ms. ``tests/unit/test_fastgpt2.py`` checks it
    against autograd.

    With p = softmax(z), H = -sum p log p:  d log p_y / dz = onehot(y) - p,  dH/dz = -p (log p + H),
    so  dz = p * (c - g_H log p) + g_lp onehot(y)  with  c = -(g_lp + g_H H).

    Where the compiled kernels run (:func:`kernels_in_use`) both directions are one pass per row in
    :mod:`rlhfkit.cpukernel`, saving the same tensors.
    """

    @staticmethod
    def forward(ctx: Any, z: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        ctx.z_dtype = z.dtype
        ctx.kernel = kernels_for(z) and cpukernel.rows_take(z)
        if ctx.kernel:  # one pass per row (the same saved tensors)
            logp, p, lp, ent = cpukernel.logprob_entropy(z, y)
            ctx.save_for_backward(logp, p, ent, y)
            return lp, ent
        logp = F.log_softmax(z, dim=-1)  # fp32 under autocast too
        p = logp.exp()
        ent = -(p * logp).sum(-1)
        ctx.save_for_backward(logp, p, ent, y)
        return logp.gather(-1, y.unsqueeze(-1)).squeeze(-1), ent

    @staticmethod
    def backward(ctx: Any, g_lp: Tensor, g_ent: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        logp, p, ent, y = ctx.saved_tensors
        if ctx.kernel:
            return cpukernel.logprob_entropy_backward(logp, p, ent, y, g_lp, g_ent), None
        c = -(g_lp + g_ent * ent)  # (N,)
        dz = torch.addcmul(c.unsqueeze(-1), logp, g_ent.unsqueeze(-1), value=-1.0).mul_(p)  # (N, V)
        dz.scatter_add_(-1, y.unsqueeze(-1), g_lp.unsqueeze(-1).to(dz.dtype))
        return dz.to(ctx.z_dtype), None


class Decoder:
    """Incremental GPT-2 decoding with a static KV cache: one prefill, then one token per :meth:`step`.

    The cache is preallocated at ``(B, H, P + max_new_tokens, hs)`` per layer and written in place;
    each step attends over the filled prefix only. Rows with the same prompt (a GRPO group) prefill
    it once and copy its keys and values. On a CPU where oneDNN serves the steps' matmuls they
    multiply by packed copies of the weights (:func:`packed_decode_weight`, rewritten from the
    weights when the decoder is made). Prompts may be left-padded; every generated
    position counts as a real key (rows that already ended keep feeding padding, exactly as the
    transformers loop in :func:`rlhfkit.policy.sample` does).

    Args:
        model: a ``GPT2LMHeadModel`` (``transformer`` trunk + ``lm_head``) for which :func:`supports`
            holds.
        prompt_ids, prompt_mask: (B, P) left-padded prompts.
        max_new_tokens: how many tokens may follow.
        keep: also keep what a training forward over the finished sequences would compute again
            (:meth:`activations`): each block's matmul outputs at every position fed, and the logits.
    """

    def __init__(self, model: Module, prompt_ids: Tensor, prompt_mask: Tensor, max_new_tokens: int,
                 keep: bool = False) -> None:
        tr = model.transformer
        cfg = tr.config
        self.tr, self.lm_head = tr, model.lm_head
        self.eps, self.n_head = cfg.layer_norm_epsilon, cfg.n_head
        self.act = cfg.activation_function
        self.scales = [_scaling(b.attn, i) for i, b in enumerate(tr.h)]
        B, P = prompt_ids.shape
        D = cfg.n_embd
        hs = D // self.n_head
        t_max = P + max_new_tokens
        dev, dtype = prompt_ids.device, tr.wte.weight.dtype
        # one (2, B, H, T_max, hs) cache per layer, keys then values: a step writes both with one copy
        self.kv = [torch.empty(2, B, self.n_head, t_max, hs, device=dev, dtype=dtype) for _ in tr.h]
        self.key_valid = torch.ones(B, t_max, dtype=torch.bool, device=dev)  # (B, T_max)
        self.key_valid[:, :P] = prompt_mask.bool()
        self.masked = not bool(prompt_mask.bool().all())
        pos = position_ids_from_mask(prompt_mask)
        self.next_pos = pos[:, -1:] + 1  # (B, 1)
        self.t = 0
        self._fed = 0  # decode steps run (tokens fed after the prompt)
        self.hidden: Tensor | None = None
        # the steps (one token for each of the B rows) multiply by packed weights where this CPU has them
        self.rows = B
        self.packed: list[BlockWeights] | None = None
        self.packed_head: Tensor | None = None
        if max_new_tokens > 1 and dev.type == "cpu" and dtype == torch.float32 and _packs(B):
            if _trunk_packs(D, B):
                blocks = [_packed_block(block, B) for block in tr.h]
                if all(w is not None for w in blocks):
                    self.packed = cast(list[BlockWeights], blocks)
            self.packed_head = packed_decode_weight(self.lm_head.weight, B, conv1d=False)
        self.layers: list[_StepLayer] | None = None
        # the packed steps' matmuls: oneDNN's, or the compiled kernel's over the same bytes
        self.kernel = False
        self.attend = False
        self.blocks: list[cpukernel.DecodeBlock] | None = None
        self.head_blocks: Tensor | None = None
        if self.packed is not None and _onednn_linear_add is not None and self.act in _FUSED_ACT:
            weights: list[BlockWeights] = self.packed
            if _kernel_decodes(B):
                trunk = [(_blocks(b.attn.c_attn.weight), _blocks(b.attn.c_proj.weight), _blocks(b.mlp.c_fc.weight),
                          _blocks(b.mlp.c_proj.weight)) for b in tr.h]
                self.kernel = all(cpukernel.fits(w, B) for ws in trunk for w in ws)
                if self.kernel:
                    weights = trunk
                    if self.packed_head is not None and cpukernel.fits(_blocks(self.lm_head.weight), B):
                        self.head_blocks = _blocks(self.lm_head.weight)
            self.layers = [_StepLayer(b.ln_1.weight, b.ln_1.bias, w[0], b.attn.c_attn.bias, w[1], b.attn.c_proj.bias,
                                      b.ln_2.weight, b.ln_2.bias, w[2], b.mlp.c_fc.bias, w[3], b.mlp.c_proj.bias, s)
                           for b, w, s in zip(tr.h, weights, self.scales, strict=True)]
            self.key_invalid = ~self.key_valid
            # the attention: one pass of the compiled kernel over each (row, head)'s cache, or batched matmuls
            self.attend = kernels_in_use() and all(cpukernel.attends(kv) for kv in self.kv)
            # the whole block in one call where its matmuls, attention and activation all run in the kernel
            if self.kernel and self.attend and self.act in _TANH_GELU:
                self.blocks = [cpukernel.DecodeBlock(tuple(layer[:12]), self.n_head, layer.scale, self.eps)
                               for layer in self.layers]
            self.scores = torch.empty(B * self.n_head, 1, t_max, device=dev, dtype=dtype)  # baddbmm's ignored input
        share = distinct_rows(prompt_ids, prompt_mask)
        # keep: per kind of kept output (qkv, attn, fc, mlp), per block, the outputs of the prefill and
        # of each step, laid out as they come; and the logits of the prefill and of each step
        self.keep = keep
        steps = max(max_new_tokens - 1, 0)  # a full-length sample feeds back all its tokens but the last
        self.kept: dict[str, list[_KeptRows]] = {k: [_KeptRows(B, steps) for _ in tr.h] for k in _KEPT} if keep else {}
        self.kept_logits = _KeptRows(B, steps + 1, prefill=False)
        self.kept_ids: list[Tensor] = []
        self.share = share if share is not None else (torch.arange(B, device=dev),) * 2
        self.prompt_ids, self.prompt_mask = prompt_ids, prompt_mask
        if share is None:
            self.logits = self._forward(prompt_ids, pos, _padding_mask(prompt_mask) if self.masked else None,
                                        causal=True)
        else:  # rows with the same prompt (a GRPO group): prefill each prompt once, then copy its cache
            rep, inverse = share
            U = rep.shape[0]
            logits = self._forward(prompt_ids[rep], pos[rep],
                                   _padding_mask(prompt_mask[rep]) if self.masked else None, causal=True)
            for kv in self.kv:
                kv[:, :, :, :P] = kv[:, :U, :, :P][:, inverse]
            assert self.hidden is not None
            self.logits, self.hidden = logits[inverse], self.hidden[inverse]
        if keep:
            self.kept_logits.append(self.logits)

    def _keep(self, kind: str, i: int, out: Tensor) -> None:
        """Keep block ``i``'s output ``out`` (b, n, width) of ``kind`` for the positions just fed."""
        self.kept[kind][i].append(out)

    def activations(self) -> SamplingActivations | None:
        """What this decoder kept (``keep``) for the positions fed so far, in the row layout of
        :class:`SamplingActivations` (one copy of each kept output, which the decoder then lets go),
        or None without ``keep``."""
        if not self.keep:
            return None
        B, R = self.rows, self._fed
        laid = {kind: [kept.laid_out() for kept in blocks] for kind, blocks in self.kept.items()}
        logits = self.kept_logits.laid_out().view(B, R + 1, -1)  # (B, R + 1, V)
        ids = torch.stack(self.kept_ids, 1) if self.kept_ids else self.prompt_ids.new_empty(B, 0)
        self.kept_ids, self.kept = [], {}
        rep, inverse = self.share
        return SamplingActivations(rep, inverse, self.prompt_ids, self.prompt_mask, R, laid["qkv"], laid["attn"],
                                   laid["fc"], laid["mlp"], logits, ids)

    @torch.no_grad()
    def _forward(self, ids: Tensor, pos: Tensor, mask: Tensor | None, causal: bool) -> Tensor:
        """Run ``ids`` (B, n) at cache slots t .. t+n-1 and return the last position's logits (B, V)."""
        t0, (b, n) = self.t, ids.shape  # b: every row, or the first b (a prefill of distinct prompts)
        x = _embed(self.tr, ids, pos)
        packed = self.packed if n == 1 and b == self.rows else None
        kept = self.kept
        for i, block in enumerate(self.tr.h):
            w = packed[i] if packed is not None else None
            q, k, v = _qkv(block, x, self.n_head, self.eps, w, kept["qkv"][i] if kept else None)
            kv = self.kv[i]
            kv[0, :b, :, t0 : t0 + n] = k
            kv[1, :b, :, t0 : t0 + n] = v
            keys, values = kv[0, :b, :, : t0 + n], kv[1, :b, :, : t0 + n]  # strided views, no copy
            if n == 1:
                # One query: plain batched matmuls on the cache views. SDPA's CPU flash kernel first
                # copies the strided cache slices (B*H*t*hs floats per call), which cost ~8x more here.
                att = (q @ keys.transpose(-1, -2)) * self.scales[i]  # (B, H, 1, t)
                if mask is not None:
                    att = att.masked_fill(~mask, float("-inf"))
                y = att.softmax(-1) @ values  # (B, H, 1, hs)
            elif mask is not None:
                y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=self.scales[i])
            else:
                y = F.scaled_dot_product_attention(q, keys, values, is_causal=causal, scale=self.scales[i])
            x = _attn_out(block, x, y, w)
            if kept:
                self._keep("attn", i, x)
            x = _mlp(block, x, self.act, self.eps, w, kept["fc"][i] if kept else None)
            if kept:
                self._keep("mlp", i, x)
        self.t = t0 + n
        h = F.layer_norm(x[:, -1], (x.shape[-1],), self.tr.ln_f.weight, self.tr.ln_f.bias, self.eps)  # (B, D)
        self.hidden = h  # the trunk's output at the last fed position (a value head reads it)
        return lm_logits(self.lm_head, h, self.packed_head if n == 1 and b == self.rows else None)  # (B, V)

    def step(self, tokens: Tensor) -> Tensor:
        """Feed one token per row (B,) and return the next-token logits (B, V)."""
        if self.layers is not None:
            logits = self._packed_step(tokens)
        else:
            mask = self.key_valid[:, None, None, : self.t + 1] if self.masked else None  # (B, 1, 1, t+1)
            logits = self._forward(tokens.unsqueeze(1), self.next_pos, mask, causal=False)
        if self.keep:
            self.kept_ids.append(tokens)
            self.kept_logits.append(logits)
        self.next_pos = self.next_pos + 1
        self._fed += 1
        return logits

    @torch.no_grad()
    def _packed_step(self, tokens: Tensor) -> Tensor:
        """:meth:`_forward` for one token per row on packed weights, in as few ops as it takes.

        Why a second copy of the step: at the shapes rlhfkit decodes, each op a step issues costs
        about as much dispatch as a small kernel, whatever its size. Here the residual adds ride on
        the matmuls (oneDNN's binary post-op), the activation too, the keys and values go into the
        cache with one copy, the attention scale rides on the scores' ``baddbmm``, and each layer's
        tensors are looked up once per decoder. The same arithmetic as :meth:`_forward`:
        ``tests/unit/test_fastgpt2.py`` checks that both give the same logits. With :attr:`kernel`
        the matmuls run in :mod:`rlhfkit.cpukernel` (residual adds and the tanh GELU included),
        with :attr:`attend` the attention over the cache (scale, mask and softmax included), and with
        both and the tanh GELU each block is one call (:attr:`blocks`).
        """
        assert _onednn_linear is not None and _onednn_linear_add is not None and self.layers is not None
        mm = _kernel_mm if self.kernel else _onednn_mm
        t, B, H = self.t, self.rows, self.n_head
        D = self.tr.wte.weight.shape[1]
        hs, eps = D // H, self.eps
        attr, algo = _FUSED_ACT[self.act]
        invalid = self.key_invalid[:, None, None, : t + 1] if self.masked else None  # (B, 1, 1, t+1)
        keep, act = self.keep, _ACTIVATIONS[self.act]
        x = F.embedding(tokens, self.tr.wte.weight) + F.embedding(self.next_pos.view(-1), self.tr.wpe.weight)
        if self.blocks is not None:  # each block one call
            for i, (block, kv) in enumerate(zip(self.blocks, self.kv, strict=True)):
                x, qkv, x_attn, f = block(x, kv, t, self.key_invalid if self.masked else None, keep)
                if keep:
                    assert f is not None
                    self._keep("qkv", i, qkv)
                    self._keep("attn", i, x_attn)
                    self._keep("fc", i, f)
                    self._keep("mlp", i, x)
        else:
            for i, (layer, kv) in enumerate(zip(self.layers, self.kv, strict=True)):
                h = F.layer_norm(x, (D,), layer.ln1_w, layer.ln1_b, eps)
                qkv = mm(h, layer.qkv, layer.qkv_b)  # (B, 3D)
                if keep:
                    self._keep("qkv", i, qkv)
                kv[:, :, :, t].copy_(qkv[:, D:].view(B, 2, H, hs).transpose(0, 1))
                if self.attend:
                    y = cpukernel.attention(qkv, kv, t + 1, self.key_invalid if self.masked else None, layer.scale)
                else:
                    cache = kv.view(2, B * H, -1, hs)[:, :, : t + 1]  # (2, B*H, t+1, hs)
                    att = torch.baddbmm(self.scores[:, :, : t + 1], qkv[:, :D].reshape(B * H, 1, hs),
                                        cache[0].transpose(1, 2), beta=0.0, alpha=layer.scale)  # (B*H, 1, t+1)
                    if invalid is not None:
                        att.view(B, H, 1, t + 1).masked_fill_(invalid, float("-inf"))
                    y = torch.bmm(att.softmax(-1), cache[1])  # (B*H, 1, hs)
                x = mm(y.view(B, D), layer.proj, layer.proj_b, x)  # x + y @ W_o + b
                h = F.layer_norm(x, (D,), layer.ln2_w, layer.ln2_b, eps)
                if keep:
                    self._keep("attn", i, x)
                if self.kernel and self.act in _TANH_GELU:  # the GELU rides in the kernel's epilogue
                    n_fc = layer.fc_b.shape[0]
                    if keep:  # with the activation's input, which the update's backward needs
                        f, a = cpukernel.linear_gelu(h, layer.fc, n_fc, layer.fc_b)
                        self._keep("fc", i, f)
                    else:
                        a = cpukernel.linear(h, layer.fc, n_fc, layer.fc_b, gelu=True)
                elif not keep and not self.kernel:
                    a = _onednn_linear(h, layer.fc, layer.fc_b, attr, [], algo)
                else:  # the activation's input is kept, or the activation is not one the kernel has
                    f = mm(h, layer.fc, layer.fc_b)
                    if keep:
                        self._keep("fc", i, f)
                    a = act(f)
                x = mm(a, layer.fc_proj, layer.fc_proj_b, x)
                if keep:
                    self._keep("mlp", i, x)
        self.t = t + 1
        h = F.layer_norm(x, (D,), self.tr.ln_f.weight, self.tr.ln_f.bias, eps)  # (B, D)
        self.hidden = h
        if self.head_blocks is not None:
            bias = self.lm_head.bias
            V = self.lm_head.weight.shape[0]
            return cpukernel.linear(h, self.head_blocks, V, None if bias is None else bias)  # (B, V)
        return lm_logits(self.lm_head, h, self.packed_head)  # (B, V)
