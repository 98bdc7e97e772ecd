"""GET /api/runs/{id}/export?format=csv|parquet and /report on SQLite and PostgreSQL: a finished run's
events go in, and the table that comes out has the columns and values of the run folder's own
metrics.csv; the report is the offline HTML `rlhfkit report` writes."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.smoke_runs import profiled_smoke_run

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return profiled_smoke_run(tmp_path_factory)


@pytest.fixture(params=["sqlite", "postgresql"])
def client(request: pytest.FixtureRequest, make_client: Any) -> Any:
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    return make_client(url)


def _upload(client: Any, run_dir: Path) -> str:
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]
    started = events[0]
    run = client.post("/api/runs/external", json={"name": started["name"], "config": started["config"]}).json()
    for e in events:
        e["run_id"] = run["id"]
    res = client.post(f"/api/runs/{run['id']}/events", json={"events": events})
    assert res.status_code == 200, res.text
    return str(run["id"])


def _folder_table(run_dir: Path) -> tuple[list[str], list[list[str]]]:
    with (run_dir / "metrics.csv").open(newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def test_csv_and_parquet_have_the_columns_and_values_of_metrics_csv(client: Any, run_dir: Path) -> None:
    run_id = _upload(client, run_dir)
    header, rows = _folder_table(run_dir)

    res = client.get(f"/api/runs/{run_id}/export", params={"format": "csv"})
    assert res.status_code == 200, res.text
    assert res.headers["content-type"].startswith("text/csv")
    assert f'filename="{run_id}-metrics.csv"' in res.headers["content-disposition"]
    got = list(csv.reader(io.StringIO(res.text)))
    assert got[0] == header
    assert len(got) - 1 == len(rows)
    for mine, theirs in zip(got[1:], rows, strict=True):
        assert mine[0] == theirs[0]
        assert [float(v) if v else None for v in mine[1:]] == pytest.approx(
            [float(v) if v else None for v in theirs[1:]], rel=1e-12)

    res = client.get(f"/api/runs/{run_id}/export", params={"format": "parquet"})
    assert res.status_code == 200, res.text
    table = pq.read_table(io.BytesIO(res.content))
    assert table.column_names == header
    assert str(table.schema.field("step").type) == "int64"
    assert table.column("step").to_pylist() == [int(r[0]) for r in rows]
    for i, key in enumerate(header[1:], start=1):
        assert table.column(key).to_pylist() == pytest.approx([float(r[i]) if r[i] else None for r in rows])


def test_export_refuses_an_unknown_format_naming_the_field(client: Any, run_dir: Path) -> None:
    run_id = _upload(client, run_dir)
    res = client.get(f"/api/runs/{run_id}/export", params={"format": "xlsx"})
    assert res.status_code == 422
    assert res.json()["detail"][0]["loc"] == ["query", "format"]
    assert client.get("/api/runs/no-such-run/export").status_code == 404


def test_report_download_is_the_offline_html_report(client: Any, run_dir: Path) -> None:
    run_id = _upload(client, run_dir)
    res = client.get(f"/api/runs/{run_id}/report")
    assert res.status_code == 200, res.text
    assert res.headers["content-type"].startswith("text/html")
    assert f'filename="{run_id}-report.html"' in res.headers["content-disposition"]
    html = res.text
    assert 'class="chart" data-metric="kl/k1"' in html and "alert-mark" in html
    with (run_dir / "alerts.csv").open() as fh:
        for alert in csv.DictReader(fh):
            assert alert["rule"] in html
    assert "https://" not in html and "http://" not in html
