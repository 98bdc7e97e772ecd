"""Adapter commands of the ``rlhfkit`` CLI.

* ``rlhfkit import PATH`` — upload a run's local ``events.jsonl`` (written while the server was
  unreachable, or by an offline run) to the server. Safe to repeat: the server deduplicates on
  ``(run_id, seq)``, so each event is stored exactly once however often it is uploaded.
* ``rlhfkit ingest-tensorboard LOGDIR --source openrlhf`` — follow a TensorBoard log directory and
  stream its scalars into a new run until it stays idle for ``--idle-timeout`` seconds or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlhfkit.adapters.transport import (
    EVENTS_FILE,
    IngestAPI,
    default_client,
    read_lines,
    read_remote,
    server_from_env,
    write_remote,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def register(sub: Any) -> None:
    p = sub.add_parser("import", help="upload a run's local events.jsonl to the server (idempotent)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="a run directory (<out_dir>/<run_id>), its events.jsonl, or any directory "
                                "holding runs (every events.jsonl below it is imported)")
    _server_args(p)
    p.add_argument("--batch-size", type=int, default=500, help="events per request (default 500)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=cmd_import)

    t = sub.add_parser("ingest-tensorboard", help="follow a TensorBoard log dir and stream its scalars into a run",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("logdir", help="TensorBoard log directory (read recursively)")
    t.add_argument("--source", choices=["openrlhf", "trl", "verl", "nemo-rl", "external"], default="openrlhf",
                   help="who wrote the log (default openrlhf); every peer's names are mapped the same way, verl and "
                        "NeMo-RL runs are registered with source external")
    t.add_argument("--name", help="run name (default: the directory's name)")
    _server_args(t)
    t.add_argument("--out-dir", default="runs", help="where the local copy of the events goes (default runs/)")
    t.add_argument("--poll-interval", type=float, default=1.0, help="seconds between reads (default 1)")
    t.add_argument("--idle-timeout", type=float, default=None,
                   help="stop after this many seconds without new scalars (default: follow until Ctrl-C)")
    t.add_argument("--once", action="store_true", help="read what is there now and stop")
    t.add_argument("--json", action="store_true", help="print the result as JSON")
    t.set_defaults(handler=cmd_ingest_tensorboard)


def _server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", help="server URL (default $RLHFKIT_SERVER or http://127.0.0.1:8000)")
    p.add_argument("--token", help="API token (default $RLHFKIT_TOKEN)")


def _server(args: argparse.Namespace) -> tuple[str, str | None]:
    server, token = server_from_env(args.server, args.token)
    return (server or "http://127.0.0.1:8000").rstrip("/"), token


# -- import ------------------------------------------------------------------------------------
def find_event_files(path: Path) -> list[Path]:
    """``PATH`` itself, ``PATH/events.jsonl``, or every ``events.jsonl`` below PATH (e.g. a TRL output dir)."""
    if path.is_file():
        return [path]
    if (path / EVENTS_FILE).is_file():
        return [path / EVENTS_FILE]
    return sorted(path.rglob(EVENTS_FILE)) if path.is_dir() else []


def _batches(path: Path, size: int) -> Iterator[list[dict[str, Any]]]:
    offset = 0
    while True:
        lines, offset = read_lines(path, offset, size)
        if not lines:
            return
        yield [json.loads(text) for text in lines]


def _first_event(path: Path) -> dict[str, Any]:
    lines, _ = read_lines(path, 0, 1)
    data: dict[str, Any] = json.loads(lines[0]) if lines else {}
    return data


def _is_not_found(exc: Exception) -> bool:
    resp = getattr(exc, "response", None)
    return getattr(exc, "status_code", None) == 404 or getattr(resp, "status_code", None) == 404


def import_events(path: Path, client: IngestAPI, server: str, batch_size: int = 500) -> dict[str, Any]:
    """Upload one ``events.jsonl``; continues the server run recorded in ``remote.json`` if any."""
    run_dir = path.parent
    known = read_remote(run_dir)
    remote_id = str(known["run_id"]) if known.get("server") == server and known.get("run_id") else None
    first = _first_event(path)

    def create() -> str:
        meta = first if first.get("type") == "run_started" else {}
        source = str(meta.get("source") or "external")
        created = client.create_external_run(name=str(meta.get("name") or run_dir.name),
                                             source=source if source != "native" else "external",
                                             config=dict(meta.get("config") or {}), tags=[],
                                             seed=meta.get("seed"), total_steps=meta.get("total_steps"))
        rid = str(created["id"] if isinstance(created, dict) else created.id)
        write_remote(run_dir, server, rid)
        return rid

    if remote_id is None:
        remote_id = create()
    accepted = duplicates = events = 0
    for batch in _batches(path, batch_size):
        for e in batch:
            e["run_id"] = remote_id
        try:
            result = client.post_events(remote_id, batch)
        except Exception as exc:
            if not _is_not_found(exc):
                raise
            remote_id = create()  # the recorded run is gone (other database): start it again
            for e in batch:
                e["run_id"] = remote_id
            result = client.post_events(remote_id, batch)
        events += len(batch)
        if isinstance(result, dict):
            accepted += int(result.get("accepted", 0))
            duplicates += int(result.get("duplicates", 0))
    return {"path": str(path), "run_id": remote_id, "events": events, "accepted": accepted, "duplicates": duplicates}


def cmd_import(args: argparse.Namespace) -> int:
    path = Path(args.path)
    files = find_event_files(path)
    if not files:
        print(f"rlhfkit: no {EVENTS_FILE} at {path}", file=sys.stderr)
        return EXIT_USAGE
    server, token = _server(args)
    client = default_client(server, token)
    results = []
    for f in files:
        try:
            res = import_events(f, client, server, batch_size=args.batch_size)
        except Exception as exc:
            print(f"rlhfkit: import of {f} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return EXIT_FAILED
        results.append(res)
        if not args.json:
            print(f"{f}: run {res['run_id']}: {res['events']} events, {res['accepted']} new, "
                  f"{res['duplicates']} already there")
    if args.json:
        print(json.dumps(results if len(results) > 1 else results[0]))
    return EXIT_OK


# -- ingest-tensorboard --------------------------------------------------------------------------
def cmd_ingest_tensorboard(args: argparse.Namespace) -> int:
    from rlhfkit.adapters.openrlhf import ingest_tensorboard

    if not Path(args.logdir).exists() and args.once:
        print(f"rlhfkit: {args.logdir} does not exist", file=sys.stderr)
        return EXIT_USAGE
    server, token = _server(args)
    print(f"following {args.logdir} -> {server} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    follower = ingest_tensorboard(args.logdir, source=args.source, name=args.name, server=server, token=token,
                             out_dir=args.out_dir, poll_interval=args.poll_interval, idle_timeout=args.idle_timeout,
                             follow=not args.once)
    run = follower.run
    result = {"run_id": run.id, "local_dir": str(run.run_dir), "points": follower.points, "last_step": run.last_step}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"run {run.id}: {follower.points} points up to step {run.last_step}; events in {run.events_path}")
    return EXIT_OK
