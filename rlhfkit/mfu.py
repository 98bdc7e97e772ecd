"""Model FLOPs, MFU and time per token for each stage of a PPO step.

**FLOPs** are counted analytically from the model's shape and the tokens each stage actually
processed (padding excluded: it is work the hardware does but the model does not need). For a
GPT-2-style decoder with ``L`` layers, width ``d``, MLP width ``f`` and vocabulary ``V``, one
token's forward pass costs (a multiply-add is 2 FLOPs; layer norms, softmax and activations are
left out, as in Kaplan et al. 2020 §2.1 and the PaLM paper's appendix B):

* ``2·N`` for the block matmuls, ``N = L·(4·d² + 2·d·f)`` weights (qkv ``3d²``, output ``d²``,
  MLP ``2·d·f``);
* ``2·d·V`` for the LM head, on positions whose logits are used (response positions);
* ``4·L·d·c`` for attention scores and the weighted sum over a context of ``c`` positions. A causal
  sequence of length ``T`` attends over ``1..T``: ``Σ 4·L·d·c = 2·L·d·T·(T+1)``, the same with a KV
  cache (generation) or without (a full-sequence forward).

A training step (forward + backward) is 3x the forward (the backward computes gradients for both
activations and weights): the "6·N·T" rule plus attention. Stages:

* ``generation``: one causal forward over prompt and response of each sequence but its last token
  (the decode never feeds it), head on each sampled token;
* ``scoring``: policy forward (skipped when old log-probs came from the sampling pass or come from
  the update's own forward, ``Experience.policy_forward_in_scoring``), a separate
  critic trunk when there is one, the reference forward. A reward model is counted when it says its
  cost (``flops_per_token``); lexicon rewards cost no model FLOPs;
* ``advantages``: elementwise work, ~:data:`ADVANTAGE_FLOPS_PER_TOKEN` per response token;
* ``update``: ``ppo_epochs`` x 3 x (policy forward + critic trunk when separate); where the update's
  forward builds on the decode's matmul outputs (``ppo.update_activations``), less that forward's
  matmuls.

Rows that share a prompt (a GRPO group's G samples) run it once on the lean path: the decoder's
prefill, and the forwards of scoring and update (:func:`rlhfkit.fastgpt2.hidden_states` with
``prefix_len``). Those stages count each distinct prompt's tokens once, what the hardware computes
(per batch: a prompt drawn twice into different generation chunks or minibatches runs twice but
counts once).

**MFU** = stage FLOPs / (stage seconds x peak FLOP/s). The peak is, on CUDA, the vendor's dense
figure for the device and dtype (:data:`CUDA_PEAKS`, e.g. "H100 SXM bf16 dense 989 TFLOP/s"); on the
CPU it is measured at run start (:func:`cpu_peak_probe`) by timing matmuls through the engine's own
kernels (:func:`rlhfkit.fastgpt2._linear`: MKL ``addmm`` or the oneDNN matmul, as
:func:`rlhfkit.fastgpt2.prefer_onednn` picks for the CPU; the faster one counts), so "100%" means "as fast as this machine
multiplies matrices of that size", not a datasheet number. The run records which peak it used in
``run_started.perf``.

**Time per token** follows verl's ``timing_per_token_ms``: generation per generated response token,
every other stage per token of the batch (prompt + response).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

ADVANTAGE_FLOPS_PER_TOKEN = 20  # KL estimators, penalty, GAE recursion, whitening: ~20 elementwise ops
PERF_STAGES = ("generation", "scoring", "advantages", "update")  # stages with a FLOP model

# Dense (no sparsity) peak FLOP/s from the vendors' datasheets, by a substring of
# torch.cuda.get_device_name() (checked in order: the more specific name first) and dtype.
CUDA_PEAKS: tuple[tuple[str, dict[str, float], str], ...] = (
    ("H200", {"bf16": 989e12, "fp32": 67e12}, "H200 SXM"),
    ("H100 PCIe", {"bf16": 756e12, "fp32": 51e12}, "H100 PCIe"),
    ("H100", {"bf16": 989e12, "fp32": 67e12}, "H100 SXM"),
    ("A100", {"bf16": 312e12, "fp32": 19.5e12}, "A100"),
    ("L40S", {"bf16": 362e12, "fp32": 91.6e12}, "L40S"),
    ("L4", {"bf16": 121e12, "fp32": 30.3e12}, "L4"),
    ("A10", {"bf16": 125e12, "fp32": 31.2e12}, "A10"),
    ("RTX 4090", {"bf16": 165e12, "fp32": 82.6e12}, "RTX 4090"),
    ("V100", {"bf16": 125e12, "fp32": 15.7e12}, "V100 (fp16 tensor cores for bf16)"),
    ("T4", {"bf16": 65e12, "fp32": 8.1e12}, "T4 (fp16 tensor cores for bf16)"),
)


@dataclass(frozen=True)
class ModelShape:
    """What the FLOP count needs of a decoder: layers, width, MLP width, vocabulary."""

    n_layer: int
    d_model: int
    d_ff: int
    vocab: int

    @property
    def block_params(self) -> int:
        """Weights of the block matmuls: ``L·(4·d² + 2·d·f)``."""
        return self.n_layer * (4 * self.d_model * self.d_model + 2 * self.d_model * self.d_ff)

    @classmethod
    def of(cls, config: Any) -> ModelShape:
        """From a transformers GPT-2-like config (``n_layer``/``num_hidden_layers``, ...)."""
        d = int(getattr(config, "n_embd", None) or config.hidden_size)
        f = getattr(config, "n_inner", None) or getattr(config, "intermediate_size", None) or 4 * d
        return cls(n_layer=int(getattr(config, "n_layer", None) or config.num_hidden_layers), d_model=d,
                   d_ff=int(f), vocab=int(config.vocab_size))


def forward_flops(shape: ModelShape, seq_lens: Sequence[int], head_tokens: int, *, head: bool = True,
                  shared: Sequence[int] = ()) -> float:
    """One causal forward over sequences of ``seq_lens`` tokens, the LM head (``2·d·V`` each) on
    ``head_tokens`` positions in all (``head=False``: a trunk without head, e.g. a critic).
    ``shared``: the prompt lengths of rows whose prompt another row already ran (not run again:
    their block matmuls and the prompt's own causal attention are left out)."""
    tokens = sum(seq_lens) - sum(shared)
    lm = 2 * shape.d_model * shape.vocab * head_tokens if head else 0
    return float(2 * shape.block_params * tokens + attention_flops(shape, seq_lens, shared) + lm)


def attention_flops(shape: ModelShape, seq_lens: Sequence[int], shared: Sequence[int] = ()) -> float:
    """The attention scores and weighted sums of :func:`forward_flops` (``shared`` as there)."""
    attn = sum(2 * shape.n_layer * shape.d_model * t * (t + 1) for t in seq_lens)
    return float(attn - sum(2 * shape.n_layer * shape.d_model * p * (p + 1) for p in shared))


@dataclass(frozen=True)
class BatchTokens:
    """Real (unpadded) lengths of one rollout batch, per sequence. ``shared``: the prompt lengths
    of the rows whose prompt an earlier row of the batch has too (see :func:`shared_prompts`)."""

    prompt: tuple[int, ...]
    response: tuple[int, ...]
    shared: tuple[int, ...] = ()

    @property
    def seq_lens(self) -> list[int]:
        return [p + r for p, r in zip(self.prompt, self.response, strict=True)]

    @property
    def fed_lens(self) -> list[int]:
        """Tokens of each sequence the policy's trunk runs: all but the last, whose logits predict
        nothing (the decode never feeds it; the forwards over finished sequences leave it out)."""
        return [max(n - 1, 0) for n in self.seq_lens]

    @property
    def response_tokens(self) -> int:
        return sum(self.response)

    @property
    def total_tokens(self) -> int:
        return sum(self.prompt) + sum(self.response)


def shared_prompts(input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int) -> tuple[int, ...]:
    """Real prompt lengths of the rows whose prompt the lean forward does not run again
    (:func:`rlhfkit.fastgpt2.shared_prefix`: every row but the first of each distinct prompt)."""
    from rlhfkit import fastgpt2

    share = fastgpt2.shared_prefix(input_ids, attention_mask, prompt_len)
    if share is None:
        return ()
    again = torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    again[share[0]] = False
    return tuple(int(n) for n in attention_mask[again, :prompt_len].sum(1).tolist())


def stage_flops(policy: ModelShape, batch: BatchTokens, *, ppo_epochs: int, separate_critic: bool,
                scores_from_sampling: bool, reward_flops_per_token: float = 0.0, share_nograd: bool = False,
                share_update: bool = False, update_forward_from_sampling: bool = False) -> dict[str, float]:
    """Model FLOPs of each stage of one PPO step (see the module docstring for what each counts).
    ``share_nograd`` (generation, scoring) / ``share_update``: those forwards run a prompt rows share
    once. ``update_forward_from_sampling``: the update's first policy forward (its only one with one
    epoch) took its matmul outputs from the decode (``ppo.update_activations``), so of that forward
    the update counts the attention only, which it computes again; later epochs count in full."""
    seq = batch.fed_lens
    resp = batch.response_tokens

    def fwds(shared: Sequence[int]) -> tuple[float, float]:
        return (forward_flops(policy, seq, resp, shared=shared),
                forward_flops(policy, seq, 0, head=False, shared=shared) if separate_critic else 0.0)

    policy_fwd, critic_fwd = fwds(batch.shared if share_nograd else ())
    scoring = (0.0 if scores_from_sampling else policy_fwd) + critic_fwd + policy_fwd  # + reference
    scoring += reward_flops_per_token * (batch.total_tokens - (sum(batch.shared) if share_nograd else 0))
    update_shared = batch.shared if share_update else ()
    update_fwds = fwds(update_shared)
    update = 3.0 * ppo_epochs * sum(update_fwds)
    if update_forward_from_sampling:
        update -= update_fwds[0] - attention_flops(policy, seq, update_shared)
    return {
        "generation": policy_fwd,  # the decoder's prefill shares as scoring's forwards do
        "scoring": scoring,
        "advantages": float(ADVANTAGE_FLOPS_PER_TOKEN * resp),
        "update": update,
    }


def time_per_token_ms(stage: str, seconds: float, batch: BatchTokens) -> float | None:
    tokens = batch.response_tokens if stage == "generation" else batch.total_tokens
    return 1000.0 * seconds / tokens if tokens > 0 else None


# ----------------------------------------------------------------------------- peak FLOP/s

@dataclass(frozen=True)
class Peak:
    """The FLOP/s that MFU divides by, and where the number comes from."""

    flops: float | None  # None: unknown device, no MFU is reported
    source: str
    dtype: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cuda_peak(device_name: str, dtype: str) -> Peak:
    for needle, by_dtype, label in CUDA_PEAKS:
        if needle.lower() in device_name.lower():
            value = by_dtype.get(dtype)
            return Peak(value, f"{label} {dtype} dense {value / 1e12:g} TFLOP/s (datasheet)"
                        if value else f"{label}: no {dtype} figure", dtype)
    return Peak(None, f"no datasheet peak known for {device_name!r}: MFU not reported", dtype)


def cpu_peak_probe(*, rows: int = 512, width: int = 1024, repeats: int = 5) -> Peak:
    """Best FLOP/s of ``(rows x width) @ (width x width)`` fp32 matmuls through the engine's kernels
    (``fastgpt2._linear``: MKL addmm or the oneDNN matmul, as ``prefer_onednn`` picks), with the thread
    count the run set. Takes a fraction of a second."""
    from rlhfkit import fastgpt2

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, width, generator=gen)
    w = torch.randn(width, width, generator=gen)
    b = torch.zeros(width)
    flops = 2.0 * rows * width * width
    best: dict[str, float] = {}

    def timed(name: str, fn: Any) -> None:
        for _ in range(2):
            fn()  # warm-up: thread pool, kernel choice, caches
        t = min(_seconds(fn) for _ in range(repeats))
        best[name] = flops / t

    timed("addmm", lambda: torch.addmm(b, x, w))
    onednn = fastgpt2._onednn_linear
    if onednn is not None:
        wt = w.t()
        with torch.no_grad():
            timed("onednn", lambda: onednn(x, wt, b, "none", [], ""))
    kernel, value = max(best.items(), key=lambda kv: kv[1])
    return Peak(value, f"CPU matmul probe ({rows}x{width}x{width} fp32, {torch.get_num_threads()} threads, "
                       f"{kernel}): {value / 1e9:.1f} GFLOP/s measured", "fp32")


