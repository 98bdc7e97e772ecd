"""Analytic memory model of one PPO-for-RLHF step: bytes per model, per component, per stage.

What a step holds, following the trainer (``rlhfkit.trainer``) stage by stage:

* **Persistent** (every stage): weights of the policy (+ value head or separate critic; neither for
  the critic-free algorithms, which also run no value pass), the frozen
  reference, a learned reward model; the policy's gradients (``zero_grad(set_to_none=True)`` runs
  at the *start* of each minibatch, so the last minibatch's gradients live on into the next step)
  and AdamW's two moments (fp32, or 1 byte each for 8-bit AdamW). On a CPU where oneDNN serves
  decoding, one more copy of the policy's block weights and LM head, packed for the decode steps
  (``policy_packed``: :func:`rlhfkit.fastgpt2.packed_decode_bytes`).
* **generation**: the KV cache, ``2 * L * B * T * D`` elements, plus the per-token ``(B, V)``
  logits, filtered logits and probabilities. Where the update's forward builds on the decode
  (``ppo.update_activations``), the decode also keeps each block's matmul outputs, ``9 * L * B * T * D``
  elements, and the ``(B, R, V)`` logits, held until the update, where they are the activations its
  forward saves (no more than a forward of its own would save). They are written into their final
  layout as they come; a decode that stops at EOS before R tokens cuts each of them down with one
  copy, one at a time, so it holds the largest (one block's ``(B * T, 4D)`` or the logits) twice.
* **scoring**: no-grad forwards of the whole rollout batch (policy, reference, critic, reward):
  the residual stream and one MLP block's intermediates at a time, plus the ``(B, R, V)`` logits
  and their log-softmax.
* **update**: per micro-batch ``b``, the activations autograd saves for the backward pass, the
  logits head (``(b, R, V)`` logits, log-softmax, softmax for the entropy) and the gradient
  buffers of the backward pass; then AdamW's temporaries.

Activations follow Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
Transformer Models", eq. 1: ``s*b*h*(34 + 5*a*s/h)`` bytes per layer in 16-bit), re-counted for
what autograd actually saves in the two GPT-2 forwards the engine runs:

* the engine's lean forward (:mod:`rlhfkit.fastgpt2`, used unless gradient checkpointing or
  dropout is on): LN1 input and output, the fused QKV output (q, k, v are views of it), the SDPA
  output (already in (b, T, H, hs) layout, so the merged heads are a view), LN2 input and output,
  the c_fc output and the fused GELU output (4 each) = 16 ``sbh`` elements;
* transformers' ``GPT2Block`` (gradient checkpointing, dropout): the same plus the merged-heads
  copy and ``gelu_new`` as a Python tanh formula, which saves its ``tanh``, ``0.5*x`` and
  ``1+tanh`` 4h-wide tensors = 30 ``sbh``;
* SDPA (flash / memory-efficient kernels) keeps a ``(b, H, T)`` log-sum-exp instead of the
  ``(b, H, T, T)`` softmax that Korthikanti's ``5as/h`` term counts (``attention="eager"`` adds it);
  dropout masks (1 byte) only when dropout is on (``Plan.dropout``: never in the engine, which turns
  a checkpoint's 0.1 off; a what-if for other trainers).

``tests/unit/test_memopt_model.py`` checks these counts against the storages autograd really saves
(``torch.autograd.graph.saved_tensors_hooks``), and ``benchmarks/bench_memopt.py`` /
``scripts/gpu_check.sh`` compare the whole prediction with the measured peak.
With gradient checkpointing (transformers' non-reentrant ``torch.utils.checkpoint``) only each
block's input is kept, and one block's activations are rebuilt at a time during the backward pass.

The update's peak is the largest of its phases, not the sum of everything it ever holds
(:func:`_update_peak`): the LM head (trunk activations, ``logp`` and ``p``, and two more
``(b, R, V)`` tensors at its worst moment; no parameter gradients yet when a minibatch is one micro-batch, since
``zero_grad(set_to_none=True)`` runs at its start), the checkpoint recompute of block 0 (every other
gradient present), the tied embedding's gradient, and the optimizer step.

All sizes are bytes; reports print MiB (2**20 bytes) and budgets are GiB (2**30 bytes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

MiB = 2**20
GiB = 2**30

Device = Literal["cpu", "cuda"]
Optimizer = Literal["adamw", "adamw_8bit"]
Attention = Literal["sdpa", "eager"]
Activation = Literal["gelu_new", "gelu_fused"]

# Allocations outside the tensors counted here. On CUDA: cuBLAS workspaces, which PyTorch takes from
# its caching allocator (so they show in max_memory_allocated), one per (thread, stream): ~33 MiB
# for the training thread's first matmul and another ~33 MiB once the autograd engine's own thread
# runs a backward matmul (scripts/cuda_overhead_probe.py on an H200, torch 2.11: 32.8 then 68.8 MiB),
# with the default CUBLAS_WORKSPACE_CONFIG; cuBLASLt, autocast and SDPA add ~3 MiB. On CPU: anonymous memory outside
# the tensors (OpenMP scratch space, allocator slack, the modules' Python objects), per process and
# independent of batch size: 12 MiB, fitted to the anonymous RSS growth of the three calibration
# shapes of tests/unit/test_memopt_model.py (2026-11-27). Library code paged in during a run is
# file-backed and excluded from the measurement (rlhfkit.memopt.measurement), so it is not here.
FRAMEWORK_OVERHEAD: dict[str, int] = {"cuda": 65 * MiB, "cpu": 12 * MiB}
# oneDNN, which runs the engine's matmuls on a CPU that prefers it (rlhfkit.fastgpt2): ~0.58 MiB of
# anonymous memory (generated code) per matmul shape, kept for the process's life — 5 weight
# shapes (qkv, attention out, MLP in, MLP out, LM head) per row count, and one step sees ~5 row
# counts (decode, prefill, scoring and the update's forward, evaluation's decode and prefill), plus
# the 5 shapes of the update's input gradients. RssAnon of a bare process,
# 2026-11-27. A long run with varying lengths adds up to fastgpt2.ONEDNN_ROW_COUNTS row counts.
ONEDNN_PER_SHAPE = 58 * MiB // 100


@dataclass(frozen=True)
class ModelShape:
    """A GPT-2 shape: layers, width, heads, vocabulary, positions."""

    n_layer: int
    n_embd: int
    n_head: int
    vocab_size: int
    n_positions: int = 1024

    def params(self) -> int:
        """Exact parameter count of a GPT2LMHeadModel (lm_head tied to the token embedding)."""
        L, D = self.n_layer, self.n_embd
        per_layer = 12 * D * D + 13 * D  # c_attn 3D^2+3D, c_proj D^2+D, c_fc 4D^2+4D, c_proj 4D^2+D, 2 LN 4D
        return L * per_layer + self.vocab_size * D + self.n_positions * D + 2 * D

    def trunk_params(self) -> int:
        """A GPT2Model trunk (the separate critic): same as the LM, the head being tied."""
        return self.params()


@dataclass(frozen=True)
class Plan:
    """Everything that decides a PPO step's memory; built from a RunConfig by :func:`plan_from_config`."""

    shape: ModelShape
    batch_size: int  # rollout prompts per step; each brings samples_per_prompt sequences
    mini_batch_size: int
    grad_accum_steps: int
    prompt_len: int  # P, longest left-padded prompt in tokens
    response_len: int  # R, max_new_tokens
    stop_at_eos: bool = True  # generation.stop_at_eos: a decode may stop before R (its kept outputs are then cut)
    generation_batch: int | None = None  # prompts per generation pass (None = the whole batch)
    eval_batch: int = 16
    eval_prompts: int = 0  # held-out prompts per evaluation (0: none counted)
    dtype: Literal["fp32", "bf16"] = "fp32"  # bf16 = autocast: fp32 weights, bf16 matmul activations
    gradient_checkpointing: bool = False
    shared_value_trunk: bool = True
    reward_shape: ModelShape | None = None  # a learned reward model; None for lexicon/length rewards
    reference_on_device: bool = True
    reward_on_device: bool = True
    optimizer: Optimizer = "adamw"
    fused_optimizer: bool = True  # torch's fused AdamW (the engine's on CUDA and on CPU with torch >= 2.4)
    device: Device = "cpu"
    attention: Attention = "sdpa"
    activation: Activation = "gelu_new"
    dropout: bool = False
    lean_forward: bool = True  # the engine's rlhfkit.fastgpt2 path exists (used without ckpt/dropout)
    scores_from_sampling: bool = False  # config.scores_while_sampling: no policy forward in scoring
    update_from_sampling: bool = False  # config.update_from_sampling: the decode keeps its matmul outputs (fast_path)
    samples_per_prompt: int = 1  # G: responses sampled per prompt (the group of grpo / rloo)
    critic: bool = True  # a value head (and, unshared, a critic trunk): PPO; False for the critic-free family
    # Measured on a run of this config (None: not measured, every response counted at R). Runs stop at
    # EOS: the tokens a step yields are sequences x the mean response, and generation and the padded
    # scoring/update run as long as the step's longest response. Memory still plans for R.
    response_mean: float | None = None  # mean generated tokens per response (metric response/length)
    response_longest: float | None = None  # mean over steps of the longest response (response/length_max)

    @property
    def cuda_autocast(self) -> bool:
        """bf16 under CUDA autocast: bf16 matmul activations and bf16 copies of trainable weights
        (CPU runs stay fp32)."""
        return self.dtype == "bf16" and self.device == "cuda"

    @property
    def fast_path(self) -> bool:
        """True when the engine runs its lean GPT-2 forward (``rlhfkit.fastgpt2.supports``)."""
        return self.lean_forward and not self.gradient_checkpointing and not self.dropout

    @property
    def sequences(self) -> int:
        """B: sequences per step, ``batch_size`` prompts x ``samples_per_prompt``."""
        return self.batch_size * self.samples_per_prompt

    @property
    def micro_batch(self) -> int:
        """Sequences per micro-batch (a minibatch counts prompts, each with its G responses)."""
        return self.mini_batch_size * self.samples_per_prompt // self.grad_accum_steps

    @property
    def value_trunks(self) -> int:
        """Trunks a forward with values runs: 2 with a separate critic, else 1 (the policy's)."""
        return 2 if self.critic and not self.shared_value_trunk else 1

    @property
    def seq_len(self) -> int:
        return self.prompt_len + self.response_len

    @property
    def generated_len(self) -> float:
        """Tokens each generation pass runs for: the measured longest response, else R."""
        return min(float(self.response_len), self.response_longest or float(self.response_len))

    @property
    def tokens_per_step(self) -> float:
        """Generated tokens a step yields: sequences x the measured mean response, else x R."""
        return self.sequences * min(float(self.response_len), self.response_mean or float(self.response_len))

    @property
    def gen_batch(self) -> int:
        """Sequences per generation pass: a chunk of prompts, each repeated G times."""
        return min(self.generation_batch or self.batch_size, self.batch_size) * self.samples_per_prompt

    def decode_rows(self) -> set[int]:
        """Row counts the run's decodes take: the generation chunks (the last one may be shorter)
        and the evaluation's."""
        G = self.samples_per_prompt
        rows = {n * G for n in _chunk_sizes(self.batch_size, self.generation_batch or self.batch_size)}
        return rows | _chunk_sizes(self.eval_prompts, self.eval_batch)

    def with_(self, **changes: Any) -> Plan:
        return replace(self, **changes)


