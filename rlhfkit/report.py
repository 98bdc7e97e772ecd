"""``rlhfkit report``: one self-contained HTML file per run, readable offline and attachable to a ticket.

The report holds the run's config, its summary, the stability charts with the steps where alerts
fired marked on them, the per-stage timings, the memory model's prediction beside what the run
measured, the logged samples and, for a profiled run, the profiler's findings. Charts are SVG drawn
here in Python and inlined, styles are inline too: the file loads nothing (no script, font or
stylesheet from a CDN), so it opens the same from a laptop's disk, an air-gapped box or an e-mail.

It reads a :class:`~rlhfkit.runrecord.RunRecord` and reuses the engine's own numbers: the analysis
of :mod:`rlhfkit.analysis` (KL band, alerts), the profiler's summary and findings, and the
analytic memory model of :mod:`rlhfkit.memopt` when the run did not store a memory report.
"""

from __future__ import annotations

import html
import math
from typing import Any

import yaml

from rlhfkit.analysis import analyze_run
from rlhfkit.metrics import METRICS, STAGES, M
from rlhfkit.runrecord import STABILITY_KEYS, RunRecord

_W, _H, _PAD = 460, 170, 38  # chart size and left/bottom padding (px)
_SEV_COLOR = {"critical": "#c62828", "warning": "#ef6c00", "info": "#1565c0"}
_STAGE_COLOR = {"generation": "#1e88e5", "scoring": "#8e24aa", "advantages": "#00897b", "update": "#f4511e",
                "evaluation": "#6d4c41"}

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1000px;color:#222}
h1{font-size:22px;margin-bottom:2px} h2{font-size:17px;border-bottom:1px solid #ddd;padding-bottom:3px;margin-top:28px}
table{border-collapse:collapse;margin:6px 0} td,th{border:1px solid #e0e0e0;padding:3px 8px;text-align:left;
vertical-align:top} th{background:#f5f5f5} td.num{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:12px;max-height:360px}
.charts{display:flex;flex-wrap:wrap;gap:12px} figure{margin:0} figcaption{font-size:12px;color:#555}
.muted{color:#666;font-size:12px} .critical{color:#c62828} .warning{color:#ef6c00}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(x: Any, fmt: str = ".4g") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, int | float):
        return format(x, fmt)
    return _e(x)


def line_chart(points: list[tuple[int, float]], *, title: str, unit: str, alerts: list[dict[str, Any]],
               band: float | None = None) -> str:
    """An SVG line chart of (step, value); a vertical mark at every alert's step (colour by
    severity), and a dashed line at ``band`` (the KL band's upper edge) when given."""
    pts = [(s, v) for s, v in points if v is not None and math.isfinite(v)]
    if not pts:
        return ""
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts] + ([band] if band is not None and math.isfinite(band) else [])
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - 1, y1 + 1
    iw, ih = _W - _PAD - 10, _H - _PAD - 10

    def sx(x: float) -> float:
        return _PAD + (x - x0) / (x1 - x0) * iw

    def sy(y: float) -> float:
        return 10 + (1 - (y - y0) / (y1 - y0)) * ih

    poly = " ".join(f"{sx(s):.1f},{sy(v):.1f}" for s, v in pts)
    parts = [f'<svg class="chart" data-metric="{_e(title)}" width="{_W}" '
             f'height="{_H}" viewBox="0 0 {_W} {_H}" role="img" aria-label="{_e(title)}">',
             f'<rect x="{_PAD}" y="10" width="{iw}" height="{ih}" fill="#fff" stroke="#ccc"/>',
             f'<text x="{_PAD - 4}" y="16" font-size="10" text-anchor="end">{_num(y1)}</text>',
             f'<text x="{_PAD - 4}" y="{10 + ih}" font-size="10" text-anchor="end">{_num(y0)}</text>',
             f'<text x="{_PAD}" y="{_H - 12}" font-size="10">step {x0}</text>',
             f'<text x="{_W - 10}" y="{_H - 12}" font-size="10" text-anchor="end">step {x1}</text>',
             f'<text x="{_PAD + iw / 2}" y="{_H - 2}" font-size="10" text-anchor="middle">{_e(unit)}</text>']
    if band is not None and math.isfinite(band) and y0 <= band <= y1:
        parts.append(f'<line class="band" x1="{_PAD}" x2="{_PAD + iw}" y1="{sy(band):.1f}" y2="{sy(band):.1f}" '
                     'stroke="#999" stroke-dasharray="4 3"><title>KL band (monitor limit)</title></line>')
    for a in alerts:
        step = a.get("step")
        if step is None or not x0 <= step <= x1:
            continue
        color = _SEV_COLOR.get(str(a.get("severity")), "#ef6c00")
        parts.append(f'<line class="alert-mark" x1="{sx(step):.1f}" x2="{sx(step):.1f}" y1="10" y2="{10 + ih}" '
                     f'stroke="{color}" stroke-width="1.5"><title>{_e(a.get("rule"))} at step {step}: '
                     f'{_e(a.get("message", ""))}</title></line>')
    parts.append(f'<polyline class="series" fill="none" stroke="#1e88e5" stroke-width="1.6" points="{poly}"/>')
    if len(pts) == 1:
        parts.append(f'<circle class="series" cx="{sx(pts[0][0]):.1f}" cy="{sy(pts[0][1]):.1f}" r="3" fill="#1e88e5"/>')
    parts.append("</svg>")
    return f"<figure>{''.join(parts)}<figcaption>{_e(title)}</figcaption></figure>"


def bar_chart(rows: list[tuple[str, list[tuple[str, float, str]]]], *, title: str, unit: str) -> str:
    """Horizontal grouped bars: per row label, one bar per (series, value, colour)."""
    vals = [v for _, bars in rows for _, v, _ in bars if v is not None and math.isfinite(v)]
    if not vals:
        return ""
    vmax = max(vals) or 1.0
    bh, gap, lw = 12, 8, 110
    height = sum(len(bars) * bh + gap for _, bars in rows) + 30
    parts = [f'<svg class="chart" data-metric="{_e(title)}" width="{_W + 220}" '
             f'height="{height}" role="img" aria-label="{_e(title)}">']
    y = 6
    for label, bars in rows:
        parts.append(f'<text x="{lw - 6}" y="{y + bh}" font-size="11" text-anchor="end">{_e(label)}</text>')
        for name, v, color in bars:
            if v is None or not math.isfinite(v):
                y += bh
                continue
            w = max(1.0, v / vmax * (_W - 40))
            parts.append(f'<rect class="bar" x="{lw}" y="{y}" width="{w:.1f}" height="{bh - 2}" fill="{color}">'
                         f'<title>{_e(label)} {_e(name)}: {_num(v)} {_e(unit)}</title></rect>'
                         f'<text x="{lw + w + 4:.1f}" y="{y + bh - 3}" font-size="10">{_num(v, ".3g")} {_e(name)}</text>')
            y += bh
        y += gap
    parts.append(f'<text x="{lw}" y="{height - 6}" font-size="10">{_e(unit)}</text></svg>')
    return f"<figure>{''.join(parts)}<figcaption>{_e(title)}</figcaption></figure>"


def _table(header: list[str], rows: list[list[str]], num_cols: set[int] | None = None) -> str:
    num_cols = num_cols or set()
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i in num_cols else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def stage_means(rec: RunRecord) -> dict[str, float]:
    """Mean wall seconds per top-level stage over the run's timed steps (0 s where a stage did not run)."""
    if not rec.timings:
        return {}
    names = [s for s in STAGES if any(s in t["stages"] for t in rec.timings)]
    return {s: sum(float(t["stages"].get(s, 0.0)) for t in rec.timings) / len(rec.timings) for s in names}


def memory_rows(rec: RunRecord) -> tuple[dict[str, float], dict[str, float], str]:
    """Predicted peak MiB per stage (the run's stored memory report, else the memory model on its
    config), measured MiB per stage (the highest value the run's memory events hold) and what the
    measurement is."""
    predicted: dict[str, float] = {}
    if rec.mem_report and "stage_peak_mb" in rec.mem_report:
        predicted = {k: float(v) for k, v in rec.mem_report["stage_peak_mb"].items()}
    elif rec.config:
        try:
            from rlhfkit.config import validate_config
            from rlhfkit.memopt.model import MiB, estimate_memory, plan_from_config

            device = next((str(m.get("device")) for m in rec.memory if m.get("device")), "cpu")
            est = estimate_memory(plan_from_config(validate_config(rec.config),
                                                   device="cuda" if device == "cuda" else "cpu"))
            predicted = {s: est.stage_peak(s) / MiB for s in est.stages}
        except Exception:  # an external run's free-form config: no prediction, the measurement still shows
            predicted = {}
    measured: dict[str, float] = {}
    device = "cpu"
    for m in rec.memory:
        device = str(m.get("device") or device)
        for stage, stat in (m.get("stages") or {}).items():
            v = stat.get("peak_mb") if device == "cuda" else stat.get("rss_peak_mb", stat.get("rss_mb"))
            if v is not None:
                measured[stage] = max(measured.get(stage, 0.0), float(v))
    what = ("CUDA max_memory_allocated during the stage" if device == "cuda" else
            "CPU process RSS high-water (absolute: it also holds the interpreter and libraries, while the "
            "prediction counts what the run itself allocates)")
    return predicted, measured, what


def render_report(rec: RunRecord) -> str:
    """The whole report as one HTML string."""
    analysis = analyze_run(rec)
    sec: list[str] = []
    title = f"RLHF run report: {rec.name or rec.run_id}"
    sec.append(f"<h1>{_e(title)}</h1><p class='muted'>run {_e(rec.run_id)} · status {_e(rec.status)} · "
               f"read from {_e(rec.source)}</p>")

    # summary
    summ = dict(rec.summary)
    rows = [[_e(k), _num(v) if isinstance(v, int | float) else _e(v)] for k, v in summ.items()
            if not isinstance(v, dict | list)]
    if rec.error:
        rows.append(["error", _e(rec.error)])
    sec.append("<h2>Summary</h2>" + (_table(["field", "value"], rows) if rows else
                                      "<p class='muted'>The run has not finished: no summary yet.</p>"))

    # stability
    alerts = rec.alerts
    k = analysis["kl"]
    charts = []
    for key in STABILITY_KEYS:
        spec = METRICS.get(key)
        unit = spec.unit if spec is not None else ""
        mine = [a for a in alerts if a.get("metric") == key]
        charts.append(line_chart(rec.series(key), title=key, unit=unit, alerts=mine,
                                 band=k["band_upper"] if key == M.KL_K1 and k else None))
    charts = [c for c in charts if c]
    stab = ["<h2>Stability</h2>",
            "<p class='muted'>Vertical marks: steps where the stability monitor raised an alert on that metric "
            "(red critical, orange warning). Dashed line on kl/k1: the monitor's KL band.</p>",
            f"<div class='charts'>{''.join(charts)}</div>" if charts else "<p>No step metrics logged.</p>"]
    if k:
        stab.append(f"<p>KL (nats per sequence): last {_num(k['last'])}, max {_num(k['max'])} at step "
                    f"{k['max_step']}, slope {_num(k['slope_per_step'], '+.4f')} nats/step; left its band "
                    f"{len(analysis['kl_band_exits'])} time(s).</p>")
    if alerts:
        arows = [[_num(a.get("step")), f"<span class='{_e(a.get('severity'))}'>{_e(a.get('severity'))}</span>",
                  _e(a.get("rule")), _e(a.get("message", "")), _e(a.get("suggestion", ""))] for a in alerts]
        stab.append("<h3>Alerts</h3>" + _table(["step", "severity", "rule", "what happened", "what to try"], arows))
    else:
        stab.append("<p>No alerts fired.</p>")
    sec.append("".join(stab))

    # timings
    means = stage_means(rec)
    if means:
        step_mean = sum(float(t.get("step_time") or 0) for t in rec.timings) / len(rec.timings)
        bars = [(s, [("s", v, _STAGE_COLOR.get(s, "#777"))]) for s, v in means.items()]
        trows = [[_e(s), _num(v, ".4f"), _num(100 * v / step_mean if step_mean else math.nan, ".1f")]
                 for s, v in means.items()]
        sec.append("<h2>Stage timings</h2><p class='muted'>Mean wall seconds per step over "
                   f"{len(rec.timings)} timed steps (device synchronised at stage boundaries); mean step "
                   f"{_num(step_mean, '.4f')} s.</p>"
                   + bar_chart(bars, title="seconds per step by stage", unit="seconds")
                   + _table(["stage", "mean s", "% of step"], trows, {1, 2}))

    # memory
    predicted, measured, what = memory_rows(rec)
    if predicted or measured:
        names = [s for s in STAGES if s in predicted or s in measured]
        bars = [(s, [("predicted", predicted.get(s, math.nan), "#90caf9"),
                     ("measured", measured.get(s, math.nan), "#1e88e5")]) for s in names]
        mrows = [[_e(s), _num(predicted.get(s), ".1f"), _num(measured.get(s), ".1f")] for s in names]
        sec.append("<h2>Memory: predicted vs measured</h2>"
                   f"<p class='muted'>MiB per stage. Predicted: rlhfkit's analytic memory model for this config. "
                   f"Measured: {_e(what)}.</p>"
                   + bar_chart(bars, title="MiB per stage, predicted and measured", unit="MiB")
                   + _table(["stage", "predicted MiB", "measured MiB"], mrows, {1, 2}))

    # samples
    if rec.samples:
        last_step = max((s["step"] for s in rec.samples if s["step"] is not None), default=None)
        shown = [s for s in rec.samples if s["step"] == last_step][:16] or rec.samples[-16:]
        srows = [[_e(s["prompt"]), _e(s["response"]), _num(s.get("reward"), ".3f")] for s in shown]
        sec.append(f"<h2>Samples</h2><p class='muted'>Evaluation samples at step {_num(last_step)}.</p>"
                   + _table(["prompt", "response", "reward"], srows, {2}))

    # profiler
    ps = rec.profile_summary
    if ps:
        prof = ["<h2>Profiler findings</h2>"]
        for f in ps.get("bottlenecks") or []:
            prof.append(f"<p><b>{_e(f.get('finding'))}</b><br><span class='muted'>{_e(f.get('evidence'))}</span>"
                        f"<br>try: {_e(f.get('try'))}</p>")
        ops = sorted(((st, o) for st, rows in (ps.get("top_ops") or {}).items() for o in rows),
                     key=lambda so: -float(so[1]["self_us"]))[:12]
        if ops:
            prof.append(_table(["operator", "stage", "self ms", "calls"],
                               [[_e(o["op"]), _e(st), _num(o["self_us"] / 1e3, ".1f"), _num(o["calls"])]
                                for st, o in ops], {2, 3}))
        sec.append("".join(prof))

    # config
    if rec.config:
        sec.append("<h2>Config</h2><pre>" + _e(yaml.safe_dump(rec.config, sort_keys=False)) + "</pre>")

    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
            + "\n".join(sec) + "<p class='muted'>Written by rlhfkit report.</p></body></html>\n")


__all__ = ["bar_chart", "line_chart", "memory_rows", "render_report", "stage_means"]
