"""Offline analysis of a finished run (``rlhfkit analyze``) and of a profile folder (``rlhfkit analyze-trace``).

Nothing here decides what is unstable or slow on its own: the KL band is the one the
:class:`~rlhfkit.monitor.StabilityMonitor` holds each step to (``kl_limit``), the alerts and their
advice are the ones the monitor raised during the run, and the stage table, top operators and
bottlenecks come from the profiler's summary and trace code (:mod:`rlhfkit.profiler.report`,
:mod:`rlhfkit.profiler.trace`). This module only reads the files and puts the answers in order, so
the offline view and the live one agree by construction.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from rlhfkit.metrics import STAGES, M
from rlhfkit.monitor import StabilityMonitor
from rlhfkit.runrecord import RunRecord

# ----------------------------------------------------------------------------- run stability


def kl_slope(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of KL against step (nats per step); nan with fewer than two points."""
    if len(points) < 2:
        return math.nan
    x = np.asarray([p[0] for p in points], dtype=float)
    y = np.asarray([p[1] for p in points], dtype=float)
    if np.ptp(x) == 0:
        return math.nan
    return float(np.polyfit(x, y, 1)[0])


def _monitor_for(rec: RunRecord) -> StabilityMonitor:
    """A monitor set up as the run's trainer set up its own (thresholds and adaptive KL target)."""
    mon_cfg = rec.config.get("monitor") or {}
    mon = StabilityMonitor(mon_cfg.get("thresholds") or None, export_metrics=False)
    ppo = rec.config.get("ppo") or {}
    if ppo.get("kl_controller") == "adaptive":
        mon.kl_target = ppo.get("kl_target")
    return mon


def kl_band_exits(rec: RunRecord) -> tuple[list[dict[str, Any]], list[float]]:
    """Stretches of consecutive logged steps whose KL was above the monitor's band, and the band's
    upper edge at each step. Each stretch: ``{"start", "end", "steps", "peak", "peak_step", "limit"}``."""
    mon = _monitor_for(rec)
    exits: list[dict[str, Any]] = []
    limits: list[float] = []
    cur: dict[str, Any] | None = None
    for step, m in sorted(rec.metrics.items()):
        kl = m.get(M.KL_K1)
        if kl is None:
            continue
        limit = mon.kl_limit(m)
        limits.append(limit)
        if kl > limit:
            if cur is None:
                cur = {"start": step, "end": step, "steps": 0, "peak": kl, "peak_step": step, "limit": limit}
                exits.append(cur)
            cur["end"] = step
            cur["steps"] += 1
            if kl > cur["peak"]:
                cur["peak"], cur["peak_step"] = kl, step
        else:
            cur = None
    return exits, limits


def analyze_run(rec: RunRecord) -> dict[str, Any]:
    """KL level, band exits and slope; alerts fired grouped by rule with the monitor's advice."""
    kl = rec.series(M.KL_K1)
    window = int(_monitor_for(rec).thresholds["kl_rise_window"])
    exits, limits = kl_band_exits(rec)
    out: dict[str, Any] = {"run_id": rec.run_id, "name": rec.name, "status": rec.status,
                           "steps": len(rec.series(M.STEP_TIME)) or len(rec.metrics), "kl": None, "kl_band_exits": exits}
    if kl:
        peak_step, peak = max(kl, key=lambda p: p[1])
        out["kl"] = {"metric": M.KL_K1, "unit": "nats per sequence", "first": kl[0][1], "last": kl[-1][1],
                     "max": peak, "max_step": peak_step, "band_upper": limits[-1] if limits else None,
                     "slope_per_step": kl_slope(kl), "slope_window": window,
                     "slope_last_window": kl_slope(kl[-(window + 1):])}
    by_rule: dict[str, dict[str, Any]] = {}
    for a in rec.alerts:
        r = by_rule.setdefault(a["rule"], {"rule": a["rule"], "count": 0, "severity": a["severity"],
                                           "first_step": a.get("step"), "last_step": a.get("step"),
                                           "metric": a.get("metric"), "message": a.get("message", ""),
                                           "try": a.get("suggestion", "")})
        r["count"] += 1
        r["last_step"] = a.get("step")
        if a["severity"] == "critical":
            r["severity"] = "critical"
    out["alerts"] = {"total": len(rec.alerts), "by_severity": dict(Counter(a["severity"] for a in rec.alerts)),
                     "rules": sorted(by_rule.values(), key=lambda r: (r["first_step"] is None, r["first_step"]))}
    return out


