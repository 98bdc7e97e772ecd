"""The Python client, the HTTP sink and the service CLI commands against a real backend process."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from rlhfkit.client import ApiError, Client, HttpSink
from rlhfkit.events import EventEmitter, MetricsEvent, RunFinished, RunStarted
from tests.integration.conftest import ROOT, Proc, service_env

pytestmark = pytest.mark.integration


@pytest.fixture
def server(sqlite_url: str, tmp_path: Path, start_backend: Callable[..., Proc]) -> str:
    env = service_env(database_url=sqlite_url, redis_prefix="unused", queue="unused", artifacts=tmp_path / "a")
    env.pop("REDIS_URL")
    return str(start_backend(env).meta["url"])


def cli(server: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rlhfkit.cli", *args, "--server", server], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


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
        assert again == {"accepted": 0, "duplicates": 1, "last_seq": 21}
        assert [e["seq"] for e in c.follow(run["id"])] == list(range(22))
        with pytest.raises(ApiError) as err:
            c.get_run("missing")
        assert err.value.status_code == 404

    listed = cli(server, "runs", "--tag", "cli", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [r["id"] for r in json.loads(listed.stdout)["data"]] == [run["id"]]
    table = cli(server, "runs")
    assert run["id"] in table.stdout and "succeeded" in table.stdout
    watched = cli(server, "watch", run["id"])
    assert watched.returncode == 0, watched.stderr
    assert "step 20/20" in watched.stdout and "finished" in watched.stdout
    assert cli(server, "cancel", run["id"]).returncode == 2, "cancelling a finished run is refused"
    bad = cli(server, "submit", "--preset", "smoke", "--set", "ppo.batch_size=0")
    assert bad.returncode == 2 and "ppo.batch_size" in bad.stderr


def test_serve_refuses_a_public_address_without_tokens() -> None:
    out = subprocess.run([sys.executable, "-m", "rlhfkit.cli", "serve", "--host", "0.0.0.0", "--port", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert out.returncode == 2 and "RLHFKIT_API_TOKENS" in out.stderr
