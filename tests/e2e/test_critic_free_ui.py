"""A GRPO run in the web UI, against the real backend in headless Chromium: the header names the
algorithm, the Stability tab draws the run's own charts (group signal, clip low/high, length cap)
and no empty PPO-only charts (value loss, explained variance), and the compare page overlays it
with a PPO run of the same preset."""

from __future__ import annotations

import re
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

SHORT = {
    "model.warm_start": False,
    "model.max_length": 40,
    "generation.max_new_tokens": 8,
    "ppo.batch_size": 4,
    "ppo.mini_batch_size": 2,
    "ppo.ppo_epochs": 1,
    "train.steps_per_epoch": 3,
    "train.eval_every": 0,
    "train.eval_prompts": 4,
    "train.device": "cpu",
}


def chart_titles(page: Any) -> list[str]:
    return [t.strip() for t in page.locator("figure.chart figcaption").all_inner_texts()]


def test_grpo_run_shows_its_own_charts_and_overlays_a_ppo_run(page: Any, api: Any, shoot: Any) -> None:
    grpo = api.call("POST", "/api/runs", {"preset": "smoke", "name": "e2e-grpo", "overrides": {
        **SHORT, "algorithm": "grpo", "generation.samples_per_prompt": 2, "ppo.cliprange_high": 0.28}})
    ppo = api.call("POST", "/api/runs", {"preset": "smoke", "name": "e2e-ppo-vs-grpo", "overrides": SHORT})
    for r in (grpo, ppo):
        done = api.wait_status(r["id"], {"succeeded", "failed", "cancelled"}, timeout=240)
        assert done["status"] == "succeeded", done["error"]

    page.goto(f"/runs/{grpo['id']}")
    assert page.get_by_test_id("run-algorithm").inner_text() == "GRPO (G = 2)"
    # every chart drawn from the 3 training steps; the held-out reward has the start and end evaluations
    page.wait_for_function("() => document.querySelectorAll('figure.chart').length > 0 && "
                           "[...document.querySelectorAll('figure.chart')].every(f => Number(f.dataset.points) >= "
                           "(f.getAttribute('aria-label').startsWith('Held-out') ? 2 : 3))")
    titles = chart_titles(page)
    assert not any(t.startswith(("Value loss", "Explained variance")) for t in titles), titles
    for own in ("Groups with no signal", "Reward spread within a prompt's group", "Responses cut at the length cap",
                "Clip fractions"):
        assert any(t.startswith(own) for t in titles), (own, titles)
    # no chart is empty, and the clip chart has its low/high lines but no value line
    points = [int(p or 0) for p in page.locator("figure.chart").evaluate_all("fs => fs.map(f => f.dataset.points)")]
    assert min(points) >= 2, dict(zip(titles, points, strict=True))
    clip = page.locator("figure.chart", has_text="Clip fractions")
    legend = clip.inner_text()
    assert "low" in legend and "high" in legend and "value" not in legend
    shoot(page, "20-grpo-stability")

    # the PPO run of the same preset keeps its value charts
    page.goto(f"/runs/{ppo['id']}")
    assert page.get_by_test_id("run-algorithm").inner_text() == "PPO"
    page.locator("figure.chart", has_text="Value loss").wait_for()
    assert not any(t.startswith("Groups with no signal") for t in chart_titles(page))

    page.goto(f"/compare?ids={ppo['id']},{grpo['id']}")
    page.locator("figure.chart").first.wait_for()
    assert page.locator("ul.legend li").count() == 2
    diff = page.locator("table.diff")
    for key in ("algorithm", "generation.samples_per_prompt"):
        assert diff.locator("tr.differs", has_text=key).count() >= 1
    page.wait_for_function("() => Number(document.querySelector(\"figure.chart[aria-label^='Reward']\")"
                           "?.dataset.points) >= 3")
    assert re.search(r"e2e-grpo", page.locator("ul.legend").inner_text())
    shoot(page, "21-compare-ppo-grpo")
