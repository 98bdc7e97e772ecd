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
import math
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Final, Literal, Protocol, get_args, runtime_checkable

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, Strict, TypeAdapter

SCHEMA_VERSION = 1
_log = logging.getLogger(__name__)

Severity = Literal["info", "warning", "critical"]
# Integer ranges the run registry can store (steps and counts are 32-bit columns, seq and seed 64-bit);
# events outside them are rejected at validation instead of failing in the database. The 64-bit
# columns take only what every JSON reader holds exactly (2**53 - 1, JavaScript's safe integers):
# past it a browser, or a schema checker comparing doubles, reads a different number than was sent.
INT32_MAX = 2**31 - 1
JSON_INT_MAX = 2**53 - 1
SEQ_MAX = 2**52  # leaves room to number events that arrive without a seq after the highest one


def _integral(v: Any) -> Any:
    """JSON Schema's integers include 3.0 (a number with no fraction); the strict check after this
    still refuses true/false (not 1/0) and "3" (not 3)."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


# numbers are strict: JSON's true/false are not 1/0, and "3" is not 3
JsonInt = Annotated[int, Strict(), BeforeValidator(_integral)]
Int32 = Annotated[int, Strict(), Field(ge=-INT32_MAX - 1, le=INT32_MAX), BeforeValidator(_integral)]
Int64 = Annotated[int, Strict(), Field(ge=-JSON_INT_MAX, le=JSON_INT_MAX), BeforeValidator(_integral)]
Count32 = Annotated[int, Strict(), Field(ge=0, le=INT32_MAX), BeforeValidator(_integral)]
Count64 = Annotated[int, Strict(), Field(ge=0, le=JSON_INT_MAX), BeforeValidator(_integral)]
Float = Annotated[float, Strict()]
# The run vocabularies, declared once: the registry's columns, the API schemas and (through the
# OpenAPI schema) the browser's generated client all use these.
RunSource = Literal["native", "trl", "openrlhf", "mlflow", "external"]
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


# The bounds of what the registry stores, stated once: the REST bodies (backend.schemas), the
# stream consumer and the embedded ingest all validate with these types, so a value PostgreSQL or
# SQLite would refuse (NUL characters, strings longer than their column, integers past it,
# timestamps no datetime can hold, JSON nested deeper than anyone can read back) is a 422 naming
# the field on every path and both databases, never a database error.
TS_MAX = 253402300799.0  # 9999-12-31T23:59:59Z, the last second a datetime holds
JSON_MAX_DEPTH = 32  # nesting of free-form JSON (configs, summaries, artifact meta)
JSON_MAX_NODES = 100_000  # values and keys in one free-form JSON object
# arrays directly inside arrays, at most this many levels ([[[[1]]]] yes, [[[[[1]]]]] no; an object
# in between starts again): the OpenAPI document spells each level out, because a TypeScript type
# generated from it cannot name an array type inside its own definition
JSON_MAX_ARRAY_NESTING = 4


def _no_nul(v: str) -> str:
    if "\x00" in v:
        raise ValueError("must not contain NUL (\\u0000) characters")
    return v


def _json_value(value: Any) -> Any:
    """Check free-form JSON (no NUL in keys or strings, bounded depth and size, arrays in arrays at
    most :data:`JSON_MAX_ARRAY_NESTING` levels); non-finite floats become null, as they do on the
    wire (JSON has no NaN)."""
    nodes = 0

    def walk(v: Any, depth: int, arrays: int = 0) -> Any:
        nonlocal nodes
        nodes += 1
        if nodes > JSON_MAX_NODES:
            raise ValueError(f"more than {JSON_MAX_NODES} values")
        if depth > JSON_MAX_DEPTH:
            raise ValueError(f"nested deeper than {JSON_MAX_DEPTH} levels")
        if isinstance(v, str):
            return _no_nul(v)
        if isinstance(v, float):
            return v if math.isfinite(v) else None
        if isinstance(v, dict):
            return {_no_nul(str(k)): walk(x, depth + 1) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            if arrays >= JSON_MAX_ARRAY_NESTING:
                raise ValueError(f"arrays nested in arrays deeper than {JSON_MAX_ARRAY_NESTING} levels")
            return [walk(x, depth + 1, arrays + 1) for x in v]
        return v

    return walk(value, 0)


# what the JSON Schema says of them: no NUL in strings and keys; free-form JSON is marked, so a
# schema consumer (the service's OpenAPI document) can describe it as recursive JSON without NUL
NO_NUL_PATTERN = r"^[^\x00]*$"
_NO_NUL: dict[str, Any] = {"pattern": NO_NUL_PATTERN}
Text = Annotated[str, AfterValidator(_no_nul), Field(json_schema_extra=_NO_NUL)]  # a TEXT column: any length, no NUL
JsonDict = Annotated[dict[str, Any], AfterValidator(_json_value),
                     Field(json_schema_extra={"x-free-json": True, "propertyNames": _NO_NUL})]
Timestamp = Annotated[float, Strict(), Field(ge=0, le=TS_MAX, allow_inf_nan=False)]
FiniteFloat = Annotated[float, Strict(), Field(allow_inf_nan=False)]


def _artifact_name(v: str) -> str:
    """A name ``GET /api/runs/{id}/artifacts/{name}`` can serve: relative folders allowed, never
    empty segments, ``.``/``..``, a leading ``/`` or a backslash."""
    if v.startswith("/") or "\\" in v or any(p in ("", ".", "..") for p in v.split("/")):
        raise ValueError("must be a relative path without empty, '.' or '..' parts or backslashes")
    return v


# strings for columns of a given width, without NUL
Key = Annotated[str, Field(max_length=200, json_schema_extra=_NO_NUL), AfterValidator(_no_nul)]  # metric keys, stage and model names
Str200 = Annotated[str, Field(max_length=200, json_schema_extra=_NO_NUL), AfterValidator(_no_nul)]
Str100 = Annotated[str, Field(max_length=100, json_schema_extra=_NO_NUL), AfterValidator(_no_nul)]
Str64 = Annotated[str, Field(max_length=64, json_schema_extra=_NO_NUL), AfterValidator(_no_nul)]
Str32 = Annotated[str, Field(max_length=32, json_schema_extra=_NO_NUL), AfterValidator(_no_nul)]
# the same rule as a JSON Schema pattern: "/"-separated segments, none empty, "." or "..", no backslash or NUL
_SEGMENT = r"(?:[^/\\\x00.][^/\\\x00]*|\.[^/\\\x00.][^/\\\x00]*|\.\.[^/\\\x00]+)"
ArtifactName = Annotated[str, Field(min_length=1, max_length=300,
                                    json_schema_extra={"pattern": f"^{_SEGMENT}(?:/{_SEGMENT})*$"}), AfterValidator(_no_nul),
                         AfterValidator(_artifact_name)]


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore")

    v: JsonInt = SCHEMA_VERSION
    run_id: str = ""
    seq: Annotated[int, Strict(), Field(ge=-1, le=SEQ_MAX), BeforeValidator(_integral)] = -1  # per-run sequence number, 0, 1, 2, ... assigned by the emitter
    ts: Timestamp = 0.0  # unix seconds when emitted
    step: Int32 | None = None


class RunStarted(_Event):
    type: Literal["run_started"] = "run_started"
    name: Str200 = ""
    source: RunSource = "native"
    config: JsonDict = Field(default_factory=dict)
    seed: Int64 | None = None
    total_steps: Count32 | None = None
    device: Str32 = "cpu"
    versions: dict[Key, Str200] = Field(default_factory=dict)
    git_commit: Str64 | None = None
    # the peak FLOP/s the run's perf/mfu/* divide by and where it comes from (rlhfkit.mfu.Peak)
    perf: JsonDict = Field(default_factory=dict)


class MetricsEvent(_Event):
    """One step's scalar metrics, keyed by the names in :mod:`rlhfkit.metrics`."""

    type: Literal["metrics"] = "metrics"
    values: dict[Key, Float] = Field(default_factory=dict)


