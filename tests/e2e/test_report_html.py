"""`rlhfkit report` on the profiled smoke run, opened from disk in headless Chromium with the network
cut off: every section is there, the charts are drawn, and the file asked for nothing outside itself."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import pytest

from rlhfkit.cli import main
from tests.smoke_runs import profiled_smoke_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return profiled_smoke_run(tmp_path_factory)


@pytest.fixture(scope="module")
def report(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "smoke.html"
    assert main(["report", str(run_dir), "--out", str(out)]) == 0
    return out


def test_report_is_one_file_without_external_urls(report: Path) -> None:
    text = report.read_text()
    assert not re.search(r"https?://|src=|<link|@import|url\(", text)
    for section in ("Summary", "Stability", "Alerts", "Stage timings", "Memory: predicted vs measured",
                    "Samples", "Profiler findings", "Config"):
        assert section in text


def test_report_charts_render_offline_in_chromium(report: Path, run_dir: Path, browser: Any, shoot: Any) -> None:
    ctx = browser.new_context(viewport={"width": 1200, "height": 900}, offline=True)
    requests: list[str] = []
    pg = ctx.new_page()
    pg.on("request", lambda r: requests.append(r.url))
    pg.goto(report.as_uri())
    charts = pg.eval_on_selector_all("svg.chart", """els => els.map(svg => {
        const marks = [...svg.querySelectorAll('polyline.series, circle.series, rect.bar')];
        const boxes = marks.map(m => m.getBBox());
        return {metric: svg.dataset.metric, marks: marks.length,
                drawn: boxes.some(b => b.width > 0 && b.height >= 0) && svg.getBoundingClientRect().width > 0,
                alerts: svg.querySelectorAll('line.alert-mark').length};
    })""")
    shoot(pg, "report-smoke")
    ctx.close()
    assert requests == [report.as_uri()]  # nothing but the file itself
    by_metric = {c["metric"]: c for c in charts}
    for metric in ("reward/mean", "kl/k1", "policy/entropy", "policy/clipfrac"):
        assert by_metric[metric]["drawn"], by_metric[metric]
    assert by_metric["seconds per step by stage"]["marks"] >= 4
    assert by_metric["MiB per stage, predicted and measured"]["drawn"]
    # the alerts the monitor raised are marked on their metric's chart
    with (run_dir / "alerts.csv").open() as fh:
        fired = {row["metric"] for row in csv.DictReader(fh)}
    for metric in fired & set(by_metric):
        assert by_metric[metric]["alerts"] >= 1, metric

