"""One meaning for a run's step count: ``steps_done`` is the number of completed training steps, and
the API, ``rlhfkit runs`` and ``rlhfkit watch`` all show ``steps_done/total_steps`` (docs/api.md).
A finished N-step run reads N/N (its final evaluation, reported "after N steps", does not make it
N+1); a cancelled one reads the steps it finished."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import server_cli, tiny, wait_for

pytestmark = pytest.mark.integration


def runs_table_step(server: str, run_id: str) -> str:
    """The STEP column of ``rlhfkit runs`` for one run."""
    out = server_cli(server, "runs")
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith(run_id))
    return line.split()[3]


def wait_terminal(c: httpx.Client, run_id: str) -> dict:
    return wait_for(lambda: (r := c.get(f"/api/runs/{run_id}").json())["status"]
                    in ("succeeded", "failed", "cancelled") and r, 180, 0.3, f"run {run_id} to end")


def training_steps(c: httpx.Client, run_id: str) -> set[int]:
    events = c.get(f"/api/runs/{run_id}/events", params={"limit": 10_000}).json()["events"]
    return {e["step"] for e in events if e["type"] == "timings"}


def test_a_finished_run_reads_n_of_n_in_the_api_and_the_cli(server: str) -> None:
    with httpx.Client(base_url=server, timeout=30) as c:
        # evaluations at step 2 and after the last step (step 4): the final one used to count as a 5th step
        run = c.post("/api/runs", json={"preset": "smoke", "overrides": tiny(4, **{"train.eval_every": 2})}).json()
        done = wait_terminal(c, run["id"])
        assert done["status"] == "succeeded", done
        assert done["total_steps"] == 4
        assert done["steps_done"] == 4 == len(training_steps(c, run["id"]))
        listed = c.get("/api/runs").json()["data"]
        assert [r["steps_done"] for r in listed if r["id"] == run["id"]] == [4]
    assert runs_table_step(server, run["id"]) == "4/4"
    watched = server_cli(server, "watch", run["id"])
    assert watched.returncode == 0, watched.stderr
    assert "step 4/4" in watched.stdout and "step 5/4" not in watched.stdout, watched.stdout


def test_a_cancelled_run_reads_the_steps_it_finished_everywhere(server: str) -> None:
    with httpx.Client(base_url=server, timeout=30) as c:
        run = c.post("/api/runs", json={"preset": "smoke", "overrides": tiny(40)}).json()
        wait_for(lambda: c.get(f"/api/runs/{run['id']}").json()["steps_done"] >= 2, 120, 0.2, "two steps")
        assert c.post(f"/api/runs/{run['id']}/cancel").status_code == 200
        done = wait_terminal(c, run["id"])
        assert done["status"] == "cancelled", done
        finished = training_steps(c, run["id"])
        n = len(finished)
        assert finished == set(range(n)) and 2 <= n < 40
        events = c.get(f"/api/runs/{run['id']}/events", params={"types": "run_cancelled"}).json()["events"]
        assert events[-1]["step"] == n, "the trainer's own count agrees"
        assert done["steps_done"] == n
    assert runs_table_step(server, run["id"]) == f"{n}/40"


def test_watch_prints_the_runs_own_duration_and_evaluations_in_step_order(server: str) -> None:
    """The trainer emits a periodic evaluation ("after k steps") just before step k's own metrics, and
    its final one after the last step: ``watch`` still prints them in step order, and the duration is
    the run's (its events' timestamps), not how long the watcher waited."""
    from rlhfkit.client import Client
    from rlhfkit.events import EvalEvent, MetricsEvent, RunFinished, RunStarted

    t0 = 1_700_000_000.0
    with Client(server) as c:
        run = c.create_external_run("ordered", source="external")
        events = [RunStarted(seq=0, ts=t0, total_steps=3), EvalEvent(seq=1, ts=t0, step=0, reward_mean=0.1)]
        for i in range(3):
            if i == 1:  # evaluation after 2 steps, emitted inside step index 1, before its metrics
                events.append(EvalEvent(seq=len(events), ts=t0 + 2, step=2, reward_mean=0.2))
                events.append(MetricsEvent(seq=len(events), ts=t0 + 2, step=2, values={"eval/reward_mean": 0.2}))
            events.append(MetricsEvent(seq=len(events), ts=t0 + i + 1, step=i, values={"reward/mean": i / 10}))
        events.append(EvalEvent(seq=len(events), ts=t0 + 6, step=3, reward_mean=0.3))
        events.append(RunFinished(seq=len(events), ts=t0 + 7, step=3))
        assert c.post_events(run["id"], events)["accepted"] == len(events)
        assert c.get_run(run["id"])["steps_done"] == 3
    watched = server_cli(server, "watch", run["id"])
    assert watched.returncode == 0, watched.stderr
    lines = [ln.split("  ")[0] for ln in watched.stdout.splitlines()]
    assert lines == ["started on cpu (3 steps)", "eval @ step 0: reward +0.100", "step 1/3", "step 2/3",
                     "eval @ step 2: reward +0.200", "step 3/3", "eval @ step 3: reward +0.300",
                     "finished after 7 s"], watched.stdout


def test_every_file_a_run_writes_is_listed_and_downloadable(server: str, tmp_path: Path) -> None:
    """An unprofiled run's folder holds config.yaml, events.jsonl, metrics.csv and alerts.csv; the
    artifacts endpoint lists each one and serves it."""
    with httpx.Client(base_url=server, timeout=30) as c:
        run = c.post("/api/runs", json={"preset": "smoke", "overrides": tiny(2)}).json()
        assert wait_terminal(c, run["id"])["status"] == "succeeded"
        folder = tmp_path / "a" / run["id"]
        on_disk = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        assert {"config.yaml", "events.jsonl", "metrics.csv", "alerts.csv"} <= set(on_disk)
        listed = c.get(f"/api/runs/{run['id']}/artifacts").json()
        assert sorted(a["name"] for a in listed) == on_disk
        for a in listed:
            got = c.get(a["url"])
            assert got.status_code == 200, a
            assert got.content == (folder / a["name"]).read_bytes()
            assert a["size_bytes"] == len(got.content)
        assert {a["kind"] for a in listed if a["name"] == "events.jsonl"} == {"events"}
        assert c.get(f"/api/runs/{run['id']}/artifacts/..%2F..%2Fe2e.db").status_code == 404
