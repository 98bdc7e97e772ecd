"""Engine sub-commands of ``rlhfkit``: train, train-rm, presets, schema."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

from rlhfkit.cli import EXIT_FAILED, EXIT_OK, print_json, usage_error


def add_config_args(p: argparse.ArgumentParser) -> None:
    """--config/--preset/--set, shared by every command that takes a run config."""
    p.add_argument("--config", "-c", metavar="PATH|PRESET",
                   help="YAML config file or preset name (smoke, default, gpu_optimized, debug). Default: smoke")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value by dotted key, e.g. --set ppo.batch_size=16 (repeatable)")


def config_from_args(args: argparse.Namespace) -> Any:
    from rlhfkit.config import load_config

    return load_config(args.config or "smoke", args.overrides)


def register(sub: Any) -> None:
    p = sub.add_parser("train", help="run PPO training from a config",
                       description="Run PPO training. Progress goes to stderr; with --json the last stdout "
                                   "line is a JSON summary. Events land in OUT/RUN_ID/events.jsonl.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_args(p)
    p.add_argument("--out", default="runs", help="directory for run folders (events.jsonl, config.yaml, checkpoints)")
    p.add_argument("--run-id", default=None, help="run id (default: random)")
    p.add_argument("--json", action="store_true", help="print the final summary as one JSON line on stdout")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.add_argument("--server", default=None,
                   help="also stream the run live to this rlhfkit server (default $RLHFKIT_SERVER; the local "
                        "folder is written either way; if the server is down the run goes on and "
                        "`rlhfkit import OUT/RUN_ID` uploads it later)")
    p.add_argument("--token", default=None, help="API token for --server (default $RLHFKIT_TOKEN)")
    p.add_argument("--offline", action="store_true", help="do not stream, even with $RLHFKIT_SERVER set")
    p.add_argument("--verbose", "-v", action="store_true", default=None,
                   help="a progress line every step (default: env VERBOSE)")
    p.add_argument("--log-level", type=str.upper, default=None, choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                   help="Python log level on stderr and in OUT/RUN_ID/train.log (default: env LOG_LEVEL, "
                        "INFO with --verbose, else WARNING)")
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("train-rm", help="train a learned reward model from preference pairs (Bradley-Terry)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Fit a GPT-2 reward model on (chosen, rejected) pairs. Without --pairs, pairs are "
                                   "made from the shipped tiny corpus, preferring the more positive sentence (VADER).")
    p.add_argument("--out", required=True, help="directory to write the model (use it as reward.model_path)")
    p.add_argument("--pairs", help='JSON Lines file of {"chosen": str, "rejected": str}')
    p.add_argument("--n-pairs", type=int, default=2000, help="synthetic pairs when --pairs is not given")
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=cmd_train_rm)

    p = sub.add_parser("presets", help="list the config presets")
    p.set_defaults(handler=cmd_presets)

    p = sub.add_parser("schema", help="print the JSON Schema of run configs")
    p.set_defaults(handler=cmd_schema)


def cmd_train(args: argparse.Namespace) -> int:
    from rlhfkit.config import check_runtime, to_yaml

    cfg = config_from_args(args)  # ConfigError -> exit 2 in cli.main, before anything is written
    if args.print_config:
        print(to_yaml(cfg))
        return EXIT_OK
    check_runtime(cfg)  # e.g. adamw_8bit without bitsandbytes: exit 2 too, before the run starts
    from rlhfkit.adapters.transport import server_from_env
    from rlhfkit.events import Sink, new_run_id
    from rlhfkit.runlog import configure_console, default_level, train_log, truthy
    from rlhfkit.runner import run_training
    from rlhfkit.sinks import ConsoleSink

    verbose = args.verbose if args.verbose is not None else truthy(os.environ.get("VERBOSE"))
    level = args.log_level or ("INFO" if verbose and not os.environ.get("LOG_LEVEL") else default_level())
    if args.log_level or verbose or os.environ.get("LOG_LEVEL"):
        configure_console(level)
    sinks: list[Sink] = [] if args.quiet else [ConsoleSink(stream=sys.stderr, every=1 if verbose else 10)]
    run_id = args.run_id or new_run_id()
    server, token = (None, None) if args.offline else server_from_env(args.server, args.token)
    remote = _remote_sink(cfg, Path(args.out) / run_id, server, token) if server else None
    if remote is not None:
        sinks.append(remote)
    try:
        with train_log(Path(args.out) / run_id, level) as log_sink:
            logging.getLogger("rlhfkit.train").debug("run %s, resolved config:\n%s", run_id, to_yaml(cfg))
            summary = run_training(cfg, run_id=run_id, sinks=[*sinks, log_sink], out_dir=args.out,
                                   write_events=remote is None)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        print(f"rlhfkit: run failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        if args.json:
            print_json({"status": "failed", "error": f"{type(exc).__name__}: {exc}"})
        return EXIT_FAILED
    finally:
        if remote is not None:
            remote.close()  # drains what is left (or says how to upload it later)
            if remote.remote_id and not args.quiet:
                print(f"run {remote.remote_id} on {server}/runs/{remote.remote_id}", file=sys.stderr)
    if args.json:
        print_json(_jsonable(summary))
    return EXIT_OK


def _remote_sink(cfg: Any, run_dir: Path, server: str, token: str | None) -> Any:
    """The sink that writes ``run_dir/events.jsonl`` and uploads it to ``server`` as it grows."""
    from rlhfkit.adapters.transport import RemoteSink, RunMeta
    from rlhfkit.config import total_steps

    meta = RunMeta(name=cfg.name, source="external", config=cfg.model_dump(mode="json"), tags=list(cfg.tags),
                   seed=cfg.seed, total_steps=total_steps(cfg))
    return RemoteSink(run_dir, meta, server=server, token=token)


def cmd_train_rm(args: argparse.Namespace) -> int:
    from rlhfkit import tiny
    from rlhfkit.rewards import ModelReward, train_reward_model

    tok = tiny.get_tokenizer()
    if args.pairs:
        path = Path(args.pairs)
        if not path.exists():
            return usage_error(f"--pairs: no such file {path}")
        pairs = []
        for i, line in enumerate(path.read_text().splitlines()):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                pairs.append((str(row["chosen"]), str(row["rejected"])))
            except (ValueError, KeyError) as exc:
                return usage_error(f"--pairs line {i + 1}: expected {{\"chosen\": ..., \"rejected\": ...}} ({exc})")
    else:
        pairs = synthetic_preference_pairs(args.n_pairs, seed=args.seed)
    n_eval = max(1, len(pairs) // 10)
    model = ModelReward(tok, n_layer=args.n_layer, n_embd=args.n_embd, n_head=args.n_head, seed=args.seed)
    result = train_reward_model(model, pairs[n_eval:], epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                seed=args.seed, eval_pairs=pairs[:n_eval])
    model.save(args.out, info=result)
    result["out"] = args.out
    if args.json:
        print_json(result)
    else:
        print(f"reward model written to {args.out}: loss {result['loss']:.4f}, held-out pair accuracy "
              f"{result.get('eval_accuracy', float('nan')):.1%} in {result['seconds']:.1f}s", file=sys.stderr)
    return EXIT_OK


def synthetic_preference_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Pairs of shipped-corpus sentences; the more positive one (VADER compound) is 'chosen'."""
    import random

    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    from rlhfkit import tiny

    rng = random.Random(seed)
    sents = tiny.corpus(max(4 * n, 200), seed=seed)
    vader = SentimentIntensityAnalyzer()
    scored = [(s, vader.polarity_scores(s)["compound"]) for s in sents]
    pairs: list[tuple[str, str]] = []
    while len(pairs) < n:
        (a, sa), (b, sb) = rng.sample(scored, 2)
        if abs(sa - sb) < 0.2:
            continue
        pairs.append((a, b) if sa > sb else (b, a))
    return pairs


def cmd_presets(args: argparse.Namespace) -> int:
    from rlhfkit.config import configs_dir, load_yaml, preset_names

    for name in preset_names():
        data = load_yaml(configs_dir() / f"{name}.yaml")
        print(f"{name:15s} {data.get('name', '')}")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from rlhfkit.config import config_json_schema

    print(json.dumps(config_json_schema(), indent=2))
    return EXIT_OK


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}
