"""Typed, versioned events: everything a run tells the outside world.

The training loop never writes to a file, a socket or a database. It builds one of the event
models below and hands it to :class:`EventEmitter`, which stamps it (run id, sequence number,
wall time) and passes it to every sink (see :mod:`rlhfkit.sinks`). The JSON form of these models
is the wire format of the JSON Lines files, the Redis stream, the REST ingest endpoint and the
WebSocket; ``docs/events.md`` documents it.

Versioning: ``v`` is bumped when a field changes meaning or disappears. Adding an optional field
does not bump it; readers ignore fields they do not know.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from typing import Annotated, Any, Final, Literal, Protocol, get_args, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

SCHEMA_VERSION = 1
_log = logging.getLogger(__name__)

Severity = Literal["info", "warning", "critical"]
# Integer ranges the run registry can store (steps and counts are 32-bit columns, seq and seed 64-bit);
# events outside them are rejected at validation instead of failing in the database.
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
SEQ_MAX = 2**62  # leaves room to number events that arrive without a seq after the highest one
Int32 = Annotated[int, Field(ge=-INT32_MAX - 1, le=INT32_MAX)]
Int64 = Annotated[int, Field(ge=-INT64_MAX - 1, le=INT64_MAX)]
# The run vocabularies, declared once: the registry's columns, the API schemas and (through the
# OpenAPI schema) the browser's generated client all use these.
RunSource = Literal["native", "trl", "openrlhf", "external"]
ExternalSource = Literal["trl", "openrlhf", "external"]  # runs that execute elsewhere and POST their events
RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
RUN_SOURCES: Final[tuple[str, ...]] = get_args(RunSource)
RUN_STATUSES: Final[tuple[str, ...]] = get_args(RunStatus)
ACTIVE_STATUSES: Final[tuple[str, ...]] = ("queued", "running")
TERMINAL_STATUSES: Final[tuple[str, ...]] = ("succeeded", "failed", "cancelled")
# the status a run ends in when its stream carries this terminal event
STATUS_OF_TERMINAL_EVENT: Final[dict[str, str]] = {
    "run_finished": "succeeded", "run_failed": "failed", "run_cancelled": "cancelled"}


def new_run_id() -> str:
    """A run's id: 16 hex digits, the same wherever the run is created (CLI, service, adapters)."""
    return uuid.uuid4().hex[:16]


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore")

    v: int = SCHEMA_VERSION
    run_id: str = ""
    seq: Annotated[int, Field(ge=-1, le=SEQ_MAX)] = -1  # per-run sequence number, 0, 1, 2, ... assigned by the emitter
    ts: float = 0.0  # unix seconds when emitted
    step: Int32 | None = None


class RunStarted(_Event):
    type: Literal["run_started"] = "run_started"
    name: str = ""
    source: RunSource = "native"
    config: dict[str, Any] = Field(default_factory=dict)
    seed: Int64 | None = None
    total_steps: Int32 | None = None
    device: str = "cpu"
    versions: dict[str, str] = Field(default_factory=dict)
    git_commit: str | None = None


class MetricsEvent(_Event):
    """One step's scalar metrics, keyed by the names in :mod:`rlhfkit.metrics`."""

    type: Literal["metrics"] = "metrics"
    values: dict[str, float] = Field(default_factory=dict)


class TimingsEvent(_Event):
    """Wall seconds per stage for one step (device synchronised at stage boundaries only)."""

    type: Literal["timings"] = "timings"
    stages: dict[str, float] = Field(default_factory=dict)
    step_time: float = 0.0
    tokens: int = 0  # response tokens generated this step


