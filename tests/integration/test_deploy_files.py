"""The deploy files agree with the code (no Docker engine runs here, so they are parsed).

docker-compose.yml: the four services, ports, env names the settings know, commands the CLI
accepts, GPU reservation, healthchecks and volumes. Dockerfiles: every COPY source exists, the
command is a valid ``rlhfkit`` invocation, the exposed port matches.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from backend.core.config import Settings
from rlhfkit.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def settings_env_names() -> set[str]:
    names = set()
    for name, f in Settings.model_fields.items():
        names.add(f"RLHFKIT_{name.upper()}")
        alias = f.validation_alias
        if alias is not None:
            names.update(str(a) for a in getattr(alias, "choices", [alias]))
    return names


def expand(value: str) -> str:
    """Compose-style ${VAR:-default} / ${VAR:?msg} -> the default (or a placeholder)."""
    return re.sub(r"\$\{([A-Z_]+)(?::?[-?]([^}]*))?\}", lambda m: m.group(2) or "x", value)


def check_cli(argv: list[str]) -> Any:
    assert argv[0] == "rlhfkit", argv
    try:
        return build_parser().parse_args([expand(a) for a in argv[1:]])
    except SystemExit:
        pytest.fail(f"the rlhfkit CLI rejects {argv}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_services_ports_env_and_commands(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "backend", "worker"}
    known = settings_env_names()
    for name in ("backend", "worker"):
        env = services[name]["environment"]
        assert {"DATABASE_URL", "REDIS_URL"} <= set(env)
        assert set(env) <= known, f"{name}: env names the settings do not read: {set(env) - known}"
        assert expand(env["DATABASE_URL"]).startswith("postgresql+psycopg://")
        assert "@postgres:5432/" in env["DATABASE_URL"] and "//redis:6379" in env["REDIS_URL"]
        Settings(**{"database_url": expand(env["DATABASE_URL"]), "redis_url": env["REDIS_URL"]})
        assert "artifacts:/data/artifacts" in services[name]["volumes"]
        assert env["RLHFKIT_ARTIFACTS_DIR"] == "/data/artifacts"
    serve = check_cli(services["backend"]["command"])
    assert serve.command == "serve" and serve.host == "0.0.0.0"
    assert services["backend"]["ports"] == [f"{serve.port}:{serve.port}"]
    assert "RLHFKIT_API_TOKENS" in services["backend"]["environment"], "a non-loopback bind needs tokens"
    assert check_cli(services["worker"]["command"]).command == "worker"
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    for name in services:
        assert "healthcheck" in services[name] or name == "worker", name
    assert {"pgdata", "redisdata", "artifacts"} <= set(compose["volumes"])
    for name in ("backend", "worker"):
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        dockerfile = ROOT / services[name]["build"]["dockerfile"]
        assert dockerfile.is_file()


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("name", ["Dockerfile.backend", "Dockerfile.worker"])
def test_dockerfiles_copy_existing_paths_and_run_valid_commands(name: str) -> None:
    inst = dockerfile_instructions(ROOT / name)
    assert inst[0][0] == "FROM"
    for op, rest in inst:
        if op == "COPY" and "--from=" not in rest:
            *sources, _dest = shlex.split(rest)
            for src in sources:
                assert (ROOT / src).exists(), f"{name}: COPY {src} does not exist"
    cmd = [json.loads(rest) for op, rest in inst if op == "CMD"][-1]
    args = check_cli(cmd)
    if name == "Dockerfile.backend":
        assert args.command == "serve"
        assert [r for op, r in inst if op == "EXPOSE"] == [str(args.port)]
        assert any(op == "COPY" and "backend/static" in r for op, r in inst), "the built UI is served"
        env = " ".join(r for op, r in inst if op == "ENV")
        for var in re.findall(r"(RLHFKIT_[A-Z_]+)=", env):
            assert var in settings_env_names() | {"RLHFKIT_CONFIGS"}, var
    else:
        assert args.command == "worker"
        assert "cuda" in inst[0][1]


def test_makefile_has_deploy_targets() -> None:
    text = (ROOT / "Makefile").read_text()
    for target in ("up:", "down:", "logs:"):
        assert re.search(rf"^{target}", text, re.M), target
