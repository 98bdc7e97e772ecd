"""One metric-name contract: rlhfkit/metrics.py. The UI and the CLI use no name it does not define.

The browser gets the names through the OpenAPI schema (``MetricName`` with the ``M`` constants,
turned into ``frontend/src/client/contract.ts`` by ``npm run generate``); the CLI imports ``M``.
Hand-typed names can still creep in, so the sources are read: any string literal that looks like
a metric of a contract namespace (``reward/…``, ``kl/…``) must be a name in the contract.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from backend.main import contract_schemas
from rlhfkit import events
from rlhfkit.cli_service import WATCH_FIELDS
from rlhfkit.metrics import METRICS, M

ROOT = Path(__file__).resolve().parents[2]
NAMESPACES = sorted({name.split("/")[0] for name in METRICS})
LITERAL = re.compile(r"""["'`]((?:""" + "|".join(NAMESPACES) + r""")/[A-Za-z0-9_]+)["'`]""")


def metric_literals(paths: list[Path]) -> list[tuple[str, int, str]]:
    out = []
    for path in paths:
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            out += [(str(path.relative_to(ROOT)), lineno, m.group(1)) for m in LITERAL.finditer(line)]
    return out


def ui_sources() -> list[Path]:
    src = ROOT / "frontend" / "src"
    return [p for p in sorted(src.rglob("*.ts*")) if "client" not in p.relative_to(src).parts[:1]]


def test_the_openapi_schema_carries_every_metric_and_constant() -> None:
    schema = contract_schemas()["MetricName"]
    assert schema["enum"] == list(METRICS)
    constants = {k: v for k, v in vars(M).items() if k.isupper()}
    assert schema["x-constants"] == constants
    assert set(constants.values()) <= set(METRICS)


def test_the_openapi_schema_carries_the_run_vocabularies() -> None:
    s = contract_schemas()
    assert s["RunStatus"]["enum"] == list(events.RUN_STATUSES)
    assert set(s["RunStatus"]["x-active"]) | set(s["RunStatus"]["x-terminal"]) == set(events.RUN_STATUSES)
    assert set(s["RunStatus"]["x-status-of-terminal-event"].values()) == set(events.TERMINAL_STATUSES)
    assert s["RunSource"]["enum"] == list(events.RUN_SOURCES)
    assert set(events.ExternalSource.__args__) < set(events.RUN_SOURCES)


def test_the_scanner_finds_hand_typed_names(tmp_path: Path) -> None:
    """The check below is only as good as its pattern: it must see the forms the UI would use."""
    f = ROOT / "frontend" / "src" / "lib" / "charts.ts"
    sample = "const a = ['reward/mean', \"kl/typo\", `policy/entropy`]; import x from \"../api/client\";"
    assert [m.group(1) for m in LITERAL.finditer(sample)] == ["reward/mean", "kl/typo", "policy/entropy"]
    assert f.exists()


@pytest.mark.parametrize("where", ["ui", "cli"])
def test_every_metric_name_used_by_the_ui_and_the_cli_is_in_the_contract(where: str) -> None:
    paths = ui_sources() if where == "ui" else sorted((ROOT / "rlhfkit").rglob("cli*.py"))
    assert paths
    unknown = [f"{f}:{line}: {name}" for f, line, name in metric_literals(paths) if name not in METRICS]
    assert unknown == []


def test_the_charts_and_watch_take_their_names_from_the_generated_constants() -> None:
    charts = (ROOT / "frontend" / "src" / "lib" / "charts.ts").read_text()
    assert metric_literals([ROOT / "frontend" / "src" / "lib" / "charts.ts"]) == []
    assert charts.count("M.") >= 22  # the 22 chart and compare keys
    assert [key for key, _, _ in WATCH_FIELDS if key not in METRICS] == []
