"""The server-side sub-commands of ``rlhfkit``: ``serve`` (API + UI) and ``worker`` (Celery).

They are registered from the backend's side — through the ``rlhfkit.commands`` entry-point group
(see ``pyproject.toml``; :mod:`rlhfkit.cli` also probes this module by name when the installed
metadata predates the entry point) — so the engine package never imports the backend. FastAPI,
uvicorn and Celery are imported inside the handlers: ``rlhfkit --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from rlhfkit.cli import EXIT_OK, usage_error


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="start the API server and web UI (embedded mode without REDIS_URL)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Start the FastAPI backend. Without REDIS_URL runs execute in local processes "
                                   "(embedded mode, SQLite by default); with it they go to Celery workers.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--insecure", action="store_true",
                   help="serve non-loopback connections without RLHFKIT_API_TOKENS (anyone on the network can submit "
                        "runs; list the names clients use in RLHFKIT_ALLOWED_HOSTS)")
    p.add_argument("--embedded-workers", type=int, default=None, help="embedded mode: runs at the same time")
    p.add_argument("--log-level", default="info")
    p.set_defaults(handler=cmd_serve)

    p = sub.add_parser("worker", help="start Celery worker(s): one process per GPU, pinned with CUDA_VISIBLE_DEVICES",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--queues", "-Q", default=os.environ.get("RLHFKIT_QUEUE", "rlhfkit"),
                   help="comma-separated queues to consume (route runs to GPU types)")
    p.add_argument("--gpus", default=None,
                   help="comma-separated GPU indices, one worker process each (default: all visible GPUs, or one CPU worker)")
    p.add_argument("--name", default=None, help="worker node name (default: rlhfkit[-gpuN]@hostname)")
    p.add_argument("--loglevel", default="INFO")
    p.set_defaults(handler=cmd_worker)


def cmd_serve(args: argparse.Namespace) -> int:
    if args.embedded_workers is not None:
        os.environ["RLHFKIT_EMBEDDED_WORKERS"] = str(args.embedded_workers)
    from backend.core.config import Settings, is_loopback

    settings = Settings(insecure=True) if args.insecure else Settings()
    # The app itself refuses non-loopback connections without tokens (backend.api.security); this
    # only says so before starting instead of with every refused request.
    if not is_loopback(args.host) and not settings.tokens and not settings.insecure:
        return usage_error(f"refusing to listen on {args.host} without RLHFKIT_API_TOKENS; "
                           "set tokens or pass --insecure")
    import uvicorn

    from backend.main import SERVER_OPTIONS, create_app

    mode = "embedded (local processes)" if settings.embedded else f"celery via {settings.redis_url}"
    print(f"rlhfkit: serving on http://{args.host}:{args.port}  db={settings.database_url}  mode={mode}",
          file=sys.stderr, flush=True)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level, **SERVER_OPTIONS)
    return EXIT_OK


def _visible_gpus() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
            return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]
        except (OSError, subprocess.SubprocessError):
            return []
    return []


def worker_commands(queues: str, gpus: list[str], name: str | None, loglevel: str) -> list[tuple[list[str], dict[str, str]]]:
    """One ``celery worker -P solo`` per GPU (concurrency 1 each), or one CPU worker."""
    base = [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-P", "solo", "-Q", queues,
            "--loglevel", loglevel, "--without-gossip", "--without-mingle"]
    if not gpus:
        env = dict(os.environ)
        return [([*base, "-n", name or "rlhfkit@%h"], env)]
    out = []
    for g in gpus:
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=g)
        out.append(([*base, "-n", f"{name or 'rlhfkit'}-gpu{g}@%h"], env))
    return out


def cmd_worker(args: argparse.Namespace) -> int:
    if not (os.environ.get("REDIS_URL") or os.environ.get("RLHFKIT_REDIS_URL")):
        return usage_error("REDIS_URL is not set: workers need Redis (embedded mode runs in `rlhfkit serve`)")
    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else _visible_gpus()
    cmds = worker_commands(args.queues, gpus, args.name, args.loglevel)
    root = str(Path(__file__).resolve().parent.parent)  # the directory holding backend/ and worker/
    procs = [subprocess.Popen(cmd, env={**env, "PYTHONPATH": os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))})
             for cmd, env in cmds]
    print(f"rlhfkit: {len(procs)} worker process(es) on queue(s) {args.queues}"
          + (f", GPUs {','.join(gpus)}" if gpus else " (CPU)"), file=sys.stderr, flush=True)

    def _forward(signum: int, _frame: Any) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    signal.signal(signal.SIGTERM, _forward)
    signal.signal(signal.SIGINT, _forward)
    codes = [p.wait() for p in procs]
    return max(codes) if any(codes) else EXIT_OK
