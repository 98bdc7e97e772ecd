"""rlhfkit vs TRL 0.19.1's PPOTrainer on identical PPO work, CPU fp32, seconds per step by stage.

Usage::

    .venv/bin/python benchmarks/ppo_vs_trl.py            # both shapes, 3 alternating rounds (~4 min quiet)
    .venv/bin/python benchmarks/ppo_vs_trl.py --quick    # 1 round each, 2 measured steps (~1-2 min quiet)
    .venv/bin/python benchmarks/ppo_vs_trl.py --threads 1 --rounds 2   # on a busy machine (see NOTES)

Times are for a quiet machine; under load each run takes several times longer. The first run also
builds the TRL environment (a few minutes).

The first run creates ``.bench-venv-trl019/`` (torch 2.13.0 CPU first, from the local wheel — a bare
torch requirement would pull a CUDA build — then ``trl==0.19.1`` with the transformers, accelerate
and datasets releases it was made for). TRL runs in that environment as a subprocess
(``--worker trl``); rlhfkit runs in this interpreter's environment as another subprocess
(``--worker rlhfkit``). Each worker builds its models, runs ``warmup`` unmeasured PPO steps, then
``steps`` measured ones, and prints one JSON line of per-step stage timings. Rounds alternate the
two systems (TRL, rlhfkit, TRL, rlhfkit, ...) so that load from other processes on a shared machine
hits both alike; the table shows medians over all measured steps.

Identical work, by construction:

* the same GPT-2 shape for policy, reference, reward model (and TRL's separate value model), the
  same word-level vocabulary (2,023 entries, built here), 8-token prompts without padding;
* responses of exactly ``new_tokens`` tokens: TRL with ``stop_token=None`` (its generation config then
  has no EOS), rlhfkit with ``generation.stop_at_eos=false``; both sample at temperature 1, no top-k/p;
* a neural reward model of the policy's shape: rlhfkit's :class:`~rlhfkit.rewards.ModelReward`,
  TRL's ``GPT2ForSequenceClassification`` (``num_labels=1``);
* one PPO epoch over the same number of minibatches (one optimizer step per minibatch), fp32, CPU,
  the torch default thread count, no evaluation or checkpointing inside the measured steps.

What differs is each system's own design: TRL trains a separate value model (its default and only
option in 0.19.1); rlhfkit puts the value head on the policy trunk (its default). Both take the
old log-probs from the sampling pass (TRL from the generation logits; rlhfkit, under its default
``ppo.rollout_scores=auto`` for fp32 models, reads log-probs *and* values off the decode steps), so
rlhfkit runs no policy forward in scoring. ``--systems trl,rlhfkit,rlhfkit-f`` adds rlhfkit with
``ppo.rollout_scores=forward``, which recomputes them in one scoring pass over the finished
sequences (as OpenRLHF and verl do; rlhfkit's default before 2026-12-06). The headline ratio is the
default configuration's.

Stages: ``generation`` (sampling), ``scoring`` (old log-probs, values, reference log-probs, reward),
``advantages`` (KL penalty, GAE, whitening) and ``update`` (forward, backward, optimizer). TRL's
stages are read from wrappers around ``batch_generation``, ``forward`` and ``get_reward`` in
``trl.trainer.ppo_trainer`` and its ``on_step_end`` callback; ``tokens/s`` counts response tokens
(batch x new tokens) per second of the whole step. Each worker also reports the process CPU time
per step: with ``--threads 1`` on a shared machine that is the figure robust to other processes'
load (see ``benchmarks/NOTES_ppo_vs_trl.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TRL_VENV = ROOT / ".bench-venv-trl019"
TRL_PINS = ["trl==0.19.1", "transformers==4.53.3", "accelerate==1.9.0", "datasets==4.0.0"]
VOCAB_SIZE = 2023
PROMPT_LEN = 8
STAGES = ("generation", "scoring", "advantages", "update")
# the rlhfkit systems a run can time: its default configuration, and ppo.rollout_scores pinned
ROLLOUT_SCORES = {"rlhfkit": "auto", "rlhfkit-f": "forward", "rlhfkit-s": "sampling"}
MARK = "BENCH_JSON "

# name: GPT-2 shape, batch, new tokens, minibatches per PPO epoch
SHAPES: dict[str, dict[str, int]] = {
    "small": {"n_layer": 4, "n_embd": 256, "n_head": 4, "batch": 64, "new_tokens": 64, "minibatches": 4},
    "gpt2s": {"n_layer": 12, "n_embd": 768, "n_head": 12, "batch": 8, "new_tokens": 32, "minibatches": 2},
}
SHAPE_TITLES = {"small": "L=4/D=256/H=4, batch 64, 64 new tokens",
                "gpt2s": "GPT-2-small shape L=12/D=768/H=12, batch 8, 32 new tokens"}
# TRL 0.19.1 as measured on this kind of machine (issue 2), seconds per step
CEO_TRL = {"small": 4.57, "gpt2s": 7.9}


# ----------------------------------------------------------------------------- shared by both workers
def build_tokenizer(directory: Path) -> Any:
    """A word-level tokenizer of VOCAB_SIZE entries (``<|endoftext|>``, ``<pad>``, ``<unk>``, w0..wN)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    path = directory / "tokenizer.json"
    if not path.exists():
        specials = ["<|endoftext|>", "<pad>", "<unk>"]
        vocab = {tok: i for i, tok in enumerate(specials + [f"w{i}" for i in range(VOCAB_SIZE - len(specials))])}
        tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
        tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        tk.save(str(path))
    tok = PreTrainedTokenizerFast(tokenizer_file=str(path), bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  pad_token="<pad>", unk_token="<unk>")
    tok.padding_side = "left"
    return tok


