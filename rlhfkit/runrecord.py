"""One finished (or running) run, read back from its events: the input of ``analyze`` and ``report``.

A run leaves the same event stream wherever it ran (``rlhfkit.events``): in its run folder as
``events.jsonl``, on a server behind ``GET /api/runs/{id}/events``. :class:`RunRecord` is built
from that stream by one function, :func:`record_from_events`, so an offline analysis of a folder and
of a run on a server cannot disagree. Files the profiler writes beside the events
(``profile_summary.json``, ``mem_report.json``) are picked up from the folder or downloaded as
artifacts.
"""

from __future__ import annotations

import contextlib
import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfkit.metrics import M


@dataclass
class RunRecord:
    """What one run left behind, as plain data."""

    run_id: str
    name: str = ""
    status: str = "unknown"
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    # step -> canonical metric name -> value; a step's eval metrics are merged into it
    metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    timings: list[dict[str, Any]] = field(default_factory=list)
    memory: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)  # {"step", "prompt", "response", "reward"}
    profile_summary: dict[str, Any] | None = None
    mem_report: dict[str, Any] | None = None
    error: str | None = None
    source: str = ""  # the folder or server URL it was read from

    def series(self, key: str) -> list[tuple[int, float]]:
        """(step, value) of one metric in step order, missing steps skipped."""
        return [(s, m[key]) for s, m in sorted(self.metrics.items()) if key in m and m[key] is not None]

    @property
    def metric_names(self) -> list[str]:
        return sorted({k for m in self.metrics.values() for k in m})


def record_from_events(events: Iterable[dict[str, Any]], *, run_id: str = "", source: str = "") -> RunRecord:
    """Fold an event stream (dicts as ``Event.model_dump(mode="json")`` writes them) into a RunRecord."""
    rec = RunRecord(run_id=run_id, source=source)
    for ev in events:
        kind = ev.get("type")
        rec.run_id = rec.run_id or str(ev.get("run_id", ""))
        step = ev.get("step")
        if kind == "run_started":
            rec.name = str(ev.get("name", ""))
            rec.config = dict(ev.get("config") or {})
            rec.status = "running"
        elif kind == "metrics" and step is not None:
            row = rec.metrics.setdefault(int(step), {})
            row.update({k: float(v) for k, v in (ev.get("values") or {}).items() if v is not None})
        elif kind == "alert":
            rec.alerts.append({k: ev.get(k) for k in ("step", "rule", "severity", "metric", "value", "threshold",
                                                      "message", "suggestion")})
        elif kind == "timings":
            rec.timings.append({"step": step, "stages": dict(ev.get("stages") or {}),
                                "step_time": ev.get("step_time"), "tokens": ev.get("tokens")})
        elif kind == "memory":
            rec.memory.append({"step": step, "device": ev.get("device"), "stages": dict(ev.get("stages") or {}),
                               "models": dict(ev.get("models") or {})})
        elif kind == "eval":
            for s in ev.get("samples") or []:
                rec.samples.append({"step": step, "prompt": s.get("prompt", ""), "response": s.get("response", ""),
                                    "reward": s.get("reward")})
        elif kind == "run_finished":
            rec.summary = dict(ev.get("summary") or {})
            rec.status = str(rec.summary.get("status", "succeeded"))
        elif kind == "run_failed":
            rec.status = "failed"
            rec.error = str(ev.get("error", ""))
        elif kind == "run_cancelled":
            rec.status = "cancelled"
    return rec


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a line cut short by a crash: the rest of the run is still worth reading
    return out


def _read_csv_metrics(path: Path) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            step = int(row.pop("step"))
            out.setdefault(step, {}).update({k: float(v) for k, v in row.items() if v not in ("", None)})
    return out


def load_run_dir(path: str | Path) -> RunRecord:
    """Read a run folder (``runs/<run_id>/``): events.jsonl, and metrics.csv/alerts.csv when the
    events are missing; profile_summary.json and mem_report.json when the run was profiled."""
    d = Path(path)
    if not d.is_dir():
        raise FileNotFoundError(f"{d}: not a run folder")
    ev_path = d / "events.jsonl"
    if ev_path.exists():
        rec = record_from_events(_read_jsonl(ev_path), source=str(d))
    else:
        rec = RunRecord(run_id=d.name, source=str(d))
        cfg = d / "config.yaml"
        if cfg.exists():
            import yaml

            rec.config = yaml.safe_load(cfg.read_text()) or {}
            rec.name = str(rec.config.get("name", ""))
    rec.run_id = rec.run_id or d.name
    if not rec.metrics and (d / "metrics.csv").exists():
        rec.metrics = _read_csv_metrics(d / "metrics.csv")
    if not rec.alerts and (d / "alerts.csv").exists():
        with (d / "alerts.csv").open(newline="") as fh:
            rec.alerts = [{**r, "step": int(r["step"]) if r.get("step") else None,
                           "value": _num(r.get("value")), "threshold": _num(r.get("threshold"))}
                          for r in csv.DictReader(fh)]
    if not rec.metrics and not rec.config:
        raise FileNotFoundError(f"{d}: no events.jsonl, metrics.csv or config.yaml: not a run folder")
    for name, attr in (("profile_summary.json", "profile_summary"), ("mem_report.json", "mem_report")):
        p = d / name
        if p.exists():
            setattr(rec, attr, json.loads(p.read_text()))
    return rec


def load_run_from_server(client: Any, run_id: str) -> RunRecord:
    """The same record for a run stored on a server (``rlhfkit.client.Client``): its events, plus
    the profiler's summary and memory report when they are listed among its artifacts."""
    events: list[dict[str, Any]] = []
    cursor = -1
    while True:
        page = client.get_events(run_id, after=cursor, limit=1000)
        events.extend(page["events"])
        if not page["events"] or page.get("next_cursor") in (None, cursor):
            break
        cursor = page["next_cursor"]
    rec = record_from_events(events, run_id=run_id, source=str(getattr(client, "base_url", "server")))
    run = client.get_run(run_id)
    rec.name = rec.name or str(run.get("name", ""))
    rec.config = rec.config or dict(run.get("config") or {})
    rec.status = str(run.get("status", rec.status))
    from rlhfkit.client import ApiError

    names = {a["name"] for a in client.artifacts(run_id)}
    for name, attr in (("profile_summary.json", "profile_summary"), ("mem_report.json", "mem_report")):
        for cand in (f"profiles/{name}", name):
            if cand in names:
                # listed, but its file may not be on this server (an uploaded run): the rest still reads
                with contextlib.suppress(ApiError, ValueError):
                    setattr(rec, attr, json.loads(client.download_artifact(run_id, cand)))
                break
    return rec


def _num(text: Any) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


# Stability metrics the analysis and the report chart, in this order.
STABILITY_KEYS: tuple[str, ...] = (M.REWARD_MEAN, M.KL_K1, M.ENTROPY, M.POLICY_CLIPFRAC, M.GRAD_NORM, M.VALUE_LOSS)

__all__ = ["STABILITY_KEYS", "RunRecord", "load_run_dir", "load_run_from_server", "record_from_events"]
