"""Service sub-commands of ``rlhfkit``: serve, worker, submit, runs, watch, cancel.

``serve`` and ``worker`` import the backend / Celery lazily inside their handlers; the client
commands need only :mod:`rlhfkit.client` (httpx). Every client command takes ``--server``
(default ``$RLHFKIT_SERVER`` or http://127.0.0.1:8000) and ``--token`` (default ``$RLHFKIT_TOKEN``).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlhfkit.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, print_json, usage_error

LOOPBACK_NAMES = ("localhost", "ip6-localhost")


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _client_args(p: argparse.ArgumentParser) -> None:
    from rlhfkit.client import default_server

    p.add_argument("--server", default=default_server(), help="service URL (env RLHFKIT_SERVER)")
    p.add_argument("--token", default=None, help="bearer token (env RLHFKIT_TOKEN)")


def _api_errors(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Readable messages instead of tracebacks: 4xx -> exit 2 (bad input), else exit 1."""

    def wrapped(args: argparse.Namespace) -> int:
        import httpx

        from rlhfkit.client import ApiError

        try:
            return fn(args)
        except ApiError as exc:
            detail = exc.detail
            if isinstance(detail, list):
                lines = [f"  {'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}" for d in detail]
                print(f"rlhfkit: the server refused the request (HTTP {exc.status_code}):\n" + "\n".join(lines),
                      file=sys.stderr)
            else:
                print(f"rlhfkit: HTTP {exc.status_code}: {detail}", file=sys.stderr)
            return EXIT_USAGE if 400 <= exc.status_code < 500 else EXIT_FAILED
        except httpx.HTTPError as exc:
            print(f"rlhfkit: cannot reach {args.server}: {exc}", file=sys.stderr)
            return EXIT_FAILED

    wrapped.__name__ = fn.__name__
    return wrapped


def _client(args: argparse.Namespace) -> Any:
    from rlhfkit.client import Client

    return Client(args.server, token=args.token)


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

    p = sub.add_parser("submit", help="submit a run to the server")
    p.add_argument("config", nargs="?", help="YAML config file or preset name (default: smoke)")
    p.add_argument("--preset", default=None, help="preset name")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value by dotted key (repeatable)")
    p.add_argument("--name", default=None)
    p.add_argument("--tag", dest="tags", action="append", default=None)
    p.add_argument("--queue", default=None, help="Celery queue (GPU type)")
    p.add_argument("--wait", action="store_true", help="wait until the run finishes; exit 1 unless it succeeded")
    p.add_argument("--watch", action="store_true", help="follow the run live after submitting")
    p.add_argument("--json", action="store_true", help="print the run as JSON")
    _client_args(p)
    p.set_defaults(handler=_api_errors(cmd_submit))

    p = sub.add_parser("runs", help="list runs on the server")
    p.add_argument("--status", default=None, help="comma-separated statuses")
    p.add_argument("--tag", default=None)
    p.add_argument("--source", default=None)
    p.add_argument("--q", default=None, help="text search in name/id")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")
    _client_args(p)
    p.set_defaults(handler=_api_errors(cmd_runs))

    p = sub.add_parser("watch", help="live terminal view of a run's key metrics and alerts")
    p.add_argument("run_id")
    p.add_argument("--cursor", type=int, default=-1, help="start after this event seq")
    p.add_argument("--json", action="store_true", help="print every event as a JSON line")
    _client_args(p)
    p.set_defaults(handler=_api_errors(cmd_watch))

    p = sub.add_parser("cancel", help="cancel a run (queued: at once; running: after the current step)")
    p.add_argument("run_id")
    p.add_argument("--json", action="store_true")
    _client_args(p)
    p.set_defaults(handler=_api_errors(cmd_cancel))


# ----------------------------------------------------------------------------- server side

def cmd_serve(args: argparse.Namespace) -> int:
    if args.embedded_workers is not None:
        os.environ["RLHFKIT_EMBEDDED_WORKERS"] = str(args.embedded_workers)
    from backend.core.config import Settings

    settings = Settings(insecure=True) if args.insecure else Settings()
    # The app itself refuses non-loopback connections without tokens (backend.api.security); this
    # only says so before starting instead of with every refused request.
    if not _is_loopback(args.host) and not settings.tokens and not settings.insecure:
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
    root = str(Path(__file__).resolve().parent.parent)
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


# ----------------------------------------------------------------------------- client side

