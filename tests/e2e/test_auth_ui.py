"""The web UI against a real server started with RLHFKIT_API_TOKENS (``rlhfkit serve``), in headless
Chromium: without a token the sign-in form, not broken pages; signing in through the form or a
``#token=`` link shows the runs list and a live run's charts, over an authenticated WebSocket."""

from __future__ import annotations

import re
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Api, run_server

pytestmark = pytest.mark.e2e

TOKEN = "e2e-Tok3n-7c41d0"
# long enough to be live while the page watches it (cancelled at the end); tiny per step
LIVE = {
    "model.warm_start": False, "model.max_length": 40, "generation.max_new_tokens": 8, "ppo.batch_size": 4,
    "ppo.mini_batch_size": 4, "ppo.ppo_epochs": 1, "train.steps_per_epoch": 60, "train.eval_every": 0,
    "train.eval_prompts": 4, "train.device": "cpu",
}


@pytest.fixture(scope="module")
def token_server_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e-token-server")


@pytest.fixture(scope="module")
def token_server(token_server_dir: Path) -> Iterator[str]:
    with run_server(token_server_dir, RLHFKIT_API_TOKENS=f"someone-else,{TOKEN}") as base:
        yield base


@pytest.fixture(scope="module")
def token_api(token_server: str) -> Api:
    return Api(token_server, TOKEN)


@pytest.fixture(scope="module")
def live_run(token_api: Api) -> Iterator[dict[str, Any]]:
    """A run that is executing while the tests look at it."""
    run = token_api.call("POST", "/api/runs", {"preset": "smoke", "overrides": LIVE, "name": "e2e-auth-live"})
    token_api.wait_status(run["id"], {"running", "failed"}, timeout=120)
    yield run
    try:
        token_api.call("POST", f"/api/runs/{run['id']}/cancel")
    except urllib.error.HTTPError as exc:  # 409: it finished while the tests looked at it
        assert exc.code == 409, exc


def sign_in_form(page: Any) -> Any:
    field = page.get_by_label("API token")
    field.wait_for()
    return field


def watch_sockets(page: Any) -> list[dict[str, Any]]:
    """Every WebSocket the page opens, with the frames it received and its close."""
    sockets: list[dict[str, Any]] = []

    def opened(ws: Any) -> None:
        entry: dict[str, Any] = {"url": ws.url, "frames": [], "closed": False}
        ws.on("framereceived", lambda payload: entry["frames"].append(payload))
        ws.on("close", lambda _ws: entry.update(closed=True))
        sockets.append(entry)

    page.on("websocket", opened)
    return sockets


def wait_live_points(page: Any, api: Api, run_id: str) -> list[int]:
    """The reward chart's point counts while the run is running; returns them once they grew."""
    seen: list[int] = []
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        pts = int(page.locator("figure.chart[aria-label^='Reward']").get_attribute("data-points") or 0)
        if not seen or seen[-1] != pts:
            seen.append(pts)
        if len([p for p in seen if p > 0]) >= 2:
            return seen
        assert api.call("GET", f"/api/runs/{run_id}")["status"] == "running", f"the run ended first: {seen}"
        page.wait_for_timeout(300)
    raise AssertionError(f"the charts did not grow while live: {seen}")


def test_without_a_token_every_page_shows_the_sign_in_form(open_page: Any, token_server: str, shoot: Any) -> None:
    page = open_page(token_server)
    sockets = watch_sockets(page)
    page.goto("/")
    sign_in_form(page)
    assert page.get_by_role("heading", name="Sign in").is_visible()
    assert page.get_by_role("button", name="Sign in").is_visible()
    shoot(page, "20-sign-in")
    for path in ("/runs/abc123", "/new", "/compare?ids=a,b"):
        page.goto(path)
        sign_in_form(page)
        assert page.locator(".state.error").count() == 0  # no "HTTP 401" error panels
        assert page.get_by_text("HTTP 401").count() == 0
    # the refused status socket was closed with 1008 and is not retried (no reconnect loop, no banner)
    page.wait_for_timeout(3000)
    live = [s for s in sockets if s["url"].endswith("/api/live")]
    assert live and all(s["closed"] for s in live)
    assert len(live) <= 4  # at most one per page load above: none of them reconnected
    assert page.get_by_text("reconnecting").count() == 0


def test_sign_in_through_the_form_shows_runs_and_a_live_runs_charts(
    open_page: Any, token_server: str, token_api: Api, live_run: dict[str, Any], shoot: Any
) -> None:
    page = open_page(token_server)
    page.goto("/")
    field = sign_in_form(page)
    field.fill("not-the-token")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("did not accept").wait_for()  # a wrong token: the form again, saying so
    sign_in_form(page).fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    page.locator(f"tr[data-run-id='{live_run['id']}']").wait_for()
    assert page.evaluate("localStorage.getItem('rlhfkit.apiToken')") == TOKEN
    shoot(page, "21-signed-in-runs")

    sockets = watch_sockets(page)
    page.goto(f"/runs/{live_run['id']}")
    counts = wait_live_points(page, token_api, live_run["id"])
    run_socket = [s for s in sockets if f"/api/runs/{live_run['id']}/live" in s["url"]]
    assert run_socket, "the run page opened no live socket"
    assert "token" not in run_socket[0]["url"]  # the token travels as a subprotocol, not in the URL
    assert any('"type": "metrics"' in str(f) or '"type":"metrics"' in str(f) for f in run_socket[0]["frames"]), counts
    shoot(page, "22-signed-in-live-run")

    page.get_by_role("button", name="Sign out").click()
    sign_in_form(page)
    assert page.evaluate("localStorage.getItem('rlhfkit.apiToken')") is None


def test_a_token_link_signs_in_once_and_leaves_the_address_bar(
    open_page: Any, token_server: str, token_api: Api, live_run: dict[str, Any], shoot: Any
) -> None:
    page = open_page(token_server)
    page.goto(f"/runs/{live_run['id']}#token={TOKEN}")
    page.locator("#run-h").wait_for()
    assert "token" not in page.url and page.url.endswith(f"/runs/{live_run['id']}")
    assert page.evaluate("location.hash") == ""
    assert page.evaluate("localStorage.getItem('rlhfkit.apiToken')") == TOKEN
    wait_live_points(page, token_api, live_run["id"])
    shoot(page, "23-token-link-live-run")
    page.goto("/")  # signed in for good: no form, the runs list
    page.locator(f"tr[data-run-id='{live_run['id']}']").wait_for()
    assert page.get_by_label("API token").count() == 0


def test_the_server_log_never_shows_the_token(token_server: str, token_server_dir: Path, token_api: Api) -> None:
    token_api.call("GET", "/api/runs")
    log = (token_server_dir / "server.log").read_text(errors="replace")
    assert re.search(r'"GET /api/runs', log), log[-2000:]  # the access log is on
    assert TOKEN not in log
