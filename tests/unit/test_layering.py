"""Dependencies point one way: rlhfkit <- backend.core <- worker, rlhfkit <- backend.

Read from the source (every ``import``/``from`` statement, at any depth, including the lazy ones
inside functions), so a new import in the wrong direction fails here before it reaches a review.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imports_of(package: str) -> list[tuple[str, int, str]]:
    """``(file, line, imported module)`` of every absolute import in ``package``'s Python files."""
    out: list[tuple[str, int, str]] = []
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                out += [(str(path.relative_to(ROOT)), node.lineno, a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                out.append((str(path.relative_to(ROOT)), node.lineno, node.module))
    return out


def offending(package: str, forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    def under(module: str, roots: tuple[str, ...]) -> bool:
        return any(module == r or module.startswith(r + ".") for r in roots)

    return [f"{f}:{line} imports {mod}" for f, line, mod in imports_of(package)
            if under(mod, forbidden) and not under(mod, allowed)]


def test_the_walker_sees_lazy_imports_inside_functions() -> None:
    found = {mod for f, _, mod in imports_of("rlhfkit") if f == "rlhfkit/runner.py"}
    assert "rlhfkit.trainer" in found  # imported inside run_training, not at the top


@pytest.mark.parametrize("forbidden", ["backend", "worker", "fastapi", "celery", "redis", "sqlalchemy"])
def test_the_engine_imports_no_service_code(forbidden: str) -> None:
    assert offending("rlhfkit", (forbidden,)) == []


def test_the_backend_never_imports_the_worker() -> None:
    assert offending("backend", ("worker",)) == []


def test_the_worker_imports_only_backend_core() -> None:
    assert offending("worker", ("backend",), allowed=("backend.core",)) == []


def test_no_service_module_is_over_300_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in sorted((ROOT / "backend" / "services").rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > 300}
    assert long == {}


def test_routes_run_no_sql() -> None:
    """Routes are HTTP only: queries live in backend.services."""
    assert offending("backend/api/routes", ("sqlalchemy", "backend.models", "backend.core.db")) == []


def _calls(path: Path, name: str) -> list[str]:
    """Names of the top-level functions (or ``Class.method``) of ``path`` that call ``name``."""
    out = []
    for node in ast.parse(path.read_text()).body:
        scopes = [node] if isinstance(node, ast.FunctionDef) else [
            m for m in node.body if isinstance(m, ast.FunctionDef)] if isinstance(node, ast.ClassDef) else []
        for fn in scopes:
            for call in ast.walk(fn):
                if isinstance(call, ast.Call) and name in (getattr(call.func, "attr", None), getattr(call.func, "id", None)):
                    out.append(fn.name)
                    break
    return out


def test_one_function_writes_events_and_publishes_them() -> None:
    """``ingest_and_publish`` is the only way into the events table and the only publisher of
    events to viewers; the REST route, the stream consumer, the embedded executor and the MLflow door all use it."""
    backend = sorted((ROOT / "backend").rglob("*.py"))
    writes = re.compile(r"insert\(EventRow|EventRow\.__table__|(?<!class )EventRow\(|INSERT INTO events|COPY events")
    writers = {str(p.relative_to(ROOT)) for p in backend if "migrations" not in p.parts and writes.search(p.read_text())}
    assert writers == {"backend/services/bulk_write.py", "backend/services/pg_bulk.py"}
    callers = {str(p.relative_to(ROOT)): fns for p in backend
               if (fns := _calls(p, "store_batch") + _calls(p, "insert_events_one_by_one"))}
    assert set(callers) == {"backend/services/ingest.py"}
    pg_users = {str(p.relative_to(ROOT)) for p in backend if p.name != "pg_bulk.py" and "pg_bulk" in p.read_text()}
    assert pg_users == {"backend/services/bulk_write.py"}
    publishers = {str(p.relative_to(ROOT)): fns for p in backend if (fns := _calls(p, "publish_events"))}
    assert publishers == {"backend/services/ingest.py": ["ingest_and_publish"]}
    ingest_paths = {str(p.relative_to(ROOT)) for p in backend if _calls(p, "ingest_and_publish")}
    assert ingest_paths == {"backend/api/routes/runs.py", "backend/services/stream_writer.py",
                            "backend/services/embedded.py", "backend/services/mlflow.py"}


@pytest.mark.parametrize("module", ["trainer", "runner", "runtime", "experience", "policy", "ppo_ops"])
def test_the_training_loop_never_imports_the_cli(module: str) -> None:
    """The loop runs inside a worker: versions and the git commit come from rlhfkit.runtime."""
    found = [(line, mod) for f, line, mod in imports_of("rlhfkit") if f == f"rlhfkit/{module}.py"
             and (mod == "rlhfkit.cli" or mod.startswith("rlhfkit.cli_") or mod.startswith("rlhfkit.cli."))]
    assert found == []
