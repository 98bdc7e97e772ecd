"""The web UI against the real backend in a real browser: submit from the generated form, watch the
run live, open every tab, compare runs, and see the server's validation error on the right field.
Screenshots of each page land in test-artifacts/screenshots/."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

# A run of a few seconds per step on a busy 2-core box: tiny model without warm-start, small batches.
SHORT = {
    "model.warm_start": False,
    "model.max_length": 40,
    "generation.max_new_tokens": 8,
    "ppo.batch_size": 8,
    "ppo.mini_batch_size": 4,
    "ppo.ppo_epochs": 1,
    "train.steps_per_epoch": 5,
    "monitor.system_interval_s": 1,
    "train.eval_every": 2,
    "train.eval_prompts": 8,
    "train.device": "cpu",
    # profile steps 0-1 with torch.profiler: the Profile tab then draws the run's own speedscope file
    "profile.enabled": True,
    "profile.skip_first": 0,
    "profile.wait": 0,
}


def fill(page: Any, key: str, value: object) -> None:
    field = page.locator(f"[data-field='{key}']")
    if not field.is_visible():  # the New run form keeps all but the common knobs under a closed "Advanced"
        page.locator("[data-testid='advanced'] > summary").click()
    if isinstance(value, bool):
        field.set_checked(value)
    elif field.evaluate("el => el.tagName") == "SELECT":
        field.select_option(str(value))
    else:
        field.fill(str(value))


REWARD_CHART = "figure.chart[aria-label^='Reward']"  # the per-step reward (the held-out reward comes first)


def reward_points(page: Any) -> int:
    return int(page.locator(REWARD_CHART).get_attribute("data-points") or 0)


def run_status(page: Any) -> str:
    return page.locator("#run-h .badge").get_attribute("data-status") or ""


def test_submit_smoke_from_form_watch_it_live_and_open_every_tab(page: Any, api: Any, shoot: Any) -> None:
    page.goto("/new")
    page.wait_for_selector("[data-field='ppo.batch_size']")
    assert page.locator("select").first.input_value() == "smoke"
    fill(page, "name", "e2e-live")
    for key, value in SHORT.items():
        fill(page, key, value)
    assert page.locator(".field.changed").count() >= 5  # fields edited away from the preset are marked
    shoot(page, "01-new-run-form")
    page.get_by_role("button", name="Start run").click()
    page.wait_for_url(re.compile(r"/runs/[^/?]+"))
    run_id = page.url.split("/runs/")[1].split("?")[0]

    # the reward chart gains points while the run is live (points arrive over the WebSocket)
    seen: list[tuple[str, int]] = []
    live_shot = False
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        status, pts = run_status(page), reward_points(page)
        if not seen or seen[-1] != (status, pts):
            seen.append((status, pts))
        if status in ("succeeded", "failed", "cancelled"):
            break
        if status == "running" and pts >= 2 and not live_shot:
            shoot(page, "02-run-live-stability")
            live_shot = True
        page.wait_for_timeout(250)
    live_counts = sorted({p for s, p in seen if s == "running" and p > 0})
    assert len(live_counts) >= 2, f"reward chart did not gain points while running: {seen}"
    page.locator("#run-h .badge[data-status='succeeded']").wait_for(timeout=30_000)
    assert api.call("GET", f"/api/runs/{run_id}")["status"] == "succeeded"
    page.wait_for_function(f"() => Number(document.querySelector(\"{REWARD_CHART}\").dataset.points) >= 5")
    shoot(page, "03-run-finished-stability")

    # drag across the reward chart: every chart zooms to those steps, refetched from the server
    over = page.locator(f"{REWARD_CHART} .u-over").bounding_box()
    with page.expect_request(re.compile(r"/metrics\?.*start=\d+.*end=\d+")):
        page.mouse.move(over["x"] + over["width"] * 0.2, over["y"] + 40)
        page.mouse.down()
        page.mouse.move(over["x"] + over["width"] * 0.8, over["y"] + 40, steps=4)
        page.mouse.up()
    page.get_by_role("button", name=re.compile(r"Reset zoom \(steps \d+–\d+\)")).click()

    page.get_by_role("tab", name="Timings").click()
    page.get_by_text("Slowest stage:").wait_for()
    assert page.locator("table.bars tbody tr").count() >= 4
    # MFU beside each stage's seconds, the most idle stage called out, the measured CPU peak named
    page.get_by_test_id("most-idle").wait_for()
    assert re.search(r"Most idle stage: (generation|scoring|advantages|update) — ",
                     page.get_by_test_id("most-idle").inner_text())
    for stage in ("generation", "scoring", "update"):
        assert re.fullmatch(r"[\d.]+(e-\d+)? %", page.get_by_test_id(f"mfu-{stage}").inner_text()), stage
    page.get_by_text(re.compile(r"Peak: CPU matmul probe .* GFLOP/s measured")).wait_for()
    shoot(page, "04-timings")

    page.get_by_role("tab", name="Memory").click()
    page.get_by_role("heading", name="Weights per model").wait_for()
    page.wait_for_selector("figure.chart[data-points='5']")
    # the memory model's prediction for this run's config, served by the API
    page.get_by_role("heading", name="Predicted by the memory model").wait_for()
    estimate = api.call("GET", f"/api/runs/{run_id}/memory/estimate")
    # policy, value, reference, reward, and on a CPU where decoding packs its weights, policy_packed
    names = [m["model"] for m in estimate["models"]]
    assert [n for n in names if n != "policy_packed"] == ["policy", "value", "reference", "reward"]
    assert page.locator("table.memory-models tbody tr").count() == len(names)
    assert page.locator("table.memory-models tbody th").all_inner_texts() == names
    assert page.locator("table.memory-stages tbody tr").count() == len(estimate["stages"])
    peak = f"{estimate['peak_mb']:.1f} MiB"
    assert peak in page.locator("#pred-h + .callout").inner_text()
    # measured beside predicted on one footing: the RSS high-water less the run's process baseline
    assert "growth above the process baseline" in page.locator("table.memory-stages caption").inner_text()
    assert page.locator("table.memory-stages thead th").filter(has_text="Measured").count() == 1
    # the System panel: the sampler thread's series, GPU charts absent on this GPU-less machine
    cpu = api.call("GET", f"/api/runs/{run_id}/metrics?keys=system/cpu_percent")["series"]["system/cpu_percent"]
    assert len(cpu["steps"]) >= 2
    system = page.locator("section.system")
    system.get_by_role("heading", name="System").wait_for()
    system.get_by_text("No GPU reported").wait_for()
    assert system.locator("figure.chart").count() == 2  # process CPU, memory; no GPU chart
    assert system.locator("figure.chart").first.get_attribute("data-points") == str(len(cpu["steps"]))
    shoot(page, "05-memory")

    page.get_by_role("tab", name="Profile").click()
    page.get_by_text(re.compile(r"Profile .*speedscope")).first.wait_for()  # the run's real profile, not a stand-in
    # the profiler's report: bottlenecks in words with their evidence, and the per-stage table
    page.get_by_role("heading", name="Bottlenecks").wait_for()
    report = api.call("GET", f"/api/runs/{run_id}/profile")
    findings = page.locator("ol.findings > li")
    assert findings.count() == len(report["bottlenecks"]) >= 1
    first = findings.first.inner_text()
    assert report["bottlenecks"][0]["finding"] in first and "Measured:" in first and "Try:" in first
    stage_rows = page.locator("table.profile-stages tbody th").all_inner_texts()
    assert stage_rows[0] == "generation" and "update" in stage_rows and stage_rows[-1] == "step"
    page.get_by_text("Top operators per stage").click()
    assert page.locator("details.top-ops tbody tr").count() >= 3
    assert page.get_by_role("link", name=re.compile(r"trace", re.I)).count() >= 1  # trace download offered
    canvas = page.locator(".flame canvas")
    canvas.wait_for()
    assert int(canvas.get_attribute("data-frames") or 0) >= 5
    # the canvas really has pixels drawn on it
    assert canvas.evaluate(
        "c => { const d = c.getContext('2d').getImageData(0, 0, c.width, 20).data;"
        " for (let i = 3; i < d.length; i += 4) if (d[i]) return true; return false; }"
    )
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.8, box["y"] + 27)  # hover the second row: tooltip
    page.get_by_role("tooltip").wait_for()
    shoot(page, "06-profile-flamegraph")
    page.mouse.click(box["x"] + box["width"] * 0.8, box["y"] + 27)  # zoom into that stage
    assert page.get_by_role("button", name="Reset zoom").is_enabled()

    page.get_by_role("tab", name="Samples").click()
    page.locator(".samples-table tbody tr").first.wait_for()
    assert page.locator(".samples-table tbody tr").count() == 8
    shoot(page, "08-samples")

    # suggestions computed by the server for this run's config: real rows with predicted MiB
    page.get_by_role("tab", name="Suggestions").click()
    page.get_by_role("heading", name="Config suggestions").wait_for()
    rows = page.locator(".suggestions-table tbody tr")
    rows.first.wait_for(timeout=30_000)
    assert rows.count() >= 1
    assert re.search(r"\d[\d,.]* MiB", rows.first.inner_text()), rows.first.inner_text()
    # row 0 is this finished run: predicted and measured, the measured peak as growth above its baseline
    current = api.call("GET", f"/api/runs/{run_id}/suggestions")["current"]
    assert current["measured_peak_mb"] is not None and current["measured_tokens_per_sec"] is not None, current
    assert re.search(r"measured [\d,.]+ MiB", rows.first.inner_text()), rows.first.inner_text()
    assert page.get_by_label("Memory budget (GiB)").input_value() == "4"  # CPU runs default to 4 GiB
    with page.expect_response(re.compile(r"/suggestions\?.*budget_gb=1")):
        page.get_by_label("Memory budget (GiB)").fill("1")
        page.get_by_role("button", name="Update").click()
    shoot(page, "07-suggestions")
    expected = api.call("GET", f"/api/runs/{run_id}/suggestions?budget_gb=1")["candidates"][0]
    page.get_by_role("button", name="Launch with this config").first.click()  # row 0 is the run itself
    page.wait_for_url(re.compile(r"/new$"))
    page.wait_for_selector("[data-field='ppo.batch_size']")
    for key, value in {"name": expected["config"]["name"], **expected["overrides"]}.items():
        field = page.locator(f"[data-field='{key}']")
        got = field.is_checked() if isinstance(value, bool) else field.input_value()
        assert got == (value if isinstance(value, bool) else str(value)), (key, got, value)


def test_compare_two_runs_from_the_runs_table(page: Any, api: Any, shoot: Any) -> None:
    overrides = {**SHORT, "train.steps_per_epoch": 3, "train.eval_prompts": 4}
    # names of their own: other modules' runs share this session's server
    a = api.call("POST", "/api/runs", {"preset": "smoke", "overrides": overrides, "name": "e2e-cmp-a"})
    b = api.call(
        "POST",
        "/api/runs",
        {"preset": "smoke", "overrides": {**overrides, "seed": 7, "ppo.kl_coef": 0.1}, "name": "e2e-cmp-b"},
    )
    for r in (a, b):
        done_run = api.wait_status(r["id"], {"succeeded", "failed", "cancelled"}, timeout=120)
        assert done_run["status"] == "succeeded", done_run["error"]

    page.goto("/")
    page.locator(f"tr[data-run-id='{b['id']}'][data-status='succeeded']").wait_for()
    shoot(page, "09-runs-list")
    page.get_by_label("Search").fill("e2e-cmp-")
    page.wait_for_function("() => document.querySelectorAll('table.runs tbody tr').length === 2")
    for r in (a, b):
        page.get_by_label(f"Select {r['name']} ({r['id']}) for compare").check()
    page.get_by_role("button", name="Compare selected (2)").click()
    page.wait_for_url(re.compile(r"/compare\?ids="))
    page.locator("figure.chart").first.wait_for()
    assert page.locator("ul.legend li").count() == 2
    diff = page.locator("table.diff")
    for key in ("seed", "ppo.kl_coef", "name"):
        assert diff.locator("tr.differs", has_text=key).count() >= 1
    page.wait_for_function("() => Number(document.querySelector('figure.chart').dataset.points) >= 3")
    # titled and labelled as on the run page: contract units, readable titles, not raw metric keys
    contract = api.call("GET", "/api/metrics/contract")["metrics"]
    titles = [t.strip() for t in page.locator("figure.chart .chart-title").all_inner_texts()]
    assert "KL to reference (k1)" in titles and "Throughput" in titles, titles
    assert not {"kl/k1", "perf/tokens_per_sec", "reward/mean"} & set(titles), titles
    tps = page.locator("figure.chart", has=page.locator(".chart-title", has_text=re.compile("^Throughput$")))
    assert tps.locator(".unit").inner_text() == f"[{contract['perf/tokens_per_sec']['unit']}]"
    captions = page.locator("figure.chart figcaption").all_inner_texts()
    assert not any("[1]" in c for c in captions), captions  # unitless metrics show no unit
    assert page.locator("figure.chart .info svg").count() == len(titles)  # the help mark is drawn, not a glyph
    assert page.get_by_text("Drag on a chart to zoom into steps; double-click to reset.").is_visible()
    page.get_by_label("Log scale (y)").check()
    page.wait_for_function("() => Number(document.querySelector('figure.chart').dataset.points) >= 3")
    shoot(page, "10-compare")


def test_invalid_value_shows_its_error_on_that_field(page: Any, shoot: Any) -> None:
    page.goto("/new")
    page.wait_for_selector("[data-field='ppo.batch_size']")
    fill(page, "ppo.batch_size", 0)
    page.get_by_role("button", name="Start run").click()
    field = page.locator("[data-field='ppo.batch_size']")
    page.wait_for_selector("[data-field='ppo.batch_size'][aria-invalid='true']")
    error_id = field.get_attribute("aria-describedby").split()[-1]
    assert "greater than or equal to 1" in page.locator(f"[id='{error_id}']").inner_text()
    assert "/new" in page.url  # no run was created
    shoot(page, "11-new-run-invalid")


def test_light_theme_and_keyboard_tabs(page: Any, api: Any, shoot: Any) -> None:
    page.goto("/")
    page.get_by_role("button", name="Switch to light theme").click()
    assert page.evaluate("document.documentElement.dataset.theme") == "light"
    runs = api.call("GET", "/api/runs?status=succeeded&limit=1")["data"]
    if runs:
        page.goto(f"/runs/{runs[0]['id']}")
        page.get_by_role("tab", name="Stability").focus()
        page.keyboard.press("ArrowRight")
        page.locator("[role=tab][aria-selected=true]", has_text="Timings").wait_for()
        # focus moved with the selection
        assert page.evaluate("document.activeElement.textContent") == "Timings"
        page.get_by_text("Slowest stage:").wait_for()
        shoot(page, "12-light-theme-timings")
    else:
        shoot(page, "12-light-theme-runs")


def test_reconnecting_banner_while_the_live_socket_is_down(page: Any, shoot: Any) -> None:
    state: dict[str, Any] = {"down": False, "routes": []}

    def route(ws: Any) -> None:
        if state["down"]:  # the "server" refuses: the page sees the socket close at once
            ws.close(code=4001, reason="test: server unreachable")
            return
        ws.connect_to_server()
        state["routes"].append(ws)

    page.route_web_socket(re.compile(r".*/api/live$"), route)
    page.goto("/")
    page.get_by_role("heading", name="Runs").wait_for()
    page.wait_for_timeout(1000)  # let the socket open
    assert state["routes"], "the runs page did not open WS /api/live"
    state["down"] = True
    for ws in state["routes"]:
        ws.close(code=4001, reason="test: connection dropped")
    banner = page.get_by_role("alert").filter(has_text="reconnecting")
    banner.wait_for()
    shoot(page, "13-reconnecting-banner")
    state["down"] = False
    banner.wait_for(state="detached", timeout=20_000)  # back-off retry reaches the server again


def _speedscope() -> dict[str, Any]:
    """A small evented profile of one PPO step (milliseconds)."""
    frames = ["ppo_step", "generation", "sample_tokens", "scoring", "update", "backward", "optimizer_step"]
    opens = [
        (0, 0),
        (1, 0),
        (2, 5),
        (2, 120),
        (1, 130),
        (3, 130),
        (3, 190),
        (4, 190),
        (5, 200),
        (5, 420),
        (6, 420),
        (6, 470),
        (4, 480),
        (0, 480),
    ]
    seen: set[int] = set()
    events = []
    for frame, at in opens:
        events.append({"type": "C" if frame in seen else "O", "frame": frame, "at": at})
        seen.symmetric_difference_update({frame})
    return {
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "shared": {"frames": [{"name": f} for f in frames]},
        "profiles": [
            {
                "type": "evented",
                "name": "step 0",
                "unit": "milliseconds",
                "startValue": 0,
                "endValue": 480,
                "events": events,
            }
        ],
    }


def test_profile_tab_draws_an_attached_speedscope_file_and_suggestions_explain_external_runs(
    page: Any, api: Any, shoot: Any, server_dir: Any
) -> None:
    run = api.call(
        "POST",
        "/api/runs/external",
        {
            "name": "e2e-profiled",
            "source": "external",
            "total_steps": 1,
            "config": {"ppo": {"batch_size": 32}},
        },
    )
    rid = run["id"]
    folder = server_dir / "artifacts" / rid
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "profile.speedscope.json").write_text(json.dumps(_speedscope()))
    (folder / "trace.json").write_text(json.dumps({"traceEvents": []}))
    events = [{"type": "run_started", "seq": 0, "ts": time.time(), "name": "e2e-profiled"}]
    for i, (name, kind) in enumerate(
        [
            ("profile.speedscope.json", "speedscope"),
            ("trace.json", "trace"),
        ]
    ):
        size = (folder / name).stat().st_size
        events.append(
            {
                "type": "artifact",
                "seq": i + 1,
                "ts": time.time(),
                "step": 0,
                "name": name,
                "kind": kind,
                "path": f"{rid}/{name}",
                "size_bytes": size,
            }
        )
    events.append({"type": "run_finished", "seq": 3, "ts": time.time(), "step": 0})
    api.call("POST", f"/api/runs/{rid}/events", {"events": events})

    page.goto(f"/runs/{rid}?tab=profile")
    page.get_by_text("Profile profile.speedscope.json").wait_for()
    canvas = page.locator(".flame canvas")
    assert int(canvas.get_attribute("data-frames") or 0) == 8  # root + 7 frames
    page.get_by_label("Search frames").fill("backward")
    page.get_by_role("status").filter(has_text="1 frame matches").wait_for()
    assert (
        page.get_by_role("link", name="trace.json").get_attribute("href")
        == f"/api/runs/{rid}/artifacts/trace.json"
    )
    shoot(page, "06b-profile-speedscope")

    # an external run's free-form config is not a RunConfig: the server says so (409), the tab shows it
    page.get_by_role("tab", name="Suggestions").click()
    page.get_by_text("No config suggestions for this run.").wait_for()
    page.get_by_text(re.compile(r"not an rlhfkit RunConfig")).wait_for()
    assert page.get_by_role("button", name="Launch with this config").count() == 0
    shoot(page, "07b-suggestions-external-run")


def test_launch_from_a_suggestion_names_its_source_and_marks_the_changed_fields(page: Any, api: Any, shoot: Any) -> None:
    from rlhfkit.config import load_config

    cfg = load_config("smoke").model_dump(mode="json")
    run = api.call("POST", "/api/runs/external", {"name": "e2e-sugg-src", "config": {**cfg, "name": "e2e-sugg-src"}})
    body = api.call("GET", f"/api/runs/{run['id']}/suggestions")
    page.goto(f"/runs/{run['id']}?tab=suggestions")
    current = page.locator(".suggestions-table tr.current-row")
    current.wait_for(timeout=30_000)
    text = current.inner_text()
    assert "Current config" in text and "predicted" in text and "measured" in text, text
    assert "Same math" in page.locator("tr.group-row[data-group='same_math']").inner_text()
    assert "Changes the algorithm" in page.locator("tr.group-row[data-group='changes_algorithm']").inner_text()
    notes = page.locator(".suggestion-notes").inner_text()
    assert "growth above the process baseline" in notes
    # response-length candidates sit in the algorithm group, each saying in words what it changes
    R0 = cfg["generation"]["max_new_tokens"]
    for R, words in ((R0 // 2, "responses may be cut shorter: the reward sees different text"),
                     (2 * R0, "responses may run longer: the reward sees different text")):
        capped = page.locator("tr[data-group='changes_algorithm']:not(.group-row)",
                              has_text=f"response cap {R} tokens")
        assert capped.count() == 1, R
        assert words in capped.inner_text(), capped.inner_text()
    for n in body["notes"][:1]:  # a shared note appears once, above the table, not in each row
        assert page.locator(".suggestions-table").get_by_text(n, exact=True).count() == 0
    shoot(page, "07c-suggestions-groups")

    # launch the first algorithm-changing candidate: its number in the table is its place in the response
    n = next(i for i, c in enumerate(body["candidates"], 1) if c["group"] == "changes_algorithm")
    chosen = body["candidates"][n - 1]
    row = page.locator("tr[data-group='changes_algorithm']:not(.group-row)").first
    assert row.locator("td").first.inner_text().strip() == str(n)
    assert re.search(r"×\d\.\d\d", row.inner_text()) and re.search(r"[+−±]\d+%", row.inner_text()), row.inner_text()
    row.get_by_role("button", name="Launch with this config").click()
    page.wait_for_url(re.compile(r"/new$"))
    page.get_by_test_id("launch-source").wait_for()
    assert page.get_by_test_id("launch-source").inner_text() == f"From suggestion {n} of run e2e-sugg-src"
    listed = page.locator(".changed-fields li[data-changed]")
    keys = [listed.nth(i).get_attribute("data-changed") for i in range(listed.count())]
    assert set(chosen["overrides"]) <= set(keys), (keys, chosen["overrides"])
    if set(chosen["overrides"]) - {"ppo.batch_size", "ppo.learning_rate", "ppo.kl_coef"}:
        # a changed field under "Advanced" opened it: no "(changed)" mark sits in a closed section
        assert page.get_by_test_id("advanced").get_attribute("open") is not None
    for key in chosen["overrides"]:
        assert "(changed)" in page.locator(f".changed-fields li[data-changed='{key}']").inner_text()
        assert page.locator(f"[data-field='{key}']").is_visible(), key
        field = page.locator(f".field:has([data-field='{key}'])")
        assert "(changed)" in field.locator("label").inner_text(), key
    # the list sits above the form's fields: no scrolling 1,500 px to find what changed
    top = page.locator(".changed-fields").bounding_box()["y"]
    assert top < page.locator("[data-field='ppo.batch_size']").bounding_box()["y"]
    # the Start button stays in view at the top of a long form (sticky at the viewport's bottom)
    start = page.get_by_role("button", name="Start run").bounding_box()
    assert start["y"] + start["height"] <= page.viewport_size["height"], start
    shoot(page, "12-new-run-from-suggestion")

    # started, the run records its origin and its page sets the prediction against the measurement
    page.get_by_role("button", name="Start run").click()
    page.wait_for_url(re.compile(r"/runs/[^/?]+$"))
    launched_id = page.url.rstrip("/").split("/")[-1]
    try:
        panel = page.get_by_test_id("origin-check")
        panel.wait_for(timeout=15_000)
        assert f"From suggestion {n} of run" in panel.inner_text()
        stored = api.call("GET", f"/api/runs/{launched_id}")["origin"]
        assert stored["run_id"] == run["id"] and stored["index"] == n
        assert stored["predicted_tokens_per_sec"] == chosen["predicted_tokens_per_sec"]
        peak_row = panel.locator("tr", has_text="Peak memory").inner_text()
        assert f"{round(chosen['predicted_peak_mb']):,} MiB" in peak_row, peak_row
        assert {"predicted", "measured", "error"} <= set(panel.locator("thead").inner_text().lower().split())
        shoot(page, "12b-run-from-suggestion")
    finally:  # the launched run is a full smoke run: do not let it load the other tests
        api.call("POST", f"/api/runs/{launched_id}/cancel", {})


def _field_error(page: Any, key: str) -> str:
    field = page.locator(f"[data-field='{key}']")
    assert field.get_attribute("aria-invalid") == "true", key
    error_id = field.get_attribute("aria-describedby").split()[-1]
    return page.locator(f"[id='{error_id}']").inner_text()


def test_invalid_batch_and_non_dividing_minibatch_show_on_their_fields_before_and_after_submit(
    page: Any, api: Any, shoot: Any
) -> None:
    runs_before = len(api.call("GET", "/api/runs?limit=200")["data"])
    page.goto("/new")
    page.wait_for_selector("[data-field='ppo.batch_size']")
    # before submit: the schema's bound, on the field, as it is typed
    fill(page, "ppo.batch_size", 0)
    page.wait_for_selector("[data-field='ppo.batch_size'][aria-invalid='true']")
    assert "greater than or equal to 1" in _field_error(page, "ppo.batch_size")
    # a valid batch with a minibatch that does not divide it: the cross-field rule, on the minibatch
    fill(page, "ppo.batch_size", 32)
    fill(page, "ppo.mini_batch_size", 5)
    page.wait_for_selector("[data-field='ppo.mini_batch_size'][aria-invalid='true']")
    assert page.locator("[data-field='ppo.batch_size']").get_attribute("aria-invalid") is None
    assert "ppo.mini_batch_size (5) must divide ppo.batch_size (32)" in _field_error(page, "ppo.mini_batch_size")
    fill(page, "ppo.batch_size", 0)
    # after submit: nothing is sent, both fields keep their errors and a summary names them
    page.get_by_role("button", name="Start run").click()
    summary = page.get_by_test_id("client-errors")
    summary.wait_for()
    assert "ppo.batch_size" in summary.inner_text()
    assert "greater than or equal to 1" in _field_error(page, "ppo.batch_size")
    fill(page, "ppo.batch_size", 32)
    page.get_by_role("button", name="Start run").click()
    assert "ppo.mini_batch_size" in summary.inner_text() and "ppo.batch_size:" not in summary.inner_text()
    assert "must divide ppo.batch_size (32)" in _field_error(page, "ppo.mini_batch_size")
    shoot(page, "11b-new-run-client-validation")
    assert "/new" in page.url
    assert len(api.call("GET", "/api/runs?limit=200")["data"]) == runs_before  # no run was created


COMMON_KNOBS = ["name", "model.size", "reward.kind", "ppo.batch_size", "ppo.learning_rate", "ppo.kl_coef",
                "train.steps_per_epoch"]


def test_common_knobs_come_first_and_an_error_inside_advanced_opens_it(page: Any, api: Any, shoot: Any) -> None:
    runs_before = len(api.call("GET", "/api/runs?limit=200")["data"])
    page.goto("/new")
    page.wait_for_selector("[data-field='ppo.batch_size']")
    advanced = page.get_by_test_id("advanced")
    assert advanced.get_attribute("open") is None, "a plain preset opens with Advanced closed"
    shown = page.get_by_test_id("common-fields").locator("[data-field]").evaluate_all(
        "els => els.map(e => e.dataset.field)")
    assert shown == COMMON_KNOBS
    for key in COMMON_KNOBS:
        assert page.locator(f"[data-field='{key}']").is_visible(), key
    for key in ("seed", "ppo.mini_batch_size", "generation.max_new_tokens"):
        assert not page.locator(f"[data-field='{key}']").is_visible(), key
    start = page.get_by_role("button", name="Start run").bounding_box()
    assert start["y"] + start["height"] <= page.viewport_size["height"], start
    shoot(page, "11c-new-run-common-knobs")

    # a batch the preset's minibatch (16) does not divide: the browser's error lands on the minibatch,
    # a field under Advanced, which opens to show it
    fill(page, "ppo.batch_size", 24)
    page.wait_for_selector("[data-field='ppo.mini_batch_size'][aria-invalid='true']")
    assert advanced.get_attribute("open") is not None
    assert page.locator("[data-field='ppo.mini_batch_size']").is_visible()
    assert "ppo.mini_batch_size (16) must divide ppo.batch_size (24)" in _field_error(page, "ppo.mini_batch_size")
    # closed by hand, a submit opens it again: the error it is refused for is never hidden
    page.locator("[data-testid='advanced'] > summary").click()
    assert not page.locator("[data-field='ppo.mini_batch_size']").is_visible()
    page.get_by_role("button", name="Start run").click()
    page.get_by_test_id("client-errors").wait_for()
    page.locator("[data-field='ppo.mini_batch_size']").wait_for(state="visible")
    shoot(page, "11d-new-run-advanced-error")

    # the server's cross-field error (generation.batch_size must divide ppo.batch_size: no browser rule)
    # also lands on its field under Advanced, shown open
    fill(page, "ppo.batch_size", 32)
    fill(page, "generation.batch_size", 5)
    page.locator("[data-testid='advanced'] > summary").click()
    page.get_by_role("button", name="Start run").click()
    page.wait_for_selector("[data-field='generation.batch_size'][aria-invalid='true']")
    assert page.locator("[data-field='generation.batch_size']").is_visible()
    assert "must divide ppo.batch_size (32)" in _field_error(page, "generation.batch_size")
    assert "/new" in page.url
    assert len(api.call("GET", "/api/runs?limit=200")["data"]) == runs_before  # no run was created
