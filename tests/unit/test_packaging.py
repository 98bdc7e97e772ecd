"""Installing the package prints no setuptools deprecation about its own metadata."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_package_metadata_builds_without_the_license_table_deprecation(tmp_path: Path) -> None:
    code = f"from setuptools import build_meta; build_meta.prepare_metadata_for_build_wheel({str(tmp_path)!r})"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "project.license" not in out.stderr, out.stderr
    meta = next(tmp_path.glob("*.dist-info")) / "METADATA"
    assert "License-Expression: MIT" in meta.read_text()
