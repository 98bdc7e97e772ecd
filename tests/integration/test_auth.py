"""Auth and browser-facing guards against a real ``uvicorn backend.main:app`` process.

With tokens: what is open without one, bearer in any case, WebSocket refusals as close codes
(1008, 4404) rather than HTTP 403, and no token in the access log. Without tokens: cross-origin
writes and WebSockets, non-JSON bodies, foreign Host names (DNS rebinding) and connections on a
non-loopback address are refused — whichever way the server was started.
"""

from __future__ import annotations

import base64
import os
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.integration.conftest import ROOT, Proc, free_port, spawn

TOKEN = "tok-Zq81xVb3-secret"  # distinctive enough to grep the log for


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """``serve(host="127.0.0.1", **env)``: uvicorn with the access log on, embedded mode, SQLite."""
    procs: list[Proc] = []

    def _serve(host: str = "127.0.0.1", **extra: str) -> Proc:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("RLHFKIT_") and k != "REDIS_URL"}
        env.update({"DATABASE_URL": f"sqlite:///{tmp_path / f'auth-{port}.db'}",
                    "RLHFKIT_ARTIFACTS_DIR": str(tmp_path / "artifacts"), "PYTHONPATH": str(ROOT),
                    "PYTHONUNBUFFERED": "1", **extra})
        url = f"http://127.0.0.1:{port}"

        def up(_: Proc) -> bool:
            try:
                return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        cmd = [sys.executable, "-m", "uvicorn", "backend.main:app", "--host", host, "--port", str(port),
               "--log-level", "info"]
        proc = spawn(cmd, env, tmp_path / f"server-{port}.log", "backend", up, "/healthz", {"url": url, "port": port})
        procs.append(proc)
        return proc

    yield _serve
    for p in procs:
        p.stop()


def ws_url(proc: Proc, path: str) -> str:
    return proc.meta["url"].replace("http://", "ws://") + path


def close_code(url: str, **kw: Any) -> int:
    """Open a WebSocket and return the code the server closed it with (the handshake must succeed)."""
    with connect(url, open_timeout=10, close_timeout=2, **kw) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


def token_protocol(token: str) -> str:
    return "rlhfkit.bearer." + base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