class TimingsEvent(_Event):
    """Wall seconds per stage for one step (device synchronised at stage boundaries only)."""

    type: Literal["timings"] = "timings"
    stages: dict[Key, FiniteFloat] = Field(default_factory=dict)
    step_time: FiniteFloat = 0.0
    tokens: Count32 = 0  # response tokens generated this step


class MemoryStat(BaseModel):
    allocated_mb: FiniteFloat | None = None  # CUDA: memory_allocated at stage end
    reserved_mb: FiniteFloat | None = None  # CUDA: memory_reserved at stage end
    peak_mb: FiniteFloat | None = None  # CUDA: max_memory_allocated during the stage
    rss_mb: FiniteFloat | None = None  # CPU: process resident set size at stage end
    rss_peak_mb: FiniteFloat | None = None  # CPU: RSS high-water seen during the stage
    gpu_util: FiniteFloat | None = None  # percent, from NVML
    gpu_mem_used_mb: FiniteFloat | None = None  # from NVML (all processes)


class MemoryEvent(_Event):
    type: Literal["memory"] = "memory"
    device: Str32 = "cpu"
    stages: dict[Key, MemoryStat] = Field(default_factory=dict)
    models: dict[Key, FiniteFloat] = Field(default_factory=dict)  # MB of weights per model


