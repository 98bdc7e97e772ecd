"""Event validation, the first step of ingest: raw items (JSON text, dicts, event models) become
typed :mod:`rlhfkit.events` models stamped with the run's id, or errors in FastAPI's 422 shape.

The REST route rejects a batch with any invalid event (the client is told which field); the
stream consumer cannot send an answer back, so :func:`parse_each` replaces each invalid entry by
an ``error`` log event that says why, and the run's sequence keeps no hole.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from pydantic import ValidationError

from rlhfkit.events import SEQ_MAX, Event, LogEvent, parse_event

_log = logging.getLogger(__name__)

# (event, its JSON text when the input already was that text for this run; None: dump it again)
Parsed = tuple[Event, str | None]


class IngestError(ValueError):
    """Some events do not validate; ``errors`` is in FastAPI's 422 ``detail`` shape."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        super().__init__(f"{len(errors)} invalid event field(s)")


def _drop_null_metrics(item: Any) -> Any:
    """JSON has no NaN: pydantic writes NaN/inf metric values as null. Drop them (they cannot be
    charted) instead of rejecting the whole event; the stability monitor reports them as alerts."""
    data = json.loads(item) if isinstance(item, (str, bytes)) else item
    if isinstance(data, dict) and isinstance(data.get("values"), dict):
        data = {**data, "values": {k: v for k, v in data["values"].items() if v is not None}}
    return data


def parse_events(raw: list[Any], run_id: str) -> list[Parsed]:
    """Validate a batch; every error names the event index and field (FastAPI's loc shape).

    Returns each event with its JSON text when the input was JSON text already stamped for this
    run (the Redis stream, the embedded queue), so it is stored and fanned out without re-dumping."""
    out: list[Parsed] = []
    errors: list[dict[str, Any]] = []
    for i, item in enumerate(raw):
        text = item.decode() if isinstance(item, bytes) else item if isinstance(item, str) else None
        try:
            try:
                ev = item if hasattr(item, "type") and hasattr(item, "seq") else parse_event(item)
            except ValidationError as first:
                if not any(e["type"] == "float_type" and e.get("input") is None for e in first.errors()):
                    raise
                ev = parse_event(_drop_null_metrics(item))
                text = None
        except ValidationError as exc:
            for err in exc.errors():
                errors.append({"loc": ["body", "events", i, *err["loc"]], "msg": err["msg"], "type": err["type"]})
            continue
        except ValueError as exc:  # malformed JSON text from a stream
            errors.append({"loc": ["body", "events", i], "msg": str(exc), "type": "json_invalid"})
            continue
        if ev.run_id != run_id or ev.seq < 0:
            text = None
        ev.run_id = run_id
        out.append((ev, text))
    if errors:
        raise IngestError(errors)
    return out


def parse_each(raw: list[Any], run_id: str) -> tuple[list[Parsed], int]:
    """:func:`parse_events` that never fails: an invalid item becomes a :func:`rejected_event` in
    its place. Returns the events and how many were rejected."""
    try:
        return parse_events(raw, run_id), 0
    except IngestError:
        pass
    out: list[Parsed] = []
    rejected = 0
    for item in raw:
        try:
            out += parse_events([item], run_id)
        except IngestError as exc:
            err = exc.errors[0]
            field = ".".join(str(x) for x in err["loc"][3:]) or "event"
            out.append((rejected_event(run_id, item, f"invalid {field}: {err['msg']}"), None))
            rejected += 1
    return out, rejected


def rejected_event(run_id: str, raw: Any, reason: str) -> LogEvent:
    """The ``error`` log event stored in place of a rejected event (same seq and step when known)."""
    seq, step, etype = -1, None, "?"
    try:
        data = raw if isinstance(raw, dict) else json.loads(raw)
        if isinstance(data.get("seq"), int) and 0 <= data["seq"] <= SEQ_MAX:
            seq = data["seq"]
        if isinstance(data.get("step"), int) and abs(data["step"]) < 2**31:
            step = data["step"]
        etype = str(data.get("type", "?"))[:32]
    except (ValueError, AttributeError, TypeError):
        pass
    _log.error("event of run %s rejected (seq %s, type %s): %s", run_id, seq, etype, reason)
    return LogEvent(run_id=run_id, seq=seq, step=step, ts=time.time(), level="error",
                    message=f"{etype} event rejected: {reason}"[:10_000].replace("\x00", "\\u0000"))
