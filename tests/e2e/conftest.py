"""Fixtures for the browser tests: the real backend (embedded mode, temporary SQLite) serving the
built SPA, and Debian's headless Chromium driven by Playwright.

Needs ``make ui`` (the SPA in backend/static) and ``make browser`` (/usr/bin/chromium); ``make test``
does both first. Without them these tests are skipped with the reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "backend" / "static" / "index.html"
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = os.environ.get("RLHFKIT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Api:
    """The few REST calls the tests make directly (setup and polling), with the standard library."""

    def __init__(self, base: str, token: str | None = None) -> None:
        self.base = base
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=self.headers)
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def wait_status(self, run_id: str, statuses: set[str], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run = self.call("GET", f"/api/runs/{run_id}")
            if run["status"] in statuses:
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} still {run['status']} after {timeout} s")
            time.sleep(0.5)


@pytest.fixture(scope="session")
def server_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's database, log and artifacts directory (``artifacts/``)."""
    return tmp_path_factory.mktemp("e2e-server")


@contextlib.contextmanager
def run_server(tmp: Path, **extra_env: str) -> Iterator[str]:
    """``rlhfkit serve`` on a free loopback port (embedded mode, SQLite in ``tmp``); yields its URL.
    Its output goes to ``tmp/server.log``."""
    if not STATIC.is_file():
        pytest.skip("the SPA is not built (make ui)")
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (make browser)")
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp / 'e2e.db'}",
        "RLHFKIT_ARTIFACTS_DIR": str(tmp / "artifacts"),
    }
    env.pop("REDIS_URL", None)
    env.pop("RLHFKIT_API_TOKENS", None)
    env.update(extra_env)
    exe = Path(sys.executable).with_name("rlhfkit")
    cmd = (
        [str(exe), "serve", "--host", "127.0.0.1", "--port", str(port)]
        if exe.exists()
        else [sys.executable, "-m", "rlhfkit.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    )
    log = open(tmp / "server.log", "wb")  # noqa: SIM115 - held open for the server's whole life, closed below
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(base + "/healthz", timeout=2).read()
            break
        except (urllib.error.URLError, ConnectionError, OSError):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.close()
                raise RuntimeError(
                    f"backend did not start:\n{(tmp / 'server.log').read_text()[-3000:]}"
                ) from None
            time.sleep(0.3)
    try:
        yield base
    finally:
        proc.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown (stops the embedded run pool)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the server and any run processes it started
            proc.wait(timeout=5)
        log.close()


@pytest.fixture(scope="session")
def server(server_dir: Path) -> Iterator[str]:
    with run_server(server_dir) as base:
        yield base


@pytest.fixture(scope="session")
def api(server: str) -> Api:
    return Api(server)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (make browser)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield b
        b.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item.stash[_FAILED] = rep.failed


_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def open_page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """``open_page(base_url)``: a fresh browser context and page on a server. Each fails the test on
    any uncaught page error, and leaves a screenshot (test-artifacts/screenshots/FAILED-<test>.png)
    when the test fails."""
    opened: list[tuple[Any, Any, list[str]]] = []

    def _open(base_url: str) -> Any:
        ctx = browser.new_context(base_url=base_url, viewport={"width": 1400, "height": 1000}, color_scheme="dark")
        pg = ctx.new_page()
        pg.set_default_timeout(15_000)
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        opened.append((ctx, pg, errors))
        return pg

    yield _open
    for i, (ctx, pg, _) in enumerate(opened):
        if request.node.stash.get(_FAILED, False):
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            pg.screenshot(path=str(SCREENSHOTS / f"FAILED-{request.node.name}{f'-{i}' if i else ''}.png"),
                          full_page=True)
        ctx.close()
    errors = [e for _, _, errs in opened for e in errs]
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture
def page(open_page: Any, server: str) -> Any:
    """A fresh page on the app (the token-less server)."""
    return open_page(server)


@pytest.fixture(scope="session")
def shoot() -> Any:
    """``shoot(page, "name")`` writes test-artifacts/screenshots/name.png (full page)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def _shoot(pg: Any, name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        pg.screenshot(path=str(path), full_page=True)
        return path

    return _shoot
