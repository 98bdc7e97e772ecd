"""Request and response bodies, one family per resource (``RunCreate / RunPublic / RunsPublic``).

Request models forbid unknown fields, so a typo is a 422 that names the field rather than a
silently ignored key. These models are what the OpenAPI schema (and so the frontend's generated
client) describes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from rlhfkit.events import (
    Count32,
    Event,
    ExternalSource,
    Float,
    Int64,
    JsonDict,
    JsonInt,
    RunSource,
    RunStatus,
    Str100,
    Str200,
)

# The value bounds (NUL, column widths, integer ranges, JSON depth and size) are rlhfkit.events'
# types, so a REST body and an event from a stream are held to the same limits.
RunName = Annotated[Str200, Field(min_length=1)]
Tags = Annotated[list[Str100], Field(max_length=50)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ----------------------------------------------------------------------------- runs

class RunOrigin(_Request):
    """The config suggestion a run was launched from, with what was predicted for it, so its run page can
    set the prediction against what the run measured (memory as growth above the process baseline)."""

    run_id: Str100 = Field(min_length=1, description="The run whose Suggestions tab proposed this config")
    index: JsonInt = Field(ge=0, le=1000, description="The suggestion's number in that table (1-based; 0: the current config)")
    group: Literal["same_math", "changes_algorithm"] | None = Field(default=None, description="The suggestion's group")
    predicted_peak_mb: Float | None = Field(default=None, ge=0, le=1e9,
                                            description="Predicted peak, MiB above the process baseline")
    predicted_tokens_per_sec: Float | None = Field(default=None, ge=0, le=1e12, description="Predicted tokens/s")


class RunCreate(_Request):
    """Start a run from a preset and/or a config, plus dotted-key overrides."""

    preset: Str100 | None = Field(default=None, description="Preset name from GET /api/config/presets (e.g. smoke)")
    config: JsonDict | None = Field(default=None, description="A RunConfig (or part of one) applied on top of the preset")
    overrides: JsonDict = Field(default_factory=dict, description='Dotted keys, e.g. {"ppo.batch_size": 16}')
    name: RunName | None = Field(default=None, description="Run name (default: config.name)")
    tags: Tags | None = Field(default=None, description="Tags (default: config.tags)")
    queue: str | None = Field(default=None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$",
                              description="Celery queue to route to (e.g. a GPU type); default: the server's queue")
    origin: RunOrigin | None = Field(default=None, description="The config suggestion this run was launched from")


class RunRerun(_Request):
    overrides: JsonDict = Field(default_factory=dict, description="Dotted-key overrides applied to the original config")
    name: RunName | None = None
    queue: str | None = Field(default=None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")


class ExternalRunCreate(_Request):
    """Register a run that executes elsewhere (TRL, OpenRLHF, a user script); events arrive by POST."""

    name: RunName
    source: ExternalSource = "external"
    config: JsonDict = Field(default_factory=dict, description="Free-form config of the external run (stored as given)")
    tags: Tags = Field(default_factory=list)
    seed: Int64 | None = None
    total_steps: Count32 | None = None


class SharedDevice(BaseModel):
    """Runs that executed on the same machine at the same time as this one (embedded mode)."""

    device: str = Field(description="The run's configured device (train.device): cpu, cuda or auto")
    run_ids: list[str] = Field(description="The other runs that executed beside this one")
    from_step: int = Field(description="First step of this run that another run shared the device with")
    to_step: int | None = Field(default=None, description="Last such step; null while the sharing goes on")


class RunPublic(BaseModel):
    id: str
    name: str
    status: RunStatus
    source: RunSource
    config: dict[str, Any]
    seed: int | None
    tags: list[str]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    worker: str | None
    error: str | None
    git_commit: str | None
    versions: dict[str, str]
    total_steps: int | None
    last_step: int | None = Field(default=None, description="Index (0-based) of the last completed training step; "
                                  "null before the first")
    steps_done: int = Field(default=0, description="Completed training steps (last_step + 1; 0 before the first). "
                            "A finished run of N steps has N; what the CLI and UI show as steps_done/total_steps")
    last_seq: int = Field(default=-1, description="Highest event seq stored; a WebSocket cursor")
    latest: dict[str, float] = Field(description="Latest value of every metric key (reward/mean, kl/k1, ...)")
    summary: dict[str, Any] | None = None
    queue: str | None = None
    parent_id: str | None = None
    origin: RunOrigin | None = Field(default=None, description="The config suggestion this run was launched from")
    shared_device: SharedDevice | None = Field(
        default=None, description="Other runs this server executed beside this one (embedded mode), and during which "
                                  "of its steps: its timings are not comparable with a run that had the device alone")
    cancel_requested: bool = False

    @model_validator(mode="after")
    def _count_steps(self) -> RunPublic:
        self.steps_done = 0 if self.last_step is None else self.last_step + 1
        return self


class RunsPublic(BaseModel):
    data: list[RunPublic]
    count: int = Field(description="Runs matching the filters (all pages)")
    next_cursor: int | None = Field(default=None, description="Pass as ?cursor= for the next page; null on the last page")


# ----------------------------------------------------------------------------- events

def _null_metrics_dropped(item: Any) -> Any:
    """JSON has no NaN: a client writes NaN/inf metric values as null. They are dropped (they
    cannot be charted) instead of failing the whole event; the stability monitor reports them."""
    if isinstance(item, dict) and isinstance(item.get("values"), dict):
        return {**item, "values": {k: v for k, v in item["values"].items() if v is not None}}
    return item


class EventsIngest(_Request):
    events: list[Annotated[Event, BeforeValidator(_null_metrics_dropped)]] = Field(
        ..., max_length=100_000, description="Events as rlhfkit.events models dump them (type, seq, ts, step, ...); "
        "seq -1 or left out: the next free numbers. A metric value null (NaN or inf) is dropped.")


class IngestResult(BaseModel):
    accepted: int = Field(description="Events stored by this request")
    duplicates: int = Field(description="Events already stored (same run_id and seq), ignored")
    conflicting_seqs: list[int] = Field(default_factory=list, description="Seqs this request sent more than once "
                                        "with different content: the first of each was stored, the others ignored "
                                        "(counted in duplicates)")
    last_seq: int = Field(description="Highest seq stored for the run after this request (-1 when none)")


class EventsPage(BaseModel):
    events: list[dict[str, Any]]
    next_cursor: int = Field(description="Pass as ?after= to continue (the last seq returned, or the given cursor)")
    status: RunStatus


# ----------------------------------------------------------------------------- metrics

class Series(BaseModel):
    """One metric key's points; downsampled series carry each bucket's min and max so spikes survive."""

    key: str
    steps: list[int] = Field(description="Step of each point (downsampled: first step of the bucket)")
    values: list[float] = Field(description="Value of each point (downsampled: the bucket's mean)")
    min: list[float] | None = Field(default=None, description="Downsampled only: smallest value in each bucket")
    max: list[float] | None = Field(default=None, description="Downsampled only: largest value in each bucket")
    min_step: list[int] | None = Field(default=None, description="Downsampled only: step where the bucket's min occurred")
    max_step: list[int] | None = Field(default=None, description="Downsampled only: step where the bucket's max occurred")
    total_points: int = Field(description="Raw points in the requested range")
    downsampled: bool
    unit: str | None = None


class MetricsPublic(BaseModel):
    run_id: str
    series: dict[str, Series]


class CompareRun(BaseModel):
    run: RunPublic
    series: dict[str, Series]


class ComparePublic(BaseModel):
    runs: list[CompareRun]


class TimingPublic(BaseModel):
    step: int
    stages: dict[str, float] = Field(description="Wall seconds per stage")
    step_time: float = Field(description="Wall seconds of the whole step")
    tokens: int
    wall_time: float = Field(description="Unix seconds when emitted")


class MemoryPublic(BaseModel):
    step: int
    device: str
    stages: dict[str, Any] = Field(description="Per stage: allocated/reserved/peak MB (CUDA) or RSS MB (CPU)")
    models: dict[str, float] = Field(description="MB of weights per model")
    wall_time: float


class AlertPublic(BaseModel):
    step: int | None
    rule: str
    severity: str
    metric: str | None
    value: float | None
    threshold: float | None
    message: str
    suggestion: str
    wall_time: float


class SamplePublic(BaseModel):
    step: int | None
    prompt: str
    response: str
    reward: float


class ArtifactPublic(BaseModel):
    name: str
    kind: str
    size_bytes: int
    step: int | None
    meta: dict[str, Any]
    created_at: datetime
    url: str = Field(description="GET this to download")


# ----------------------------------------------------------------------------- suggestions

MEMORY_FOOTING = ("growth above the process baseline: the peak less the process's memory before the models were "
                  "built (CPU: resident set size; CUDA: memory_allocated), MiB")


class OriginCheckPublic(BaseModel):
    """A run launched from a config suggestion: what was predicted for it against what it measured."""

    run_id: str
    origin: RunOrigin
    measured_peak_mb: float | None = Field(description="Measured peak, MiB above the process baseline (the "
                                           "prediction's footing); null until the run has measured it")
    measured_tokens_per_sec: float | None = Field(description="The run's tokens/s (its last step's perf/tokens_per_sec)")
    measured_note: str = Field(description="How the measured figures were taken, or why one is missing")
    peak_error_pct: float | None = Field(description="(predicted − measured) / measured × 100; null if either is missing")
    tokens_per_sec_error_pct: float | None = Field(description="(predicted − measured) / measured × 100")


class SuggestionCurrent(BaseModel):
    """Row 0: the run's config as it is, predicted by the same models as the candidates and, when the
    run has finished, measured."""

    title: str = "Current config"
    config: dict[str, Any]
    predicted_peak_mb: float = Field(description="Predicted peak memory, MiB (growth above the process baseline)")
    predicted_tokens_per_sec: float = Field(description="Predicted response tokens per second (ranking model; once "
                                                        "the run measured its tokens/s on this device, that figure)")
    measured_peak_mb: float | None = Field(None, description="Measured peak memory of the run, MiB, on the same "
                                                             "footing as the prediction (None: not measured)")
    measured_tokens_per_sec: float | None = Field(None, description="Measured response tokens per second of the run "
                                                                    "(its last step's perf/tokens_per_sec)")
    measured_note: str = Field("", description="How the measured figures were taken, or why there are none")
    fits: bool = Field(description="Predicted peak <= budget minus headroom")


class SuggestionCandidate(BaseModel):
    """One configuration ``suggest_config`` tried, with its predictions and its change against row 0."""

    title: str = Field(description="The changes in words (e.g. 'rollout batch 64, bf16')")
    group: Literal["same_math", "changes_algorithm"] = Field(
        description="same_math: identical updates (how the step is computed changes); changes_algorithm: "
                    "the learning algorithm changes (see changes)")
    changes: list[str] = Field(description="What it changes in the algorithm, in words (empty for same_math)")
    overrides: dict[str, Any] = Field(description="Dotted keys whose value differs from the run's config")
    config: dict[str, Any] = Field(description="The full RunConfig with the overrides applied (POST /api/runs accepts it)")
    predicted_peak_mb: float = Field(description="Predicted peak memory, MiB (growth above the process baseline)")
    predicted_tokens_per_sec: float = Field(description="Predicted response tokens per second: the ranking model's "
                                                        "ratio to row 0, times row 0's measured tokens/s once the run "
                                                        "measured them on this device (see notes)")
    tokens_per_sec_ratio: float = Field(description="Predicted tokens/s over row 0's predicted tokens/s")
    peak_change_pct: float = Field(description="Predicted peak against row 0's predicted peak, percent (-30 = 30% less)")
    fits: bool = Field(description="Predicted peak <= budget minus headroom")
    notes: list[str] = Field(description="Caveats that apply to this row only")


class SuggestionsPublic(BaseModel):
    """Config suggestions for a run: row 0 (the current config), then the best same-math candidates,
    then the best algorithm-changing ones, each ranked by predicted throughput."""

    run_id: str
    budget_gb: float = Field(description="Memory budget, GiB")
    device: Literal["cpu", "cuda"]
    headroom: float = Field(description="Fraction of the budget kept free; a candidate fits below "
                                        "budget_gb * (1 - headroom)")
    memory_footing: str = Field(MEMORY_FOOTING, description="What every memory figure of this response measures")
    notes: list[str] = Field(description="Notes that apply to every row")
    current: SuggestionCurrent
    candidates: list[SuggestionCandidate]


# ----------------------------------------------------------------------------- profile and memory model

class ProfileStage(BaseModel):
    """One stage (or ``scoring/value``-style sub-stage) of the profiled run's step time."""

    stage: str
    mean_s: float = Field(description="Mean seconds per step (0 in steps where the stage did not run)")
    p50_s: float | None = Field(description="Median seconds over the steps where it ran")
    p95_s: float | None
    share: float | None = Field(description="Fraction of the mean step time")
    tokens_per_sec: float | None = Field(description="Generated tokens / stage seconds")


