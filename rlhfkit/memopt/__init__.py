"""Memory analyzer and config suggestions: how much memory a PPO run needs, and what fits a budget.

* :mod:`rlhfkit.memopt.model` — the analytic model (weights, gradients, optimizer states,
  activations, logits, KV cache, overhead per model and per stage);
* :mod:`rlhfkit.memopt.measurement` — the measured per-stage peaks of a short real run;
* :mod:`rlhfkit.memopt.suggest` — :func:`suggest_config`, a search over the memory knobs ranked by
  predicted throughput, writing ``suggested_config.yaml``.
"""

from rlhfkit.memopt.measurement import Measurement, measure, measure_in_process
from rlhfkit.memopt.model import (
    GiB,
    MemoryEstimate,
    MiB,
    ModelShape,
    Plan,
    estimate_memory,
    format_estimate,
    plan_from_config,
)

__all__ = [
    "GiB", "Measurement", "MemoryEstimate", "MiB", "ModelShape", "Plan", "estimate_memory", "format_estimate",
    "measure", "measure_in_process", "plan_from_config",
]
