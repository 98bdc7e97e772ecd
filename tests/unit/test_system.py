"""The system sampler: its own thread, the configured interval, GPU series absent without a GPU,
and events from two threads that keep one gap-free sequence."""

from __future__ import annotations

import time

import pytest

from rlhfkit.config import ConfigError, load_config
from rlhfkit.events import Event, MetricsEvent
from rlhfkit.metrics import METRICS, M
from rlhfkit.runner import run_training
from rlhfkit.sinks import MemorySink
from rlhfkit.system import SystemSampler

TINY = {"train.steps_per_epoch": 40, "ppo.batch_size": 4, "ppo.mini_batch_size": 4, "ppo.ppo_epochs": 1,
        "train.eval_every": 0, "train.eval_prompts": 4, "train.eval_samples_logged": 2,
        "generation.max_new_tokens": 8, "model.warm_start": False, "model.max_length": 40, "train.threads": 1,
        "train.device": "cpu", "monitor.system_interval_s": 1}


def test_samples_arrive_at_the_interval_on_their_own_thread() -> None:
    got: list[Event] = []
    sampler = SystemSampler(1.0, emit=got.append, step=lambda: 7)
    sampler.start()
    time.sleep(3.4)
    sampler.stop()
    assert len(got) == 4  # at 1, 2 and 3 s, and one when it stops
    assert all(isinstance(e, MetricsEvent) and e.step == 7 for e in got)
    gaps = [b.ts - a.ts for a, b in zip(got[:3], got[1:3], strict=False)]
    assert all(0.8 < g < 1.5 for g in gaps), gaps
    values = got[-1].values  # type: ignore[union-attr]
    for key in (M.SYS_CPU_PERCENT, M.SYS_RSS_MB, M.SYS_HOST_MEM_USED_MB, M.SYS_HOST_MEM_PERCENT):
        assert key in values and key in METRICS
    assert values[M.SYS_RSS_MB] > 10


def test_gpu_series_are_absent_not_zero_without_a_gpu() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    got: list[Event] = []
    sampler = SystemSampler(1.0, emit=got.append, step=lambda: 0)
    sampler.start()
    time.sleep(1.3)
    sampler.stop()
    assert got and not any(k.startswith("system/gpu") for e in got for k in e.values)  # type: ignore[union-attr]


def test_interval_below_one_second_is_refused() -> None:
    with pytest.raises(ValueError):
        SystemSampler(0.5)
    with pytest.raises(ConfigError) as err:
        load_config("smoke", {"monitor.system_interval_s": 0.5})
    assert err.value.errors[0]["field"] == "monitor.system_interval_s"


def test_a_native_run_has_system_series_and_one_gap_free_sequence() -> None:
    sink = MemorySink()
    run_training(load_config("smoke", {**TINY, "train.steps_per_epoch": 12}), sinks=[sink], out_dir=None)
    events = sink.events
    assert [e.seq for e in events] == list(range(len(events)))  # two emitting threads, no duplicate seq
    system = [e for e in events if isinstance(e, MetricsEvent) and M.SYS_RSS_MB in e.values]
    run_s = events[-1].ts - events[0].ts
    assert len(system) >= max(1, int(run_s) - 1), (len(system), run_s)  # the last one when training ends
    assert events[-1].type == "run_finished"
    last_system = max(i for i, e in enumerate(events) if e in system)
    assert last_system < len(events) - 1  # the sampler stopped before the terminal event