def make_prompts(n: int, seed: int = 0) -> list[str]:
    """``n`` prompts of exactly PROMPT_LEN ordinary words (no special tokens, so no padding)."""
    rng = random.Random(seed)
    return [" ".join(f"w{rng.randrange(VOCAB_SIZE - 3)}" for _ in range(PROMPT_LEN)) for _ in range(n)]


def gpt2_config(shape: dict[str, int], tok: Any) -> Any:
    from transformers import GPT2Config

    return GPT2Config(vocab_size=len(tok), n_layer=shape["n_layer"], n_embd=shape["n_embd"], n_head=shape["n_head"],
                      n_positions=max(128, PROMPT_LEN + shape["new_tokens"]), resid_pdrop=0.0, embd_pdrop=0.0,
                      attn_pdrop=0.0, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)


def _emit(result: dict[str, Any]) -> None:
    print(MARK + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------- TRL worker (TRL venv)
def run_trl(shape: dict[str, int], steps: int, warmup: int, tmp: Path) -> dict[str, Any]:
    import torch
    import trl.trainer.ppo_trainer as ppo_mod
    from datasets import Dataset
    from transformers import GPT2ForSequenceClassification, GPT2LMHeadModel, TrainerCallback
    from trl import PPOConfig, PPOTrainer  # type: ignore[attr-defined]  # lazy exports

    tok = build_tokenizer(tmp)
    torch.manual_seed(0)
    cfg = gpt2_config(shape, tok)
    policy = GPT2LMHeadModel(cfg)
    ref = GPT2LMHeadModel(cfg)
    ref.load_state_dict(policy.state_dict())
    cls_cfg = gpt2_config(shape, tok)
    cls_cfg.num_labels = 1
    reward = GPT2ForSequenceClassification(cls_cfg)
    value = GPT2ForSequenceClassification(cls_cfg)
    B, n_mb = shape["batch"], shape["minibatches"]
    n_steps = warmup + steps

    def dataset(n: int, seed: int) -> Any:
        enc = tok(make_prompts(n, seed), add_special_tokens=False)
        return Dataset.from_dict({"input_ids": enc["input_ids"]})

    args = PPOConfig(
        output_dir=str(tmp / "trl_out"), per_device_train_batch_size=B, gradient_accumulation_steps=1,
        num_mini_batches=n_mb, num_ppo_epochs=1, response_length=shape["new_tokens"], stop_token=None,
        temperature=1.0, total_episodes=B * n_steps, local_rollout_forward_batch_size=B, missing_eos_penalty=None,
        num_sample_generations=0, report_to=[], save_strategy="no", logging_steps=1_000_000, use_cpu=True,
        bf16=False, fp16=False, disable_tqdm=True, seed=0, dataloader_num_workers=0,
    )
    trainer = PPOTrainer(args=args, processing_class=tok, model=policy, ref_model=ref, reward_model=reward,
                         value_model=value, train_dataset=dataset(B * n_steps, 1), eval_dataset=dataset(B, 2))
    assert trainer.policy_model.generation_config.eos_token_id is None  # fixed-length responses

    marks: dict[str, float] = {}
    records: list[dict[str, float]] = []
    lengths: list[int] = []

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*a: Any, **kw: Any) -> Any:
            if name == "forward" and torch.is_grad_enabled():
                marks.setdefault("update_start", time.perf_counter())
            elif name == "generation":
                marks["gen_start"] = time.perf_counter()
            out = fn(*a, **kw)
            now = time.perf_counter()
            if name == "generation":
                marks["gen_end"] = now
                lengths.append(int(out[0].shape[1]) - PROMPT_LEN)
            elif name == "get_reward" and not torch.is_grad_enabled():
                marks["score_end"] = now
            return out
        return wrapper

    ppo_mod.batch_generation = timed("generation", ppo_mod.batch_generation)
    ppo_mod.forward = timed("forward", ppo_mod.forward)
    ppo_mod.get_reward = timed("get_reward", ppo_mod.get_reward)

    cpu = {"last": time.process_time()}

    class StepTimer(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, *a: Any, **kw: Any) -> None:
            now = time.perf_counter()
            cpu_now = time.process_time()
            start = marks.get("step_end", marks["gen_start"])
            records.append({
                "generation": marks["gen_end"] - marks["gen_start"],
                "scoring": marks["score_end"] - marks["gen_end"],
                "advantages": marks["update_start"] - marks["score_end"],
                "update": now - marks["update_start"],
                "other": marks["gen_start"] - start,
                "step": now - start,
                "cpu": cpu_now - cpu["last"],
            })
            cpu["last"] = cpu_now
            marks.clear()
            marks["step_end"] = now

    trainer.add_callback(StepTimer())
    cpu["last"] = time.process_time()
    trainer.train()
    assert all(n == shape["new_tokens"] for n in lengths), lengths
    return {"system": "trl", "version": _version("trl"), "steps": records[warmup:],
            "tokens_per_step": B * shape["new_tokens"], "threads": torch.get_num_threads()}


