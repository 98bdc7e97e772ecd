"""MLflow experiments (``/api/2.0/mlflow/experiments/...``): get, get-by-name, create, search.

An experiment is a name and a numeric id in ``mlflow_experiments``; runs point at it
(:mod:`backend.services.mlflow`). Errors are :class:`~backend.services.mlflow_parts.MlflowError`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.core.db import Database
from backend.models import MlflowExperiment
from backend.services.mlflow_parts import MlflowError, invalid
from rlhfkit.events import INT32_MAX


def experiment_dict(exp: MlflowExperiment) -> dict[str, Any]:
    created = int(exp.created_at.timestamp() * 1000)
    return {"experiment_id": str(exp.id), "name": exp.name, "artifact_location": exp.artifact_location,
            "lifecycle_stage": exp.lifecycle_stage, "creation_time": created, "last_update_time": created,
            "tags": [{"key": k, "value": v} for k, v in (exp.tags or {}).items()]}


def experiment_id_of(raw: str | int | None, field: str = "experiment_id") -> int:
    try:
        value = int(str(raw))
    except ValueError:
        raise invalid(field, f"{raw!r} is not an experiment id") from None
    if not 0 <= value <= INT32_MAX:
        raise invalid(field, f"{raw!r} is not an experiment id")
    return value


def experiment_row(session: Session, experiment_id: str | int) -> MlflowExperiment:
    exp = session.get(MlflowExperiment, experiment_id_of(experiment_id))
    if exp is None:
        raise MlflowError("RESOURCE_DOES_NOT_EXIST", f"No experiment with id {experiment_id!r}")
    return exp


def get_experiment(*, db: Database, experiment_id: str) -> dict[str, Any]:
    with db.session() as s:
        return experiment_dict(experiment_row(s, experiment_id))


def get_experiment_by_name(*, db: Database, name: str) -> dict[str, Any]:
    with db.session() as s:
        exp = s.scalar(select(MlflowExperiment).where(MlflowExperiment.name == name))
        if exp is None:
            raise MlflowError("RESOURCE_DOES_NOT_EXIST", f"Could not find experiment with name {name!r}")
        return experiment_dict(exp)


def create_experiment(*, db: Database, name: str, artifact_location: str = "",
                      tags: Iterable[tuple[str, str]] = ()) -> str:
    if not name.strip():
        raise invalid("name", "must not be empty")
    if len(name) > 500:
        raise invalid("name", "at most 500 characters")
    with db.session() as s:
        exp = MlflowExperiment(name=name, artifact_location=artifact_location, lifecycle_stage="active",
                               tags=dict(tags), created_at=datetime.now(timezone.utc))
        s.add(exp)
        try:
            s.commit()
        except IntegrityError:
            raise MlflowError("RESOURCE_ALREADY_EXISTS", f"Experiment {name!r} already exists") from None
        return str(exp.id)


def search_experiments(*, db: Database, max_results: int = 1000) -> list[dict[str, Any]]:
    with db.session() as s:
        rows = s.scalars(select(MlflowExperiment).order_by(MlflowExperiment.id).limit(max_results)).all()
        return [experiment_dict(e) for e in rows]