def _seconds(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def device_peak(device: torch.device, dtype: str) -> Peak:
    if device.type == "cuda":
        return cuda_peak(torch.cuda.get_device_name(device), dtype)
    return cpu_peak_probe()


# ----------------------------------------------------------------------------- per step

def perf_metrics(flops: Mapping[str, float], seconds: Mapping[str, float], batch: BatchTokens,
                 peak: Peak) -> dict[str, float]:
    """``perf/flops/<stage>``, ``perf/time_per_token_ms/<stage>`` and (with a known peak)
    ``perf/mfu/<stage>`` for the stages that ran this step."""
    from rlhfkit.metrics import perf_name

    out: dict[str, float] = {}
    for stage in PERF_STAGES:
        s = seconds.get(stage)
        if s is None or s <= 0:
            continue
        f = flops.get(stage, 0.0)
        out[perf_name("flops", stage)] = f
        tpt = time_per_token_ms(stage, s, batch)
        if tpt is not None:
            out[perf_name("time_per_token_ms", stage)] = tpt
        if peak.flops:
            out[perf_name("mfu", stage)] = f / (s * peak.flops)
    return out


def run_peak(device: torch.device, *, dtype: str, threads: int | None = None) -> Peak:
    """The peak a run's MFU divides by, taken before its first step (with the run's thread count:
    the probe must see the same thread pool the stages will)."""
    if threads:
        torch.set_num_threads(threads)
    return device_peak(device, dtype if device.type == "cuda" else "fp32")


@dataclass(frozen=True)
class PerfCounter:
    """What a run's FLOP count needs, fixed at set-up; :meth:`step` turns one step's masks and stage
    timings into its ``perf/*`` metrics."""

    policy: ModelShape
    ppo_epochs: int
    separate_critic: bool
    peak: Peak
    reward_flops_per_token: float = 0.0
    share_nograd: bool = False  # generation and scoring run a shared prompt once (the lean path)
    share_update: bool = False  # so does the update's

    def step(self, seconds: Mapping[str, float], input_ids: torch.Tensor, attention_mask: torch.Tensor,
             prompt_len: int, response_mask: torch.Tensor, scores_from_sampling: bool,
             update_forward_from_sampling: bool = False) -> dict[str, float]:
        shared = shared_prompts(input_ids, attention_mask, prompt_len) if self.share_nograd or self.share_update \
            else ()
        batch = BatchTokens(prompt=tuple(int(n) for n in attention_mask[:, :prompt_len].sum(1).tolist()),
                            response=tuple(int(n) for n in response_mask.sum(1).tolist()), shared=shared)
        flops = stage_flops(self.policy, batch, ppo_epochs=self.ppo_epochs, separate_critic=self.separate_critic,
                            scores_from_sampling=scores_from_sampling,
                            reward_flops_per_token=self.reward_flops_per_token, share_nograd=self.share_nograd,
                            share_update=self.share_update, update_forward_from_sampling=update_forward_from_sampling)
        return perf_metrics(flops, seconds, batch, self.peak)