def cmd_submit(args: argparse.Namespace) -> int:
    from rlhfkit.config import apply_overrides, load_yaml

    preset = args.preset
    config = None
    if args.config:
        path = Path(args.config)
        if path.suffix in (".yaml", ".yml") or path.exists():
            if not path.exists():
                return usage_error(f"no such file: {path}")
            config = load_yaml(path)
        elif preset is None:
            preset = args.config
    if preset is None and config is None:
        preset = "smoke"
    overrides = apply_overrides({}, args.overrides) if args.overrides else {}
    flat = _flatten(overrides)
    with _client(args) as c:
        run = c.create_run(preset=preset, config=config, overrides=flat, name=args.name, tags=args.tags,
                           queue=args.queue)
        if args.json:
            print_json(run)
        else:
            print(f"submitted run {run['id']} ({run['name']}): {run['status']}")
        if args.watch:
            return _watch(c, run["id"], -1, as_json=False)
        if args.wait:
            run = c.wait(run["id"], timeout=7 * 24 * 3600)
            if not args.json:
                print(f"run {run['id']}: {run['status']}" + (f" ({run['error']})" if run.get("error") else ""))
            return EXIT_OK if run["status"] == "succeeded" else EXIT_FAILED
    return EXIT_OK


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def cmd_runs(args: argparse.Namespace) -> int:
    with _client(args) as c:
        page = c.list_runs(status=args.status, tag=args.tag, source=args.source, q=args.q, limit=args.limit)
    if args.json:
        print_json(page)
        return EXIT_OK
    rows = page["data"]
    print(f"{'ID':<17} {'STATUS':<10} {'SOURCE':<9} {'STEP':>9} {'REWARD':>8} {'KL':>8}  {'CREATED':<20} NAME")
    for r in rows:
        latest = r.get("latest") or {}
        step = "" if r.get("last_step") is None else f"{r['last_step'] + 1}/{r.get('total_steps') or '?'}"
        rew = latest.get("reward/mean")
        kl = latest.get("kl/k1")
        print(f"{r['id']:<17} {r['status']:<10} {r['source']:<9} {step:>9} "
              f"{'' if rew is None else f'{rew:+.3f}':>8} {'' if kl is None else f'{kl:.3f}':>8}  "
              f"{r['created_at'][:19]:<20} {r['name']}")
    print(f"({len(rows)} of {page['count']})")
    return EXIT_OK


def cmd_watch(args: argparse.Namespace) -> int:
    with _client(args) as c:
        return _watch(c, args.run_id, args.cursor, as_json=args.json)


def _watch(c: Any, run_id: str, cursor: int, *, as_json: bool) -> int:
    run = c.get_run(run_id)
    total = run.get("total_steps") or "?"
    print(f"watching run {run_id} ({run['name']}), status {run['status']}", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    for ev in c.follow(run_id, cursor=cursor):
        if as_json:
            print_json(ev)
            continue
        t = ev.get("type")
        if t == "metrics":
            v = ev.get("values", {})
            parts = [f"step {ev.get('step', 0) + 1}/{total}"]
            for key, label, fmt in (("reward/mean", "reward", "{:+.3f}"), ("kl/k1", "kl", "{:.3f}"),
                                    ("policy/entropy", "entropy", "{:.2f}"), ("loss/policy", "pg_loss", "{:+.3f}"),
                                    ("perf/tokens_per_sec", "tok/s", "{:.0f}")):
                if key in v:
                    parts.append(f"{label}={fmt.format(v[key])}")
            print("  ".join(parts), flush=True)
        elif t == "alert":
            print(f"[{str(ev.get('severity', '')).upper()}] step {ev.get('step')}: {ev.get('message')} "
                  f"-> {ev.get('suggestion')}", flush=True)
        elif t == "eval":
            print(f"eval @ step {ev.get('step')}: reward {ev.get('reward_mean', 0):+.3f}", flush=True)
        elif t == "run_started":
            total = ev.get("total_steps") or total
            print(f"started on {ev.get('device')} ({total} steps)", flush=True)
        elif t in ("run_finished", "run_failed", "run_cancelled"):
            print(f"{t.replace('run_', '')} after {time.monotonic() - t0:.0f} s"
                  + (f": {ev.get('error')}" if t == "run_failed" else ""), flush=True)
    final = c.get_run(run_id)
    return EXIT_OK if final["status"] == "succeeded" else EXIT_FAILED


def cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as c:
        run = c.cancel_run(args.run_id)
    if args.json:
        print_json(run)
    else:
        state = "cancelled" if run["status"] == "cancelled" else "cancel requested (stops after the current step)"
        print(f"run {run['id']}: {state}")
    return EXIT_OK
