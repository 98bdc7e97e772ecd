"""README.md's tables name every Make target the Makefile has and every command `rlhfkit` registers for
reading runs afterwards, and nothing they name is missing from the code."""

from __future__ import annotations

import re
from pathlib import Path

from rlhfkit.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    phony = re.search(r"^\.PHONY:(.*?)(?<!\\)\n", text, re.S | re.M)
    assert phony is not None
    return set(phony.group(1).replace("\\", " ").split())


def _readme_targets() -> set[str]:
    section = README.split("## Make targets", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {t for row in rows for t in re.findall(r"`([a-z_-]+)`", row.split("|")[1])}


def test_every_make_target_is_in_the_readme_table_and_exists() -> None:
    targets = _makefile_targets() - {"install", "ui", "browser", "serve", "worker", "typecheck", "test-fast", "clean"}
    listed = _readme_targets()
    assert targets <= listed, f"not in README: {sorted(targets - listed)}"
    assert listed <= _makefile_targets(), f"not in the Makefile: {sorted(listed - _makefile_targets())}"


def test_the_new_commands_are_in_the_readme_and_registered() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    commands = set(sub.choices)  # type: ignore[arg-type]
    for cmd in ("analyze", "analyze-trace", "report"):
        assert cmd in commands
        assert f"`rlhfkit {cmd} " in README
    for var in ("BATCH_SIZE", "GRAD_ACCUM_STEPS", "KL_COEF", "LEARNING_RATE", "VERBOSE=1", "LOG_LEVEL=DEBUG",
                "PROFILE_GPU=false"):
        assert var in README
    for nb in ("stability_dashboard", "profiling_analysis", "memory_optimization"):
        assert f"notebooks/{nb}.ipynb" in README and (ROOT / "notebooks" / f"{nb}.ipynb").exists()