class ProfileOp(BaseModel):
    op: str
    self_us: float = Field(description="Self time over the profiled steps, microseconds")
    calls: int


class ProfileFinding(BaseModel):
    """A bottleneck in words, with the measured evidence it rests on and what to try."""

    finding: str
    evidence: str
    try_: str = Field(alias="try", serialization_alias="try")

    model_config = ConfigDict(populate_by_name=True)


class ProfilePublic(BaseModel):
    """The profiler's per-stage summary and bottleneck report (the run's ``profile_summary.json``)."""

    run_id: str
    artifact: str = Field(description="The artifact this was read from")
    steps: int = Field(description="Steps the per-stage table covers (every step of the run, profiled or not)")
    step_time_s: float = Field(description="Mean step time, seconds")
    tokens_per_sec: float | None
    coverage: float | None = Field(description="Fraction of the step time the named stages cover")
    other_s: float | None = Field(description="Seconds per step between the named stages")
    stages: list[ProfileStage] = Field(description="Top-level stages, in pipeline order")
    substages: list[ProfileStage] = Field(description="Sub-stages timed on every step like the stages "
                                                      "(share: of the step)")
    traced_steps: int = Field(description="Profiled steps the `traced` table covers (0: none)")
    traced: list[ProfileStage] = Field(description=(
        "From the torch.profiler trace of the profiled steps only: each stage with sub-stages only the trace "
        "sees (its mean over those steps, share null), then those sub-stages (share: of that stage's time "
        "in the same steps)"))
    bottlenecks: list[ProfileFinding]
    top_ops: dict[str, list[ProfileOp]] = Field(description="Per stage or sub-stage, the operators with the "
                                                            "most self time")
    profiled_stages: list[str]


