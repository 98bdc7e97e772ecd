"""Regenerate the offline ``tiny`` model's shipped data: tokenizer.json and the prompt files.

Deterministic: running it twice writes byte-identical files (the unit tests check this by
regenerating into a temporary directory). Run it after changing the grammar in
``rlhfkit/tiny/corpus.py`` and commit the result; bump ``CORPUS_VERSION`` there too.

    .venv/bin/python scripts/build_tiny_assets.py [--out rlhfkit/assets/tiny]
"""

from __future__ import annotations

import argparse
import sys

from rlhfkit.tiny.data import ASSETS_DIR, write_assets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ASSETS_DIR), help="output directory (default: the package's assets)")
    args = parser.parse_args(argv)
    for path in write_assets(args.out):
        print(f"wrote {path} ({path.stat().st_size:,} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