def test_with_tokens_only_health_docs_and_ui_are_open_and_the_log_never_shows_the_token(serve: Any) -> None:
    proc = serve(RLHFKIT_API_TOKENS=f"other,{TOKEN}")
    url = proc.meta["url"]
    for path in ("/healthz", "/readyz", "/docs", "/redoc", "/openapi.json"):
        assert httpx.get(url + path).status_code == 200, path
    # the SPA's routes (index.html or "UI not built") never need a token: the page must load to sign in
    for path in ("/", "/runs/abc"):
        r = httpx.get(url + path)
        assert r.status_code == 200 or "UI not built" in r.text, (path, r.status_code)
    for path in ("/api/runs", "/api/metrics/contract", "/api/config/schema", "/api/runs/nope/events"):
        r = httpx.get(url + path)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"] == "Bearer"
    assert httpx.get(url + "/api/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    for scheme in ("Bearer", "bearer", "BEARER"):  # auth schemes are case-insensitive (documented)
        assert httpx.get(url + "/api/runs", headers={"Authorization": f"{scheme} {TOKEN}"}).status_code == 200
    auth = {"Authorization": f"Bearer {TOKEN}"}
    run = httpx.post(url + "/api/runs/external", json={"name": "ext"}, headers=auth).json()

    # WebSockets: accepted then closed with the documented codes (an HTTP 403 would show as 1006)
    assert close_code(ws_url(proc, "/api/live")) == 1008
    assert close_code(ws_url(proc, "/api/live?token=wrong")) == 1008
    assert close_code(ws_url(proc, "/api/live"), subprotocols=["rlhfkit", token_protocol("wrong")]) == 1008
    assert close_code(ws_url(proc, "/api/runs/nope/live"), additional_headers=auth) == 4404
    assert close_code(ws_url(proc, f"/api/runs/{run['id']}/live?cursor=-1")) == 1008
    # ... and a good token opens it: header, the UI's token subprotocol (echoed as "rlhfkit"), ?token=
    httpx.post(f"{url}/api/runs/{run['id']}/events", headers=auth,
               json={"events": [{"type": "log", "seq": 0, "message": "hello"}]}).raise_for_status()
    with connect(ws_url(proc, f"/api/runs/{run['id']}/live?cursor=-1"), additional_headers=auth) as ws:
        assert '"hello"' in str(ws.recv(timeout=10))
    with connect(ws_url(proc, f"/api/runs/{run['id']}/live?cursor=-1"),
                 subprotocols=["rlhfkit", token_protocol(TOKEN)]) as ws:
        assert ws.subprotocol == "rlhfkit"
        assert '"hello"' in str(ws.recv(timeout=10))
    with connect(ws_url(proc, f"/api/runs/{run['id']}/live?cursor=-1&token={TOKEN}")) as ws:
        assert '"hello"' in str(ws.recv(timeout=10))
    httpx.get(f"{url}/api/runs?token={TOKEN}")  # a token in an HTTP query string is logged too

    proc.stop()
    log = proc.text()
    assert "/api/live" in log and "token=[redacted]" in log, log[-2000:]  # the lines are there ...
    assert TOKEN not in log  # ... without the token


def test_without_tokens_cross_origin_writes_and_non_json_bodies_are_refused(serve: Any) -> None:
    proc = serve()
    url = proc.meta["url"]
    run = httpx.post(url + "/api/runs/external", json={"name": "ext", "config": {"api_key": "hunter2"}}).json()
    cancel = f"{url}/api/runs/{run['id']}/cancel"

    # what a cross-site <form> or no-cors fetch sends: refused, and the run is untouched
    r = httpx.post(cancel, content=b"x", headers={"Origin": "http://evil.example", "Content-Type": "text/plain"})
    assert r.status_code == 403 and "cross-origin" in r.json()["detail"]
    r = httpx.post(cancel, headers={"Origin": "null"})
    assert r.status_code == 403
    r = httpx.delete(f"{url}/api/runs/{run['id']}", headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    # a non-JSON body is refused even without Origin (older browsers omit it on some requests)
    r = httpx.post(cancel, content=b"x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and "application/json" in r.json()["detail"]
    r = httpx.post(url + "/api/runs/external", content=b'{"name": "x"}',
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415
    assert httpx.get(f"{url}/api/runs/{run['id']}").json()["status"] == "running"

    # the page's own origin may; a cross-origin GET is harmless (no CORS: the page cannot read it)
    assert httpx.get(url + "/api/runs", headers={"Origin": "http://evil.example"}).status_code == 200
    r = httpx.post(cancel, json={}, headers={"Origin": url})
    assert r.status_code == 200 and r.json()["status"] == "cancelled"


def test_without_tokens_cross_origin_websockets_and_foreign_hosts_are_refused(serve: Any) -> None:
    proc = serve(RLHFKIT_ALLOWED_ORIGINS="http://localhost:5173")
    url, port = proc.meta["url"], proc.meta["port"]
    run = httpx.post(url + "/api/runs/external", json={"name": "ext", "config": {"api_key": "hunter2"}}).json()
    httpx.post(f"{url}/api/runs/{run['id']}/events",
               json={"events": [{"type": "log", "seq": 0, "message": "hunter2"}]}).raise_for_status()
    live = ws_url(proc, f"/api/runs/{run['id']}/live?cursor=-1")

    assert close_code(live, origin="http://evil.example") == 1008
    assert close_code(ws_url(proc, "/api/live"), origin="http://evil.example") == 1008
    for origin in (url, "http://localhost:5173"):  # its own origin, and one allowed by the setting
        with connect(live, origin=origin) as ws:
            assert "hunter2" in str(ws.recv(timeout=10))

    # DNS rebinding: the attacker's name resolves to 127.0.0.1, so the Host header is the tell
    r = httpx.get(url + "/api/runs", headers={"Host": f"evil.example:{port}"})
    assert r.status_code == 400 and "RLHFKIT_ALLOWED_HOSTS" in r.json()["detail"]
    assert httpx.get(url + "/", headers={"Host": "evil.example"}).status_code == 400
    rebound = socket.create_connection(("127.0.0.1", port))  # the URL's name becomes the Host header
    assert close_code(f"ws://evil.example:{port}/api/runs/{run['id']}/live", sock=rebound) == 1008
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "localhost"):
        assert httpx.get(url + "/api/runs", headers={"Host": host}).status_code == 200, host


def test_allowed_hosts_setting_replaces_the_loopback_default(serve: Any) -> None:
    proc = serve(RLHFKIT_ALLOWED_HOSTS="rlhf.lab.example, 127.0.0.1")
    url = proc.meta["url"]
    assert httpx.get(url + "/api/runs", headers={"Host": "localhost"}).status_code == 400  # not listed any more
    assert httpx.get(url + "/api/runs", headers={"Host": "rlhf.lab.example:8000"}).status_code == 200
    assert httpx.get(url + "/api/runs", headers={"Host": "evil.example"}).status_code == 400


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            addr = str(s.getsockname()[0])
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


def test_plain_uvicorn_on_all_interfaces_without_tokens_serves_loopback_only(serve: Any) -> None:
    """The check `rlhfkit serve` made before starting now lives in the app: uvicorn started
    directly on 0.0.0.0 refuses every connection that does not arrive on a loopback address."""
    addr = _non_loopback_address()
    if addr is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    proc = serve(host="0.0.0.0")
    port = proc.meta["port"]
    assert httpx.get(f"http://127.0.0.1:{port}/api/runs").status_code == 200
    r = httpx.get(f"http://{addr}:{port}/api/runs")
    assert r.status_code == 403 and "RLHFKIT_API_TOKENS" in r.json()["detail"]
    assert httpx.get(f"http://{addr}:{port}/healthz").status_code == 403
    assert close_code(f"ws://{addr}:{port}/api/live") == 1008

    open_proc = serve(host="0.0.0.0", RLHFKIT_API_TOKENS=TOKEN)  # with tokens any address, any Host
    r = httpx.get(f"http://{addr}:{open_proc.meta['port']}/api/runs", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200
    insecure = serve(host="0.0.0.0", RLHFKIT_INSECURE="1", RLHFKIT_ALLOWED_HOSTS=f"127.0.0.1,{addr}")
    assert httpx.get(f"http://{addr}:{insecure.meta['port']}/api/runs").status_code == 200
