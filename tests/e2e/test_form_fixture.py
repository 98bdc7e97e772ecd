"""The Vitest suite tests the schema-driven form against a copy of RunConfig's JSON Schema
(frontend/src/lib/__fixtures__/run_config_schema.json); this keeps that copy in step with the model.
Regenerate it with:
``.venv/bin/python -c "import json; from rlhfkit.config import config_json_schema as s; print(json.dumps(s(), indent=1))"
> frontend/src/lib/__fixtures__/run_config_schema.json``"""

from __future__ import annotations

import json
from pathlib import Path

from rlhfkit.config import config_json_schema

FIXTURE = (
    Path(__file__).resolve().parents[2]
    / "frontend"
    / "src"
    / "lib"
    / "__fixtures__"
    / "run_config_schema.json"
)


def test_the_form_tests_use_the_current_config_schema() -> None:
    assert json.loads(FIXTURE.read_text()) == config_json_schema()
