"""A run's artifacts, read back for the API: a registered file, and the profiler's summary typed.

The engine's :class:`rlhfkit.profiler.ProfilerHooks` writes ``profile_summary.json`` (per-stage
times, sub-stages, top operators, bottlenecks in words) and announces it as an ``artifact`` event;
this module finds the registered file, checks that it lies inside the artifacts directory, and maps
it onto :class:`~backend.schemas.ProfilePublic`, so the UI reads a typed response rather than a
loose JSON file. The summary is written with Python's ``json`` and may hold ``NaN`` (a stage that
never ran has no p50), which browsers' ``JSON.parse`` rejects: here it becomes ``null``.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import select

from backend.core.db import Database
from backend.models import Artifact
from backend.schemas import ArtifactPublic, ProfileFinding, ProfileOp, ProfilePublic, ProfileStage
from rlhfkit.metrics import stage_sort_key


class ArtifactNotFound(LookupError):
    """No such artifact for the run, or its file is not available here (404)."""


# what a file in a run's folder is, by name, when no artifact event announced it
KIND_BY_NAME: dict[str, str] = {"events.jsonl": "events", "config.yaml": "config", "metrics.csv": "metrics",
                                "alerts.csv": "alerts"}
MAX_LISTED_FILES = 2000  # a folder scan stops here (a run with more files lists the first ones)


def list_artifacts(*, db: Database, artifacts_dir: Path, run_id: str) -> list[ArtifactPublic]:
    """Every file of the run: those its events announced (profiles, traces, checkpoints), then every
    other file in its folder ``artifacts_dir/<run_id>`` (``config.yaml``, ``events.jsonl``,
    ``metrics.csv``, ``alerts.csv``), which the engine writes without announcing them. Runs that
    execute elsewhere (adapters, ``rlhfkit train`` streaming here) have only what they uploaded."""
    with db.session() as s:
        rows = list(s.scalars(select(Artifact).where(Artifact.run_id == run_id).order_by(Artifact.id)))
    out = [_public(run_id, a.name, a.kind, a.size_bytes, a.step, a.meta, a.created_at) for a in rows]
    seen = {a.name for a in rows}
    folder = artifacts_dir.resolve() / run_id
    if folder.is_dir():
        found = 0
        for p in sorted(folder.rglob("*")):
            if found >= MAX_LISTED_FILES:
                break
            name = p.relative_to(folder).as_posix()
            if name in seen or p.is_symlink() or not p.is_file():
                continue
            found += 1
            st = p.stat()
            out.append(_public(run_id, name, KIND_BY_NAME.get(name, "other"), st.st_size, None, {},
                               datetime.fromtimestamp(st.st_mtime, tz=timezone.utc)))
    return out


def _public(run_id: str, name: str, kind: str, size: int, step: int | None, meta: dict[str, Any],
            created_at: datetime) -> ArtifactPublic:
    return ArtifactPublic(name=name, kind=kind, size_bytes=size, step=step, meta=meta, created_at=created_at,
                          url=f"/api/runs/{quote(run_id)}/artifacts/{quote(name)}")


def artifact_file(*, db: Database, artifacts_dir: Path, run_id: str, name: str) -> Path:
    """The artifact's file, only if it lies inside the run's own folder ``artifacts_dir/<run_id>``:
    a registered artifact's path, else the file of that name in the folder (a run cannot register
    another run's files, or any other file).

    Names may have folders (``profiles/trace_step2.json``) but never climb or start at the root.
    """
    parts = name.split("/")
    if not name or name.startswith("/") or "\\" in name or "\x00" in name or any(p in ("", ".", "..") for p in parts):
        raise ArtifactNotFound("no such artifact")
    with db.session() as s:
        art = s.scalar(select(Artifact).where(Artifact.run_id == run_id, Artifact.name == name))
    root = artifacts_dir.resolve()
    if art is not None and not art.path:
        raise ArtifactNotFound("no such artifact")
    p = Path(art.path) if art is not None else Path(run_id) / name
    if art is None and (root / p).is_symlink():
        raise ArtifactNotFound("no such artifact")
    path = (p if p.is_absolute() else root / p).resolve()
    if not path.is_relative_to(root / run_id) or not path.is_file():  # only the run's own folder
        raise ArtifactNotFound("artifact file is not available")
    return path


def profile_report(*, db: Database, artifacts_dir: Path, run_id: str) -> ProfilePublic:
    """The run's latest JSON profile summary; :class:`ArtifactNotFound` when it has none."""
    with db.session() as s:
        names = list(s.scalars(select(Artifact.name).where(Artifact.run_id == run_id,
                                                            Artifact.kind == "profile_summary")
                               .order_by(Artifact.id.desc())))
    name = next((n for n in names if n.endswith(".json")), None)
    if name is None:
        raise ArtifactNotFound(f"run {run_id} has no profile summary (profile it with profile.enabled=true "
                               "or `rlhfkit profile`)")
    path = artifact_file(db=db, artifacts_dir=artifacts_dir, run_id=run_id, name=name)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return _to_public(run_id, name, data)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ArtifactNotFound(f"{name} could not be read as a profile summary: {exc}") from None


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def _to_public(run_id: str, name: str, d: dict[str, Any]) -> ProfilePublic:
    stages: list[ProfileStage] = []
    subs: list[ProfileStage] = []
    for st, v in sorted((d.get("stages") or {}).items(), key=lambda kv: stage_sort_key(kv[0])):
        row = ProfileStage(stage=st, mean_s=_num(v.get("mean")) or 0.0, p50_s=_num(v.get("p50")),
                           p95_s=_num(v.get("p95")), share=_num(v.get("share")),
                           tokens_per_sec=_num(v.get("tokens_per_sec")))
        (subs if "/" in st else stages).append(row)
    # Sub-stages only the trace sees (update/forward, ...) come from the profiled steps, which run
    # slower than the rest: they go in a table of their own beside their parent's time in the same
    # steps, each a share of that parent (never of the all-steps mean, which they could exceed).
    seen = {r.stage for r in subs}
    traced_subs = {st: v for st, v in (d.get("substages_profiled") or {}).items() if st not in seen}
    parents = d.get("stages_profiled") or {}
    traced: list[ProfileStage] = []
    for parent in sorted({st.split("/")[0] for st in traced_subs}, key=stage_sort_key):
        pm = _num((parents.get(parent) or {}).get("mean"))
        if pm is not None:
            traced.append(ProfileStage(stage=parent, mean_s=pm, p50_s=None, p95_s=None, share=None,
                                       tokens_per_sec=None))
        for st, v in sorted(traced_subs.items(), key=lambda kv: stage_sort_key(kv[0])):
            if st.split("/")[0] == parent:
                m = _num(v.get("mean")) or 0.0
                traced.append(ProfileStage(stage=st, mean_s=m, p50_s=None, p95_s=None,
                                           share=m / pm if pm else None, tokens_per_sec=None))
    traced_steps = max((int(v.get("profiled_steps") or 0) for v in traced_subs.values()), default=0)
    step = _num((d.get("step_time") or {}).get("mean")) or 0.0
    for r in subs:
        if r.share is None and step > 0:
            r.share = r.mean_s / step
    return ProfilePublic(
        run_id=run_id, artifact=name, steps=int(d.get("steps") or 0), step_time_s=step,
        tokens_per_sec=_num(d.get("tokens_per_sec")), coverage=_num(d.get("coverage")), other_s=_num(d.get("other")),
        stages=stages, substages=subs, traced_steps=traced_steps, traced=traced,
        bottlenecks=[ProfileFinding(finding=str(f.get("finding", "")), evidence=str(f.get("evidence", "")),
                                    try_=str(f.get("try", ""))) for f in d.get("bottlenecks") or []],
        top_ops={st: [ProfileOp(op=str(o["op"]), self_us=float(o["self_us"]), calls=int(o["calls"])) for o in ops]
                 for st, ops in sorted((d.get("top_ops") or {}).items(), key=lambda kv: stage_sort_key(kv[0]))},
        profiled_stages=[str(x) for x in d.get("profiled_stages") or []],
    )


__all__ = ["ArtifactNotFound", "artifact_file", "list_artifacts", "profile_report"]
