"""Typed HTTP client of the rlhfkit service, plus an HTTP event sink.

Depends only on httpx and rlhfkit, so adapters (TRL, OpenRLHF) and user scripts can report to a
server without installing it::

    client = Client("http://127.0.0.1:8000", token=None)
    run = client.create_external_run("my-trl-run", source="trl", config={...}, tags=["sweep"])
    client.post_events(run["id"], [event.model_dump(mode="json") for event in events])

``HttpSink`` does the batching for a live run: ``emit`` only appends to a buffer; a background
thread posts batches (idempotent on ``seq``, so retries after a network error never duplicate).
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import httpx

from rlhfkit.events import Event

DEFAULT_SERVER = "http://127.0.0.1:8000"
MAX_BATCH_BYTES = 900_000  # the server refuses bodies over 1 MiB (413)


def _finite_or_null(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite_or_null(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite_or_null(x) for x in v]
    return v


def _json_bytes(body: Any) -> bytes:
    """JSON for a request body; NaN and infinities become null, as in the event wire format
    (a diverged run's metrics must upload, not crash the sink)."""
    try:
        return json.dumps(body, allow_nan=False, separators=(",", ":")).encode()
    except ValueError:
        return json.dumps(_finite_or_null(body), allow_nan=False, separators=(",", ":")).encode()


class ApiError(RuntimeError):
    """A non-2xx answer; ``detail`` is the server's JSON ``detail`` (a list of field errors on 422)."""

    def __init__(self, status_code: int, detail: Any) -> None:
        self.status_code = status_code
        self.detail = detail
        super().__init__(f"HTTP {status_code}: {detail}")


def default_server() -> str:
    return os.environ.get("RLHFKIT_SERVER", DEFAULT_SERVER)


def _csv(items: list[str] | tuple[str, ...] | str | None) -> str | None:
    if items is None:
        return None
    return items if isinstance(items, str) else ",".join(items)


class Client:
    """One method per API route; every method returns the decoded JSON (dicts and lists)."""

    def __init__(self, base_url: str | None = None, token: str | None = None, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = (base_url or default_server()).rstrip("/")
        token = token if token is not None else os.environ.get("RLHFKIT_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, *, params: dict[str, Any] | None = None, json_body: Any = None) -> Any:
        params = {k: v for k, v in (params or {}).items() if v is not None}
        if json_body is None:
            resp = self._http.request(method, path, params=params)
        else:
            resp = self._http.request(method, path, params=params, content=_json_bytes(json_body),
                                      headers={"content-type": "application/json"})
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("detail", resp.text)
            except (ValueError, AttributeError):
                detail = resp.text
            raise ApiError(resp.status_code, detail)
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json()

    # ---- health and contracts
    def health(self) -> dict[str, Any]:
        return self._request("GET", "/healthz")  # type: ignore[no-any-return]

    def ready(self) -> dict[str, Any]:
        return self._request("GET", "/readyz")  # type: ignore[no-any-return]

    def metrics_contract(self) -> dict[str, Any]:
        return self._request("GET", "/api/metrics/contract")  # type: ignore[no-any-return]

    def config_schema(self) -> dict[str, Any]:
        return self._request("GET", "/api/config/schema")  # type: ignore[no-any-return]

    def presets(self) -> list[dict[str, Any]]:
        return self._request("GET", "/api/config/presets")  # type: ignore[no-any-return]

    # ---- runs
    def create_run(self, *, preset: str | None = None, config: dict[str, Any] | None = None,
                   overrides: dict[str, Any] | None = None, name: str | None = None, tags: list[str] | None = None,
                   queue: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"overrides": overrides or {}}
        for k, v in (("preset", preset), ("config", config), ("name", name), ("tags", tags), ("queue", queue)):
            if v is not None:
                body[k] = v
        return self._request("POST", "/api/runs", json_body=body)  # type: ignore[no-any-return]

    def list_runs(self, *, status: list[str] | str | None = None, tag: str | None = None, source: str | None = None,
                  q: str | None = None, sort: str = "-created_at", limit: int = 50,
                  cursor: int | None = None) -> dict[str, Any]:
        return self._request("GET", "/api/runs", params={  # type: ignore[no-any-return]
            "status": _csv(status), "tag": tag, "source": source, "q": q, "sort": sort, "limit": limit,
            "cursor": cursor})

    def iter_runs(self, **filters: Any) -> Iterator[dict[str, Any]]:
        cursor = None
        while True:
            page = self.list_runs(cursor=cursor, **filters)
            yield from page["data"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def get_run(self, run_id: str) -> dict[str, Any]:
        return self._request("GET", f"/api/runs/{run_id}")  # type: ignore[no-any-return]

    def cancel_run(self, run_id: str) -> dict[str, Any]:
        return self._request("POST", f"/api/runs/{run_id}/cancel")  # type: ignore[no-any-return]

    def delete_run(self, run_id: str) -> None:
        self._request("DELETE", f"/api/runs/{run_id}")

    def rerun(self, run_id: str, overrides: dict[str, Any] | None = None, name: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"overrides": overrides or {}}
        if name is not None:
            body["name"] = name
        return self._request("POST", f"/api/runs/{run_id}/rerun", json_body=body)  # type: ignore[no-any-return]

    def wait(self, run_id: str, timeout: float = 600.0, poll: float = 0.5,
             until: tuple[str, ...] = ("succeeded", "failed", "cancelled")) -> dict[str, Any]:
        """Poll until the run's status is one of ``until``; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.get_run(run_id)
            if run["status"] in until:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {run['status']} after {timeout} s")
            time.sleep(poll)

    # ---- ingest (adapters)
    def create_external_run(self, name: str, source: str = "external", config: dict[str, Any] | None = None,
                            tags: list[str] | None = None, *, seed: int | None = None,
                            total_steps: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "source": source, "config": config or {}, "tags": list(tags or [])}
        if seed is not None:
            body["seed"] = seed
        if total_steps is not None:
            body["total_steps"] = total_steps
        return self._request("POST", "/api/runs/external", json_body=body)  # type: ignore[no-any-return]

    def post_events(self, run_id: str, events: list[dict[str, Any]] | list[Event]) -> dict[str, Any]:
        """Upload events (dicts or rlhfkit event models), split into requests under the 1 MiB limit.
        Returns the summed ``{"accepted", "duplicates", "conflicting_seqs", "last_seq"}``."""
        total: dict[str, Any] = {"accepted": 0, "duplicates": 0, "conflicting_seqs": [], "last_seq": -1}
        batch: list[Any] = []
        size = 0
        for ev in events:
            d = ev if isinstance(ev, dict) else ev.model_dump(mode="json")
            n = len(json.dumps(d, default=str)) + 1
            if batch and size + n > MAX_BATCH_BYTES:
                self._post_batch(run_id, batch, total)
                batch, size = [], 0
            batch.append(d)
            size += n
        if batch or not total["accepted"]:
            self._post_batch(run_id, batch, total)
        return total

    def _post_batch(self, run_id: str, batch: list[Any], total: dict[str, Any]) -> None:
        res = self._request("POST", f"/api/runs/{run_id}/events", json_body={"events": batch})
        total["accepted"] += res["accepted"]
        total["duplicates"] += res["duplicates"]
        total["conflicting_seqs"] += res.get("conflicting_seqs", [])
        total["last_seq"] = res["last_seq"]

    def get_events(self, run_id: str, after: int = -1, limit: int = 1000,
                   types: list[str] | None = None) -> dict[str, Any]:
        return self._request("GET", f"/api/runs/{run_id}/events",  # type: ignore[no-any-return]
                             params={"after": after, "limit": limit, "types": _csv(types)})

    def follow(self, run_id: str, cursor: int = -1, poll: float = 0.5, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Yield every stored event after ``cursor``, then new ones as they arrive, until the run ends."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            page = self.get_events(run_id, after=cursor)
            yield from page["events"]
            cursor = page["next_cursor"]
            if not page["events"]:
                if page["status"] in ("succeeded", "failed", "cancelled"):
                    return
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"run {run_id} still {page['status']}")
                time.sleep(poll)

    # ---- queries
    def metrics(self, run_id: str, keys: list[str] | None = None, max_points: int = 1000,
                start: int | None = None, end: int | None = None) -> dict[str, Any]:
        return self._request("GET", f"/api/runs/{run_id}/metrics", params={  # type: ignore[no-any-return]
            "keys": _csv(keys), "max_points": max_points, "start": start, "end": end})

    def compare(self, ids: list[str], keys: list[str] | None = None, max_points: int = 1000) -> dict[str, Any]:
        return self._request("GET", "/api/runs/compare", params={  # type: ignore[no-any-return]
            "ids": _csv(ids), "keys": _csv(keys), "max_points": max_points})

    def timings(self, run_id: str) -> list[dict[str, Any]]:
        return self._request("GET", f"/api/runs/{run_id}/timings")  # type: ignore[no-any-return]

    def memory(self, run_id: str) -> list[dict[str, Any]]:
        return self._request("GET", f"/api/runs/{run_id}/memory")  # type: ignore[no-any-return]

    def alerts(self, run_id: str) -> list[dict[str, Any]]:
        return self._request("GET", f"/api/runs/{run_id}/alerts")  # type: ignore[no-any-return]

    def samples(self, run_id: str) -> list[dict[str, Any]]:
        return self._request("GET", f"/api/runs/{run_id}/samples")  # type: ignore[no-any-return]

    def artifacts(self, run_id: str) -> list[dict[str, Any]]:
        return self._request("GET", f"/api/runs/{run_id}/artifacts")  # type: ignore[no-any-return]

    def download_artifact(self, run_id: str, name: str) -> bytes:
        resp = self._http.get(f"/api/runs/{run_id}/artifacts/{name}")
        if resp.status_code >= 400:
            raise ApiError(resp.status_code, resp.text)
        return resp.content


class HttpSink:
    """Sink that uploads a run's events to the server in batches from a background thread.

    ``emit`` never touches the network: it appends the event to a deque. The thread posts every
    ``interval`` seconds (or when ``batch`` events are waiting) and retries on errors; re-posting
    is safe because the server deduplicates on ``(run_id, seq)``.
    """

    def __init__(self, client: Client, run_id: str, *, interval: float = 0.5, batch: int = 2000,
                 close_timeout: float = 30.0) -> None:
        self.client = client
        self.run_id = run_id
        self.interval = interval
        self.batch = batch
        self.close_timeout = close_timeout
        self.errors = 0
        self._buf: deque[Event] = deque()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"rlhfkit-http-sink-{run_id}", daemon=True)
        self._thread.start()

    def emit(self, event: Event) -> None:
        self._buf.append(event)
        if len(self._buf) >= self.batch:
            self._wake.set()

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            self._flush()
            if self._closed.is_set() and not self._buf:
                return

    def _flush(self) -> None:
        while self._buf:
            items = [self._buf[i] for i in range(min(len(self._buf), self.batch))]
            try:
                self.client.post_events(self.run_id, [e.model_dump(mode="json") for e in items])
            except (httpx.HTTPError, ApiError):
                self.errors += 1
                if self._closed.is_set() and self.errors > 5:
                    self._buf.clear()  # give up at shutdown rather than hang the user's script
                    return
                time.sleep(min(5.0, 0.2 * self.errors))
                return
            for _ in items:
                self._buf.popleft()

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        self._thread.join(self.close_timeout)