class ModelMemory(BaseModel):
    """Predicted MiB of one model's persistent state."""

    model: Literal["policy", "value", "reference", "reward", "policy_packed"] = Field(
        description="policy_packed: the policy's block weights packed again for CPU decoding, where oneDNN "
                    "serves it (weights_mb only)")
    weights_mb: float
    grads_mb: float
    optimizer_mb: float
    total_mb: float


class StageMemory(BaseModel):
    """Predicted peak of one stage, with the transients that make it up (MiB)."""

    stage: str
    peak_mb: float
    parts_mb: dict[str, float] = Field(description="Transient parts of the stage (kv_cache, activations, "
                                                   "logits_head, ...); negative where memory is freed")


class MemoryEstimatePublic(BaseModel):
    """The analytic memory model (``rlhfkit.memopt``) applied to a run's config: what should fit where."""

    run_id: str
    device: Literal["cpu", "cuda"]
    measured_as: str = Field(description="What the run's measured memory is (CUDA max_memory_allocated, or CPU "
                                         "RSS, which also holds the interpreter and libraries)")
    peak_mb: float
    peak_stage: str
    persistent_mb: float = Field(description="Weights, gradients and optimizer states of every model")
    overhead_mb: float = Field(description="Framework constant (allocator, autograd bookkeeping)")
    update_phase: str = Field(description="The phase of a PPO update that holds its peak: head (LM-head "
                                          "backward), trunk, embedding (its gradient) or optimizer (the step)")
    models: list[ModelMemory]
    stages: list[StageMemory]