def _chunk_sizes(n: int, chunk: int) -> set[int]:
    """Sizes of the chunks ``n`` items are split into, ``chunk`` at a time (the last may be shorter)."""
    return {size for size in (min(chunk, n), n % chunk) if size}


@dataclass
class MemoryEstimate:
    """Predicted bytes: per model and component, per stage, and the step's peak."""

    plan: Plan
    models: dict[str, dict[str, int]] = field(default_factory=dict)  # model -> component -> bytes
    stages: dict[str, dict[str, int]] = field(default_factory=dict)  # stage -> transient component -> bytes
    persistent: int = 0
    overhead: int = 0
    update_phase: str = ""  # which phase of the update holds its peak (see _update_peak)

    def stage_peak(self, stage: str) -> int:
        return self.persistent + self.overhead + sum(self.stages[stage].values())

    @property
    def peak_stage(self) -> str:
        return max(self.stages, key=self.stage_peak)

    @property
    def peak(self) -> int:
        return self.stage_peak(self.peak_stage)

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": _plan_dict(self.plan),
            "models_mb": {m: {k: round(v / MiB, 2) for k, v in c.items()} for m, c in self.models.items()},
            "stages_mb": {s: {k: round(v / MiB, 2) for k, v in c.items()} for s, c in self.stages.items()},
            "stage_peak_mb": {s: round(self.stage_peak(s) / MiB, 2) for s in self.stages},
            "persistent_mb": round(self.persistent / MiB, 2),
            "overhead_mb": round(self.overhead / MiB, 2),
            "peak_mb": round(self.peak / MiB, 2),
            "peak_stage": self.peak_stage,
            "update_phase": self.update_phase,
        }


