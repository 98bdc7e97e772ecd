"""The ``rlhfkit`` command.

This module is the composition root: the engine commands live here, and the service, profiler and
adapter commands are registered by their own modules (``register(subparsers)``), imported lazily so
that ``rlhfkit train`` never imports FastAPI or Celery. Exit codes: 0 ok, 1 run failed,
2 bad input (invalid config or arguments), 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable
from typing import Any

from rlhfkit.config import ConfigError

# Modules that add sub-commands: each defines register(subparsers) -> None.
COMMAND_MODULES = (
    "rlhfkit.cli_engine",
    "rlhfkit.cli_service",
    "rlhfkit.profiler.cli",
    "rlhfkit.adapters.cli",
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlhfkit",
        description="RLHF Systems Kit: train, watch, profile and tune small PPO-for-RLHF runs.",
        epilog="Run `rlhfkit COMMAND --help` for a command's options. Docs: README.md and docs/.",
    )
    parser.add_argument("--version", action="version", version=f"rlhfkit {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name or (exc.name and name.startswith(exc.name)):
                continue  # that part is not installed in this checkout
            raise
        mod.register(sub)
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
