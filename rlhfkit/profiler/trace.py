"""Reading a ``torch.profiler`` Chrome trace and turning it into flame graphs and per-stage tables.

``torch.profiler`` writes Chrome trace JSON (complete events, ``"ph": "X"``, microseconds). Per
thread the events nest: the stage ranges we open with ``record_function`` (``generation``,
``scoring/reference``, ...; category ``user_annotation``) contain ``aten::`` operators, which
contain their callees. This module rebuilds those trees and derives:

* collapsed stacks (``stage;op;callee self_us`` per line, the format of Brendan Gregg's
  ``flamegraph.pl`` and of speedscope's importer);
* a speedscope evented profile (https://www.speedscope.app/file-format-schema.json), one per
  thread, with balanced open/close events and non-decreasing times;
* the top operators of each stage by self time (CPU operators, plus CUDA kernels attributed to
  the stage that launched them: the trainer synchronises the device at stage boundaries, so a
  stage's kernels run inside its wall-time range).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SPEEDSCOPE_SCHEMA = "https://www.speedscope.app/file-format-schema.json"
_GPU_CATS = {"kernel", "gpu_memcpy", "gpu_memset"}
STEP_PREFIX = "ProfilerStep#"  # torch.profiler's range around each step() interval
STEP_FRAME = "rlhfkit step "  # our frame around one step's events in the flame graph exports


@dataclass
class Node:
    """One complete event and the events nested inside it (same thread)."""

    name: str
    cat: str
    ts: float  # microseconds
    dur: float
    children: list[Node] = field(default_factory=list)

    @property
    def end(self) -> float:
        return self.ts + self.dur

    @property
    def self_time(self) -> float:
        return max(0.0, self.dur - sum(c.dur for c in self.children))


def load_trace(path: str | Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if isinstance(data, list):
        data = {"traceEvents": data}
    return data


def complete_events(trace: dict[str, Any]) -> list[dict[str, Any]]:
    """Complete ("X") events of the program; the profiler's own "PyTorch Profiler" span track is left out
    (it covers the whole window and would take half of every flame graph)."""
    return [e for e in trace.get("traceEvents", []) if e.get("ph") == "X" and "ts" in e and "dur" in e
            and e.get("pid") != "Spans" and not str(e.get("name", "")).startswith("PyTorch Profiler")]


def build_trees(events: list[dict[str, Any]]) -> dict[tuple[Any, Any], list[Node]]:
    """Nest the complete events of each (pid, tid) by time containment; returns roots per thread."""
    by_thread: dict[tuple[Any, Any], list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        by_thread[(e.get("pid"), e.get("tid"))].append(e)
    roots: dict[tuple[Any, Any], list[Node]] = {}
    for key, evs in by_thread.items():
        evs.sort(key=lambda e: (float(e["ts"]), -float(e["dur"])))
        stack: list[Node] = []
        top: list[Node] = []
        for e in evs:
            n = Node(str(e.get("name", "?")), str(e.get("cat", "")), float(e["ts"]), max(0.0, float(e["dur"])))
            while stack and n.ts >= stack[-1].end:
                stack.pop()
            if stack:
                parent = stack[-1]
                n.dur = min(n.dur, parent.end - n.ts)  # clock jitter: keep children inside parents
                parent.children.append(n)
            else:
                top.append(n)
            stack.append(n)
        roots[key] = top
    return roots


def stage_ranges(events: list[dict[str, Any]], stages: tuple[str, ...]) -> list[tuple[str, float, float]]:
    """(stage, start, end) of every top-level stage range on the CPU timeline, in time order."""
    out = [(str(e["name"]), float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in events
           if e.get("name") in stages and e.get("cat", "user_annotation") in ("user_annotation", "cpu_op", "")]
    return sorted(out, key=lambda r: r[1])


def _stage_at(ranges: list[tuple[str, float, float]], ts: float) -> str | None:
    for name, a, b in ranges:
        if a <= ts <= b:
            return name
    return None


def filter_trace(trace: dict[str, Any], keep: tuple[str, ...], stages: tuple[str, ...]) -> dict[str, Any]:
    """A copy of the trace with only the events that fall inside the ``keep`` stages' ranges
    (metadata events are kept so the viewer still names processes and threads)."""
    events = complete_events(trace)
    ranges = [r for r in stage_ranges(events, stages) if r[0] in keep]
    out = []
    for e in trace.get("traceEvents", []):
        if e.get("ph") != "X":
            out.append(e)
            continue
        ts = float(e.get("ts", 0))
        if any(a <= ts <= b for _, a, b in ranges):
            out.append(e)
    return {**trace, "traceEvents": out}


def renumber_steps(trace: dict[str, Any], first_step: int) -> dict[str, Any]:
    """The trace with ``ProfilerStep#k`` renamed ``ProfilerStep#<first_step + k>``: torch counts the
    steps it has seen since ``start()``, so a run resumed at step ``first_step`` would otherwise name
    its step 100 ``ProfilerStep#0``."""
    if not first_step:
        return trace
    out = []
    for e in trace.get("traceEvents", []):
        name = str(e.get("name", ""))
        if name.startswith(STEP_PREFIX) and name[len(STEP_PREFIX):].isdigit():
            e = {**e, "name": f"{STEP_PREFIX}{first_step + int(name[len(STEP_PREFIX):])}"}
        out.append(e)
    return {**trace, "traceEvents": out}