def _plan_dict(plan: Plan) -> dict[str, Any]:
    return asdict(plan)


# ----------------------------------------------------------------------------- building blocks

def _act_bytes(plan: Plan) -> int:
    """Bytes of a matmul activation: bf16 under CUDA autocast, fp32 otherwise (CPU runs stay fp32)."""
    return 2 if plan.cuda_autocast else 4


def layer_saved_bytes(plan: Plan, b: int, T: int, shape: ModelShape | None = None, *,
                      lean: bool | None = None) -> int:
    """Bytes autograd saves for one GPT-2 block's backward (see the module docstring).

    ``lean``: the engine's own forward (:mod:`rlhfkit.fastgpt2`: fused GELU, one SDPA call, the
    attention output already in (b, T, H, hs) layout) — 16 ``sbh``; otherwise transformers' block
    (``gelu_new`` in Python) — 30 ``sbh``. Default: whichever the plan's engine runs.
    """
    s = shape or plan.shape
    lean = plan.fast_path if lean is None else lean
    a = _act_bytes(plan)
    sbh = b * T * s.n_embd
    resid = 4  # the residual stream stays fp32 under autocast (LayerNorm runs in fp32)
    # LN1 in (fp32), LN1 out, fused QKV (q, k, v are views of it), attention output; transformers'
    # path also keeps the merged-heads copy it feeds to c_proj
    attn = 1 * sbh * resid + (5 if lean else 6) * sbh * a
    attn += b * s.n_head * T * 4  # SDPA log-sum-exp (fp32)
    if plan.attention == "eager":
        attn += 2 * b * s.n_head * T * T * a  # softmax output and the attn-weights @ v input
    mlp_wide = 4 * sbh * a
    gelu_new_python = plan.activation == "gelu_new" and not lean
    mlp = 1 * sbh * resid + 1 * sbh * a + (5 if gelu_new_python else 2) * mlp_wide
    if plan.dropout:
        attn += sbh + (b * s.n_head * T * T if plan.attention == "eager" else 0)
        mlp += sbh
    return attn + mlp