class MemoryStat(BaseModel):
    allocated_mb: float | None = None  # CUDA: memory_allocated at stage end
    reserved_mb: float | None = None  # CUDA: memory_reserved at stage end
    peak_mb: float | None = None  # CUDA: max_memory_allocated during the stage
    rss_mb: float | None = None  # CPU: process resident set size at stage end
    rss_peak_mb: float | None = None  # CPU: RSS high-water seen during the stage
    gpu_util: float | None = None  # percent, from NVML
    gpu_mem_used_mb: float | None = None  # from NVML (all processes)


class MemoryEvent(_Event):
    type: Literal["memory"] = "memory"
    device: str = "cpu"
    stages: dict[str, MemoryStat] = Field(default_factory=dict)
    models: dict[str, float] = Field(default_factory=dict)  # MB of weights per model


class AlertEvent(_Event):
    type: Literal["alert"] = "alert"
    rule: str
    severity: Severity = "warning"
    metric: str | None = None
    value: float | None = None
    threshold: float | None = None
    message: str = ""
    suggestion: str = ""


class Sample(BaseModel):
    prompt: str
    response: str
    reward: float


class EvalEvent(_Event):
    type: Literal["eval"] = "eval"
    reward_mean: float
    samples: list[Sample] = Field(default_factory=list)


class ArtifactEvent(_Event):
    type: Literal["artifact"] = "artifact"
    name: str
    kind: str = "other"  # trace | speedscope | profile_summary | mem_report | checkpoint | config | other
    path: str = ""
    size_bytes: int = 0
    meta: dict[str, Any] = Field(default_factory=dict)


class LogEvent(_Event):
    type: Literal["log"] = "log"
    level: Literal["debug", "info", "warning", "error"] = "info"
    message: str = ""


class RunFinished(_Event):
    type: Literal["run_finished"] = "run_finished"
    summary: dict[str, Any] = Field(default_factory=dict)


class RunFailed(_Event):
    type: Literal["run_failed"] = "run_failed"
    error: str
    traceback: str | None = None


class RunCancelled(_Event):
    type: Literal["run_cancelled"] = "run_cancelled"
    reason: str = "cancelled by user"


Event = Annotated[
    RunStarted | MetricsEvent | TimingsEvent | MemoryEvent | AlertEvent | EvalEvent | ArtifactEvent | LogEvent | RunFinished | RunFailed | RunCancelled,
    Field(discriminator="type"),
]
EVENT_TYPES: tuple[str, ...] = (
    "run_started", "metrics", "timings", "memory", "alert", "eval", "artifact", "log",
    "run_finished", "run_failed", "run_cancelled",
)
TERMINAL_TYPES: frozenset[str] = frozenset({"run_finished", "run_failed", "run_cancelled"})

_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def parse_event(data: str | bytes | dict[str, Any]) -> Event:
    """Parse one event from JSON text or a dict (raises pydantic.ValidationError if invalid)."""
    if isinstance(data, (str, bytes)):
        return _ADAPTER.validate_json(data)
    return _ADAPTER.validate_python(data)


def event_json_schema() -> dict[str, Any]:
    return _ADAPTER.json_schema()


@runtime_checkable
class Sink(Protocol):
    """Anything that receives events. ``emit`` must be cheap and must not raise into the loop."""

    def emit(self, event: Event) -> None: ...

    def close(self) -> None: ...


class EventEmitter:
    """Stamps events with the run id, a sequence number and the time, then fans them out."""

    def __init__(self, run_id: str, sinks: Sequence[Sink] | None = None, start_seq: int = 0) -> None:
        self.run_id = run_id
        self.sinks: list[Sink] = list(sinks or [])
        self._seq = start_seq

    def add(self, sink: Sink) -> None:
        self.sinks.append(sink)

    def emit(self, event: Event) -> Event:
        event.run_id = self.run_id
        event.seq = self._seq
        self._seq += 1
        if not event.ts:
            event.ts = time.time()
        for sink in self.sinks:
            try:
                sink.emit(event)
            except Exception:  # a broken sink must never kill training
                _log.exception("sink %r failed on %s event; continuing", sink, event.type)
        return event

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