def step_of(name: str) -> int | None:
    """N of a ``ProfilerStep#N`` range, else None."""
    tail = name[len(STEP_PREFIX):] if name.startswith(STEP_PREFIX) else ""
    return int(tail) if tail.isdigit() else None


def label_steps(roots: dict[tuple[Any, Any], list[Node]]) -> dict[tuple[Any, Any], list[Node]]:
    """Each thread's top-level events grouped under one ``rlhfkit step N`` frame per ``ProfilerStep#N``
    window, so a trace whose active window holds several steps shows them side by side (not merged
    under the window's last step). Windows are half-open ``[start, end)``: the next step starts
    where the previous one ends. Threads without step ranges (GPU streams) are grouped by the time
    their events start; events outside every window stay at the top."""
    windows = sorted((n.ts, n.end, s) for top in roots.values() for n in top
                     if (s := step_of(n.name)) is not None)
    out: dict[tuple[Any, Any], list[Node]] = {}
    for key, top in roots.items():
        new: list[Node] = []
        groups: dict[int, Node] = {}
        for n in top:
            step = next((s for a, b, s in windows if a <= n.ts < b), None)
            if step is None:
                new.append(n)
                continue
            g = groups.get(step)
            if g is None:
                g = groups[step] = Node(f"{STEP_FRAME}{step}", "user_annotation", n.ts, 0.0)
                new.append(g)
            g.children.append(n)
            g.dur = max(g.end, n.end) - g.ts
        out[key] = new
    return out


def window_name(roots: dict[tuple[Any, Any], list[Node]]) -> str:
    """``rlhfkit step 4`` for a one-step window, ``rlhfkit steps 3–4`` for several."""
    steps = sorted({s for top in roots.values() for n in top if (s := step_of(n.name)) is not None})
    if not steps:
        return "rlhfkit profile"
    return f"{STEP_FRAME}{steps[0]}" if len(steps) == 1 else f"rlhfkit steps {steps[0]}–{steps[-1]}"


def collapsed_stacks(roots: dict[tuple[Any, Any], list[Node]]) -> list[str]:
    """``frame;frame;frame weight`` lines, weight = self time in integer microseconds."""
    acc: dict[str, float] = defaultdict(float)

    def walk(n: Node, prefix: str) -> None:
        path = f"{prefix};{n.name}" if prefix else n.name
        acc[path] += n.self_time
        for c in n.children:
            walk(c, path)

    for key, top in roots.items():
        for n in top:
            walk(n, f"thread {key[1]}")
    return [f"{k.replace(' ;', ';')} {int(round(v))}" for k, v in sorted(acc.items()) if v >= 0.5]


def speedscope(roots: dict[tuple[Any, Any], list[Node]], name: str = "rlhfkit profile") -> dict[str, Any]:
    """An evented speedscope file: one profile per thread, times in microseconds."""
    frames: list[dict[str, str]] = []
    index: dict[str, int] = {}

    def frame(n: str) -> int:
        if n not in index:
            index[n] = len(frames)
            frames.append({"name": n})
        return index[n]

    profiles = []
    for key, top in sorted(roots.items(), key=lambda kv: str(kv[0])):
        events: list[dict[str, Any]] = []
        clock = [float("-inf")]  # last emitted time: events must be non-decreasing
        for n in top:
            _emit_frames(n, float("-inf"), float("inf"), events, clock, frame)
        if not events:
            continue
        profiles.append({"type": "evented", "name": f"pid {key[0]} tid {key[1]}", "unit": "microseconds",
                         "startValue": events[0]["at"], "endValue": events[-1]["at"], "events": events})
    return {"$schema": SPEEDSCOPE_SCHEMA, "shared": {"frames": frames}, "profiles": profiles, "name": name,
            "activeProfileIndex": 0, "exporter": "rlhfkit"}


