"""Fixtures for the service's integration tests: the real PostgreSQL and Redis on this machine,
real Celery worker processes and real backend processes.

Isolation: every test session creates its own PostgreSQL database (``rlhfkit_test_<hex>``) and
uses its own Redis key prefix and Celery queue names, and removes them at the end, so sessions of
several people (or CI jobs) can share one server.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN = os.environ.get("RLHFKIT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("RLHFKIT_TEST_REDIS", "redis://127.0.0.1:6379/0")

# A run that proves the point in a few seconds on a busy CPU: 3 PPO steps of 4 prompts.
TINY: dict[str, Any] = {
    "train.steps_per_epoch": 3, "ppo.batch_size": 4, "ppo.mini_batch_size": 4, "ppo.ppo_epochs": 1,
    "train.eval_every": 0, "train.eval_prompts": 4, "train.eval_samples_logged": 2,
    "generation.max_new_tokens": 8, "model.warm_start": False, "model.max_length": 40, "train.threads": 1,
    "train.device": "cpu",
}


def tiny(steps: int = 3, **extra: Any) -> dict[str, Any]:
    return {**TINY, "train.steps_per_epoch": steps, **extra}


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll until ``predicate()`` is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ----------------------------------------------------------------------------- PostgreSQL

def _pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session (dropped afterwards)."""
    import psycopg

    if not _pg_available():
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN}")
    name = f"rlhfkit_test_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'rlhfkit.db'}"


# ----------------------------------------------------------------------------- Redis

@pytest.fixture(scope="session")
def redis_prefix() -> Iterator[str]:
    """A Redis key prefix owned by this session; every key under it is deleted at the end."""
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    try:
        r.ping()
    except redis.RedisError:
        pytest.skip(f"Redis not reachable at {REDIS_URL}")
    prefix = f"rlhfkit_test_{secrets.token_hex(4)}"
    yield prefix
    for key in r.scan_iter(match=f"{prefix}:*", count=1000):
        r.delete(key)
    r.close()


@pytest.fixture
def redis_client() -> Iterator[Any]:
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    yield r
    r.close()


# ----------------------------------------------------------------------------- processes

@dataclass
class Proc:
    """A child process with its log file; ``stop()`` is SIGTERM then SIGKILL."""

    popen: subprocess.Popen[bytes]
    log: Path
    name: str
    meta: dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill9(self) -> None:
        os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def stop(self) -> None:
        if self.alive():
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(10)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
        if self.alive():
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)


