"""Run every benchmark in this folder, one after another, printing their tables.

Benchmarks are scripts, never tests: this machine is shared and noisy, so each script alternates
the systems it compares inside one process and prints medians beside the machine's load.
Usage: .venv/bin/python benchmarks/run_all.py [--quick] [NAME ...]
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    names = [a for a in argv if not a.startswith("--")]
    scripts = sorted(p for p in HERE.glob("*.py") if p.name not in ("run_all.py", "__init__.py") and not p.name.startswith("_"))
    if names:
        scripts = [p for p in scripts if any(n in p.stem for n in names)]
    failed = []
    for script in scripts:
        print(f"\n=== {script.name} " + "=" * max(0, 70 - len(script.name)), flush=True)
        cmd = [sys.executable, str(script)] + (["--quick"] if quick else [])
        rc = subprocess.call(cmd, cwd=HERE.parent, env={**os.environ, "PYTHONPATH": str(HERE.parent)})
        if rc != 0:
            failed.append(script.name)
    if failed:
        print(f"\nbenchmarks that failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