def head_saved_bytes(plan: Plan, b: int, T: int, R: int, V: int, D: int, entropy: bool = True) -> int:
    """Saved for backward by the LM head on the response positions: the final hidden state (whole
    (b, T, D) storage: the response slice is a view), then with the entropy bonus one fp32
    log-softmax and its exp (``rlhfkit.fastgpt2.logprobs_and_entropy``: the logits themselves are
    not kept), without it the fp32 log-softmax alone."""
    brv = b * R * V
    return b * T * D * 4 + (2 if entropy else 1) * brv * 4


def kv_cache_bytes(plan: Plan, B: int, T: int, shape: ModelShape | None = None) -> int:
    s = shape or plan.shape
    return 2 * s.n_layer * B * T * s.n_embd * _act_bytes(plan)


def nograd_forward_bytes(plan: Plan, B: int, T: int, R: int, shape: ModelShape, logits: bool = True) -> int:
    """Peak transient of a no-grad forward of the whole batch.

    In the trunk: the residual stream and one MLP block's intermediates (the c_fc output and its
    activation where oneDNN fuses the two on the lean path, plus a third temporary for transformers'
    ``gelu_new`` or for the lean path on the CPU's BLAS, where the activation is a separate kernel). On the lean
    path (``rlhfkit.fastgpt2``) the LM head's moment comes after the trunk's is gone, so the peak is
    the larger of the two (traced with ``torch.profiler`` on CPU, ``tests/unit/test_memopt_model.py``):
    the final hidden state, the response rows' copy, the logits and their log-softmax (and, under
    CUDA autocast, the logits' fp32 copy that ``log_softmax`` makes first: 10 bytes per logit). On
    transformers' forward the logits and log-softmax are counted on top of the trunk's moment, as
    calibrated on an H100 in November 2026 (that engine ran transformers' forward; the recording is
    in the git history of ``benchmarks/results/gpu_check.json``, which now holds a lean-path run).
    """
    a = _act_bytes(plan)
    btd = B * T * shape.n_embd
    lean = plan.lean_forward and not plan.dropout
    trunk = 3 * btd * 4 + (2 if lean and _onednn_cpu(plan) else 3) * 4 * btd * a
    if plan.attention == "eager":
        trunk += 2 * B * shape.n_head * T * T * a
    if not logits:
        return trunk
    if not lean:
        return trunk + 2 * B * R * shape.vocab_size * 4
    # the logits in the matmul's dtype and their log-softmax in fp32; under CUDA autocast
    # log_softmax first casts the bf16 logits to an fp32 copy, live beside both
    upcast = 4 if plan.cuda_autocast else 0
    head = btd * 4 + B * R * shape.n_embd * 4 + B * R * shape.vocab_size * (a + 4 + upcast)
    return max(trunk, head)


def _head_kernel(plan: Plan) -> bool:
    """The update's log-softmax and entropy run in the compiled kernel (fp32 CPU runs where
    :func:`rlhfkit.fastgpt2.kernels_in_use`): one pass per row, no ``p * logp`` product beside the
    logits."""
    if plan.device != "cpu" or plan.cuda_autocast:
        return False
    from rlhfkit.fastgpt2 import kernels_in_use

    return kernels_in_use()


def _onednn_cpu(plan: Plan) -> bool:
    """The engine's CPU matmuls run on oneDNN (on a CPU that prefers it, rlhfkit.fastgpt2): the lean
    path's no-grad c_fc matmul then carries its activation, and the LM head's weight gradient
    comes out of ``_OnednnLinear`` contiguous, so autograd adds the tied embedding's gradient into
    it in place (addmm's comes out as a transposed view, and the sum is a third (V, D) tensor)."""
    if plan.device != "cpu":
        return False
    from rlhfkit.fastgpt2 import onednn_in_use

    return onednn_in_use()


def _packed_decode_bytes(plan: Plan) -> int:
    """Packed copies of the policy's matmul weights that decoding keeps as long as the policy lives
    (rlhfkit.fastgpt2.packed_decode_weight: on a CPU where oneDNN serves the decode). One copy per
    weight, packed for the row count of the last decode that packed: the largest of the run's."""
    if plan.device != "cpu":
        return 0
    from rlhfkit.fastgpt2 import packed_decode_bytes

    s = plan.shape
    return max(packed_decode_bytes(s.n_layer, s.n_embd, s.vocab_size, rows) for rows in plan.decode_rows())


