"""The files a contributor expects next to the code: CI that runs `make test` with PostgreSQL and Redis,
pre-commit with ruff and mypy, a changelog and the MIT licence the README names. CI cannot run here,
so its workflow is parsed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[2]


def _workflow() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_ci_workflow_runs_make_test_with_postgres_and_redis() -> None:
    wf = _workflow()
    triggers = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on:` key as true
    assert "push" in triggers and "pull_request" in triggers
    (job,) = wf["jobs"].values()
    runs = [step.get("run", "") for step in job["steps"]]
    assert any(line.strip() == "make test" for r in runs for line in r.splitlines())
    services = job["services"]
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")
    # the tests find the services through these variables (tests/integration/conftest.py)
    assert "@postgres:5432" in job["env"]["RLHFKIT_TEST_PG"]
    assert job["env"]["RLHFKIT_TEST_REDIS"].startswith("redis://redis:6379")
    conftest = (ROOT / "tests/integration/conftest.py").read_text()
    assert "RLHFKIT_TEST_PG" in conftest and "RLHFKIT_TEST_REDIS" in conftest


def test_pre_commit_runs_ruff_and_mypy() -> None:
    cfg = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = {h["id"]: h for repo in cfg["repos"] for h in repo["hooks"]}
    assert "ruff" in hooks and "mypy" in hooks
    assert "rlhfkit backend worker" in hooks["mypy"]["entry"]  # the same scope as `make lint`


def test_changelog_and_mit_license() -> None:
    assert "## [Unreleased]" in (ROOT / "CHANGELOG.md").read_text()
    licence = (ROOT / "LICENSE").read_text()
    assert licence.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in licence
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["license"] == "MIT"  # the SPDX expression form (PEP 639)


def test_the_engine_install_does_not_pull_the_server() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(meta["dependencies"]).lower()
    for pkg in ("fastapi", "sqlalchemy", "celery", "redis", "uvicorn", "alembic", "psycopg"):
        assert pkg not in core, pkg
        assert any(pkg in d.lower() for d in meta["optional-dependencies"]["server"]), pkg
