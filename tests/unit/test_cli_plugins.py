"""``rlhfkit`` finds the commands other packages register without importing them by name.

The backend's ``serve`` and ``worker`` come through the ``rlhfkit.commands`` entry-point group; when
the installed metadata has no such entry point (an editable install older than it, a plain source
checkout) the fallback module list finds them; a plugin that is not installed is skipped.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import rlhfkit.cli as cli

ROOT = Path(__file__).resolve().parents[2]


def commands(parser: object) -> set[str]:
    sub = next(a for a in parser._actions if a.dest == "command")  # type: ignore[attr-defined]
    return set(sub.choices)


def test_serve_and_worker_come_from_the_backend_even_without_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "entry_points", lambda group: [])
    found = cli.plugin_registrars()
    assert [m for m, _ in found] == ["backend.cli"]
    assert {"serve", "worker", "train", "submit"} <= commands(cli.build_parser())


def test_a_missing_plugin_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "entry_points", lambda group: [])
    monkeypatch.setattr(cli, "FALLBACK_PLUGINS", ("no_such_package.cli",))
    names = commands(cli.build_parser())
    assert "train" in names and "serve" not in names


def test_a_declared_entry_point_adds_its_commands(tmp_path: Path) -> None:
    """A real distribution on sys.path (dist-info with entry_points.txt), read by importlib.metadata."""
    (tmp_path / "hello_plugin.py").write_text(
        "def register(sub):\n"
        "    p = sub.add_parser('hello', help='say hello')\n"
        "    p.set_defaults(handler=lambda args: print('hello from a plugin') or 7)\n")
    dist = tmp_path / "hello_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: hello-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{cli.PLUGIN_GROUP}]\nhello = hello_plugin:register\n")
    code = ("import sys; from rlhfkit.cli import main, plugin_registrars; "
            "print([m for m, _ in plugin_registrars()]); sys.exit(main(['hello']))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{ROOT}:{tmp_path}"})
    assert out.returncode == 7, out.stderr
    listed, said = out.stdout.splitlines()
    assert "hello_plugin" in listed and "backend.cli" in listed
    assert said == "hello from a plugin"


def test_a_broken_entry_point_does_not_break_the_engine_commands(tmp_path: Path) -> None:
    dist = tmp_path / "broken_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{cli.PLUGIN_GROUP}]\nbroken = not_installed_anywhere:register\n")
    out = subprocess.run([sys.executable, "-m", "rlhfkit.cli", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{ROOT}:{tmp_path}"})
    assert out.returncode == 0 and "train" in out.stdout and "serve" in out.stdout
    assert "not_installed_anywhere" in out.stderr  # said, not swallowed


def test_rlhfkit_worker_without_redis_is_a_usage_error() -> None:
    out = subprocess.run([sys.executable, "-m", "rlhfkit.cli", "worker"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert out.returncode == 2 and "REDIS_URL" in out.stderr