def _emit_frames(n: Node, lo: float, hi: float, events: list[dict[str, Any]], clock: list[float],
                 frame: Any) -> None:
    """Balanced open/close events of ``n`` and its children, clamped inside [lo, hi]."""
    start = max(n.ts, lo, clock[0])
    end = min(n.end, hi)
    if end < start:
        return
    f = frame(n.name)
    events.append({"type": "O", "frame": f, "at": start})
    clock[0] = start
    for c in n.children:
        _emit_frames(c, start, end, events, clock, frame)
    end = max(end, clock[0])
    events.append({"type": "C", "frame": f, "at": end})
    clock[0] = end


def top_ops_per_stage(trace: dict[str, Any], stages: tuple[str, ...], k: int = 10,
                      roots: dict[tuple[Any, Any], list[Node]] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Per stage, the ``k`` operators (and CUDA kernels) with the most self time (µs) and calls.
    ``roots``: the trace's trees if already built (:func:`build_trees`)."""
    events = complete_events(trace)
    ranges = stage_ranges(events, stages)
    if roots is None:
        roots = build_trees(events)
    stats: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0.0]))

    def walk(n: Node, stage: str | None) -> None:
        if n.name in stages:
            stage = n.name
        elif stage is not None and n.cat != "user_annotation" and "/" not in n.name:
            s = stats[stage][n.name]
            s[0] += n.self_time
            s[1] += 1
        for c in n.children:
            walk(c, stage)

    for top in roots.values():
        for n in top:
            walk(n, None)
    for e in events:
        if e.get("cat") in _GPU_CATS:
            st = _stage_at(ranges, float(e["ts"]))
            if st is not None:
                s = stats[st][f"[gpu] {e.get('name', '?')}"]
                s[0] += float(e["dur"])
                s[1] += 1
    out: dict[str, list[dict[str, Any]]] = {}
    for st, ops in stats.items():
        ranked = sorted(ops.items(), key=lambda kv: -kv[1][0])[:k]
        out[st] = [{"op": op, "self_us": round(v[0], 1), "calls": int(v[1])} for op, v in ranked]
    return out


def op_stats(trace: dict[str, Any], stage: str, stages: tuple[str, ...],
             roots: dict[tuple[Any, Any], list[Node]] | None = None) -> dict[str, float]:
    """Evidence for the bottleneck report: operator calls, their self time, matmul share, GPU kernels."""
    events = complete_events(trace)
    ranges = [r for r in stage_ranges(events, stages) if r[0] == stage]
    if not ranges:
        return {}
    wall = sum(b - a for _, a, b in ranges)
    if roots is None:
        roots = build_trees(events)
    calls = 0
    op_self = 0.0
    matmul = 0.0

    def walk(n: Node, inside: bool) -> None:
        nonlocal calls, op_self, matmul
        inside = inside or n.name == stage
        if inside and n.cat == "cpu_op":
            if n.name.startswith("aten::"):
                calls += 1
            op_self += n.self_time
            if any(m in n.name for m in ("addmm", "aten::mm", "bmm", "baddbmm", "attention", "linear")):
                matmul += n.self_time
        for c in n.children:
            walk(c, inside)

    for top in roots.values():
        for n in top:
            walk(n, False)
    kernels = [float(e["dur"]) for e in events if e.get("cat") == "kernel"
               and any(a <= float(e["ts"]) <= b for _, a, b in ranges)]
    return {
        "wall_us": wall, "aten_calls": float(calls), "op_self_us": op_self, "matmul_self_us": matmul,
        "n_ranges": float(len(ranges)), "kernels": float(len(kernels)),
        "kernel_us": float(sum(kernels)), "mean_kernel_us": float(sum(kernels) / len(kernels)) if kernels else 0.0,
    }


__all__ = [
    "Node", "SPEEDSCOPE_SCHEMA", "STEP_FRAME", "STEP_PREFIX", "build_trees", "collapsed_stacks", "complete_events",
    "filter_trace", "label_steps", "load_trace", "op_stats", "renumber_steps", "speedscope", "stage_ranges",
    "step_of", "top_ops_per_stage", "window_name",
]
