"""MLflow-compatible tracking routes (``/api/2.0/mlflow/...``): request shapes of MLflow's REST API,
work in :mod:`backend.services.mlflow`.

The bodies follow MLflow's protobuf JSON (``service.proto``): int64 fields may arrive as numbers or
strings, unknown fields are ignored (newer clients send more), GET requests carry their fields as
query parameters. Errors answer ``{"error_code", "message"}`` (``main.py`` maps
:class:`~backend.services.mlflow.MlflowError`), which the client raises as ``MlflowException``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    WithJsonSchema,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from backend.api.deps import DbDep, HubDep
from backend.services import mlflow as svc
from backend.services.mlflow import MetricIn, MlflowError
from rlhfkit.events import JSON_INT_MAX, NO_NUL_PATTERN

router = APIRouter(prefix="/api/2.0/mlflow", tags=["mlflow"])

# Bounds the registry can store; past them the request is a 4xx naming the field, never a 500.
# int64 fields are held to what a JSON reader holds exactly (2**53 - 1: 285,000 years of ms), and
# true/false is not a number (pydantic would read it as 1/0). What is accepted is what the OpenAPI
# document says, string forms included. No string holds NUL (PostgreSQL's text cannot).


@dataclass(frozen=True)
class ProtoInt64:
    """An int64 field of MLflow's protobuf JSON: a number in [lo, hi], or a string of digits (as
    protobuf's JSON printer, e.g. MLflow's Java client, writes an int64) matching ``digits`` — a
    pattern chosen so that every string it matches is in [lo, hi], which the OpenAPI document can
    then state exactly (JSON Schema has no range for strings)."""

    lo: int
    hi: int
    digits: str

    def _parse(self, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("must be an integer, not a boolean")
        if isinstance(v, str):
            if not re.fullmatch(self.digits, v):
                raise ValueError(f"a string must be digits matching {self.digits}")
            return int(v)
        return v

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_before_validator_function(self._parse, core_schema.int_schema(ge=self.lo, le=self.hi))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {"anyOf": [{"type": "integer", "minimum": self.lo, "maximum": self.hi},
                          {"type": "string", "pattern": self.digits}]}


def _double(v: Any) -> Any:
    """A double of protobuf JSON: a number, or "NaN" / "Infinity" / "-Infinity" (how protobuf writes
    the values JSON has no number for); never true/false or other strings."""
    if isinstance(v, str) and v in _NON_FINITE:
        return float(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError('must be a number, "NaN", "Infinity" or "-Infinity"')
    return v


_NON_FINITE = ("NaN", "Infinity", "-Infinity")
Id = Annotated[str, Field(max_length=64, pattern=NO_NUL_PATTERN)]
# 15 digits are at most 999,999,999,999,999 < 2**53 - 1; as a string, max_results is 1..9999
Ms = Annotated[int, ProtoInt64(0, JSON_INT_MAX, r"^[0-9]{1,15}$")]
Step = Annotated[int, ProtoInt64(-JSON_INT_MAX, JSON_INT_MAX, r"^-?[0-9]{1,15}$")]
MaxResults = Annotated[int, ProtoInt64(1, 50_000, r"^[1-9][0-9]{0,3}$")]
Double = Annotated[float, BeforeValidator(_double),
                   WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "string", "enum": list(_NON_FINITE)}]})]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class KeyValue(_Body):
    key: Annotated[str, Field(max_length=250, pattern=NO_NUL_PATTERN)]
    value: Annotated[str, Field(max_length=8000, pattern=NO_NUL_PATTERN)] = ""


class MetricBody(_Body):
    key: Annotated[str, Field(max_length=250, pattern=NO_NUL_PATTERN)]
    value: Double
    timestamp: Ms = 0
    step: Step = 0


class CreateExperimentBody(_Body):
    name: Annotated[str, Field(max_length=500, pattern=NO_NUL_PATTERN)]
    artifact_location: Annotated[str, Field(max_length=2000, pattern=NO_NUL_PATTERN)] = ""
    tags: list[KeyValue] = Field(default_factory=list, max_length=1000)


class SearchExperimentsBody(_Body):
    max_results: MaxResults = 1000


class CreateRunBody(_Body):
    experiment_id: Id | None = None
    user_id: Annotated[str, Field(max_length=200, pattern=NO_NUL_PATTERN)] = ""
    start_time: Ms | None = None
    tags: list[KeyValue] = Field(default_factory=list, max_length=1000)
    run_name: Annotated[str, Field(max_length=200, pattern=NO_NUL_PATTERN)] | None = None


class RunRef(_Body):
    run_id: Id | None = None
    run_uuid: Id | None = None  # the pre-1.0 name of run_id, still sent by the client

    def rid(self) -> str:
        rid = self.run_id or self.run_uuid
        if not rid:
            raise MlflowError("INVALID_PARAMETER_VALUE", "run_id: missing")
        return rid


class UpdateRunBody(RunRef):
    status: Annotated[str, Field(max_length=16, pattern=NO_NUL_PATTERN)] | None = None
    end_time: Ms | None = None
    run_name: Annotated[str, Field(max_length=200, pattern=NO_NUL_PATTERN)] | None = None


class LogBatchBody(RunRef):
    metrics: list[MetricBody] = Field(default_factory=list, max_length=10_000)
    params: list[KeyValue] = Field(default_factory=list, max_length=1000)
    tags: list[KeyValue] = Field(default_factory=list, max_length=1000)


class LogMetricBody(RunRef, MetricBody):
    pass


class LogParamBody(RunRef, KeyValue):
    pass


class SetTagBody(RunRef, KeyValue):
    pass


class SearchRunsBody(_Body):
    experiment_ids: list[Id] = Field(default_factory=list, max_length=100)
    filter: Annotated[str, Field(max_length=10_000, pattern=NO_NUL_PATTERN)] = ""
    max_results: MaxResults = 1000
    page_token: Annotated[str, Field(max_length=64, pattern=NO_NUL_PATTERN)] | None = None


def _pairs(items: list[KeyValue]) -> list[tuple[str, str]]:
    return [(kv.key, kv.value) for kv in items]


def _metrics(items: list[MetricBody]) -> list[MetricIn]:
    return [MetricIn(key=m.key, value=m.value, timestamp=m.timestamp, step=m.step) for m in items]


@router.get("/experiments/get-by-name", summary="MLflow: experiment by name")
def get_experiment_by_name(db: DbDep,
                           experiment_name: Annotated[str, Query(max_length=500, pattern=NO_NUL_PATTERN)]) -> dict[str, Any]:
    return {"experiment": svc.get_experiment_by_name(db=db, name=experiment_name)}


@router.get("/experiments/get", summary="MLflow: experiment by id")
def get_experiment(db: DbDep, experiment_id: Annotated[str, Query(max_length=64, pattern=NO_NUL_PATTERN)]) -> dict[str, Any]:
    return {"experiment": svc.get_experiment(db=db, experiment_id=experiment_id)}


@router.post("/experiments/create", summary="MLflow: create an experiment")
def create_experiment(body: CreateExperimentBody, db: DbDep) -> dict[str, Any]:
    return {"experiment_id": svc.create_experiment(db=db, name=body.name,
                                                   artifact_location=body.artifact_location, tags=_pairs(body.tags))}


@router.post("/experiments/search", summary="MLflow: list experiments")
def search_experiments(body: SearchExperimentsBody, db: DbDep) -> dict[str, Any]:
    return {"experiments": svc.search_experiments(db=db, max_results=body.max_results)}


@router.post("/runs/create", summary="MLflow: start a run (a registry run with source mlflow)")
def create_run(body: CreateRunBody, db: DbDep, hub: HubDep) -> dict[str, Any]:
    return {"run": svc.create_run(db=db, hub=hub, experiment_id=body.experiment_id,
                                  user_id=body.user_id, start_time=body.start_time, tags=_pairs(body.tags),
                                  run_name=body.run_name)}


@router.get("/runs/get", summary="MLflow: a run with its latest metrics, params and tags")
def get_run(db: DbDep, run_id: Annotated[str | None, Query(max_length=64, pattern=NO_NUL_PATTERN)] = None,
            run_uuid: Annotated[str | None, Query(max_length=64, pattern=NO_NUL_PATTERN)] = None) -> dict[str, Any]:
    return {"run": svc.get_run(db=db, run_id=RunRef(run_id=run_id, run_uuid=run_uuid).rid())}


@router.post("/runs/update", summary="MLflow: set a run's status / end time / name")
def update_run(body: UpdateRunBody, db: DbDep, hub: HubDep) -> dict[str, Any]:
    run = svc.update_run(db=db, hub=hub, run_id=body.rid(), status=body.status,
                         end_time=body.end_time, run_name=body.run_name)
    return {"run_info": run["info"]}


@router.post("/runs/search", summary="MLflow: search runs of experiments")
def search_runs(body: SearchRunsBody, db: DbDep) -> dict[str, Any]:
    runs, token = svc.search_runs(db=db, experiment_ids=body.experiment_ids, filter=body.filter,
                                  max_results=body.max_results, page_token=body.page_token)
    return {"runs": runs, **({"next_page_token": token} if token else {})}


@router.post("/runs/log-batch", summary="MLflow: metrics, params and tags in one request")
def log_batch(body: LogBatchBody, db: DbDep, hub: HubDep) -> dict[str, Any]:
    svc.log_batch(db=db, hub=hub, run_id=body.rid(), metrics=_metrics(body.metrics),
                  params=_pairs(body.params), tags=_pairs(body.tags))
    return {}


@router.post("/runs/log-metric", summary="MLflow: one metric value")
def log_metric(body: LogMetricBody, db: DbDep, hub: HubDep) -> dict[str, Any]:
    svc.log_batch(db=db, hub=hub, run_id=body.rid(), metrics=_metrics([body]))
    return {}


@router.post("/runs/log-parameter", summary="MLflow: one param (write-once)")
def log_parameter(body: LogParamBody, db: DbDep, hub: HubDep) -> dict[str, Any]:
    svc.log_batch(db=db, hub=hub, run_id=body.rid(), params=[(body.key, body.value)])
    return {}


@router.post("/runs/set-tag", summary="MLflow: set one tag")
def set_tag(body: SetTagBody, db: DbDep, hub: HubDep) -> dict[str, Any]:
    svc.log_batch(db=db, hub=hub, run_id=body.rid(), tags=[(body.key, body.value)])
    return {}
