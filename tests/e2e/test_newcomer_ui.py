"""What a newcomer reads in the browser (issue #19): one step count on the runs list and the run
page, the held-out reward charted first, the run's files offered for download, and the API docs
rendering with no network beyond the server itself."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

# a few seconds per run on a busy 2-core box; evaluations after step 2 and after the last step
TINY = {
    "model.warm_start": False, "model.max_length": 40, "generation.max_new_tokens": 8, "ppo.batch_size": 4,
    "ppo.mini_batch_size": 4, "ppo.ppo_epochs": 1, "train.steps_per_epoch": 4, "train.eval_every": 2,
    "train.eval_prompts": 4, "train.eval_samples_logged": 2, "train.threads": 1, "train.device": "cpu",
}
TERMINAL = {"succeeded", "failed", "cancelled"}


@pytest.fixture(scope="module")
def finished(api: Any) -> dict[str, Any]:
    run = api.call("POST", "/api/runs", {"preset": "smoke", "overrides": TINY, "name": "newcomer-finished"})
    done = api.wait_status(run["id"], TERMINAL, timeout=180)
    assert done["status"] == "succeeded", done["error"]
    return done  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def cancelled(api: Any) -> dict[str, Any]:
    run = api.call("POST", "/api/runs", {"preset": "smoke", "overrides": {**TINY, "train.steps_per_epoch": 40},
                                         "name": "newcomer-cancelled"})
    import time

    deadline = time.monotonic() + 120
    while api.call("GET", f"/api/runs/{run['id']}")["steps_done"] < 2:
        assert time.monotonic() < deadline, "two steps never finished"
        time.sleep(0.3)
    api.call("POST", f"/api/runs/{run['id']}/cancel")
    done = api.wait_status(run["id"], TERMINAL, timeout=120)
    assert done["status"] == "cancelled"
    return done  # type: ignore[no-any-return]


def shown_steps(page: Any, run_id: str) -> tuple[str, str]:
    """(runs list cell, run page header) for one run."""
    page.goto("/")
    cell = page.locator(f"tr[data-run-id='{run_id}'] [data-testid='runs-step']")
    cell.wait_for()
    listed = cell.inner_text()
    page.goto(f"/runs/{run_id}")
    header = page.get_by_test_id("run-step")
    header.wait_for()
    return listed, header.inner_text()


def test_finished_and_cancelled_runs_read_the_same_steps_on_the_list_and_the_page(
        page: Any, api: Any, finished: dict[str, Any], cancelled: dict[str, Any], shoot: Any) -> None:
    assert finished["steps_done"] == 4
    assert shown_steps(page, finished["id"]) == ("4 / 4", "4 / 4")
    n = cancelled["steps_done"]
    timings = api.call("GET", f"/api/runs/{cancelled['id']}/timings")
    assert [t["step"] for t in timings] == list(range(n)), "steps_done counts the steps that ran"
    assert shown_steps(page, cancelled["id"]) == (f"{n} / 40", f"{n} / 40")
    shoot(page, "20-cancelled-run-steps")


def test_api_docs_render_with_no_network_beyond_the_server(open_page: Any, server: str, shoot: Any) -> None:
    page = open_page(server)
    outside: list[str] = []

    def only_local(route: Any) -> None:
        url = route.request.url
        if re.match(r"^(https?|wss?)://127\.0\.0\.1(:\d+)?/", url) or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    page.route("**/*", only_local)
    page.goto("/docs")
    page.locator(".swagger-ui .info .title").wait_for()
    page.locator(".opblock-tag", has_text="runs").first.wait_for()
    shoot(page, "21-docs-offline")
    page.goto("/redoc")
    page.locator("[data-role='redoc-summary'], .menu-content").first.wait_for()
    page.get_by_text("RLHF Systems Kit").first.wait_for()
    assert not outside, f"the docs asked for {outside}"


def test_the_held_out_reward_is_the_first_chart_on_stability_and_compare(
        page: Any, api: Any, finished: dict[str, Any], cancelled: dict[str, Any], shoot: Any) -> None:
    evals = api.call("GET", f"/api/runs/{finished['id']}/metrics?keys=eval/reward_mean")["series"]["eval/reward_mean"]
    assert evals["steps"] == [0, 2, 4], "evaluated before training, after step 2 and after the last step"
    page.goto(f"/runs/{finished['id']}")
    first = page.locator("figure.chart").first
    first.wait_for()
    page.wait_for_function("() => Number(document.querySelector('figure.chart').dataset.points) === 3")
    assert first.get_attribute("aria-label").startswith("Held-out reward"), first.get_attribute("aria-label")
    shoot(page, "22-stability-eval-reward")

    page.goto(f"/compare?ids={finished['id']},{cancelled['id']}")
    first = page.locator("figure.chart").first
    first.wait_for()
    assert first.locator("figcaption").inner_text().startswith("Held-out reward")  # Compare titles charts as the run page does
    page.wait_for_function("() => Number(document.querySelector('figure.chart').dataset.points) >= 3")
    shoot(page, "23-compare-eval-reward")


def test_the_run_page_lists_every_file_of_the_run_for_download(
        page: Any, api: Any, finished: dict[str, Any], shoot: Any) -> None:
    listed = api.call("GET", f"/api/runs/{finished['id']}/artifacts")
    names = {a["name"] for a in listed}
    assert {"config.yaml", "events.jsonl", "metrics.csv", "alerts.csv"} <= names
    page.goto(f"/runs/{finished['id']}")
    files = page.locator("details.run-files")
    files.locator("summary").click()
    files.get_by_role("link", name="metrics.csv").wait_for()
    assert set(files.get_by_role("link").all_inner_texts()) == names
    shoot(page, "24-run-files")
    with page.expect_download() as dl:
        files.get_by_role("link", name="events.jsonl").click()
    path = dl.value.path()
    assert dl.value.suggested_filename == "events.jsonl"
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    assert '"run_finished"' in lines[-1]


def test_a_missing_run_says_so_instead_of_blaming_the_server(page: Any, shoot: Any) -> None:
    page.goto("/runs/0000000000000000")
    alert = page.get_by_role("alert")
    alert.wait_for()
    text = alert.inner_text()
    assert "No such run" in text and "not found" in text, text
    assert "server is running" not in text
    shoot(page, "25-run-not-found")
    alert.get_by_role("link", name="All runs").click()
    page.get_by_role("heading", name="Runs").wait_for()


def test_memory_tab_bars_differ_by_stage_and_the_prediction_shows_it_is_loading(
        page: Any, finished: dict[str, Any], shoot: Any) -> None:
    held: list[Any] = []
    released: list[bool] = []

    def hold(route: Any) -> None:  # keep the prediction's request waiting until the test lets it go
        if released:
            route.continue_()
        else:
            held.append(route)

    page.route(re.compile(r".*/memory/estimate.*"), hold)
    page.goto(f"/runs/{finished['id']}?tab=memory")
    page.get_by_role("heading", name="Peak per stage").wait_for()
    page.get_by_role("status").filter(has_text="memory model").wait_for()  # not a blank space meanwhile
    page.wait_for_function("() => document.querySelectorAll('table.memory-peaks .bar').length >= 3")
    widths = page.eval_on_selector_all("table.memory-peaks .bar", "els => els.map(e => e.style.width)")
    assert len(set(widths)) > 1 and "100%" in widths, widths
    assert min(float(w.rstrip("%")) for w in widths) < 50, f"bars of a shared process RSS: {widths}"
    assert held, "the prediction was requested"
    released.append(True)
    for r in held:
        r.continue_()
    # the estimate is computed on request: slow on a loaded 2-core box
    page.get_by_role("heading", name="Predicted by the memory model").wait_for(timeout=60_000)
    shoot(page, "26-memory-bars")



def test_chart_legends_on_stability_have_no_underlines(page: Any, finished: dict[str, Any], shoot: Any) -> None:
    """uPlot draws each legend as a <table class="u-legend">: the app's rules for its own data tables
    (a bottom border on every cell) drew a line under every legend item. Neither a text decoration
    nor a border may underline one."""
    page.goto(f"/runs/{finished['id']}")
    page.locator("figure.chart").first.wait_for()
    page.wait_for_function("() => Number(document.querySelector('figure.chart').dataset.points) === 3")
    lines = page.evaluate("""() => [...document.querySelectorAll('.stability figure.chart .u-legend .u-series')]
        .flatMap(item => [item, ...item.querySelectorAll('th, td, .u-label, .u-value')])
        .map(el => { const cs = getComputedStyle(el);
                     return [el.tagName + '.' + el.className, cs.textDecorationLine, cs.borderBottomStyle]; })""")
    assert len(lines) >= 3 * page.locator(".stability figure.chart").count(), lines  # the items were found
    assert {deco for _, deco, _ in lines} == {"none"}, lines
    assert {border for _, _, border in lines} == {"none"}, [ln for ln in lines if ln[2] != "none"]
    shoot(page, "24-stability-legends")
