"""ProfilerHooks on a real (tiny, CPU) PPO run: valid Chrome trace, speedscope file valid against
speedscope's file-format schema, per-stage summary adding up to the step time, stage filtering."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from rlhfkit.config import load_config
from rlhfkit.metrics import STAGES
from rlhfkit.profiler import ProfilerHooks
from rlhfkit.profiler.report import summarize
from rlhfkit.profiler.trace import build_trees, speedscope
from rlhfkit.runner import run_training
from rlhfkit.sinks import MemorySink
from tests.utils import fast_overrides

# speedscope's file format (src/lib/file-format-spec.ts, published as file-format-schema.json),
# written out as JSON Schema: the structure speedscope's importer requires.
_FRAME = {"type": "object", "required": ["name"],
          "properties": {"name": {"type": "string"}, "file": {"type": "string"},
                         "line": {"type": "number"}, "col": {"type": "number"}}}
_EVENT = {"type": "object", "required": ["type", "at", "frame"],
          "properties": {"type": {"enum": ["O", "C"]}, "at": {"type": "number"}, "frame": {"type": "number"}}}
_UNIT = {"enum": ["none", "nanoseconds", "microseconds", "milliseconds", "seconds", "bytes"]}
SPEEDSCOPE_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": ["$schema", "shared", "profiles"],
    "properties": {
        "$schema": {"const": "https://www.speedscope.app/file-format-schema.json"},
        "shared": {"type": "object", "required": ["frames"], "properties": {"frames": {"type": "array", "items": _FRAME}}},
        "profiles": {"type": "array", "items": {"oneOf": [
            {"type": "object", "required": ["type", "name", "unit", "startValue", "endValue", "events"],
             "properties": {"type": {"const": "evented"}, "name": {"type": "string"}, "unit": _UNIT,
                            "startValue": {"type": "number"}, "endValue": {"type": "number"},
                            "events": {"type": "array", "items": _EVENT}}},
            {"type": "object", "required": ["type", "name", "unit", "startValue", "endValue", "samples", "weights"],
             "properties": {"type": {"const": "sampled"}, "name": {"type": "string"}, "unit": _UNIT,
                            "startValue": {"type": "number"}, "endValue": {"type": "number"},
                            "samples": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
                            "weights": {"type": "array", "items": {"type": "number"}}}},
        ]}},
        "name": {"type": "string"},
        "activeProfileIndex": {"type": "number"},
        "exporter": {"type": "string"},
    },
}


def check_speedscope(doc: dict) -> None:
    jsonschema.validate(doc, SPEEDSCOPE_SCHEMA)
    n_frames = len(doc["shared"]["frames"])
    for prof in doc["profiles"]:
        stack: list[int] = []
        last = prof["startValue"]
        for ev in prof["events"]:
            assert ev["at"] >= last and 0 <= ev["frame"] < n_frames  # non-decreasing, valid frame index
            last = ev["at"]
            if ev["type"] == "O":
                stack.append(ev["frame"])
            else:
                assert stack and stack.pop() == ev["frame"]  # balanced
        assert not stack and prof["endValue"] >= prof["startValue"]


@pytest.fixture(scope="module")
def profiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[ProfilerHooks, MemorySink]:
    out = tmp_path_factory.mktemp("profiles")
    cfg = load_config("smoke", fast_overrides(**{"train.steps_per_epoch": 4}))
    hooks = ProfilerHooks(output_dir=out, schedule=(1, 0, 1, 1, 1))
    sink = MemorySink()
    run_training(cfg, run_id="prof1", sinks=[sink], out_dir=None, hooks=[hooks])
    return hooks, sink


def test_trace_is_valid_chrome_trace_json(profiled: tuple[ProfilerHooks, MemorySink]) -> None:
    hooks, _ = profiled
    assert len(hooks.traces) == 1
    trace = json.loads(hooks.traces[0].read_text())
    events = trace["traceEvents"]
    assert all({"ph", "name"} <= set(e) for e in events)
    names = {e["name"] for e in events if e.get("ph") == "X"}
    assert {"generation", "scoring", "advantages", "update"} <= names
    assert {"scoring/reference", "update/backward"} <= names and any(n.startswith("aten::") for n in names)


def test_speedscope_file_validates_against_the_schema(profiled: tuple[ProfilerHooks, MemorySink]) -> None:
    hooks, _ = profiled
    ss = next(p for p in hooks.artifacts if p.name.startswith("speedscope"))
    doc = json.loads(ss.read_text())
    check_speedscope(doc)
    assert doc["profiles"] and any(f["name"] == "generation" for f in doc["shared"]["frames"])
    stacks = next(p for p in hooks.artifacts if p.name.startswith("stacks")).read_text().splitlines()
    assert any(";generation;" in line for line in stacks)
    assert all(line.rsplit(" ", 1)[1].isdigit() for line in stacks)


def test_stage_times_add_up_to_step_time(profiled: tuple[ProfilerHooks, MemorySink]) -> None:
    hooks, sink = profiled
    s = hooks.summary
    assert s["steps"] == 4
    assert abs(s["stage_sum"] - s["step_time"]["mean"]) <= 0.05 * s["step_time"]["mean"]
    # the same step times the trainer reported in its timings events
    measured = [e.step_time for e in sink.of_type("timings")]
    assert s["step_time"]["mean"] == pytest.approx(sum(measured) / len(measured), rel=1e-6)
    for st in ("generation", "update"):
        row = s["stages"][st]
        assert row["p50"] <= row["p95"] and 0 < row["share"] < 1 and row["tokens_per_sec"] > 0
    assert s["top_ops"]["generation"] and s["bottlenecks"]
    assert all(f["evidence"] for f in s["bottlenecks"])


def test_profiles_are_run_artifacts(profiled: tuple[ProfilerHooks, MemorySink]) -> None:
    _, sink = profiled
    kinds = {e.kind for e in sink.of_type("artifact")}
    assert {"trace", "speedscope", "profile_summary", "mem_report"} <= kinds
    for e in sink.of_type("artifact"):
        assert Path(e.path).stat().st_size == e.size_bytes > 0


def test_stage_filter_keeps_only_the_selected_stage(tmp_path: Path) -> None:
    cfg = load_config("smoke", fast_overrides(**{"train.steps_per_epoch": 2}))
    hooks = ProfilerHooks(output_dir=tmp_path, stages=["generation"], schedule=(0, 0, 1, 1, 1))
    run_training(cfg, out_dir=None, hooks=[hooks])
    names = {e["name"] for e in json.loads(hooks.traces[0].read_text())["traceEvents"] if e.get("ph") == "X"}
    assert "generation" in names and not names & {"update", "scoring", "update/backward"}


def test_summary_counts_skipped_stages_as_zero() -> None:
    steps = [{"step": 0, "step_time": 1.0, "tokens": 10, "stages": {"generation": 0.4, "update": 0.5}},
             {"step": 1, "step_time": 2.0, "tokens": 10, "stages": {"generation": 0.4, "update": 0.5,
                                                                     "evaluation": 1.0}}]
    s = summarize(steps)
    assert s["stages"]["evaluation"]["mean"] == pytest.approx(0.5)
    assert s["stages"]["evaluation"]["runs"] == 1
    assert s["stage_sum"] == pytest.approx(1.4) and s["step_time"]["mean"] == pytest.approx(1.5)
    assert s["coverage"] == pytest.approx(1.4 / 1.5)


def test_speedscope_from_overlapping_events_stays_balanced() -> None:
    # torch's clocks can make a child end a few ns after its parent: the export must clamp it
    events = [{"ph": "X", "name": "update", "ts": 0, "dur": 10, "pid": 1, "tid": 1},
              {"ph": "X", "name": "aten::mm", "ts": 2, "dur": 9, "pid": 1, "tid": 1},
              {"ph": "X", "name": "aten::add", "ts": 11, "dur": 1, "pid": 1, "tid": 1}]
    trees = build_trees(events)
    update, add = trees[(1, 1)]
    assert update.name == "update" and add.name == "aten::add"
    assert update.children[0].end == update.end  # the overhanging child was clamped into its parent
    check_speedscope(speedscope(trees))  # schema-valid, every open matched by a close


def test_unknown_stage_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown stage"):
        ProfilerHooks(stages=["rollout"])
    assert "generation" in STAGES


def _stage_summary(**means: float) -> dict:
    step = sum(means.values())
    return {"step_time": {"mean": step}, "coverage": 1.0, "other": 0.0,
            "stages": {k: {"mean": v, "share": v / step} for k, v in means.items()}}


def test_bottlenecks_name_an_update_dominated_by_epochs_once() -> None:
    from rlhfkit.profiler.report import bottleneck_report

    cfg = load_config("smoke", ["ppo.ppo_epochs=4"])
    found = bottleneck_report(_stage_summary(generation=0.1, scoring=0.05, update=0.8), {}, cfg, "cpu")
    update = [f for f in found if "update" in f["finding"]]
    assert [f["finding"] for f in update] == ["update dominates the step"]
    assert "ppo_epochs=4, 0.200 s per epoch" in update[0]["evidence"]
    # generation dominates, the update is still over 40%: the epochs get a finding of their own
    found = bottleneck_report(_stage_summary(generation=0.5, update=0.45), {}, cfg, "cpu")
    assert [f["finding"] for f in found][:2] == ["generation dominates the step", "the PPO update is a large share"]
    assert "0.113 s per epoch" in found[1]["evidence"]


def test_traced_substages_are_shares_of_their_parent_in_the_same_profiled_steps() -> None:
    """The stage table averages every step; sub-stages only the trace sees (update/forward, ...) are
    measured on the profiled steps, which run slower. Each table uses one set of steps: traced
    children are shown against their parent's time in the same traced steps, so they never add up
    to more than the parent."""
    from backend.services.artifacts import _to_public
    from rlhfkit.profiler.hooks import _substage_times

    us = 1e6
    events = [{"name": "ProfilerStep#3", "cat": "user_annotation", "dur": 1.3 * us},
              {"name": "update", "cat": "user_annotation", "dur": 1.0 * us},
              {"name": "update/forward", "cat": "user_annotation", "dur": 0.6 * us},
              {"name": "update/backward", "cat": "user_annotation", "dur": 0.3 * us},
              {"name": "scoring/reward", "cat": "user_annotation", "dur": 0.1 * us}]
    times = _substage_times(events)
    assert times["update"]["mean"] == pytest.approx(1.0) and times["update/forward"]["mean"] == pytest.approx(0.6)
    summary = {
        "steps": 10, "step_time": {"mean": 0.75},
        # every step: update 0.5 s of a 0.75 s step; scoring/reward timed on every step too
        "stages": {"update": {"mean": 0.5, "share": 0.5 / 0.75}, "scoring": {"mean": 0.2, "share": 0.2 / 0.75},
                   "scoring/reward": {"mean": 0.1, "share": 0.1 / 0.75}},
        "substages_profiled": {k: v for k, v in times.items() if "/" in k},
        "stages_profiled": {k: v for k, v in times.items() if "/" not in k},
    }
    p = _to_public("r1", "profile_summary.json", summary)
    assert [s.stage for s in p.substages] == ["scoring/reward"], "the all-steps table keeps all-steps rows only"
    assert p.traced_steps == 1
    traced = {s.stage: s for s in p.traced}
    assert traced["update"].mean_s == pytest.approx(1.0)
    children = {s.stage: s.share for s in p.traced if s.stage.startswith("update/")}
    assert children == {"update/forward": pytest.approx(0.6), "update/backward": pytest.approx(0.3)}
    assert sum(children.values()) <= 1.0


def test_profile_gpu_false_from_the_environment(monkeypatch) -> None:
    """PROFILE_GPU=false (the README's knob) turns the CUDA activity off; unset or true keeps it."""
    from rlhfkit.profiler.hooks import ProfilerHooks

    monkeypatch.setenv("PROFILE_GPU", "false")
    assert ProfilerHooks(output_dir="unused").profile_gpu is False
    assert ProfilerHooks(output_dir="unused", profile_gpu=True).profile_gpu is True
    monkeypatch.setenv("PROFILE_GPU", "1")
    assert ProfilerHooks(output_dir="unused").profile_gpu is True
    monkeypatch.delenv("PROFILE_GPU")
    assert ProfilerHooks(output_dir="unused").profile_gpu is True


def _speedscope_tree(doc: dict) -> dict:
    """The tree the UI's flame graph draws (frontend/src/lib/flame.ts fromSpeedscope): the file's name
    at the root, each evented profile's open frames as a path below it."""
    names = [f["name"] for f in doc["shared"]["frames"]]
    root: dict = {"name": doc.get("name", "profile"), "children": {}}
    for prof in doc["profiles"]:
        path: list[dict] = [root]
        for ev in prof["events"]:
            if ev["type"] == "O":
                kids = path[-1]["children"]
                name = names[ev["frame"]]
                path.append(kids.setdefault(name, {"name": name, "children": {}}))
            else:
                path.pop()
    return root


def _step_frames(node: dict) -> list[dict]:
    found = [node] if node["name"].startswith("rlhfkit step ") else []
    for c in node["children"].values():
        found += _step_frames(c)
    return found


def test_each_step_frame_holds_its_own_profiler_step(tmp_path: Path) -> None:
    """A real profiled run whose active window is two steps (schedule 0,0,0,2): the flame graph has one
    "rlhfkit step N" frame per step holding exactly ProfilerStep#N (it used to be one frame named after
    the window's last step, holding both), and ProfilerStep#0 starts with step 0's generation (not with
    the evaluation that runs before the first step)."""
    cfg = load_config("smoke", fast_overrides(**{"train.steps_per_epoch": 3, "train.eval_every": 0}))
    hooks = ProfilerHooks(output_dir=tmp_path, schedule=(0, 0, 0, 2, 1))
    run_training(cfg, out_dir=None, hooks=[hooks])
    assert [p.name for p in hooks.traces] == ["trace_step1.json"]
    doc = json.loads((hooks.run_dir / "speedscope_step1.json").read_text())
    check_speedscope(doc)
    tree = _speedscope_tree(doc)
    assert tree["name"] == "rlhfkit steps 0–1"  # the window, not one step
    frames = _step_frames(tree)
    assert sorted(f["name"] for f in frames) == ["rlhfkit step 0", "rlhfkit step 1"]
    for f in frames:
        n = f["name"].removeprefix("rlhfkit step ")
        steps = [c for c in f["children"] if c.startswith("ProfilerStep#")]
        assert steps == [f"ProfilerStep#{n}"], f"{f['name']} holds {steps}"
        assert {"generation", "update"} <= set(f["children"][f"ProfilerStep#{n}"]["children"])
        assert not _step_frames({"name": "", "children": f["children"]}), "no step frame inside another"
    stacks = (hooks.run_dir / "stacks_step1.txt").read_text()
    assert ";rlhfkit step 1;ProfilerStep#1;generation" in stacks
    assert ";rlhfkit step 0;ProfilerStep#1" not in stacks and ";rlhfkit step 1;ProfilerStep#0" not in stacks
    # the evaluation before step 0 is outside the profiled steps
    events = json.loads(hooks.traces[0].read_text())["traceEvents"]
    step0 = next(e for e in events if e.get("name") == "ProfilerStep#0")
    inside = [e["name"] for e in events if e.get("ph") == "X" and e.get("cat") == "user_annotation"
              and step0["ts"] <= e["ts"] < step0["ts"] + step0["dur"]]
    assert "evaluation" not in inside and "generation" in inside


def test_steps_are_renumbered_for_a_resumed_run() -> None:
    trace = {"traceEvents": [{"ph": "X", "name": "ProfilerStep#0", "ts": 0, "dur": 5},
                             {"ph": "X", "name": "ProfilerStep#1", "ts": 5, "dur": 5},
                             {"ph": "X", "name": "generation", "ts": 5, "dur": 2}]}
    from rlhfkit.profiler.trace import renumber_steps

    assert [e["name"] for e in renumber_steps(trace, 100)["traceEvents"]] == [
        "ProfilerStep#100", "ProfilerStep#101", "generation"]