# ----------------------------------------------------------------------------- rlhfkit worker (main venv)
def run_rlhfkit(shape: dict[str, int], steps: int, warmup: int, tmp: Path,
                rollout_scores: str = "auto") -> dict[str, Any]:
    import torch

    from rlhfkit import GPT2Policy, PPOTrainer
    from rlhfkit.config import validate_config
    from rlhfkit.metrics import M
    from rlhfkit.rewards import ModelReward
    from rlhfkit.sinks import MemorySink

    tok = build_tokenizer(tmp)
    B, R = shape["batch"], shape["new_tokens"]
    torch.manual_seed(0)
    policy = GPT2Policy(model_size="custom", max_length=PROMPT_LEN + R, temperature=1.0, top_p=1.0,
                        config=gpt2_config(shape, tok), tokenizer=tok, warm_start=False,
                        prompts=(make_prompts(4096, 1), make_prompts(B, 2)))
    reward = ModelReward(tok, config=gpt2_config(shape, tok))
    cfg = validate_config({
        "name": "bench", "seed": 0,
        "model": {"size": "custom", "n_layer": shape["n_layer"], "n_embd": shape["n_embd"], "n_head": shape["n_head"],
                  "max_length": PROMPT_LEN + R, "warm_start": False},
        "generation": {"max_new_tokens": R, "stop_at_eos": False, "temperature": 1.0, "top_p": 1.0, "top_k": 0},
        "reward": {"kind": "model"},
        "ppo": {"batch_size": B, "mini_batch_size": B // shape["minibatches"], "ppo_epochs": 1,
                "rollout_scores": rollout_scores},
        "train": {"num_epochs": 1, "steps_per_epoch": warmup + steps, "eval_every": 0, "eval_prompts": 1,
                  "device": "cpu"},
    })
    sink = MemorySink()
    trainer = PPOTrainer(policy, reward, config=cfg, sinks=[sink])
    clock = CpuClock()
    trainer.add_hooks(clock)
    trainer.train()
    records = []
    timed = list(zip(sink.of_type("timings"), clock.times, engine_flops(sink, warmup + steps), strict=True))
    for ev, cpu, flops in timed[warmup:]:
        rec: dict[str, Any] = {k: ev.stages.get(k, 0.0) for k in STAGES}
        rec["other"] = ev.step_time - sum(rec.values())
        rec["step"] = ev.step_time
        rec["cpu"] = cpu
        rec["flops"] = {k: flops.get(k, 0.0) for k in STAGES}
        records.append(rec)
    lengths = sink.metric(M.RESPONSE_LEN)
    return {"system": "rlhfkit", "version": _version("rlhfkit"), "steps": records, "tokens_per_step": B * R,
            "threads": torch.get_num_threads(), "response_len": lengths[-1] if lengths else None,
            "peak": trainer.peak.to_dict()}


