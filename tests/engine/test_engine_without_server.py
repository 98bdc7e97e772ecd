"""`pip install -e .` without the server extra: the engine's CLI imports, explains itself and trains
while FastAPI, SQLAlchemy, Celery and Redis cannot be imported (a meta-path finder refuses them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVER_PACKAGES = ("fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "psycopg", "celery", "kombu", "redis")

BLOCKER = f'''
import sys
BLOCKED = {SERVER_PACKAGES!r}


class _NotInstalled:
    """Behave as if the server extra were not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, _NotInstalled())
'''


def _python(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": f"{tmp}{os.pathsep}{ROOT}"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, env=env, cwd=tmp)


def test_the_blocker_blocks(tmp_path: Path) -> None:
    proc = _python(tmp_path, "-c", "import fastapi")
    assert proc.returncode != 0 and "No module named 'fastapi'" in proc.stderr


def test_cli_imports_and_train_help_works_without_server_packages(tmp_path: Path) -> None:
    proc = _python(tmp_path, "-c", "import sys, rlhfkit.cli; "
                                   f"print(sorted(m for m in sys.modules if m.split('.')[0] in {SERVER_PACKAGES!r}))")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"
    proc = _python(tmp_path, "-m", "rlhfkit.cli", "train", "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--config" in proc.stdout and "Traceback" not in proc.stderr


def test_a_tiny_run_trains_without_server_packages(tmp_path: Path) -> None:
    proc = _python(tmp_path, "-m", "rlhfkit.cli", "train", "--config", "smoke", "--quiet", "--out", "runs",
                   "--run-id", "engine-only", "--set", "model.warm_start=false", "--set", "model.max_length=40",
                   "--set", "generation.max_new_tokens=8", "--set", "ppo.batch_size=8", "--set",
                   "ppo.mini_batch_size=4", "--set", "ppo.ppo_epochs=1", "--set", "train.steps_per_epoch=1",
                   "--set", "train.eval_prompts=8", "--set", "train.device=cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "runs" / "engine-only" / "metrics.csv").exists()
