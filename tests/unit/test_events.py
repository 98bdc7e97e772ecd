"""Events round-trip through JSON, sinks receive them in order, a broken sink cannot break the loop."""

from __future__ import annotations

import json

from rlhfkit.events import (
    AlertEvent,
    EventEmitter,
    MetricsEvent,
    RunFinished,
    RunStarted,
    event_json_schema,
    parse_event,
)
from rlhfkit.sinks import JsonlSink, MemorySink


def test_round_trip_and_sequence(tmp_path) -> None:
    mem = MemorySink()
    jl = JsonlSink(tmp_path / "r1" / "events.jsonl")
    em = EventEmitter("r1", [mem, jl])
    em.emit(RunStarted(name="x", total_steps=2))
    em.emit(MetricsEvent(step=0, values={"reward/mean": 0.5}))
    em.emit(AlertEvent(step=0, rule="kl_high", message="m", suggestion="s"))
    em.emit(RunFinished(step=1, summary={"steps": 1}))
    jl.close()
    lines = (tmp_path / "r1" / "events.jsonl").read_text().splitlines()
    parsed = [parse_event(line) for line in lines]
    assert [e.seq for e in parsed] == [0, 1, 2, 3]
    assert [e.type for e in parsed] == ["run_started", "metrics", "alert", "run_finished"]
    assert all(e.run_id == "r1" for e in parsed)
    assert parsed[1].values == {"reward/mean": 0.5}
    assert [e.seq for e in mem.events] == [0, 1, 2, 3]
    assert json.loads(lines[0])["v"] == 1


def test_broken_sink_does_not_raise() -> None:
    class Boom:
        def emit(self, event):  # noqa: ANN001
            raise RuntimeError("disk full")

        def close(self) -> None:
            pass

    mem = MemorySink()
    em = EventEmitter("r", [Boom(), mem])
    em.emit(MetricsEvent(step=0, values={"a": 1.0}))
    assert len(mem.events) == 1


def test_schema_lists_all_types() -> None:
    text = json.dumps(event_json_schema())
    for t in ("run_started", "metrics", "timings", "memory", "alert", "eval", "artifact", "log",
              "run_finished", "run_failed", "run_cancelled"):
        assert t in text


def test_steps_done_after_counts_training_steps_and_reads_evaluations_as_between_steps() -> None:
    from rlhfkit.events import steps_done_after

    assert steps_done_after("metrics", 0, ["reward/mean"]) == 1  # step index 0 done
    assert steps_done_after("metrics", 3, ["system/rss_mb", "system/cpu_percent"]) is None  # sampler readings
    assert steps_done_after("timings", 39, []) == 40
    assert steps_done_after("eval", 0) == 0  # before the first step
    assert steps_done_after("eval", 40) == 40  # after the last of 40: not a 41st
    assert steps_done_after("metrics", 40, ["eval/reward_mean"]) == 40
    assert steps_done_after("metrics", 39, ["eval/reward_mean", "kl/k1"]) == 40
    assert steps_done_after("run_finished", 40) is None and steps_done_after("metrics", None, ["kl/k1"]) is None
