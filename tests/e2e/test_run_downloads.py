"""The run page's "Download report", "Export CSV" and "Export Parquet" on a token-protected server, in
headless Chromium: each click carries the token (a plain link would get 401) and saves the file the
API serves — the report with its charts, the table with the columns of the run folder's metrics.csv."""

from __future__ import annotations

import csv
import io
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.e2e.conftest import Api, run_server
from tests.smoke_runs import profiled_smoke_run

pytestmark = pytest.mark.e2e
TOKEN = f"downloads-{secrets.token_hex(8)}"


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with run_server(tmp_path_factory.mktemp("e2e-downloads"), RLHFKIT_API_TOKENS=TOKEN) as base:
        yield base


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return profiled_smoke_run(tmp_path_factory)


def test_downloads_on_the_run_page_send_the_token(open_page: Any, token_server: str, run_dir: Path,
                                                   shoot: Any) -> None:
    api = Api(token_server, TOKEN)
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]
    run = api.call("POST", "/api/runs/external", {"name": "downloads", "config": events[0]["config"]})
    for e in events:
        e["run_id"] = run["id"]
    api.call("POST", f"/api/runs/{run['id']}/events", {"events": events})

    page = open_page(token_server)
    sent: list[tuple[str, str | None]] = []
    page.on("request", lambda r: sent.append((r.url, r.headers.get("authorization"))) if "/export" in r.url
            or "/report" in r.url else None)
    page.goto(f"/runs/{run['id']}#token={TOKEN}")
    page.get_by_role("link", name="Download report").wait_for()
    shoot(page, "run-downloads")

    files: dict[str, bytes] = {}
    for label in ("Download report", "Export CSV", "Export Parquet"):
        with page.expect_download() as info:
            page.get_by_role("link", name=label).click()
        dl = info.value
        files[dl.suggested_filename] = Path(dl.path()).read_bytes()

    assert sent and all(auth == f"Bearer {TOKEN}" for _, auth in sent), sent
    rid = run["id"]
    assert set(files) == {f"{rid}-report.html", f"{rid}-metrics.csv", f"{rid}-metrics.parquet"}
    report = files[f"{rid}-report.html"].decode()
    assert '<svg class="chart"' in report and "http://" not in report and "https://" not in report
    with (run_dir / "metrics.csv").open(newline="") as fh:
        header = next(csv.reader(fh))
    assert next(csv.reader(io.StringIO(files[f"{rid}-metrics.csv"].decode()))) == header
    assert pq.read_table(io.BytesIO(files[f"{rid}-metrics.parquet"])).column_names == header
