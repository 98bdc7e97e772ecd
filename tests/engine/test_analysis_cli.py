"""`rlhfkit analyze` and `rlhfkit analyze-trace` on a profiled smoke run: their findings are the run's own
alerts (alerts.csv, written by the monitor during training) and the profiler's own summary."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from rlhfkit.cli import main
from tests.smoke_runs import profiled_smoke_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return profiled_smoke_run(tmp_path_factory)


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_analyze_reports_the_alerts_the_run_fired_with_their_advice(run_dir: Path, capsys) -> None:
    assert main(["analyze", str(run_dir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    fired = _csv_rows(run_dir / "alerts.csv")
    assert {"kl_high", "entropy_collapse"} <= {r["rule"] for r in fired}
    assert result["alerts"]["total"] == len(fired)
    by_rule = {r["rule"]: r for r in result["alerts"]["rules"]}
    assert set(by_rule) == {r["rule"] for r in fired}
    for row in fired:
        assert by_rule[row["rule"]]["try"] == row["suggestion"]
        assert by_rule[row["rule"]]["first_step"] <= int(row["step"]) <= by_rule[row["rule"]]["last_step"]


def test_analyze_kl_band_and_slope_follow_the_metrics_file(run_dir: Path, capsys) -> None:
    assert main(["analyze", str(run_dir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    rows = [r for r in _csv_rows(run_dir / "metrics.csv") if r.get("kl/k1")]
    steps = np.array([int(r["step"]) for r in rows], dtype=float)
    kl = np.array([float(r["kl/k1"]) for r in rows])
    # the smoke preset's fixed controller: the band is kl_max, set to 1e-6 for this run
    outside = [int(s) for s, v in zip(steps, kl, strict=True) if v > 1e-6]
    exited = [s for e in result["kl_band_exits"] for s in range(e["start"], e["end"] + 1)]
    assert exited == outside and outside
    assert result["kl"]["band_upper"] == pytest.approx(1e-6)
    assert result["kl"]["slope_per_step"] == pytest.approx(np.polyfit(steps, kl, 1)[0], rel=1e-6)
    assert result["kl"]["max"] == pytest.approx(kl.max())


def test_analyze_prints_findings_in_words(run_dir: Path, capsys) -> None:
    assert main(["analyze", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "KL left its band" in out and "nats/step" in out
    assert "kl_high" in out and "entropy_collapse" in out and "try:" in out


def test_analyze_trace_matches_the_profiler_summary(run_dir: Path, capsys) -> None:
    summary = json.loads((run_dir / "profile_summary.json").read_text())
    assert main(["analyze-trace", str(run_dir), "--json", "--top", "5"]) == 0
    result = json.loads(capsys.readouterr().out)
    top_level = {k: v for k, v in summary["stages"].items() if "/" not in k}
    assert [s["stage"] for s in result["top_stages"]] == sorted(top_level, key=lambda k: -top_level[k]["mean"])
    assert result["bottlenecks"] == summary["bottlenecks"] and result["bottlenecks"]
    assert len(result["top_ops"]) == 5
    stored = {(st, o["op"]): o["self_us"] for st, ops in summary["top_ops"].items() for o in ops}
    for op in result["top_ops"]:  # recomputed from the trace file by the profiler's own code
        if (op["stage"], op["op"]) in stored:
            assert op["self_us"] == pytest.approx(stored[(op["stage"], op["op"])])
    assert result["top_ops"][0]["self_us"] == max(o["self_us"] for ops in summary["top_ops"].values() for o in ops)


def test_analyze_trace_finds_the_newest_profile_one_level_down(run_dir: Path, capsys) -> None:
    assert main(["analyze-trace", str(run_dir.parent)]) == 0
    out = capsys.readouterr().out
    assert str(run_dir) in out and "Top stages" in out and "Bottlenecks" in out
    assert summary_finding(run_dir) in out


def summary_finding(run_dir: Path) -> str:
    return str(json.loads((run_dir / "profile_summary.json").read_text())["bottlenecks"][0]["finding"])


def test_bad_paths_exit_2_naming_the_argument(tmp_path: Path, capsys) -> None:
    assert main(["analyze", str(tmp_path / "missing" / "run")]) == 2
    assert "RUN" in capsys.readouterr().err
    assert main(["analyze-trace", str(tmp_path)]) == 2
    assert "DIR" in capsys.readouterr().err
