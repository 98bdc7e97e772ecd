"""Dependencies point one way: rlhfkit <- backend.core <- worker, rlhfkit <- backend.

Read from the source (every ``import``/``from`` statement, at any depth, including the lazy ones
inside functions), so a new import in the wrong direction fails here before it reaches a review.
"""

from __future__ import annotations

import ast
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


@pytest.mark.parametrize("module", ["trainer", "runner", "runtime", "experience", "policy", "ppo_ops"])
def test_the_training_loop_never_imports_the_cli(module: str) -> None:
    """The loop runs inside a worker: versions and the git commit come from rlhfkit.runtime."""
    found = [(line, mod) for f, line, mod in imports_of("rlhfkit") if f == f"rlhfkit/{module}.py"
             and (mod == "rlhfkit.cli" or mod.startswith("rlhfkit.cli_") or mod.startswith("rlhfkit.cli."))]
    assert found == []
