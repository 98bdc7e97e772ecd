"""``rlhfkit analyze``, ``rlhfkit analyze-trace`` and ``rlhfkit report``: reading runs after the fact.

``RUN`` is a run folder (``runs/<run_id>``) or, when no such folder exists, a run id on the server
named by ``--server`` (``$RLHFKIT_SERVER``), read through :mod:`rlhfkit.client`. Exit codes follow
:mod:`rlhfkit.cli`: 0 ok, 1 the server could not be reached, 2 bad input (no such run or folder).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from rlhfkit.cli import EXIT_FAILED, EXIT_OK, usage_error


def _run_args(p: argparse.ArgumentParser) -> None:
    from rlhfkit.client import default_server

    p.add_argument("run", metavar="RUN", help="run folder (runs/<run_id>) or a run id on the server")
    p.add_argument("--server", default=default_server(),
                   help="service URL used when RUN is not a folder (env RLHFKIT_SERVER)")
    p.add_argument("--token", default=None, help="bearer token (env RLHFKIT_TOKEN)")


def register(sub: Any) -> None:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = sub.add_parser("analyze", help="KL band exits, KL slope, alerts fired and what to try, for one run",
                       formatter_class=fmt,
                       description="Read a run's events and say when KL left the band the stability monitor "
                                   "holds it to, how fast KL grew, which alerts fired and what each suggests.")
    _run_args(p)
    p.add_argument("--json", action="store_true", help="print the analysis as one JSON object")
    p.set_defaults(handler=cmd_analyze)

    p = sub.add_parser("analyze-trace", help="top stages, top operators and bottlenecks of a profile folder",
                       formatter_class=fmt,
                       description="Read a profile folder (profiles/<run_id>, or profiles/ for the newest one): "
                                   "the per-stage summary, the top operators of its newest Chrome trace and the "
                                   "bottleneck findings with their evidence.")
    p.add_argument("dir", metavar="DIR", help="profile folder written by `rlhfkit profile` or a profiled run")
    p.add_argument("--top", type=int, default=10, help="operators to list")
    p.add_argument("--json", action="store_true", help="print the analysis as one JSON object")
    p.set_defaults(handler=cmd_analyze_trace)

    p = sub.add_parser("report", help="one self-contained HTML report of a run (opens offline)",
                       formatter_class=fmt,
                       description="Write one HTML file with the run's config, summary, stability charts with "
                                   "alerts marked, stage timings, memory predicted vs measured, samples and the "
                                   "profiler's findings. Charts are inline SVG: no script or font is fetched.")
    _run_args(p)
    p.add_argument("--out", "-o", default=None, help="output file (default: RUN/report.html for a folder, "
                                                     "else reports/<run_id>.html)")
    p.set_defaults(handler=cmd_report)


def load_record(args: argparse.Namespace) -> Any:
    """The RunRecord of ``args.run``: a folder when one exists, else a run id on the server."""
    from rlhfkit.runrecord import load_run_dir, load_run_from_server

    path = Path(args.run)
    if path.is_dir():
        return load_run_dir(path)
    if any(ch in args.run for ch in "/\\") or args.run.startswith("."):
        raise FileNotFoundError(f"RUN: no such run folder {args.run}")
    from rlhfkit.client import Client

    with Client(args.server, token=args.token) as c:
        return load_run_from_server(c, args.run)


def _load_or_exit(args: argparse.Namespace) -> tuple[Any, int | None]:
    import httpx

    from rlhfkit.client import ApiError

    try:
        return load_record(args), None
    except FileNotFoundError as exc:
        return None, usage_error(str(exc))
    except ApiError as exc:
        if exc.status_code == 404:
            return None, usage_error(f"RUN: {args.run} is neither a run folder nor a run on {args.server}")
        print(f"rlhfkit: HTTP {exc.status_code}: {exc.detail}", file=sys.stderr)
        return None, EXIT_FAILED
    except httpx.HTTPError as exc:
        return None, usage_error(f"RUN: {args.run} is not a folder, and {args.server} could not be reached "
                                 f"to look it up as a run id ({exc})")


def cmd_analyze(args: argparse.Namespace) -> int:
    from rlhfkit.analysis import analyze_run, format_run_analysis

    rec, code = _load_or_exit(args)
    if rec is None:
        return code if code is not None else EXIT_FAILED
    result = analyze_run(rec)
    print(json.dumps(_clean(result)) if args.json else format_run_analysis(result))
    return EXIT_OK


def cmd_analyze_trace(args: argparse.Namespace) -> int:
    from rlhfkit.analysis import analyze_trace, format_trace_analysis

    if args.top < 1:
        return usage_error("--top must be >= 1")
    try:
        result = analyze_trace(args.dir, top=args.top)
    except FileNotFoundError as exc:
        return usage_error(f"DIR: {exc}")
    print(json.dumps(_clean(result)) if args.json else format_trace_analysis(result))
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from rlhfkit.report import render_report

    rec, code = _load_or_exit(args)
    if rec is None:
        return code if code is not None else EXIT_FAILED
    if args.out:
        out = Path(args.out)
    elif Path(args.run).is_dir():
        out = Path(args.run) / "report.html"
    else:
        out = Path("reports") / f"{rec.run_id}.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(rec), encoding="utf-8")
    print(f"wrote {out}")
    return EXIT_OK


def _clean(obj: Any) -> Any:
    """JSON without NaN/inf (null instead), as the API writes numbers."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


__all__ = ["load_record", "register"]
