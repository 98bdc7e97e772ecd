"""Shared fixtures: small, fast run configs and a per-session cache for the tiny warm-start."""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch

from tests.utils import fast_overrides

# Two cores: keep torch from oversubscribing when tests run beside a server process.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def fast_config() -> Any:
    from rlhfkit.config import load_config

    return load_config("smoke", fast_overrides())