def _f(x: Any, fmt: str = ".3f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)


def format_run_analysis(a: dict[str, Any]) -> str:
    lines = [f"Run {a['run_id']} ({a['name'] or 'unnamed'}): {a['status']}, {a['steps']} logged steps"]
    k = a["kl"]
    if k is None:
        lines.append("KL: no kl/k1 metric in this run")
    else:
        lines.append(f"KL to the reference ({k['metric']}, {k['unit']}): first {_f(k['first'])}, last {_f(k['last'])}, "
                     f"max {_f(k['max'])} at step {k['max_step']}")
        lines.append(f"KL slope: {_f(k['slope_per_step'], '+.4f')} nats/step over the run, "
                     f"{_f(k['slope_last_window'], '+.4f')} over the last {k['slope_window']} steps")
        band = f"band: KL <= {_f(k['band_upper'], '.2f')} (the monitor's kl_high limit)"
        if not a["kl_band_exits"]:
            lines.append(f"KL stayed inside its {band}")
        else:
            lines.append(f"KL left its {band} {len(a['kl_band_exits'])} time(s):")
            for e in a["kl_band_exits"]:
                span = f"step {e['start']}" if e["start"] == e["end"] else f"steps {e['start']}-{e['end']}"
                lines.append(f"  {span}: peak {_f(e['peak'], '.2f')} at step {e['peak_step']} "
                             f"(limit {_f(e['limit'], '.2f')})")
    al = a["alerts"]
    if not al["total"]:
        lines.append("Alerts: none fired")
    else:
        sev = ", ".join(f"{n} {s}" for s, n in sorted(al["by_severity"].items()))
        lines.append(f"Alerts: {al['total']} fired ({sev})")
        for r in al["rules"]:
            when = (f"step {r['first_step']}" if r["first_step"] == r["last_step"]
                    else f"steps {r['first_step']}..{r['last_step']}")
            lines.append(f"  {r['rule']} x{r['count']} [{r['severity']}] {when}: {r['message']}")
            lines.append(f"    try: {r['try']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- profile folders


def find_profile_dir(path: str | Path) -> Path:
    """``path`` itself when it holds a profile (``profile_summary.json`` or a trace), else its newest
    sub-folder that does (``profiles/`` -> ``profiles/<run_id>/``)."""
    d = Path(path)
    if not d.is_dir():
        raise FileNotFoundError(f"{d}: no such folder")

    def has_profile(p: Path) -> bool:
        return (p / "profile_summary.json").exists() or any(p.glob("trace_step*.json"))

    if has_profile(d):
        return d
    subs = sorted((p for p in d.iterdir() if p.is_dir() and has_profile(p)), key=lambda p: p.stat().st_mtime)
    if not subs:
        raise FileNotFoundError(f"{d}: no profile_summary.json or trace_step*.json here or one level down")
    return subs[-1]


def analyze_trace(path: str | Path, top: int = 10) -> dict[str, Any]:
    """Top stages, top operators and bottlenecks of a profile folder.

    The stage table and bottlenecks are the profiler's summary (``profile_summary.json``); the top
    operators are recomputed from the newest Chrome trace with the profiler's own
    :func:`~rlhfkit.profiler.trace.top_ops_per_stage` when a trace is there (so a trace copied
    without its summary still gives them). With a ``config.yaml`` beside the files and no stored
    findings, the bottleneck report is rebuilt from the summary and the trace's operator evidence.
    """
    from rlhfkit.profiler import report as rep
    from rlhfkit.profiler import trace as tr
    from rlhfkit.profiler.hooks import ALL_RANGES

    d = find_profile_dir(path)
    summary: dict[str, Any] = {}
    if (d / "profile_summary.json").exists():
        summary = json.loads((d / "profile_summary.json").read_text())
    traces = sorted(d.glob("trace_step*.json"), key=lambda p: int(p.stem.removeprefix("trace_step") or 0))
    top_ops: dict[str, list[dict[str, Any]]] = summary.get("top_ops") or {}
    evidence: dict[str, dict[str, float]] = {}
    if traces:
        trace = tr.load_trace(traces[-1])
        roots = tr.build_trees(tr.complete_events(trace))
        top_ops = tr.top_ops_per_stage(trace, ALL_RANGES, k=max(top, 15), roots=roots)
        evidence = {st: tr.op_stats(trace, st, ALL_RANGES, roots=roots) for st in STAGES}
    findings: list[dict[str, str]] = list(summary.get("bottlenecks") or [])
    if not findings and summary.get("stages") and (d / "config.yaml").exists():
        from rlhfkit.config import load_config

        findings = rep.bottleneck_report(summary, evidence, load_config(d / "config.yaml"), _device(d))
    stages = [{"stage": k, **v} for k, v in (summary.get("stages") or {}).items() if "/" not in k]
    stages.sort(key=lambda s: -float(s.get("mean", 0.0)))
    ops = [{"stage": st, **o} for st, rows in top_ops.items() for o in rows]
    ops.sort(key=lambda o: -float(o["self_us"]))
    return {"dir": str(d), "steps": summary.get("steps", 0), "step_time": summary.get("step_time"),
            "tokens_per_sec": summary.get("tokens_per_sec"), "coverage": summary.get("coverage"),
            "top_stages": stages, "top_ops": ops[:top], "bottlenecks": findings,
            "traces": [str(p) for p in traces]}


def _device(d: Path) -> str:
    mem = d / "mem_report.json"
    if mem.exists():
        return str(json.loads(mem.read_text()).get("device", "cpu"))
    return "cpu"


def format_trace_analysis(a: dict[str, Any]) -> str:
    lines = [f"Profile {a['dir']}: {a['steps']} steps timed, {len(a['traces'])} trace file(s)"]
    st = a.get("step_time") or {}
    if st:
        lines.append(f"step time mean {_f(st.get('mean'))} s, p95 {_f(st.get('p95'))} s; "
                     f"{_f(a.get('tokens_per_sec'), '.0f')} generated tokens/s; stages cover "
                     f"{_f(100 * (a.get('coverage') or math.nan), '.0f')}% of the step")
    if a["top_stages"]:
        lines.append("Top stages (mean wall seconds per step, share of step time):")
        for s in a["top_stages"]:
            lines.append(f"  {s['stage']:<12}{_f(s['mean'], '.4f'):>9} s {_f(100 * s['share'], '5.1f')}%")
    if a["top_ops"]:
        lines.append("Top operators (self time over the profiled steps, newest trace):")
        for o in a["top_ops"]:
            lines.append(f"  {o['op']:<40} {o['self_us'] / 1e3:9.1f} ms x{o['calls']:<6} in {o['stage']}")
    if a["bottlenecks"]:
        lines.append("Bottlenecks (measured evidence in brackets):")
        for i, f in enumerate(a["bottlenecks"], 1):
            lines.append(f"  {i}. {f['finding']} [{f['evidence']}]\n     try: {f['try']}")
    else:
        lines.append("Bottlenecks: none stored (a profile summary without findings, and no config.yaml to rebuild them)")
    return "\n".join(lines)


__all__ = ["analyze_run", "analyze_trace", "find_profile_dir", "format_run_analysis", "format_trace_analysis",
           "kl_band_exits", "kl_slope"]