def service_env(*, database_url: str, redis_prefix: str, queue: str, artifacts: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLHFKIT_")}
    env.update({
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "RLHFKIT_REDIS_PREFIX": redis_prefix,
        "RLHFKIT_QUEUE": queue,
        "RLHFKIT_ARTIFACTS_DIR": str(artifacts),
        "RLHFKIT_HEARTBEAT_TIMEOUT_S": "3",
        "RLHFKIT_REAPER_INTERVAL_S": "0.5",
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


def spawn(cmd: list[str], env: dict[str, str], log: Path, name: str, ready: Callable[[Proc], bool], what: str,
          meta: dict[str, Any] | None = None) -> Proc:
    """Start ``cmd`` in its own session with output to ``log``; wait until ``ready`` (or it died)."""
    with open(log, "wb") as fh:
        popen = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    proc = Proc(popen, log, name, meta or {})
    try:
        wait_for(lambda: not proc.alive() or ready(proc), 60, 0.2, what)
        assert proc.alive(), proc.text()[-3000:]
    except BaseException:
        proc.stop()  # never leave a half-started process behind
        raise
    return proc


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Start real ``celery -A worker.app worker`` processes; waits until each is ready."""
    procs: list[Proc] = []

    def _start(env: dict[str, str], *, queue: str, name: str = "w1", gpu: str = "") -> Proc:
        log = tmp_path / f"worker-{name}.log"
        cmd = [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-P", "solo", "-Q", queue,
               "-n", f"{name}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat",
               "--loglevel", "INFO"]
        proc = spawn(cmd, {**env, "CUDA_VISIBLE_DEVICES": gpu}, log, name, lambda p: "ready." in p.text(),
                     f"worker {name} ready")
        procs.append(proc)
        return proc

    yield _start
    for p in procs:
        p.stop()


@pytest.fixture
def start_backend(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Start a real backend process (uvicorn); waits for /healthz."""
    import httpx

    procs: list[Proc] = []

    def _start(env: dict[str, str], *, port: int | None = None, name: str = "backend") -> Proc:
        port = port or free_port()
        log = tmp_path / f"{name}-{len(procs)}.log"
        cmd = [sys.executable, "-m", "uvicorn", "backend.main:app", "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "warning"]
        url = f"http://127.0.0.1:{port}"

        def up(proc: Proc) -> bool:
            try:
                return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        proc = spawn(cmd, env, log, name, up, f"{name} /healthz", {"url": url, "port": port})
        procs.append(proc)
        return proc

    yield _start
    for p in procs:
        p.stop()


# ----------------------------------------------------------------------------- in-process app

@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``make_client(database_url, **settings)`` -> a started TestClient (lifespan runs)."""
    from fastapi.testclient import TestClient

    from backend.core.config import Settings
    from backend.main import create_app

    clients: list[Any] = []

    def _make(database_url: str, **kw: Any) -> Any:
        kw.setdefault("artifacts_dir", tmp_path / "artifacts")
        kw.setdefault("allowed_hosts", "testserver")  # the Host TestClient sends (backend.api.security)
        settings = Settings(database_url=database_url, **kw)
        client = TestClient(create_app(settings))
        client.__enter__()
        clients.append(client)
        return client

    yield _make
    for c in reversed(clients):
        c.__exit__(None, None, None)


@pytest.fixture
def idle_client(make_client: Callable[..., Any], sqlite_url: str, redis_prefix: str) -> Any:
    """The app in Celery mode with no worker on its queue: submitted runs stay queued (in real Redis)."""
    return make_client(sqlite_url, redis_url=REDIS_URL, redis_prefix=redis_prefix,
                       queue=f"{redis_prefix}-idle-{secrets.token_hex(3)}", consumer_name=f"b-{secrets.token_hex(3)}")


def wait_status(client: Any, run_id: str, statuses: tuple[str, ...], timeout: float) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        run = client.get(f"/api/runs/{run_id}").json()
        return run if run["status"] in statuses else None

    return wait_for(check, timeout, 0.2, f"run {run_id} to reach {statuses}")  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------- a Redis of our own

@dataclass
class OwnRedis:
    """A ``redis-server`` this test may stop and restart (never the machine's shared one).

    ``stop()`` shuts it down cleanly (with ``appendonly`` the AOF keeps every key); ``stop(empty=True)``
    kills it and removes its files, so the next ``start()`` comes back with no keys at all."""

    port: int
    dir: Path
    appendonly: bool = True
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis

        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
               "--appendonly", "yes" if self.appendonly else "no", "--save", "", "--daemonize", "no"]
        with open(self.dir / "redis.log", "ab") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        r = redis.Redis(port=self.port)

        def up() -> bool:
            try:
                return bool(r.ping()) and r.info("persistence").get("loading") == 0
            except redis.RedisError:
                return False

        wait_for(up, 30, 0.05, f"redis-server on port {self.port}")
        r.close()

    def stop(self, *, empty: bool = False) -> None:
        assert self.proc is not None
        if empty:
            self.proc.kill()
        else:
            self.proc.terminate()  # SIGTERM: a clean shutdown that flushes the AOF
        self.proc.wait(30)
        self.proc = None
        if empty:
            for f in self.dir.iterdir():
                if f.name != "redis.log":
                    subprocess.run(["rm", "-rf", str(f)], check=True)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    d = tmp_path / "redis"
    d.mkdir()
    server = OwnRedis(port=free_port(), dir=d)
    server.start()
    yield server
    if server.proc is not None:
        server.stop()


@pytest.fixture
def server(sqlite_url: str, tmp_path: Path, start_backend: Callable[..., Proc]) -> str:
    """The URL of a backend on SQLite without Redis (embedded mode): for the client and CLI tests."""
    env = service_env(database_url=sqlite_url, redis_prefix="unused", queue="unused", artifacts=tmp_path / "a")
    env.pop("REDIS_URL")
    return str(start_backend(env).meta["url"])


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``rlhfkit <args>`` in a subprocess from the repository root, output captured as text."""
    return subprocess.run([sys.executable, "-m", "rlhfkit.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def server_cli(server: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``rlhfkit <args> --server <server>``."""
    return cli(*args, "--server", server)
