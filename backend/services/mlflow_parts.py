"""The pieces of the MLflow-compatible API that touch no database: MLflow's error shape, the
``search-runs`` filter language, and turning logged metrics into our events with the stability
monitor's alerts (one monitor per live MLflow run, in this process). :mod:`backend.services.mlflow`
holds the registry side.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from rlhfkit.adapters.mapping import map_metrics
from rlhfkit.events import Event, MetricsEvent
from rlhfkit.monitor import StabilityMonitor


class MlflowError(Exception):
    """An error in MLflow's REST shape: ``{"error_code": ..., "message": ...}`` with an HTTP status."""

    STATUS = {"RESOURCE_DOES_NOT_EXIST": 404, "RESOURCE_ALREADY_EXISTS": 400, "INVALID_PARAMETER_VALUE": 400}

    def __init__(self, error_code: str, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message

    @property
    def http_status(self) -> int:
        return self.STATUS.get(self.error_code, 400)

    def body(self) -> dict[str, str]:
        return {"error_code": self.error_code, "message": self.message}


def invalid(field: str, msg: str) -> MlflowError:
    return MlflowError("INVALID_PARAMETER_VALUE", f"{field}: {msg}")



@dataclass(frozen=True)
class MetricIn:
    key: str
    value: float
    timestamp: int  # ms since the epoch
    step: int


class _Monitors:
    """One :class:`StabilityMonitor` per live MLflow run (bounded; ended runs are dropped)."""

    def __init__(self, limit: int = 1024) -> None:
        self._lock = threading.Lock()
        self._by_run: OrderedDict[str, StabilityMonitor] = OrderedDict()
        self._limit = limit

    def get(self, run_id: str) -> StabilityMonitor:
        with self._lock:
            mon = self._by_run.get(run_id)
            if mon is None:
                mon = self._by_run[run_id] = StabilityMonitor()
                while len(self._by_run) > self._limit:
                    self._by_run.popitem(last=False)
            self._by_run.move_to_end(run_id)
            return mon

    def drop(self, run_id: str) -> None:
        with self._lock:
            self._by_run.pop(run_id, None)


monitors = _Monitors()



_CLAUSE = re.compile(
    r"""^\s*(?P<entity>attributes?|attr|run|tags?|params?|parameters?)\.(?P<key>`[^`]+`|"[^"]+"|[\w.\-/]+)\s*"""
    r"""(?P<op>=|!=)\s*(?P<value>'[^']*'|"[^"]*")\s*$""", re.IGNORECASE)


def parse_filter(text: str) -> list[tuple[str, str, str, str]]:
    """``tags.x = 'y' AND attributes.status = 'RUNNING'`` -> [(entity, key, op, value)]. Only equality
    and inequality on attributes (run_name, status, run_id), tags and params; anything else is refused
    rather than silently ignored."""
    out = []
    for part in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE) if text.strip() else []:
        m = _CLAUSE.match(part)
        if m is None:
            raise invalid("filter", f"unsupported clause {part.strip()!r}: use <attributes|tags|params>.<key> "
                                     "= '<value>' joined by AND")
        entity = m["entity"].lower()
        entity = "attributes" if entity.startswith("attr") or entity == "run" else entity.rstrip("s")
        entity = "param" if entity.startswith("param") else entity
        key = m["key"].strip('`"')
        if entity == "attributes" and key not in ("run_name", "status", "run_id"):
            raise invalid("filter", f"unsupported attribute {key!r} (run_name, status, run_id)")
        out.append((entity, key, m["op"], m["value"][1:-1]))
    return out


def matches(run_dict: dict[str, Any], clauses: list[tuple[str, str, str, str]]) -> bool:
    for entity, key, op, value in clauses:
        if entity == "attributes":
            actual: str | None = str(run_dict["info"].get(key))
        else:
            pairs = run_dict["data"]["tags" if entity == "tag" else "params"]
            actual = next((p["value"] for p in pairs if p["key"] == key), None)
        if (actual == value) != (op == "="):
            return False
    return True


def metric_events(run_id: str, metrics: Sequence[MetricIn]) -> list[Event]:
    """One ``metrics`` event per step (in step order, the monitor's running windows need it), each
    followed by the alerts the stability monitor raises on it."""
    by_step: dict[int, tuple[dict[str, float], int]] = {}
    for m in metrics:
        values, ts = by_step.get(m.step, ({}, 0))
        values[m.key] = m.value  # the last value logged for a key at a step wins, as in MLflow's latest
        by_step[m.step] = (values, max(ts, m.timestamp))
    out: list[Event] = []
    monitor = monitors.get(run_id) if by_step else None
    for step in sorted(by_step):
        raw, ts_ms = by_step[step]
        values = map_metrics(raw)
        try:
            ev = MetricsEvent(step=step, values=values, ts=ts_ms / 1000 if ts_ms > 0 else time.time())
        except ValidationError as exc:
            err = exc.errors()[0]
            raise invalid("metrics", f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}") from None
        out.append(ev)
        if monitor is not None:
            for alert in monitor.check(step, values):
                alert.ts = ev.ts
                out.append(alert)
    return out
