"""The Python client, the HTTP sink and the service CLI commands against a real backend process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rlhfkit.client import ApiError, Client, HttpSink
from rlhfkit.events import EventEmitter, MetricsEvent, RunFinished, RunStarted
from tests.integration.conftest import ROOT, server_cli

pytestmark = pytest.mark.integration


def test_http_sink_uploads_a_run_and_the_cli_shows_it(server: str) -> None:
    with Client(server) as c:
        run = c.create_external_run("script-run", source="external", config={"lr": 1e-5}, tags=["cli"])
        sink = HttpSink(c, run["id"], interval=0.05)
        em = EventEmitter(run["id"], [sink])
        em.emit(RunStarted(name="script-run", total_steps=20))
        for step in range(20):
            em.emit(MetricsEvent(step=step, values={"reward/mean": step / 20, "kl/k1": 0.01 * step}))
        em.emit(RunFinished(summary={"ok": True}))
        sink.close()
        assert sink.errors == 0
        done = c.get_run(run["id"])
        assert done["status"] == "succeeded" and done["last_step"] == 19 and done["last_seq"] == 21
        again = c.post_events(run["id"], [MetricsEvent(run_id=run["id"], seq=5, step=4, values={"reward/mean": 9.0})])
        assert again == {"accepted": 0, "duplicates": 1, "conflicting_seqs": [], "last_seq": 21}
        assert [e["seq"] for e in c.follow(run["id"])] == list(range(22))
        with pytest.raises(ApiError) as err:
            c.get_run("missing")
        assert err.value.status_code == 404

    listed = server_cli(server, "runs", "--tag", "cli", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [r["id"] for r in json.loads(listed.stdout)["data"]] == [run["id"]]
    table = server_cli(server, "runs")
    assert run["id"] in table.stdout and "succeeded" in table.stdout
    watched = server_cli(server, "watch", run["id"])
    assert watched.returncode == 0, watched.stderr
    assert "step 20/20" in watched.stdout and "finished" in watched.stdout
    assert server_cli(server, "cancel", run["id"]).returncode == 2, "cancelling a finished run is refused"
    bad = server_cli(server, "submit", "--preset", "smoke", "--set", "ppo.batch_size=0")
    assert bad.returncode == 2 and "ppo.batch_size" in bad.stderr


def test_watch_shows_a_diverged_run_whose_metrics_are_nan(server: str) -> None:
    """NaN is stored and served as null (JSON has no NaN): `watch` prints nan instead of crashing."""
    import httpx

    with Client(server) as c:
        run = c.create_external_run("diverged", source="external")
        body = ('{"events": [{"type": "run_started", "seq": 0, "total_steps": 2},'
                ' {"type": "metrics", "seq": 1, "step": 0, "values": {"reward/mean": 0.5, "kl/k1": 0.1}},'
                ' {"type": "metrics", "seq": 2, "step": 1, "values": {"reward/mean": NaN, "kl/k1": Infinity}},'
                ' {"type": "eval", "seq": 3, "step": 1, "reward_mean": NaN},'
                ' {"type": "run_finished", "seq": 4}]}')  # Python's json (and so FastAPI) reads NaN tokens
        r = httpx.post(f"{server}/api/runs/{run['id']}/events", content=body,
                       headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text
        stored = c.get_events(run["id"])["events"]
        assert stored[2]["values"]["reward/mean"] is None and stored[3]["reward_mean"] is None, "stored as null"
        # the client sends NaN as null too (a diverged run's metrics upload instead of crashing the sink)
        assert c.post_events(run["id"], [MetricsEvent(seq=5, step=1, values={"reward/mean": float("nan")})])[
            "accepted"] == 1
    watched = server_cli(server, "watch", run["id"])
    assert watched.returncode == 0, watched.stderr
    assert "step 2/2  reward=nan  kl=nan" in watched.stdout, watched.stdout
    assert "eval @ step 1: reward nan" in watched.stdout and "finished" in watched.stdout


def test_serve_refuses_a_public_address_without_tokens() -> None:
    out = subprocess.run([sys.executable, "-m", "rlhfkit.cli", "serve", "--host", "0.0.0.0", "--port", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert out.returncode == 2 and "RLHFKIT_API_TOKENS" in out.stderr
