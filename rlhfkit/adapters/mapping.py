"""Peer metric names -> ours, for logs that arrive as ``{name: number}`` dicts.

The alias lists live in :mod:`rlhfkit.metrics` (the contract); this module applies them to one
log record: numbers only, unknown keys kept under their own names, and a rule for collisions.

Collisions happen because peers log several estimates of one quantity in one record (TRL 0.11
logs both ``env/reward_mean`` and ``ppo/mean_scores``; TRL's PPOTrainer logs ``objective/entropy``
and ``policy/entropy_avg``). The canonical name goes to the key listed first in the metric's
alias tuple (an exact canonical key beats every alias); the others keep their own names, so no
number is lost and none is silently averaged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from rlhfkit.metrics import METRICS, canonical


def _priority(key: str, name: str) -> int:
    if key == name:
        return -1
    spec = METRICS.get(name)
    if spec is None:
        return 10_000
    try:
        return spec.aliases.index(key)
    except ValueError:
        return 10_000


def to_float(value: Any) -> float | None:
    """A finite-or-not float from ints, floats, bools, numpy scalars and 1-element tensors; else None."""
    if value is None or isinstance(value, (str, bytes, dict, list, tuple)):
        return None
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):
        return None


def map_metrics(logs: Mapping[str, Any], *, strip_prefix: str = "") -> dict[str, float]:
    """Map one log record to canonical names.

    Args:
        logs: the peer's record; values that are not numbers (text, tables, None) are skipped.
        strip_prefix: a namespace the peer adds to every key (``"train/"`` for OpenRLHF's TensorBoard
            logger) that is tried without it when the full key has no alias.

    Returns ``{name: value}``; non-finite values are kept (the monitor alerts on them).
    """
    out: dict[str, float] = {}
    owner: dict[str, str] = {}  # canonical name -> the peer key that holds it
    for key, raw in logs.items():
        value = to_float(raw)
        if value is None:
            continue
        name = canonical(key)
        if name == key and strip_prefix and key.startswith(strip_prefix):
            name = canonical(key[len(strip_prefix):])
        if name == key or name not in METRICS:
            out[key] = value
            continue
        holder = owner.get(name)
        if holder is None:
            owner[name] = key
            out[name] = value
        elif _priority(key, name) < _priority(holder, name):
            out[holder] = out[name]  # the previous holder keeps its value under its own name
            owner[name] = key
            out[name] = value
        else:
            out[key] = value
    return out


def finite_only(values: Mapping[str, float]) -> dict[str, float]:
    """Drop NaN/inf (JSON cannot carry them; the alert that reported them can)."""
    return {k: v for k, v in values.items() if math.isfinite(v)}
