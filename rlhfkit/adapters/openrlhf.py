"""OpenRLHF runs reporting into rlhfkit.

OpenRLHF has no callback API: its PPO trainer hands each step's ``logs_dict`` to a wandb or
TensorBoard logger object (``log_train(global_step, logs_dict)``; the TensorBoard one writes each
value as the scalar ``train/<key>``). Two ways in, both mapping OpenRLHF's names
(``train/policy_loss``, ``train/kl``, ``train/reward``, ``train/response_length``, ...) to ours:

* :class:`TensorBoardFollower` / ``rlhfkit ingest-tensorboard LOGDIR --source openrlhf`` — follows
  a TensorBoard log directory while training runs (new files and growing files) and streams
  the new scalars into a run. Nothing in the training job changes; works on any TensorBoard log.
* :class:`RLHFKitLogger` — an object with OpenRLHF's logger interface, to use in place of its
  wandb logger (:func:`patch_openrlhf` swaps it in, so ``--use_wandb rlhfkit`` reports here).

Scalars named ``timing/<stage>`` (with or without ``train/``) are also sent as stage timings,
with OpenRLHF's stage names mapped to ours (:data:`TIMING_STAGES`). The follower reads any peer's
TensorBoard log the same way: verl's ``timing_s/<stage>`` and NeMo-RL's ``timing/train/<stage>``
become stage timings too, and their metric names (``actor/*``, ``critic/*``, ``response_length/*``,
``timing_per_token_ms/*``, mismatch metrics) map through the contract's aliases.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from rlhfkit.adapters.mapping import to_float
from rlhfkit.adapters.track import Run
from rlhfkit.adapters.transport import ClientFactory, default_client

_log = logging.getLogger("rlhfkit.adapters")

TRAIN_PREFIX = "train/"
# Timing scalars: OpenRLHF ``timing/<stage>``, verl ``timing_s/<stage>``, NeMo-RL ``timing/train/<stage>``
# (longest prefix first).
TIMING_PREFIXES = ("train/timing/", "timing/train/", "timing_s/", "timing/")
# Peers' stage names -> our pipeline stages; other timing names stay as they are.
TIMING_STAGES: dict[str, str] = {
    # OpenRLHF
    "generation": "generation", "generate": "generation", "rollout": "generation",
    "make_experience": "scoring", "experience": "scoring", "reward": "scoring", "reward_model": "scoring",
    "ppo_train": "update", "train": "update", "training": "update",
    "eval": "evaluation", "evaluation": "evaluation",
    # verl (ray_trainer.py: gen, reward, old_log_prob, ref, values, adv, update_critic, update_actor, testing)
    "gen": "generation", "old_log_prob": "scoring", "ref": "scoring", "values": "scoring",
    "adv": "advantages", "update_critic": "update", "update_actor": "update", "testing": "evaluation",
    # NeMo-RL (grpo.py: timing/train/...)
    "prepare_for_generation": "generation", "reward_calculation": "scoring", "logprob_inference": "scoring",
    "policy_and_reference_logprobs": "scoring", "policy_training": "update", "validation": "evaluation",
}
TIMING_TOTALS = ("total", "step", "step_total", "total_step_time")


def split_timings(logs: Mapping[str, Any]) -> tuple[dict[str, float], float | None]:
    """``timing/...`` scalars -> ({stage: seconds}, step total or None)."""
    stages: dict[str, float] = {}
    total: float | None = None
    for key, raw in logs.items():
        prefix = next((p for p in TIMING_PREFIXES if key.startswith(p)), None)
        value = to_float(raw)
        if prefix is None or value is None:
            continue
        short = key[len(prefix):]
        if short in TIMING_TOTALS:
            total = value
        else:
            stage = TIMING_STAGES.get(short, short)
            stages[stage] = stages.get(stage, 0.0) + value
    return stages, total


def log_record(run: Run, step: int, logs: Mapping[str, Any]) -> None:
    """One OpenRLHF step record (keys as they appear in TensorBoard) -> metrics, alerts, timings."""
    run.log(logs, step=step, strip_prefix=TRAIN_PREFIX)
    stages, total = split_timings(logs)
    if stages:
        run.log_timings(step, stages, total if total is not None else sum(stages.values()))


# -- TensorBoard follower ----------------------------------------------------------------------
def _scalars(record: bytes) -> Iterator[tuple[int, str, float]]:
    from tensorboard.compat.proto import event_pb2
    from tensorboard.util import tensor_util

    event = event_pb2.Event.FromString(record)
    if not event.HasField("summary"):
        return
    for value in event.summary.value:
        kind = value.WhichOneof("value")
        if kind == "simple_value":
            yield event.step, value.tag, float(value.simple_value)
        elif kind == "tensor" and value.metadata.plugin_data.plugin_name in ("scalars", ""):
            arr = tensor_util.make_ndarray(value.tensor)
            if arr.size == 1 and arr.dtype.kind in "fiub":
                yield event.step, value.tag, float(arr.reshape(()))


class TensorBoardFollower:
    """Streams the scalars of a TensorBoard log directory (and its sub-directories) into a run.

    Each :meth:`poll` reads what was appended to every event file since the last poll, groups the
    scalars by step and logs them (mapped names, monitor alerts, ``timing/*`` as stage timings).

    Args:
        logdir: the directory TensorBoard would be pointed at.
        run: the run the scalars go into (started on the first poll that finds data).
        poll_interval: seconds between polls in :meth:`follow`.
    """

    def __init__(self, logdir: str | Path, run: Run, poll_interval: float = 1.0) -> None:
        self.logdir = Path(logdir)
        self.run = run
        self.poll_interval = poll_interval
        self._loaders: dict[Path, Any] = {}
        self.points = 0

    def _files(self) -> list[Path]:
        if not self.logdir.exists():
            return []
        return sorted(p for p in self.logdir.rglob("*tfevents*") if p.is_file())

    def poll(self) -> int:
        """Read new data once; returns the number of scalar points found."""
        from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader

        by_step: dict[int, dict[str, float]] = defaultdict(dict)
        for path in self._files():
            loader = self._loaders.get(path)
            if loader is None:
                loader = self._loaders[path] = RawEventFileLoader(str(path))
            for record in loader.Load():
                for step, tag, value in _scalars(record):
                    by_step[step][tag] = value
        n = sum(len(v) for v in by_step.values())
        for step in sorted(by_step):
            log_record(self.run, step, by_step[step])
        self.points += n
        return n

    def follow(self, idle_timeout: float | None = None, should_stop: Callable[[], bool] | None = None) -> int:
        """Poll until ``should_stop()`` or ``idle_timeout`` seconds pass without new data; returns points."""
        last_data = time.monotonic()
        while True:
            if self.poll():
                last_data = time.monotonic()
            if should_stop is not None and should_stop():
                break
            if idle_timeout is not None and time.monotonic() - last_data >= idle_timeout:
                break
            time.sleep(self.poll_interval)
        self.poll()  # whatever landed during the last sleep
        return self.points


def ingest_tensorboard(logdir: str | Path, *, source: str = "openrlhf", name: str | None = None,
                       server: str | None = None, token: str | None = None, out_dir: str | Path = "runs",
                       poll_interval: float = 1.0, idle_timeout: float | None = None,
                       follow: bool = True, warning_thresholds: dict[str, float] | None = None,
                       client_factory: ClientFactory = default_client) -> TensorBoardFollower:
    """Create a run for ``logdir`` and stream its scalars into it; returns the follower (``.run``, ``.points``)."""
    src = source if source in ("openrlhf", "trl", "external") else "external"
    run = Run(name or Path(logdir).resolve().name, config={"logdir": str(logdir)}, source=src,  # type: ignore[arg-type]
              tags=[*dict.fromkeys([src, source]), "tensorboard"], server=server, token=token, out_dir=out_dir,
              warning_thresholds=warning_thresholds, client_factory=client_factory)
    run.start()
    follower = TensorBoardFollower(logdir, run, poll_interval=poll_interval)
    try:
        if follow:
            follower.follow(idle_timeout=idle_timeout)
        else:
            follower.poll()
    except KeyboardInterrupt:
        follower.poll()
        run.finish({"points": follower.points, "stopped": "interrupted"})
        raise
    except BaseException as exc:
        run.fail(exc)
        raise
    run.finish({"points": follower.points})
    return follower


# -- drop-in logger ----------------------------------------------------------------------------
class RLHFKitLogger:
    """OpenRLHF's logger interface (``log_train``, ``log_eval``, ``close``) reporting into rlhfkit.

    Args:
        args: OpenRLHF's parsed arguments (stored as the run config; ``wandb_run_name`` names it).
        name / server / token / out_dir / warning_thresholds: as for :class:`~rlhfkit.adapters.track.Run`.
    """

    def __init__(self, args: Any = None, *, name: str | None = None, server: str | None = None,
                 token: str | None = None, out_dir: str | Path = "runs",
                 warning_thresholds: dict[str, float] | None = None,
                 client_factory: ClientFactory = default_client) -> None:
        config = dict(vars(args)) if args is not None and hasattr(args, "__dict__") else {}
        run_name = name or getattr(args, "wandb_run_name", None) or None
        self.run = Run(run_name, config=config, source="openrlhf", tags=["openrlhf"], server=server, token=token,
                       out_dir=out_dir, warning_thresholds=warning_thresholds, client_factory=client_factory,
                       total_steps=getattr(args, "max_steps", None) if isinstance(getattr(args, "max_steps", None), int) else None)
        self.run.start(seed=getattr(args, "seed", None) if isinstance(getattr(args, "seed", None), int) else None)

    def log_train(self, global_step: int, logs_dict: Mapping[str, Any]) -> None:
        logs = {f"{TRAIN_PREFIX}{k}": v for k, v in logs_dict.items() if k != "generated_samples"}
        log_record(self.run, int(global_step), logs)

    def log_eval(self, global_step: int, logs_dict: Mapping[str, Any]) -> None:
        self.run.log({k if k.startswith("eval") else f"eval/{k}": v for k, v in logs_dict.items()},
                     step=int(global_step))

    def close(self) -> None:
        self.run.finish()


OPENRLHF_LOGGER_MODULES = (
    "openrlhf.utils.logging_utils",
    "openrlhf.trainer.ppo_utils.loggers",
    "openrlhf.trainer.ppo_trainer",
    "openrlhf.trainer.ppo_trainer_async",
)


def patch_openrlhf(replace: str = "WandbLogger", modules: tuple[str, ...] = OPENRLHF_LOGGER_MODULES) -> list[str]:
    """Make OpenRLHF build :class:`RLHFKitLogger` where it would build its wandb logger.

    Call it in the launch script before the trainer is created, and pass ``--use_wandb rlhfkit``
    (any non-empty value: it only switches the logger on). Returns the modules patched; modules
    of other OpenRLHF versions that do not exist are skipped.
    """
    import importlib

    patched = []
    for mod_name in modules:
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:
            continue
        if hasattr(mod, replace):
            setattr(mod, replace, RLHFKitLogger)
            patched.append(mod_name)
    if not patched:
        _log.warning("rlhfkit: no OpenRLHF logger found to replace (is openrlhf installed?)")
    return patched