def engine_flops(sink: Any, steps: int) -> list[dict[str, float]]:
    """Each step's model FLOPs by engine stage, as the trainer counts them (``perf/flops/<stage>``):
    the same work for every system of a table, so each system's fraction of peak divides these."""
    from rlhfkit.metrics import perf_name
    from rlhfkit.mfu import PERF_STAGES

    per = {st: sink.metric(perf_name("flops", st)) for st in PERF_STAGES}
    return [{st: v[i] if i < len(v) else 0.0 for st, v in per.items()} for i in range(steps)]


class CpuClock:
    """Trainer hook: process CPU seconds of each step (``on_step_begin`` to ``on_step_end``), next to
    the wall time the step's timings event reports."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._c0 = 0.0

    def on_step_begin(self, step: int) -> None:
        self._c0 = time.process_time()

    def on_step_end(self, step: int, metrics: dict[str, float]) -> None:
        self.times.append(time.process_time() - self._c0)


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


# ----------------------------------------------------------------------------- orchestration
def run_as_worker(args: argparse.Namespace, shapes: dict[str, dict[str, int]],
                  trl: Callable[..., dict[str, Any]], rlhfkit: Callable[..., dict[str, Any]]) -> None:
    """The ``--worker`` side of a benchmark script: one system (``trl``, or rlhfkit as configured by
    default, ``rlhfkit``, with ``ppo.rollout_scores=forward``, ``rlhfkit-f``, or ``=sampling``,
    ``rlhfkit-s``) on one shape in a scratch folder, its JSON line printed."""
    with tempfile.TemporaryDirectory() as d:
        if args.worker == "trl":
            _emit(trl(shapes[args.shape], args.steps, args.warmup, Path(d)))
        else:
            _emit(rlhfkit(shapes[args.shape], args.steps, args.warmup, Path(d), ROLLOUT_SCORES[args.worker]))


def ensure_trl_venv() -> Path:
    py = TRL_VENV / "bin" / "python"
    stamp = TRL_VENV / ".installed-trl019"
    if stamp.exists():
        return py
    print(f"creating {TRL_VENV.name}/ (torch 2.13.0 CPU first, then {' '.join(TRL_PINS)}) ...", flush=True)
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(TRL_VENV)], check=True)
    pip = [str(py), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)  # first: the pinned CPU wheel from local disk
    subprocess.run([*pip, *TRL_PINS], check=True)
    stamp.touch()
    return py


def add_baseline_arg(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--baseline", metavar="REV",
                    help="also time rlhfkit at git revision REV (a temporary checkout, this venv) as system "
                         "rlhfkit@REV, alternating with the others: before/after in one run")


@contextmanager
def baseline_checkout(rev: str | None) -> Iterator[dict[str, Path]]:
    """``{"rlhfkit@REV": root}`` for a temporary git worktree of ``rev`` (removed on the way out), or
    ``{}`` without one: the extra system a ``--baseline`` run alternates with the others."""
    if not rev:
        yield {}
        return
    base = Path(tempfile.mkdtemp(prefix="rlhfkit-baseline-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(base), rev], check=True)
    try:
        yield {f"rlhfkit@{rev[:9]}": base}
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)


Results = dict[str, dict[str, list[dict[str, Any]]]]  # shape -> system -> one worker result per round


def time_and_save(args: argparse.Namespace, systems: list[str],
                  run_rounds: Callable[[list[str], dict[str, Path]], Results]) -> int:
    """The orchestration both peer benchmarks share: ``run_rounds(names, roots)`` times ``systems``
    from this tree and, with ``--baseline REV``, ``rlhfkit@REV`` from a temporary checkout; every
    measured step goes to ``--json``."""
    with baseline_checkout(args.baseline) as baseline:
        results = run_rounds(systems + list(baseline), {**{s: ROOT for s in systems}, **baseline})
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


def print_baseline_ratios(summary: dict[str, dict[str, float]]) -> None:
    """This tree's rlhfkit against each ``rlhfkit@REV`` of the run."""
    kit = summary.get("rlhfkit")
    for name, row in summary.items():
        if kit and name.startswith("rlhfkit@"):
            print(f"rlhfkit (this tree) tokens/s = {kit['tokens_per_s'] / row['tokens_per_s']:.2f} x {name}'s"
                  f"   (> 1: faster than that revision; step {kit['step']:.3f} vs {row['step']:.3f} s)")


