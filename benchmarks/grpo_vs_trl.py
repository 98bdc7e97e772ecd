"""rlhfkit's GRPO vs TRL's GRPOTrainer on identical work, CPU fp32, seconds per step.

Usage::

    .venv/bin/python benchmarks/grpo_vs_trl.py                 # both shapes, 3 alternating rounds
    .venv/bin/python benchmarks/grpo_vs_trl.py --quick         # 1 round, 2 measured steps
    .venv/bin/python benchmarks/grpo_vs_trl.py --threads 1     # on a busy machine (see NOTES_grpo_vs_trl.md)
    .venv/bin/python benchmarks/grpo_vs_trl.py --systems rlhfkit --baseline main   # before/after, alternating

TRL is the release installed in this environment (the one the TRL adapter is tested against);
both systems run as subprocesses of this script (``--worker trl`` / ``--worker rlhfkit``), build
their models, run ``warmup`` unmeasured steps and then ``steps`` measured ones, and print one JSON
line. Rounds alternate the systems so that load from other processes hits both alike; the table
shows medians over every measured step, with the machine's load average before and after.

Identical work, by construction (the vocabulary, prompts and GPT-2 shapes of ``ppo_vs_trl.py``):

* ``batch`` prompts of 8 tokens, ``G`` responses each (``num_generations`` / ``samples_per_prompt``),
  of exactly ``new_tokens`` tokens (TRL: ``min_new_tokens`` in its generation kwargs; rlhfkit:
  ``generation.stop_at_eos=false``), temperature 1, no top-k/p;
* a neural reward model of the policy's shape (TRL: ``GPT2ForSequenceClassification`` passed as a
  reward function; rlhfkit: :class:`~rlhfkit.rewards.ModelReward`);
* no activation checkpointing (TRL 1.x turns it on by default: off here, as in rlhfkit);
* a frozen reference and a k3 KL term in the loss with β = 0.04 (TRL: ``beta``; rlhfkit:
  ``ppo.kl_placement=loss``), one optimizer step per rollout on the whole batch (TRL:
  ``num_iterations=1``, ``steps_per_generation=1``; rlhfkit: ``ppo_epochs=1``, one minibatch).

Neither system runs a policy forward for the old log-probs: with one iteration per generation both
take them from the update's own forward, detached (TRL: ``num_iterations=1``; rlhfkit: one epoch,
one minibatch, the KL in the loss; its default ``ppo.rollout_scores=auto`` and ``=forward`` take them
so). ``rlhfkit-s`` (``ppo.rollout_scores=sampling``) reads them off the sampling pass instead.
Stages: ``rollout`` (sampling, old and reference log-probs, reward) and ``update`` (forward,
backward, optimizer). TRL's rollout is timed around ``_generate_and_score_completions`` (its one
rollout method); its step through the public ``TrainerCallback`` hooks. rlhfkit's stages come from its
own timings events and trainer hooks. ``tokens/s`` counts response tokens (batch x G x new tokens)
per second of the whole step.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ppo_vs_trl import (  # noqa: E402  (a sibling script, not a package)
    PROMPT_LEN,
    CpuClock,
    Results,
    _loadavg,
    _version,
    add_baseline_arg,
    bench_parser,
    build_tokenizer,
    engine_flops,
    gpt2_config,
    make_prompts,
    print_baseline_ratios,
    print_peak_fractions,
    run_as_worker,
    run_worker,
    summarise,
    time_and_save,
)

BETA = 0.04
SHAPES: dict[str, dict[str, int]] = {
    "small": {"n_layer": 4, "n_embd": 256, "n_head": 4, "batch": 16, "G": 4, "new_tokens": 64},
    "gpt2s": {"n_layer": 12, "n_embd": 768, "n_head": 12, "batch": 4, "G": 4, "new_tokens": 32},
}
SHAPE_TITLES = {"small": "L=4/D=256/H=4, 16 prompts x G=4, 64 new tokens",
                "gpt2s": "GPT-2-small shape L=12/D=768/H=12, 4 prompts x G=4, 32 new tokens"}
STAGES = ("rollout", "update")


# ----------------------------------------------------------------------------- TRL worker
def run_trl(shape: dict[str, int], steps: int, warmup: int, tmp: Path) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import GPT2ForSequenceClassification, GPT2LMHeadModel, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    tok = build_tokenizer(tmp)
    torch.manual_seed(0)
    policy = GPT2LMHeadModel(gpt2_config(shape, tok))
    policy.save_pretrained(tmp / "policy")  # TRL builds its reference from the policy's path
    tok.save_pretrained(tmp / "policy")
    cls_cfg = gpt2_config(shape, tok)
    cls_cfg.num_labels = 1
    reward = GPT2ForSequenceClassification(cls_cfg)
    B, G, R = shape["batch"], shape["G"], shape["new_tokens"]
    n_steps = warmup + steps
    args = GRPOConfig(
        output_dir=str(tmp / "trl_out"), per_device_train_batch_size=B * G, gradient_accumulation_steps=1,
        num_generations=G, steps_per_generation=1, num_iterations=1, max_completion_length=R,
        generation_kwargs={"min_new_tokens": R}, temperature=1.0, top_p=1.0, top_k=0, beta=BETA,
        max_steps=n_steps, report_to=[], save_strategy="no", logging_steps=1_000_000, use_cpu=True,
        bf16=False, fp16=False, disable_tqdm=True, seed=0, dataloader_num_workers=0, log_completions=False,
        shuffle_dataset=False, model_init_kwargs={"dtype": torch.float32}, gradient_checkpointing=False,
    )
    prompts = make_prompts(B * n_steps, 1)
    trainer = GRPOTrainer(model=str(tmp / "policy"), reward_funcs=[reward], args=args,
                          train_dataset=Dataset.from_dict({"prompt": prompts}), processing_class=tok,
                          reward_processing_classes=[tok])

    marks: dict[str, float] = {}
    records: list[dict[str, float]] = []
    lengths: list[int] = []
    rollout = trainer._generate_and_score_completions

    def timed_rollout(*a: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        out = rollout(*a, **kw)
        marks["rollout"] = time.perf_counter() - t0
        lengths.append(int(out["completion_mask"].sum(1).min()))
        return out

    trainer._generate_and_score_completions = timed_rollout  # type: ignore[method-assign]

    class StepTimer(TrainerCallback):  # type: ignore[misc]
        def on_step_begin(self, *a: Any, **kw: Any) -> None:
            marks["t0"], marks["c0"] = time.perf_counter(), time.process_time()

        def on_step_end(self, *a: Any, **kw: Any) -> None:
            step = time.perf_counter() - marks["t0"]
            records.append({"rollout": marks["rollout"], "update": step - marks["rollout"], "other": 0.0,
                            "step": step, "cpu": time.process_time() - marks["c0"]})

    trainer.add_callback(StepTimer())
    trainer.train()
    assert len(records) == n_steps, len(records)
    assert all(n == R for n in lengths), lengths  # every response has exactly R tokens
    return {"system": "trl", "version": _version("trl"), "steps": records[warmup:], "tokens_per_step": B * G * R,
            "threads": torch.get_num_threads()}


# ----------------------------------------------------------------------------- rlhfkit worker
def run_rlhfkit(shape: dict[str, int], steps: int, warmup: int, tmp: Path,
                rollout_scores: str = "auto") -> dict[str, Any]:
    import torch

    from rlhfkit import GPT2Policy, PPOTrainer
    from rlhfkit.config import validate_config
    from rlhfkit.metrics import M
    from rlhfkit.mfu import BatchTokens, ModelShape, stage_flops
    from rlhfkit.rewards import ModelReward
    from rlhfkit.sinks import MemorySink

    tok = build_tokenizer(tmp)
    B, G, R = shape["batch"], shape["G"], shape["new_tokens"]
    torch.manual_seed(0)
    cfg = validate_config({
        "name": "bench", "seed": 0, "algorithm": "grpo",
        "model": {"size": "custom", "n_layer": shape["n_layer"], "n_embd": shape["n_embd"], "n_head": shape["n_head"],
                  "max_length": PROMPT_LEN + R, "warm_start": False},
        "generation": {"max_new_tokens": R, "stop_at_eos": False, "temperature": 1.0, "top_p": 1.0, "top_k": 0,
                       "samples_per_prompt": G},
        "reward": {"kind": "model"},
        "ppo": {"batch_size": B, "mini_batch_size": B, "ppo_epochs": 1, "kl_coef": BETA, "kl_controller": "fixed",
                "kl_placement": "loss", "rollout_scores": rollout_scores},
        "train": {"num_epochs": 1, "steps_per_epoch": warmup + steps, "eval_every": 0, "eval_prompts": 1,
                  "device": "cpu"},
    })
    policy = GPT2Policy(model_size="custom", max_length=PROMPT_LEN + R, temperature=1.0, top_p=1.0,
                        config=gpt2_config(shape, tok), tokenizer=tok, warm_start=False, with_value_head=False,
                        prompts=(make_prompts(4096, 1), make_prompts(B, 2)))
    reward = ModelReward(tok, config=gpt2_config(shape, tok))
    sink = MemorySink()
    trainer = PPOTrainer(policy, reward, config=cfg, sinks=[sink])
    clock = CpuClock()
    trainer.add_hooks(clock)
    trainer.train()
    records = []
    rollout_stages = ("generation", "scoring", "advantages")
    timed = list(zip(sink.of_type("timings"), clock.times, engine_flops(sink, warmup + steps), strict=True))
    for ev, cpu, flops in timed[warmup:]:
        roll = sum(ev.stages.get(k, 0.0) for k in rollout_stages)
        upd = ev.stages.get("update", 0.0)
        records.append({"rollout": roll, "update": upd, "other": ev.step_time - roll - upd, "step": ev.step_time,
                        "cpu": cpu, "flops": {"rollout": sum(flops.get(k, 0.0) for k in rollout_stages),
                                              "update": flops.get("update", 0.0)}})
    lengths = sink.metric(M.RESPONSE_LEN)
    assert all(n == R for n in lengths), lengths
    # what the same step costs when every row runs its own prompt, as TRL's forwards do: the count
    # a system without its own is credited with (the engine's count runs a group's prompt once)
    every = stage_flops(ModelShape.of(policy.model.config),
                        BatchTokens(prompt=(PROMPT_LEN,) * (B * G), response=(R,) * (B * G)), ppo_epochs=1,
                        separate_critic=False, scores_from_sampling=True, reward_flops_per_token=reward.flops_per_token)
    for rec in records:
        rec["flops_every_row"] = {"rollout": sum(every[k] for k in rollout_stages), "update": every["update"]}
    return {"system": "rlhfkit", "version": _version("rlhfkit"), "steps": records, "tokens_per_step": B * G * R,
            "threads": torch.get_num_threads(), "peak": trainer.peak.to_dict()}


# ----------------------------------------------------------------------------- orchestration
def print_table(shape: str, summary: dict[str, dict[str, float]], load: str, versions: dict[str, str]) -> None:
    counts = ", ".join(f"{k}: {int(v['n'])} steps, {int(v['threads'])} threads" for k, v in summary.items())
    print(f"\n{SHAPE_TITLES[shape]}  (medians of {counts}; load average before/after: {load})")
    cols = [*STAGES, "other", "step", "cpu"]
    print(f"{'s/step':<12}" + "".join(f"{c:>10}" for c in cols) + f"{'tokens/s':>10}")
    for name, row in summary.items():
        print(f"{name:<12}" + "".join(f"{row[c]:>10.3f}" for c in cols) + f"{row['tokens_per_s']:>10.0f}")
    trl = summary.get("trl")
    for name, row in summary.items():
        if trl and name != "trl":
            print(f"{name} tokens/s = {row['tokens_per_s'] / trl['tokens_per_s']:.2f} x TRL {versions.get('trl', '?')}'s"
                  f" (per CPU-second: {row['tokens_per_cpu_s'] / trl['tokens_per_cpu_s']:.2f} x)")
    print_baseline_ratios(summary)
    print_peak_fractions(summary, STAGES)


def main(argv: list[str] | None = None) -> int:
    ap = bench_parser(__doc__, SHAPES, "small,gpt2s", "trl,rlhfkit,rlhfkit-s",
                      "comma-separated from trl, rlhfkit (its defaults), rlhfkit-s (ppo.rollout_scores=sampling)")
    add_baseline_arg(ap)
    args = ap.parse_args(argv)
    if args.worker:
        run_as_worker(args, SHAPES, run_trl, run_rlhfkit)
        return 0
    if args.quick:
        args.rounds, args.steps = 1, 2
    systems = [s for s in args.systems.split(",") if s]
    return time_and_save(args, systems, lambda names, roots: _run_rounds(args, names, roots))


def _run_rounds(args: Any, systems: list[str], roots: dict[str, Path]) -> Results:
    all_results: Results = {}
    for shape in [s for s in args.shapes.split(",") if s]:
        load0 = _loadavg()
        results: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
        for rnd in range(args.rounds):
            for system in systems:
                t0 = time.perf_counter()
                res = run_worker(sys.executable, system.split("@")[0], shape, args.steps, args.warmup, [],
                                 timeout=1800, threads=args.threads, root=roots[system], script="grpo_vs_trl.py")
                results[system].append(res)
                print(f"[{shape} round {rnd + 1}/{args.rounds}] {system:<10} "
                      f"{statistics.median(s['step'] for s in res['steps']):.3f} s/step "
                      f"({time.perf_counter() - t0:.0f} s with start-up; load {_loadavg()})", flush=True)
        versions = {s: r[0]["version"] for s, r in results.items()}
        print_table(shape, summarise(results, STAGES), f"{load0} / {_loadavg()}", versions)
        all_results[shape] = results
    return all_results


if __name__ == "__main__":
    raise SystemExit(main())
