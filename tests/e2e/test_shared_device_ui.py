"""Two runs at once in embedded mode (``rlhfkit serve --embedded-workers 2``), in the web UI: the runs
list never calls a run that has reported steps "queued", and afterwards each run page says that the
other run shared its CPU, names it, and says over which steps."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Api, run_server

pytestmark = pytest.mark.e2e

# 4 PPO steps of 4 prompts, one thread each: two of them side by side on a busy 2-core box
TINY = {
    "model.warm_start": False,
    "model.max_length": 40,
    "generation.max_new_tokens": 8,
    "ppo.batch_size": 4,
    "ppo.mini_batch_size": 4,
    "ppo.ppo_epochs": 1,
    "train.steps_per_epoch": 4,
    "train.eval_every": 0,
    "train.eval_prompts": 4,
    "train.threads": 1,
    "train.device": "cpu",
}
TERMINAL = {"succeeded", "failed", "cancelled"}


@pytest.fixture(scope="module")
def pair_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Its own server (and SQLite database) running two runs at once, as ``--embedded-workers 2`` does."""
    tmp: Path = tmp_path_factory.mktemp("e2e-shared-device")
    with run_server(tmp, RLHFKIT_EMBEDDED_WORKERS="2") as base:
        yield base


def list_rows(page: Any, ids: list[str]) -> dict[str, tuple[str, int]]:
    """The runs list's rows for ``ids``: status badge and completed steps, as the user sees them."""
    rows = page.locator("tr[data-run-id]").evaluate_all(
        "rs => rs.map(r => [r.dataset.runId, r.dataset.status,"
        " r.querySelector(\"[data-testid='runs-step']\").textContent])")
    return {rid: (status, int(step.split("/")[0])) for rid, status, step in rows if rid in ids}


def test_two_runs_side_by_side_show_running_and_each_page_names_the_other(
        open_page: Any, pair_server: str, shoot: Any) -> None:
    api = Api(pair_server)
    page = open_page(pair_server)
    page.goto("/")
    ids = [api.call("POST", "/api/runs", {"preset": "smoke", "name": f"e2e-shared-{i}", "overrides": TINY})["id"]
           for i in range(2)]

    seen: list[dict[str, tuple[str, int]]] = []
    deadline = time.monotonic() + 300
    while True:
        rows = list_rows(page, ids)
        for rid, (status, steps) in rows.items():  # a run with steps behind it executes: never "queued"
            assert not (steps > 0 and status == "queued"), (rid, rows)
        seen.append(rows)
        if len(rows) == 2 and all(s in TERMINAL for s, _ in rows.values()):
            break
        assert time.monotonic() < deadline, f"runs not finished in the list after 300 s: {rows}"
        page.wait_for_timeout(300)
    assert any(len(r) == 2 and all(s == "running" for s, _ in r.values()) for r in seen), seen  # both at once
    assert all(s == "succeeded" for s, _ in seen[-1].values()), seen[-1]

    # the record closes once each process has exited and its last events are in
    deadline = time.monotonic() + 60
    while not all((api.call("GET", f"/api/runs/{i}")["shared_device"] or {}).get("to_step") is not None for i in ids):
        assert time.monotonic() < deadline, "the shared-device records did not close"
        time.sleep(0.3)
    shared = api.call("GET", f"/api/runs/{ids[0]}")["shared_device"]
    assert shared["run_ids"] == [ids[1]]

    page.goto(f"/runs/{ids[0]}")
    note = page.get_by_test_id("shared-device")
    note.get_by_role("link", name="e2e-shared-1").wait_for()  # names the other run, and links to it
    steps = (f"step {shared['from_step']}" if shared["to_step"] <= shared["from_step"]
             else f"steps {shared['from_step']}–{shared['to_step']}")
    assert re.search(rf"1 other run shared this CPU during {steps};", note.inner_text()), note.inner_text()
    assert note.get_by_role("link", name="e2e-shared-1").get_attribute("href") == f"/runs/{ids[1]}"
    shoot(page, "30-shared-device-note")