def run_worker(python: Path | str, system: str, shape: str, steps: int, warmup: int, extra: list[str],
               timeout: float, threads: int | None = None, root: Path = ROOT,
               script: str = "ppo_vs_trl.py") -> dict[str, Any]:
    """One worker process of ``benchmarks/<script>``; ``root`` is the source tree it runs (another
    revision's checkout runs that revision's own rlhfkit and its own worker code, timed as that
    revision timed itself)."""
    cmd = [str(python), str(root / "benchmarks" / script), "--worker", system, "--shape", shape,
           "--steps", str(steps), "--warmup", str(warmup), *extra]
    env = dict(os.environ, PYTHONPATH=str(root), TOKENIZERS_PARALLELISM="false", TRANSFORMERS_VERBOSITY="error",
               ACCELERATE_USE_CPU="true")
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=root)
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return dict(json.loads(line[len(MARK):]))
    raise RuntimeError(f"{system} worker failed (rc={proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def summarise(results: dict[str, list[dict[str, Any]]],
              stages: tuple[str, ...] = STAGES) -> dict[str, dict[str, float]]:
    """Medians over every measured step of each system, and tokens per second of wall and CPU time."""
    out: dict[str, dict[str, float]] = {}
    for system, runs in results.items():
        steps = [s for r in runs for s in r["steps"]]
        row = {k: _median([s[k] for s in steps]) for k in (*stages, "other", "step", "cpu")}
        row["tokens_per_s"] = runs[0]["tokens_per_step"] / row["step"] if steps else float("nan")
        row["tokens_per_cpu_s"] = runs[0]["tokens_per_step"] / row["cpu"] if steps else float("nan")
        row["n"] = len(steps)
        row["threads"] = runs[0]["threads"]
        for k in stages:
            for key in ("flops", "flops_every_row"):
                found = [s[key][k] for s in steps if key in s]
                if found:
                    row[f"{key}/{k}"] = _median(found)
        peaks = [r["peak"]["flops"] for r in runs if (r.get("peak") or {}).get("flops")]
        if peaks:
            row["peak"] = max(peaks)  # each run probed its own; the highest is the fairest denominator
        out[system] = row
    return out


