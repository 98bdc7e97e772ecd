"""Embedded mode with two runs at once (``rlhfkit serve --embedded-workers 2``): the registry's status
is what executes, and each run records that the other shared its device, and over which steps."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx

from tests.integration.conftest import ROOT, free_port, service_env, spawn, tiny, wait_for

TERMINAL = ("succeeded", "failed", "cancelled")


def test_two_runs_side_by_side_are_running_and_record_the_shared_device(sqlite_url: str, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = service_env(database_url=sqlite_url, redis_prefix="unused", queue="unused", artifacts=tmp_path / "a")
    env.pop("REDIS_URL")

    def up(_: Any) -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    server = spawn([sys.executable, "-m", "rlhfkit.cli", "serve", "--embedded-workers", "2", "--port", str(port)],
                   {**env, "PYTHONPATH": str(ROOT)}, tmp_path / "serve.log", "serve", up, "rlhfkit serve /healthz")
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            ids = [c.post("/api/runs", json={"preset": "smoke", "overrides": tiny(6), "name": f"shared-{i}"}).json()["id"]
                   for i in range(2)]
            seen: list[tuple[str, ...]] = []

            def done() -> bool:
                runs = [c.get(f"/api/runs/{i}").json() for i in ids]
                for r in runs:  # a run that has sent events executes: the registry must not call it queued
                    assert not (r["last_seq"] >= 0 and r["status"] == "queued"), r
                seen.append(tuple(r["status"] for r in runs))
                return all(r["status"] in TERMINAL for r in runs)

            wait_for(done, 600, 0.3, "both runs to finish")
            assert ("running", "running") in seen, seen  # both executed at once, and both said so
            # closed once each process has exited and its last events are in (just after the terminal status)
            wait_for(lambda: all((c.get(f"/api/runs/{i}").json()["shared_device"] or {}).get("to_step") is not None
                                 for i in ids), 60, 0.3, "the shared-device records to close")
            runs = {i: c.get(f"/api/runs/{i}").json() for i in ids}
    finally:
        server.stop()
    for rid, run in runs.items():
        assert run["status"] == "succeeded", run
        other = next(i for i in ids if i != rid)
        shared = run["shared_device"]
        assert shared is not None, f"{run['name']} does not record the run beside it"
        assert shared["run_ids"] == [other] and shared["device"] == "cpu"
        assert 0 <= shared["from_step"] <= shared["to_step"] <= run["last_step"]


def test_sharing_record_opens_at_the_next_step_and_closes_at_the_last_shared_one() -> None:
    from backend.services.embedded import update_sharing

    rec = update_sharing(None, {"b"}, 2, "cpu")  # b launched after this run's step 2
    assert rec == {"device": "cpu", "run_ids": ["b"], "from_step": 3, "to_step": None}
    rec = update_sharing(rec, {"b", "c"}, 10, "cpu")
    assert rec is not None and rec["run_ids"] == ["b", "c"] and rec["to_step"] is None
    rec = update_sharing(rec, set(), 40, "cpu")  # the last of them exited after step 40
    assert rec == {"device": "cpu", "run_ids": ["b", "c"], "from_step": 3, "to_step": 40}
    assert update_sharing(rec, set(), 50, "cpu") == rec  # alone again: nothing changes
    assert update_sharing(None, set(), 5, "cpu") is None
