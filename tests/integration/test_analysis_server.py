"""`rlhfkit analyze` and `rlhfkit report` given a run id on a real backend process: the run is read
through rlhfkit.client and analysed exactly as its own run folder is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhfkit.client import Client
from tests.integration.conftest import cli
from tests.smoke_runs import profiled_smoke_run

pytestmark = pytest.mark.integration


def test_a_run_on_the_server_reads_like_its_folder(server: str, tmp_path_factory: pytest.TempPathFactory,
                                                   tmp_path: Path) -> None:
    run_dir = profiled_smoke_run(tmp_path_factory)
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]
    with Client(server) as c:
        run = c.create_external_run("uploaded", config=events[0]["config"])
        for e in events:
            e["run_id"] = run["id"]
        c.post_events(run["id"], events)

    local = cli("analyze", str(run_dir), "--json")
    remote = cli("analyze", run["id"], "--server", server, "--json")
    assert local.returncode == 0 and remote.returncode == 0, local.stderr + remote.stderr
    a, b = json.loads(local.stdout), json.loads(remote.stdout)
    for key in ("kl", "kl_band_exits", "alerts", "steps"):
        assert a[key] == b[key], key
    assert b["run_id"] == run["id"] and b["alerts"]["total"] >= 2

    out = tmp_path / "remote.html"
    rep = cli("report", run["id"], "--server", server, "--out", str(out))
    assert rep.returncode == 0, rep.stderr
    html = out.read_text()
    assert 'data-metric="kl/k1"' in html and "alert-mark" in html and "entropy_collapse" in html

    missing = cli("analyze", "no-such-run", "--server", server)
    assert missing.returncode == 2 and "RUN" in missing.stderr