def print_peak_fractions(summary: dict[str, dict[str, float]], stages: tuple[str, ...]) -> None:
    """Each system's share of the CPU's measured fp32 matmul peak, stage by stage: the engine's FLOP
    count of the stage / (the system's seconds x the peak the rlhfkit workers probed at run start
    through the engine's own kernels, rlhfkit.mfu). A system without its own count (TRL, another
    revision) is credited with the default rlhfkit configuration's: the model work both must do
    (TRL's separate value model in PPO is extra work it is not credited for), counted with every
    row running its own prompt where the engine runs a group's shared prompt once (GRPO)."""
    ref = next((r for r in summary.values() if "peak" in r and all(f"flops/{k}" in r for k in stages)), None)
    if ref is None:
        return
    peak = ref["peak"]
    every = {k: ref.get(f"flops_every_row/{k}", ref[f"flops/{k}"]) for k in stages}
    print(f"fraction of the measured fp32 matmul peak ({peak / 1e9:.0f} GFLOP/s, same threads; model FLOPs "
          f"per step: " + ", ".join(f"{k} {ref[f'flops/{k}'] / 1e9:.1f} G" for k in stages) + ")")
    if every != {k: ref[f"flops/{k}"] for k in stages}:
        print("  (rlhfkit runs a group's prompt once; with every row's prompt, as credited to the others: "
              + ", ".join(f"{k} {every[k] / 1e9:.1f} G" for k in stages) + ")")
    for name, row in summary.items():
        # a system that reports its own count (rlhfkit-f runs one more forward) uses it; the others the reference's
        flops = {k: row.get(f"flops/{k}", every[k]) for k in stages}
        cells = [f"{k} {flops[k] / (row[k] * peak):.0%}" if row[k] > 1e-9 else f"{k} -" for k in stages]
        total = sum(flops.values()) / (row["step"] * peak)
        print(f"  {name:<16}" + ", ".join(cells) + f"; whole step {total:.0%}")


def print_table(shape: str, summary: dict[str, dict[str, float]], load: str) -> None:
    _print_times(shape, summary, load)
    print_peak_fractions(summary, STAGES)


