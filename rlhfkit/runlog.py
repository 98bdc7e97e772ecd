"""A run's own log file, ``<run folder>/train.log``, and the log level knobs of ``rlhfkit train``.

The console shows progress every few steps; ``train.log`` keeps a line for *every* step, every
evaluation and alert (the same :class:`~rlhfkit.sinks.ConsoleSink` lines) plus the Python log
records at the chosen level, so a run can be read after the terminal is gone. ``LOG_LEVEL``
(``DEBUG``, ``INFO``, ``WARNING``...) sets the level; ``VERBOSE=1`` prints every step on the
console too and lowers the level to ``INFO`` when none was given.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rlhfkit.sinks import ConsoleSink

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def truthy(text: str | None) -> bool:
    return (text or "").strip().lower() in ("1", "true", "yes", "on")


def default_level() -> str:
    """``$LOG_LEVEL`` (or ``$RLHFKIT_LOG_LEVEL``); ``INFO`` with ``$VERBOSE`` set; else ``WARNING``."""
    env = os.environ.get("LOG_LEVEL") or os.environ.get("RLHFKIT_LOG_LEVEL")
    if env:
        return env.upper()
    return "INFO" if truthy(os.environ.get("VERBOSE")) else "WARNING"


def configure_console(level: str) -> None:
    """Python log records at ``level`` and above on stderr (a handler is added only when the process
    has none: an embedding program's logging set-up is left alone, only its level changes)."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format=_FORMAT, stream=sys.stderr)
    root.setLevel(level)


@contextmanager
def train_log(run_dir: Path, level: str) -> Iterator[ConsoleSink]:
    """Open ``run_dir/train.log``; yields the sink that writes progress lines into it. Log records of
    every logger at ``level`` and above go to the file while the block runs."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "train.log").open("a", encoding="utf-8") as fh:
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler.setLevel(level)
        root = logging.getLogger()
        old_level = root.level
        root.addHandler(handler)
        root.setLevel(min(old_level or logging.WARNING, logging.getLevelName(level)))
        try:
            yield ConsoleSink(stream=fh, every=1)
        finally:
            root.removeHandler(handler)
            root.setLevel(old_level)


__all__ = ["LEVELS", "configure_console", "default_level", "train_log", "truthy"]
