"""A profiled smoke run made once per test session and shared by the analysis, report and export tests.

Its monitor thresholds are set so that two rules fire on the first step (``kl_high`` with a tiny
``kl_max``, ``entropy_collapse`` with a high ``entropy_min``): the tests then have real alerts,
written by the real monitor, to check the analysis against.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.utils import fast_overrides

RUN_ID = "smoke-profiled"
ALERTING = {"monitor.thresholds": {"kl_max": 1e-6, "entropy_min": 100.0}}
PROFILED = {"profile.enabled": True, "profile.skip_first": 0, "profile.wait": 0, "profile.warmup": 1,
            "profile.active": 1, "profile.repeat": 1}


def profiled_smoke_run(factory: pytest.TempPathFactory) -> Path:
    """``runs/smoke-profiled``: events, metrics.csv, alerts.csv, a trace and the profile summary."""
    base = factory.getbasetemp() / "shared-smoke-run"
    run_dir = base / RUN_ID
    if (run_dir / "profile_summary.json").exists():
        return run_dir
    from rlhfkit.config import load_config
    from rlhfkit.runner import run_training

    cfg = load_config("smoke", fast_overrides(**ALERTING, **PROFILED))
    run_training(cfg, run_id=RUN_ID, out_dir=base)
    return run_dir
