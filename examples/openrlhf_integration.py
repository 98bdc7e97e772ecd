"""OpenRLHF runs in rlhfkit — both ways, demonstrated without a GPU.

OpenRLHF itself needs DeepSpeed, Ray and vLLM on GPUs, so this example plays the part of its PPO
trainer's logging: it writes the scalars OpenRLHF's ``TensorboardLogger`` writes (``train/<key>``,
with the keys of its PPO ``logs_dict``) while a follower streams them into rlhfkit, and it feeds
the same records to the drop-in logger. On a real job:

    # (a) no change to the job: follow its TensorBoard directory (--use_tensorboard DIR)
    rlhfkit ingest-tensorboard DIR/<wandb_run_name> --source openrlhf

    # (b) drop-in logger: in the launch script, before the trainer is built
    from rlhfkit.adapters.openrlhf import patch_openrlhf
    patch_openrlhf()          # then pass --use_wandb rlhfkit (any value switches the logger on)

Run it:  ``python examples/openrlhf_integration.py [--server URL] [--steps 6]``
(without a server the events go to ``runs/<run_id>/events.jsonl``; ``rlhfkit import`` uploads them).
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
import threading
import time
import types
from pathlib import Path
from typing import Any


def ppo_logs(step: int) -> dict[str, float]:
    """A plausible OpenRLHF PPO ``logs_dict`` for one step (keys as OpenRLHF names them)."""
    return {
        "policy_loss": -0.05 + 0.01 * math.sin(step), "actor_lr": 5e-7, "critic_loss": 0.8 / step,
        "critic_lr": 9e-6, "values": 0.1 * step, "kl": 0.002 * step, "reward": 0.2 + 0.05 * step,
        "return": 0.15 + 0.05 * step, "response_length": 180.0 + 4 * step, "total_length": 420.0 + 4 * step,
        "ppo_clip_ratio": 0.02, "ppo_kl": 0.001, "entropy_loss": 1.2 - 0.02 * step,
        "timing/generation": 12.0, "timing/ppo_train": 7.5,
    }


def write_tensorboard(logdir: Path, steps: int, interval: float) -> None:
    """What OpenRLHF's TensorboardLogger.log_train does each step: one scalar per key, prefixed train/."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(logdir))
    for step in range(1, steps + 1):
        for key, value in ppo_logs(step).items():
            writer.add_scalar(f"train/{key}", value, step)
        writer.flush()
        time.sleep(interval)
    writer.close()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--server", default=None, help="default $RLHFKIT_SERVER; unset = local files only")
    parser.add_argument("--out", default=None, help="where logs and local event files go (default: a temp dir)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    from rlhfkit.adapters.openrlhf import RLHFKitLogger, ingest_tensorboard

    out = Path(args.out or tempfile.mkdtemp(prefix="openrlhf-rlhfkit-"))

    # (a) follow a TensorBoard directory that grows while "training" runs in another thread
    logdir = out / "tensorboard" / "ppo-demo"
    trainer = threading.Thread(target=write_tensorboard, args=(logdir, args.steps, 0.2))
    trainer.start()
    follower = ingest_tensorboard(logdir, source="openrlhf", name="openrlhf-tensorboard-demo", server=args.server,
                                  out_dir=out / "runs", poll_interval=0.2, idle_timeout=2.0)
    trainer.join()
    print(f"(a) ingest-tensorboard: run {follower.run.id}, {follower.points} points -> {follower.run.events_path}")

    # (b) the drop-in logger, called the way OpenRLHF's trainer calls its loggers
    openrlhf_args = types.SimpleNamespace(wandb_run_name="openrlhf-logger-demo", seed=42, actor_learning_rate=5e-7,
                                          init_kl_coef=0.01, advantage_estimator="gae")
    logger = RLHFKitLogger(openrlhf_args, server=args.server, out_dir=out / "runs")
    for step in range(1, args.steps + 1):
        logger.log_train(step, ppo_logs(step))
    logger.close()
    print(f"(b) RLHFKitLogger: run {logger.run.id}, {args.steps} steps -> {logger.run.events_path}")
    return {"tensorboard_run": follower.run.id, "points": follower.points, "logger_run": logger.run.id,
            "events": [str(follower.run.events_path), str(logger.run.events_path)]}


if __name__ == "__main__":
    main()