def _print_times(shape: str, summary: dict[str, dict[str, float]], load: str) -> None:
    trl, kit = summary.get("trl"), summary.get("rlhfkit")
    counts = ", ".join(f"{k}: {int(v['n'])} steps, {int(v['threads'])} threads" for k, v in summary.items())
    print(f"\n{SHAPE_TITLES[shape]}  (medians of {counts}; load average before/after: {load})")
    cols = [*STAGES, "other", "step"]
    print(f"{'s/step':<18}" + "".join(f"{c:>12}" for c in cols) + f"{'tokens/s':>12}")
    for name, row in summary.items():
        print(f"{name:<18}" + "".join(f"{row[c]:>12.3f}" for c in cols) + f"{row['tokens_per_s']:>12.0f}")
    if trl and kit:
        ratio = kit["tokens_per_s"] / trl["tokens_per_s"]
        print(f"{'TRL/kit':<18}" + "".join(f"{trl[c] / kit[c]:>11.2f}x" if kit[c] > 1e-9 else f"{'-':>12}" for c in cols)
              + f"{ratio:>11.2f}x")
        print(f"rlhfkit tokens/s = {ratio:.2f} x TRL 0.19.1's   (target >= 2x; TRL as measured in issue 2:"
              f" {CEO_TRL[shape]} s/step)")
        cpu_ratio = kit["tokens_per_cpu_s"] / trl["tokens_per_cpu_s"]
        print(f"per CPU-second (process CPU time per step: TRL {trl['cpu']:.3f} s, rlhfkit {kit['cpu']:.3f} s):"
              f" rlhfkit = {cpu_ratio:.2f} x TRL  (the load-robust figure when --threads 1)")
        for name in ("rlhfkit-f", "rlhfkit-s"):
            if name in summary:
                print(f"{name} (ppo.rollout_scores={ROLLOUT_SCORES[name]}) tokens/s = "
                      f"{summary[name]['tokens_per_s'] / trl['tokens_per_s']:.2f} x TRL 0.19.1's")
    print_baseline_ratios(summary)


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def bench_parser(doc: str, shapes: dict[str, Any], default_shapes: str, systems: str,
                 systems_help: str) -> argparse.ArgumentParser:
    """The options both peer benchmarks take (and their internal worker mode)."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--shapes", default=default_shapes, help="comma-separated: " + ", ".join(shapes))
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of the systems per shape")
    ap.add_argument("--steps", type=int, default=3, help="measured steps per worker run")
    ap.add_argument("--warmup", type=int, default=1, help="unmeasured steps per worker run")
    ap.add_argument("--quick", action="store_true", help="1 round, 2 measured steps")
    ap.add_argument("--systems", default=systems, help=systems_help)
    ap.add_argument("--threads", type=int, help="torch/OpenMP threads for every system (default: torch's default)")
    ap.add_argument("--json", type=Path, help="also write every measured step here")
    # worker mode (internal)
    ap.add_argument("--worker", choices=["trl", *ROLLOUT_SCORES], help=argparse.SUPPRESS)
    ap.add_argument("--shape", help=argparse.SUPPRESS)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = bench_parser(__doc__, SHAPES, "small,gpt2s", "trl,rlhfkit",
                      "comma-separated from trl, rlhfkit (its defaults), rlhfkit-f (ppo.rollout_scores=forward: "
                      "a scoring forward recomputes the old log-probs and values), rlhfkit-s (=sampling)")
    add_baseline_arg(ap)
    args = ap.parse_args(argv)

    if args.worker:
        run_as_worker(args, SHAPES, run_trl, run_rlhfkit)
        return 0

    if args.quick:
        args.rounds, args.steps = 1, 2
    systems = [s for s in args.systems.split(",") if s]
    busy = os.getloadavg()[0] > 1.5 * (os.cpu_count() or 1) / 2
    if busy and not args.threads:
        print(f"warning: load average {_loadavg()} on {os.cpu_count()} cores. With torch's default thread count,"
              " every OpenMP barrier waits for a descheduled thread and both systems slow down 5-15x (TRL's"
              " many small kernels worst); --threads 1 measures the work, not the scheduler.", flush=True)
    trl_py = ensure_trl_venv() if "trl" in systems else None
    return time_and_save(args, systems, lambda names, roots: _run_rounds(args, names, roots, trl_py))


def _run_rounds(args: argparse.Namespace, systems: list[str], roots: dict[str, Path],
                trl_py: Path | None) -> Results:
    all_results: Results = {}
    for shape in [s for s in args.shapes.split(",") if s]:
        load0 = _loadavg()
        results: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
        for rnd in range(args.rounds):
            for system in systems:
                t0 = time.perf_counter()
                py = trl_py if system == "trl" else sys.executable
                res = run_worker(py, system.split("@")[0], shape, args.steps, args.warmup, [],  # type: ignore[arg-type]
                                 timeout=1800, threads=args.threads, root=roots[system])
                results[system].append(res)
                med = _median([s["step"] for s in res["steps"]])
                med_cpu = _median([s["cpu"] for s in res["steps"]])
                print(f"[{shape} round {rnd + 1}/{args.rounds}] {system:<8} {med:.3f} s/step, {med_cpu:.3f} CPU-s/step"
                      f" ({time.perf_counter() - t0:.0f} s with start-up; load {_loadavg()})", flush=True)
        print_table(shape, summarise(results), f"{load0} / {_loadavg()}")
        all_results[shape] = results
    return all_results


if __name__ == "__main__":
    raise SystemExit(main())