def _skinny_rows() -> int:
    """Row counts up to which oneDNN serves decoding's matmuls where it serves them alone (0: nowhere)."""
    from rlhfkit.fastgpt2 import skinny_rows

    return skinny_rows()


def _optimizer_state_bytes(plan: Plan, n_trainable: int) -> int:
    if plan.optimizer == "adamw_8bit":
        # bitsandbytes AdamW8bit: two uint8 moments and one fp32 absmax per 256-element block each
        # (tensors under 4096 elements, the biases and LayerNorms, keep fp32 moments: < 0.1% of GPT-2)
        return 2 * n_trainable + 2 * 4 * -(-n_trainable // 256)
    return 8 * n_trainable


def _optimizer_step_bytes(plan: Plan, n_trainable: int, largest_param: int) -> int:
    """AdamW temporaries: none for the fused kernel (and bitsandbytes' 8-bit one), which update
    each tensor in place; the foreach path (torch's CUDA default) holds a sqrt(v) copy of every
    parameter; the single-tensor path (CPU default) one parameter's worth at a time."""
    if plan.fused_optimizer or plan.optimizer == "adamw_8bit":
        return 0
    if plan.device == "cuda":
        return 4 * n_trainable
    return 2 * 4 * largest_param


def _update_peak(plan: Plan, n_trainable: int) -> tuple[dict[str, int], str]:
    """Transient bytes of the update stage at its peak, and in which phase it falls.

    A minibatch's memory goes through phases that do not overlap, so the stage's peak is the
    largest of them, not their sum (traced allocation by allocation with ``torch.profiler`` on
    CPU, one micro-batch of the engine's update, plain and checkpointed):

    * **head** — after the forward the trunk's saved activations and the head's saved ``logp`` and
      ``p`` are live. Its worst moment is the entropy's sum in the forward, where the logits and
      the ``p * logp`` product are live too (the hand-written backward needs less: one fp32
      gradient, plus its bf16 copy under autocast); where the compiled kernel computes them
      (:func:`_head_kernel`) only the logits, then that gradient. ``zero_grad(set_to_none=True)`` runs at
      each minibatch start, so with one micro-batch per minibatch no parameter gradient exists yet
      (the ``gradients_absent`` part is negative: persistent memory counts them).
    * A GRPO group's rows run their shared prompt once on the lean path: ``ceil(b / G) x P + b x R``
      token rows per layer, plus the keys and values gathered back to (b, T) for attention and one
      more (n, D) copy of the attention output (traced with ``saved_tensors_hooks``).
    * **trunk** — with gradient checkpointing, the backward re-runs one transformers block at a
      time: at block 0 every other layer's gradient exists (of block 0's own, only its MLP output
      projection's: the peak is its activation's backward), the block inputs above it are freed,
      and that block's full activations (30 ``sbh``) plus one MLP's input gradients are live.
      Without checkpointing the trunk's backward starts with every activation and only the LM head's
      gradient.
    * **embedding** — last, the token embedding's dense gradient (V, D) is added to the tied LM
      head's, every gradient present (out of place, a third (V, D) tensor, unless the head's
      gradient is contiguous: :func:`_onednn_cpu`).
    * **optimizer** — AdamW's temporaries (none for the fused kernel the engine uses).
    """
    s = plan.shape
    b, T, R, V, D = plan.micro_batch, plan.seq_len, plan.response_len, s.vocab_size, s.n_embd
    trunks = plan.value_trunks  # 2 with the critic's own trunk
    grads = 4 * n_trainable
    absent = -grads if plan.grad_accum_steps == 1 else 0  # later micro-batches accumulate into them
    autocast = 2 * n_trainable if plan.cuda_autocast else 0  # bf16 weight copies
    G = plan.samples_per_prompt
    if plan.fast_path and G > 1:
        # a group's prompt runs once (rlhfkit.fastgpt2.hidden_states, prefix_len): n token rows per
        # layer instead of b x T; on top, each row's keys and values gathered to (b, T) for
        # attention, and the two attention calls' outputs joined into one more (n, D) copy
        n = -(-b // G) * plan.prompt_len + b * R
        layer = layer_saved_bytes(plan, 1, n) + (2 * b * T + n) * D * _act_bytes(plan)
    else:
        n, layer = b * T, layer_saved_bytes(plan, b, T)
    mlp_grads = 2 * 4 * n * D * _act_bytes(plan)  # one MLP block's (n, 4D) input gradients
    # with a non-reentrant checkpoint only each block's input is kept
    acts = trunks * s.n_layer * (b * T * D * 4 if plan.gradient_checkpointing else layer)
    head = head_saved_bytes(plan, b, T, R, V, D)
    phases: dict[str, dict[str, int]] = {
        "head": {"activations": acts, "logits_head": head,
                 "backward": b * R * V * (4 if _head_kernel(plan) else _act_bytes(plan) + 4) + autocast,
                 "gradients_absent": absent},
        "embedding": {"activations": 0, "logits_head": 0, "backward": (1 if _onednn_cpu(plan) else 2) * V * D * 4,
                      "gradients_absent": 0},
        "optimizer": {"activations": 0, "logits_head": 0,
                      "backward": _optimizer_step_bytes(plan, n_trainable, V * D), "gradients_absent": 0},
    }
    if plan.gradient_checkpointing:
        block = b * T * D * 4 + layer_saved_bytes(plan, b, T, lean=False)  # block 0: input + recomputed
        # at block 0's activation backward only its MLP output projection has its gradient yet
        block0_grads = 4 * (8 * D * D + 12 * D)  # qkv, attention projection, fc, both layer norms
        phases["trunk"] = {"activations": trunks * block, "logits_head": 0, "backward": mlp_grads + autocast,
                           "gradients_absent": -block0_grads}
    else:
        phases["trunk"] = {"activations": acts, "logits_head": 0, "backward": mlp_grads + autocast + V * D * 4,
                           "gradients_absent": absent}
    name = max(phases, key=lambda k: sum(phases[k].values()))
    return dict(phases[name]), name


# ----------------------------------------------------------------------------- the estimate

def estimate_memory(plan: Plan) -> MemoryEstimate:
    """Predict the bytes of one PPO step under ``plan`` (device memory on CUDA, RSS growth on CPU)."""
    s = plan.shape
    B, P, R, T, V, D = plan.sequences, plan.prompt_len, plan.response_len, plan.seq_len, s.vocab_size, s.n_embd
    n_policy = s.params()
    n_value = (D + 1) + (0 if plan.value_trunks == 1 else s.trunk_params())
    if not plan.critic:  # critic-free: no value head, no critic trunk, no value pass
        n_value = 0
    n_trainable = n_policy + n_value
    est = MemoryEstimate(plan=plan)
    est.models["policy"] = {"weights": 4 * n_policy, "grads": 4 * n_policy,
                            "optimizer": _optimizer_state_bytes(plan, n_policy)}
    packed = _packed_decode_bytes(plan) if plan.lean_forward and not plan.dropout else 0
    if packed:  # the blocks' matmul weights and the LM head again, packed for decoding
        est.models["policy_packed"] = {"weights": packed}
    est.models["value"] = {"weights": 4 * n_value, "grads": 4 * n_value,
                           "optimizer": _optimizer_state_bytes(plan, n_value)}
    est.models["reference"] = {"weights": 4 * n_policy if plan.reference_on_device else 0}
    rs = plan.reward_shape
    est.models["reward"] = {"weights": 4 * (rs.params() + rs.n_embd + 1) if rs and plan.reward_on_device else 0}
    est.persistent = sum(sum(c.values()) for c in est.models.values())
    est.overhead = FRAMEWORK_OVERHEAD[plan.device]
    if plan.lean_forward and _onednn_cpu(plan):  # its generated code per matmul shape
        est.overhead += ONEDNN_PER_SHAPE * (5 * 5 + 5)
    elif plan.lean_forward and plan.device == "cpu" and min(plan.decode_rows()) <= _skinny_rows():
        est.overhead += ONEDNN_PER_SHAPE * 5 * 2  # oneDNN serves decoding alone: its and evaluation's shapes

    # generation: KV cache for the whole response, growing by torch.cat (one layer's copy extra)
    g = plan.gen_batch
    kv = kv_cache_bytes(plan, g, T)
    if plan.lean_forward and not plan.dropout:
        kv = 2 * s.n_layer * g * T * D * 4  # rlhfkit.fastgpt2.Decoder: static cache in the weights' dtype
    else:
        kv += kv // max(1, s.n_layer)  # transformers' DynamicCache grows by torch.cat: one layer's copy extra
    est.stages["generation"] = {
        "kv_cache": kv,
        "prefill": nograd_forward_bytes(plan, g, P, 0, s, logits=False),
        "sampling": 4 * g * V * 4,
    }
    # old log-probs read off sampling on the lean sampler with the shared trunk: the decode steps'
    # hidden states (a list, then stacked: twice g x R x D) give the values; no scoring forward
    from_sampling = plan.scores_from_sampling and plan.lean_forward and plan.shared_value_trunk
    if from_sampling:
        est.stages["generation"]["scores"] = 2 * g * R * D * 4
    # the decode keeps them where the update's forward can build on them: the lean path, in training too
    kept = 4 * (9 * s.n_layer * B * T * D + B * R * V) if plan.update_from_sampling and plan.fast_path else 0
    if kept:
        # written into their final layout as they come; a decode that stops early cuts each buffer
        # down with one copy, one at a time (the largest: one block's (B * T, 4D), or the logits)
        est.stages["generation"]["kept_activations"] = kept + (4 * max(4 * B * T * D, B * R * V)
                                                               if plan.stop_at_eos else 0)
    # scoring: whole batch, one model at a time; the policy's outputs (B, R) are tiny
    critic = 0 if plan.value_trunks == 1 else nograd_forward_bytes(plan, B, T, R, s, logits=False)
    fwd = nograd_forward_bytes(plan, B, T, R, s)  # the policy's pass and the reference's: same shape
    per_pass = 0 if from_sampling else fwd
    ref_pass = fwd if plan.reference_on_device else 0
    reward_pass = nograd_forward_bytes(plan, B, T, 0, rs, logits=False) if rs and plan.reward_on_device else 0
    est.stages["scoring"] = {"forward": max(per_pass, critic, ref_pass, reward_pass), "rollout": 6 * B * R * 4}
    if kept:
        est.stages["scoring"]["kept_activations"] = kept
    if plan.cuda_autocast:
        # autocast caches bf16 copies of leaf weights that require grad (the policy's, not the frozen
        # reference's) until its context exits: generation and scoring each run inside one
        est.stages["generation"]["autocast_weights"] = 2 * n_trainable
        est.stages["scoring"]["autocast_weights"] = 2 * n_trainable
    est.stages["advantages"] = {"rollout": 12 * B * R * 4}
    if kept:
        est.stages["advantages"]["kept_activations"] = kept
    est.stages["update"], est.update_phase = _update_peak(plan, n_trainable)
    est.stages["update"]["rollout"] = 12 * B * R * 4
    ev = min(plan.eval_batch, B) if plan.eval_batch else g
    est.stages["evaluation"] = {
        "kv_cache": kv * ev // max(1, g),
        "sampling": 4 * ev * V * 4,
    }
    return est


# ----------------------------------------------------------------------------- from a RunConfig

def shape_from_config(cfg: Any) -> ModelShape:
    """The policy's GPT-2 shape for a RunConfig, without building the model."""
    m = cfg.model
    if m.pretrained:
        from transformers import AutoConfig

        hf = AutoConfig.from_pretrained(m.pretrained, local_files_only=True)
        return ModelShape(hf.n_layer, hf.n_embd, hf.n_head, hf.vocab_size, max(hf.n_positions, m.max_length))
    from rlhfkit.policy import GPT2_SHAPES

    if m.size in GPT2_SHAPES:
        L, D, H = GPT2_SHAPES[m.size]
        n_pos = 1024
    else:
        from rlhfkit import tiny  # type: ignore[attr-defined]

        base = dict(tiny.TINY_SHAPE)
        L, D, H = base["n_layer"], base["n_embd"], base["n_head"]
        n_pos = int(base.get("n_positions", 128))
    L, D, H = m.n_layer or L, m.n_embd or D, m.n_head or H
    vocab = m.vocab_size or _tokenizer_len()
    return ModelShape(L, D, H, vocab, max(n_pos, m.max_length))


def _tokenizer_len() -> int:
    from rlhfkit import tiny  # type: ignore[attr-defined]

    return len(tiny.get_tokenizer())


def prompt_len_from_data(cfg: Any, batch_size: int | None = None) -> int:
    """Longest prompt, in tokens, that a batch of the shipped train prompts can hold (left padding
    pads every prompt of a batch to its longest). Falls back to max_length - max_new_tokens."""
    try:
        from rlhfkit import tiny  # type: ignore[attr-defined]

        if cfg.model.pretrained:
            raise ImportError  # a hub tokenizer: not loaded here
        tok = tiny.get_tokenizer()
        prompts = tiny.load_prompts("train")
        lens = sorted(len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts)
        return int(lens[-1])
    except Exception:
        return max(1, cfg.model.max_length - cfg.generation.max_new_tokens)


def plan_from_config(cfg: Any, *, device: Device | None = None, prompt_len: int | None = None,
                     shape: ModelShape | None = None, **changes: Any) -> Plan:
    """A :class:`Plan` for a RunConfig (device ``auto`` resolves to cuda when available)."""
    from rlhfkit.config import scores_while_sampling, update_from_sampling
    if device is None:
        dev = cfg.train.device
        if dev == "auto":
            import torch

            dev = "cuda" if torch.cuda.is_available() else "cpu"
        device = dev
    reward_shape = None
    if cfg.reward.kind == "model" and cfg.reward.model_path:
        reward_shape = _reward_shape(cfg.reward.model_path)
    shp = shape or shape_from_config(cfg)
    p = cfg.ppo
    gen_batch = cfg.generation.batch_size
    plan = Plan(
        shape=shp,
        batch_size=p.batch_size,
        mini_batch_size=p.mini_batch_size,
        grad_accum_steps=p.grad_accum_steps,
        prompt_len=prompt_len if prompt_len is not None else prompt_len_from_data(cfg),
        response_len=cfg.generation.max_new_tokens,
        stop_at_eos=cfg.generation.stop_at_eos,
        generation_batch=gen_batch,
        eval_batch=gen_batch or max(p.batch_size, 16),  # the trainer's evaluation chunk
        eval_prompts=cfg.train.eval_prompts,
        dtype=cfg.model.dtype,
        gradient_checkpointing=cfg.model.gradient_checkpointing,
        shared_value_trunk=cfg.model.shared_value_trunk,
        reward_shape=reward_shape,
        # "cpu" placement only moves a model off an accelerator; on a CPU run it still counts
        reference_on_device=device == "cpu" or cfg.model.reference_device == "same",
        reward_on_device=device == "cpu" or cfg.reward.device == "same",
        optimizer=cfg.ppo.optimizer,
        fused_optimizer=device == "cuda" or _torch_at_least(2, 4),  # rlhfkit.trainer._fused_adamw_ok
        device=device,
        dropout=False,  # checkpoints ship with 0.1, the engine turns it off (rlhfkit.runtime.disable_dropout)
        lean_forward=_engine_has_lean_forward(),
        scores_from_sampling=scores_while_sampling(cfg),
        update_from_sampling=update_from_sampling(cfg),
        samples_per_prompt=cfg.generation.samples_per_prompt,
        critic=cfg.algorithm == "ppo",  # rlhfkit.config.uses_critic
    )
    return plan.with_(**changes) if changes else plan


def _torch_at_least(major: int, minor: int) -> bool:
    import torch

    return tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (major, minor)


def _engine_has_lean_forward() -> bool:
    import importlib.util

    return importlib.util.find_spec("rlhfkit.fastgpt2") is not None


def _reward_shape(path: str) -> ModelShape | None:
    """The shape of a reward model saved by ``ModelReward.save`` (its config.json nests the GPT-2
    config under ``gpt2``) or of a transformers GPT-2 directory."""
    try:
        import json
        from pathlib import Path

        from transformers import GPT2Config

        data = json.loads((Path(path) / "config.json").read_text())
        c = GPT2Config.from_dict(data["gpt2"]) if "gpt2" in data else GPT2Config.from_pretrained(path, local_files_only=True)
        return ModelShape(c.n_layer, c.n_embd, c.n_head, c.vocab_size, c.n_positions)
    except Exception:
        return None


def format_estimate(est: MemoryEstimate) -> str:
    """A readable per-model and per-stage breakdown (MiB)."""
    p = est.plan
    s = p.shape
    lines = [
        f"Predicted memory ({p.device}, {p.dtype}{', grad ckpt' if p.gradient_checkpointing else ''}) — "
        f"GPT-2 L={s.n_layer} D={s.n_embd} H={s.n_head} V={s.vocab_size}; B={p.batch_size} prompts x G={p.samples_per_prompt} "
        f"minibatch={p.mini_batch_size} micro={p.micro_batch} seqs P={p.prompt_len} R={p.response_len}"
        f"{'' if p.critic else '; critic-free (no value head)'}",
        "",
        f"{'model':<12}{'weights':>12}{'grads':>12}{'optimizer':>12}{'total':>12}   (MiB)",
    ]
    for name, comp in est.models.items():
        w, g, o = comp.get("weights", 0), comp.get("grads", 0), comp.get("optimizer", 0)
        lines.append(f"{name:<12}{w / MiB:>12.1f}{g / MiB:>12.1f}{o / MiB:>12.1f}{(w + g + o) / MiB:>12.1f}")
    lines.append(f"{'overhead':<12}{'':>36}{est.overhead / MiB:>12.1f}")
    lines += ["", f"{'stage':<12}{'transient':>12}{'peak':>12}   largest transient parts (MiB)"]
    for st, comp in est.stages.items():
        parts = ", ".join(f"{k} {v / MiB:.1f}" for k, v in sorted(comp.items(), key=lambda kv: -kv[1])[:3])
        lines.append(f"{st:<12}{sum(comp.values()) / MiB:>12.1f}{est.stage_peak(st) / MiB:>12.1f}   {parts}")
    lines.append(f"\nPredicted peak: {est.peak / MiB:.1f} MiB in {est.peak_stage}"
                 f" (persistent {est.persistent / MiB:.1f} MiB + overhead {est.overhead / MiB:.1f} MiB);"
                 f" the update peaks in its {est.update_phase} phase")
    return "\n".join(lines)


__all__ = [
    "FRAMEWORK_OVERHEAD", "GiB", "MiB", "MemoryEstimate", "ModelShape", "Plan", "estimate_memory",
    "format_estimate", "head_saved_bytes", "kv_cache_bytes", "layer_saved_bytes", "plan_from_config",
    "prompt_len_from_data", "shape_from_config",
]
