"""The ``rlhfkit`` command.

This module is the composition root of the *engine's* commands: they live in modules that each
define ``register(subparsers)`` and are imported lazily, so that ``rlhfkit train`` never imports
FastAPI or Celery. Other packages add commands through the ``rlhfkit.commands`` entry-point group
(the backend adds ``serve`` and ``worker``); ``rlhfkit`` never imports them by name in code, it only
loads what is declared. Exit codes: 0 ok, 1 run failed, 2 bad input (invalid config or
arguments), 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from rlhfkit.config import ConfigError

_log = logging.getLogger(__name__)

# The engine's own command modules: each defines register(subparsers) -> None.
COMMAND_MODULES = (
    "rlhfkit.cli_engine",
    "rlhfkit.cli_service",
    "rlhfkit.cli_analysis",
    "rlhfkit.profiler.cli",
    "rlhfkit.adapters.cli",
)
# Entry points of this group are ``register(subparsers)`` functions of other packages.
PLUGIN_GROUP = "rlhfkit.commands"
# Plugin modules probed by name when no entry point declares them: an editable install made before
# the entry point existed has no metadata for it, and a source checkout run with PYTHONPATH has none
# at all. A module that is not there is skipped.
FALLBACK_PLUGINS = ("backend.cli",)

Register = Callable[[Any], None]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _optional_module(name: str) -> Any | None:
    """Import ``name``; None when it (or a package above it) is not installed."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name or (exc.name and name.startswith(exc.name + ".")):
            return None
        raise


def plugin_registrars() -> list[tuple[str, Register]]:
    """``(module, register)`` of every command plugin: declared entry points first, then the
    fallback modules no entry point declared. A plugin that fails to load is skipped with a warning
    (its commands are missing; the engine's still work)."""
    found: list[tuple[str, Register]] = []
    for ep in entry_points(group=PLUGIN_GROUP):
        if any(module == ep.module for module, _ in found):
            continue
        try:
            found.append((ep.module, ep.load()))
        except Exception as exc:
            _log.warning("rlhfkit: command plugin %s could not be loaded: %s", ep.value, exc)
    for name in FALLBACK_PLUGINS:
        if any(module == name for module, _ in found):
            continue
        mod = _optional_module(name)
        if mod is not None:
            found.append((name, mod.register))
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlhfkit",
        description="RLHF Systems Kit: train, watch, profile and tune small PPO-for-RLHF runs.",
        epilog="Run `rlhfkit COMMAND --help` for a command's options. Docs: README.md and docs/.",
    )
    parser.add_argument("--version", action="version", version=f"rlhfkit {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        mod = _optional_module(name)
        if mod is not None:  # that part is not installed in this checkout
            mod.register(sub)
    for _, register in plugin_registrars():
        register(sub)
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("rlhfkit")
    except Exception:
        return "dev"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(handler(args) or 0)
    except ConfigError as exc:
        print(f"rlhfkit: {exc}", file=sys.stderr)
        if getattr(args, "json", False):
            print(json.dumps({"error": "invalid_config", "errors": exc.errors}))
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("rlhfkit: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def usage_error(message: str) -> int:
    print(f"rlhfkit: {message}", file=sys.stderr)
    return EXIT_USAGE


def print_json(obj: Any) -> None:
    print(json.dumps(obj, default=str), flush=True)


if __name__ == "__main__":
    sys.exit(main())