class AlertEvent(_Event):
    type: Literal["alert"] = "alert"
    rule: Str100
    severity: Severity = "warning"
    metric: Key | None = None
    value: Float | None = None
    threshold: Float | None = None
    message: Text = ""
    suggestion: Text = ""


class Sample(BaseModel):
    prompt: Text
    response: Text
    reward: Float


class EvalEvent(_Event):
    type: Literal["eval"] = "eval"
    reward_mean: Float
    samples: list[Sample] = Field(default_factory=list)


class ArtifactEvent(_Event):
    type: Literal["artifact"] = "artifact"
    name: ArtifactName
    kind: Str32 = "other"  # trace | speedscope | profile_summary | mem_report | checkpoint | config | other
    path: Text = ""
    size_bytes: Count64 = 0
    meta: JsonDict = Field(default_factory=dict)


class LogEvent(_Event):
    type: Literal["log"] = "log"
    level: Literal["debug", "info", "warning", "error"] = "info"
    message: Text = ""


class RunFinished(_Event):
    type: Literal["run_finished"] = "run_finished"
    summary: JsonDict = Field(default_factory=dict)


class RunFailed(_Event):
    type: Literal["run_failed"] = "run_failed"
    error: Text
    traceback: Text | None = None


class RunCancelled(_Event):
    type: Literal["run_cancelled"] = "run_cancelled"
    reason: Text = "cancelled by user"


Event = Annotated[
    RunStarted | MetricsEvent | TimingsEvent | MemoryEvent | AlertEvent | EvalEvent | ArtifactEvent | LogEvent | RunFinished | RunFailed | RunCancelled,
    Field(discriminator="type"),
]
EventType = Literal["run_started", "metrics", "timings", "memory", "alert", "eval", "artifact", "log",
                    "run_finished", "run_failed", "run_cancelled"]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)
TERMINAL_TYPES: frozenset[str] = frozenset(STATUS_OF_TERMINAL_EVENT)

_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def parse_event(data: str | bytes | dict[str, Any]) -> Event:
    """Parse one event from JSON text or a dict (raises pydantic.ValidationError if invalid)."""
    if isinstance(data, (str, bytes)):
        return _ADAPTER.validate_json(data)
    return _ADAPTER.validate_python(data)


def event_json_schema() -> dict[str, Any]:
    return _ADAPTER.json_schema()


EVAL_PREFIX: Final = "eval/"  # metric keys of evaluation points (rlhfkit.metrics: eval/reward_mean)
SYSTEM_PREFIX: Final = "system/"  # metric keys of the system sampler (rlhfkit.system)


def steps_done_after(event_type: str, step: int | None, keys: Iterable[str] = ()) -> int | None:
    """How many training steps a run has completed once it emits this event; None when it says nothing.

    The one meaning of a step count (the registry's ``steps_done``, ``rlhfkit runs``, ``rlhfkit watch``,
    the UI). Training events carry the 0-based index of their step, so ``metrics`` or ``timings`` at
    step ``s`` mean ``s + 1`` steps done. Evaluations are taken *between* steps and carry the number
    of steps before them (0: before the first; N: after the last of N), so an ``eval`` event, or a
    ``metrics`` event whose ``keys`` are all ``eval/...``, at step ``k`` means ``k`` steps done; the
    system sampler's ``system/...`` readings say nothing."""
    if step is None or step < 0:
        return None
    if event_type == "timings":
        return step + 1
    if event_type == "eval":
        return step
    if event_type == "metrics":
        names = list(keys)
        if names and all(k.startswith(SYSTEM_PREFIX) for k in names):
            return None  # the system sampler's readings come on their own clock, between and after steps
        return step if names and all(k.startswith(EVAL_PREFIX) for k in names) else step + 1
    return None


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
        # the training loop and the system sampler's thread both emit: one seq each, in seq order
        self._lock = threading.Lock()

    def add(self, sink: Sink) -> None:
        self.sinks.append(sink)

    def emit(self, event: Event) -> Event:
        with self._lock:
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
