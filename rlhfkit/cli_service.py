"""Client sub-commands of ``rlhfkit`` that talk to a running service: submit, runs, watch, cancel.

They need only :mod:`rlhfkit.client` (httpx). The server-side commands (``serve``, ``worker``)
are registered by the backend itself (:mod:`backend.cli`). Every client command takes ``--server``
(default ``$RLHFKIT_SERVER`` or http://127.0.0.1:8000) and ``--token`` (default ``$RLHFKIT_TOKEN``).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rlhfkit.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, print_json, usage_error
from rlhfkit.events import steps_done_after
from rlhfkit.metrics import M

# What `rlhfkit watch` prints per step: (metric, label, format)
WATCH_FIELDS: tuple[tuple[str, str, str], ...] = (
    (M.REWARD_MEAN, "reward", "{:+.3f}"), (M.KL_K1, "kl", "{:.3f}"), (M.ENTROPY, "entropy", "{:.2f}"),
    (M.POLICY_LOSS, "pg_loss", "{:+.3f}"), (M.TOKENS_PER_SEC, "tok/s", "{:.0f}"),
)


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
        step = f"{r.get('steps_done', 0)}/{r.get('total_steps') or '?'}"
        rew = latest.get(M.REWARD_MEAN)
        kl = latest.get(M.KL_K1)
        print(f"{r['id']:<17} {r['status']:<10} {r['source']:<9} {step:>9} "
              f"{'' if rew is None else f'{rew:+.3f}':>8} {'' if kl is None else f'{kl:.3f}':>8}  "
              f"{r['created_at'][:19]:<20} {r['name']}")
    print(f"({len(rows)} of {page['count']})")
    return EXIT_OK


def _number(fmt: str, value: Any) -> str:
    """``fmt`` applied to a number; ``nan`` for the null a non-finite value is stored as."""
    return fmt.format(value) if isinstance(value, (int, float)) else "nan"


def cmd_watch(args: argparse.Namespace) -> int:
    with _client(args) as c:
        return _watch(c, args.run_id, args.cursor, as_json=args.json)


def _watch(c: Any, run_id: str, cursor: int, *, as_json: bool) -> int:
    run = c.get_run(run_id)
    total = run.get("total_steps") or "?"
    print(f"watching run {run_id} ({run['name']}), status {run['status']}", file=sys.stderr, flush=True)
    started = _iso_ts(run.get("started_at"))
    shown = 0  # steps done as of the last printed step line
    held: list[dict[str, Any]] = []  # evaluations "after k steps" waiting for step k's line

    def release(upto: float) -> None:
        while held and held[0].get("step", 0) <= upto:
            ev = held.pop(0)
            print(f"eval @ step {ev.get('step')}: reward {_number('{:+.3f}', ev.get('reward_mean'))}", flush=True)

    for ev in c.follow(run_id, cursor=cursor):
        if as_json:
            print_json(ev)
            continue
        t = ev.get("type")
        if t == "metrics":
            v = ev.get("values", {})
            done = steps_done_after("metrics", ev.get("step"), v)
            if done is None or done == ev.get("step"):  # an evaluation's value: its eval line shows it
                continue
            parts = [f"step {done}/{total}"]
            for key, label, fmt in WATCH_FIELDS:
                if key in v:  # NaN and inf travel as null (JSON has neither): a diverged run shows "nan"
                    parts.append(f"{label}={_number(fmt, v[key])}")
            print("  ".join(parts), flush=True)
            shown = max(shown, done)
            release(shown)
        elif t == "alert":
            print(f"[{str(ev.get('severity', '')).upper()}] step {ev.get('step')}: {ev.get('message')} "
                  f"-> {ev.get('suggestion')}", flush=True)
        elif t == "eval":
            held.append(ev)
            held.sort(key=lambda e: e.get("step") or 0)
            release(shown)
        elif t == "run_started":
            total = ev.get("total_steps") or total
            started = ev.get("ts") or started
            print(f"started on {ev.get('device')} ({total} steps)", flush=True)
        elif t in ("run_finished", "run_failed", "run_cancelled"):
            release(math.inf)
            took = "" if not started or not ev.get("ts") else f" after {ev['ts'] - started:.0f} s"
            print(f"{t.replace('run_', '')}{took}" + (f": {ev.get('error')}" if t == "run_failed" else ""),
                  flush=True)
    release(math.inf)
    final = c.get_run(run_id)
    return EXIT_OK if final["status"] == "succeeded" else EXIT_FAILED


def _iso_ts(value: str | None) -> float | None:
    """Unix seconds of an ISO-8601 time from the API (None stays None)."""
    if not value:
        return None
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()


def cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as c:
        run = c.cancel_run(args.run_id)
    if args.json:
        print_json(run)
    else:
        state = "cancelled" if run["status"] == "cancelled" else "cancel requested (stops after the current step)"
        print(f"run {run['id']}: {state}")
    return EXIT_OK
