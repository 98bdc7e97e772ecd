"""Keeping freed heap memory for reuse: which environments are left alone, and the real effect —
page faults of a large tensor allocated again after a free — in fresh interpreters."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rlhfkit.hostmem import environment_chose_allocator, glibc

# Each round allocates four 24 MiB tensors (a size glibc's dynamic threshold moves to the heap),
# writes and frees them; prints the minor page faults of rounds 6-12 (the first rounds take their
# pages whatever malloc does). Where freed memory goes back to the OS, every round faults its pages
# in again; glibc's default does so in some rounds, depending on what the process allocated before.
_PROBE = """
import json, resource, sys
import torch
{setup}
faults = []
for i in range(12):
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    ts = [torch.empty(6 * 2**20).fill_(1.0) for _ in range(4)]
    del ts
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
print(json.dumps({{"applied": applied, "faults": sum(faults[5:])}}))
"""
_ROUND = 4 * 24 * 2**20 // 4096  # one round's tensors in 4 KiB pages


def _probe(setup: str, env: dict[str, str] | None = None) -> dict:
    clean = {k: v for k, v in os.environ.items() if not environment_chose_allocator({k: v})}
    out = subprocess.run([sys.executable, "-c", _PROBE.format(setup=setup)], capture_output=True, text=True,
                         check=True, env={**clean, **(env or {})}, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_environment_choices_are_recognised() -> None:
    assert not environment_chose_allocator({"PATH": "/usr/bin", "OMP_NUM_THREADS": "2"})
    assert environment_chose_allocator({"MALLOC_MMAP_THRESHOLD_": "65536"})
    assert environment_chose_allocator({"MALLOC_ARENA_MAX": "x", "MALLOC_TRIM_THRESHOLD_": "0"})
    assert not environment_chose_allocator({"MALLOC_ARENA": "2"})  # not a glibc variable (no trailing _)
    assert environment_chose_allocator({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"})
    assert not environment_chose_allocator({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2"})
    assert environment_chose_allocator({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"})


@pytest.mark.skipif(glibc() is None, reason="glibc's mallopt is what is switched")
def test_freed_memory_is_reused_without_new_page_faults() -> None:
    kept = _probe("from rlhfkit.hostmem import keep_freed_memory\napplied = keep_freed_memory()")
    assert kept["applied"] is True
    assert kept["faults"] < 0.05 * _ROUND, kept  # the heap's freed blocks serve the later rounds
    # the control: memory handed back on free (a fixed small mmap threshold) is faulted in every round
    control = _probe("applied = False", env={"MALLOC_MMAP_THRESHOLD_": "65536"})
    assert control["faults"] >= 7 * _ROUND * 0.9, control


@pytest.mark.skipif(glibc() is None, reason="glibc's mallopt is what is switched")
def test_the_environment_wins() -> None:
    res = _probe("from rlhfkit.hostmem import keep_freed_memory\napplied = keep_freed_memory()",
                 env={"MALLOC_MMAP_THRESHOLD_": "65536"})
    assert res["applied"] is False
    assert res["faults"] >= 7 * _ROUND * 0.9  # the environment's mmap threshold maps every round


@pytest.mark.skipif(glibc() is None, reason="glibc's mallopt is what is switched")
@pytest.mark.parametrize("keep", [True, False])
def test_cpu_trainer_setup_follows_the_config(keep: bool) -> None:
    setup = f"""
from rlhfkit import hostmem
from rlhfkit.config import load_config
from rlhfkit.runner import build_components
from rlhfkit.trainer import PPOTrainer
from tests.utils import fast_overrides
cfg = load_config("smoke", fast_overrides(**{{"train.malloc_keep_freed": {keep}}}))
PPOTrainer(*build_components(cfg), config=cfg).setup()
applied = hostmem.kept()
"""
    res = _probe(setup)
    assert res["applied"] is keep
    if keep:
        assert res["faults"] < 0.05 * _ROUND, res