# ----------------------------------------------------------------------------- misc

class MetricSpecPublic(BaseModel):
    name: str
    unit: str
    description: str
    group: str
    aliases: list[str]


class MetricsContract(BaseModel):
    metrics: dict[str, MetricSpecPublic]
    stages: list[str]
    sub_stages: list[str]
    models: list[str]
    event_types: list[str]
    schema_version: int


class PresetPublic(BaseModel):
    name: str
    config: dict[str, Any] | None = Field(default=None, description="The preset's validated config (null when it does not validate)")
    error: str | None = None


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    mode: Literal["embedded", "celery"]
    checks: dict[str, str] = Field(default_factory=dict)


class LiveStatusMessage(BaseModel):
    """What ``WS /api/live`` sends when a run changes status (documentation model)."""

    type: Literal["run_status"] = "run_status"
    run: RunPublic


class HeartbeatMessage(BaseModel):
    """Sent on idle WebSockets every RLHFKIT_WS_HEARTBEAT_S seconds."""

    type: Literal["heartbeat"] = "heartbeat"
    ts: float
    cursor: int | None = Field(default=None, description="Run stream only: the last seq sent")


class LaggedMessage(BaseModel):
    """The viewer fell too far behind; the server closes (code 4000): reconnect with ``cursor``."""

    type: Literal["lagged"] = "lagged"
    cursor: int
