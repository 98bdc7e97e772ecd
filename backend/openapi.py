"""Write the API's OpenAPI schema: ``python -m backend.openapi OUT.json``.

The frontend generates its typed client from this file (``make ui``). The schema is built from the
app's routes without starting it (no database or Redis needed).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from backend.core.config import Settings


def schema() -> dict[str, Any]:
    from backend.main import create_app

    app = create_app(Settings(database_url="sqlite://", redis_url=None, migrate=False))
    return app.openapi()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = json.dumps(schema(), indent=2, sort_keys=False) + "\n"
    if not argv or argv[0] == "-":
        sys.stdout.write(text)
    else:
        out = Path(argv[0])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
