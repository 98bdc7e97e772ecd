"""Contract and health routes: metric names, config schema and presets, liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from backend.api.deps import DbDep, RedisDep, SettingsDep
from backend.schemas import Health, MetricsContract, MetricSpecPublic, PresetPublic
from backend.services.run_records import database_check
from rlhfkit.config import ConfigError, config_json_schema, load_config, preset_names
from rlhfkit.events import EVENT_TYPES, SCHEMA_VERSION
from rlhfkit.metrics import METRICS, MODELS, STAGES, SUB_STAGES

router = APIRouter(prefix="/api", tags=["meta"])
health_router = APIRouter(tags=["health"])


@router.get("/metrics/contract", response_model=MetricsContract, summary="Metric names, units and aliases")
def metrics_contract() -> MetricsContract:
    return MetricsContract(
        metrics={k: MetricSpecPublic(name=s.name, unit=s.unit, description=s.description, group=s.group,
                                     aliases=list(s.aliases)) for k, s in METRICS.items()},
        stages=list(STAGES), sub_stages=list(SUB_STAGES), models=list(MODELS), event_types=list(EVENT_TYPES),
        schema_version=SCHEMA_VERSION)


@router.get("/config/schema", summary="JSON Schema of run configs (drives the UI form)")
def config_schema() -> dict[str, Any]:
    return config_json_schema()


@router.get("/config/presets", response_model=list[PresetPublic], summary="Preset configs")
def config_presets() -> list[PresetPublic]:
    out = []
    for name in preset_names():
        try:
            out.append(PresetPublic(name=name, config=load_config(name).model_dump(mode="json")))
        except ConfigError as exc:
            out.append(PresetPublic(name=name, error=str(exc)))
    return out


@health_router.get("/healthz", response_model=Health, summary="Process is up")
def healthz(settings: SettingsDep) -> Health:
    return Health(status="ok", mode="embedded" if settings.embedded else "celery")


@health_router.get("/readyz", response_model=Health,
                   summary="DB (and in Celery mode Redis and the stream consumer) working; 503 if not",
                   responses={503: {"model": Health}})
def readyz(settings: SettingsDep, db: DbDep, redis: RedisDep, request: Request) -> Any:
    checks: dict[str, str] = {"database": database_check(db=db)}
    if redis is not None:
        try:
            redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"error: {type(exc).__name__}"
        consumer = getattr(request.app.state, "stream_consumer", None)
        checks["consumer"] = consumer.health() if consumer is not None else "error: not started"
    ok = all(v == "ok" for v in checks.values())
    body = Health(status="ok" if ok else "unavailable", mode="embedded" if settings.embedded else "celery",
                  checks=checks)
    return body if ok else JSONResponse(body.model_dump(), status_code=503)
