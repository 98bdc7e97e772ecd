"""PostgreSQL's fast paths for :mod:`backend.services.bulk_write`: array statements sent in one
pipelined round trip for small (live) batches, ``COPY`` for large ones (text for event rows,
binary for the packed metric arrays), and the rollup upsert as one array statement.

These go through the session's psycopg connection, inside its current transaction: SQLAlchemy's
``executemany`` is slower here and cannot run inside a psycopg pipeline.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.orm import Session

from rlhfkit.events import Event

# array parameters (one statement whatever the batch size), sent in binary (%b)
_EVENT_INSERT = """
INSERT INTO events (run_id, seq, type, step, ts, payload)
SELECT %b, seq, type, step, ts, payload::json
FROM unnest(%b::bigint[], %b::text[], %b::int[], %b::float8[], %b::text[]) AS e(seq, type, step, ts, payload)
"""
_CHUNK_INSERT = """
INSERT INTO metric_chunks (series_id, first_step, last_step, n, steps, vals, wall_times)
SELECT * FROM unnest(%b::int[], %b::int[], %b::int[], %b::int[], %b::bytea[], %b::bytea[], %b::bytea[])
"""
_ROLLUP_UPSERT = """
INSERT INTO metric_rollups AS r (series_id, width, bucket, first_step, n, "sum", "min", min_step, "max", max_step)
SELECT * FROM unnest(%b::int[], %b::int[], %b::int[], %b::int[], %b::int[], %b::float8[], %b::float8[], %b::int[],
                     %b::float8[], %b::int[])
ON CONFLICT (series_id, width, bucket) DO UPDATE SET
  first_step = LEAST(r.first_step, EXCLUDED.first_step),
  n = r.n + EXCLUDED.n,
  "sum" = r."sum" + EXCLUDED."sum",
  min_step = CASE WHEN EXCLUDED."min" < r."min" THEN EXCLUDED.min_step ELSE r.min_step END,
  "min" = LEAST(r."min", EXCLUDED."min"),
  max_step = CASE WHEN EXCLUDED."max" > r."max" THEN EXCLUDED.max_step ELSE r.max_step END,
  "max" = GREATEST(r."max", EXCLUDED."max")
"""

_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_CHUNK_HEAD = struct.Struct("!hiiiiiiiii")  # 7 fields: series_id, first_step, last_step, n (int4 each), steps length


def insert_events(session: Session, run_id: str, events: list[Event], texts: list[str], *, pipelined: bool) -> None:
    """Event rows: one INSERT of arrays (queued in the pipeline) or a text COPY."""
    if pipelined:
        with _driver(session).cursor() as cur:
            cur.execute(_EVENT_INSERT, [run_id, [ev.seq for ev in events], [ev.type for ev in events],
                                        [ev.step for ev in events], [ev.ts for ev in events], texts])
        return
    _copy(session, "COPY events (run_id, seq, type, step, ts, payload) FROM STDIN", "".join(
        f"{run_id}\t{ev.seq}\t{ev.type}\t{_copy_text(ev.step)}\t{ev.ts!r}\t{_copy_text(text)}\n"
        for ev, text in zip(events, texts, strict=True)))


def insert_chunks(session: Session, chunks: list[dict[str, Any]], *, pipelined: bool) -> None:
    """``metric_chunks`` rows: one INSERT of arrays, or a binary COPY (the packed arrays go over as they are)."""
    if pipelined:
        with _driver(session).cursor() as cur:
            cur.execute(_CHUNK_INSERT, [[c[k] for c in chunks] for k in chunks[0]])
        return
    _copy(session, "COPY metric_chunks (series_id, first_step, last_step, n, steps, vals, wall_times) "
                   "FROM STDIN (FORMAT BINARY)", _copy_binary_chunks(chunks))


def upsert_rollups(session: Session, rows: list[tuple[Any, ...]]) -> None:
    """One statement with array parameters: constant SQL (prepared once), one round trip."""
    with _driver(session).cursor() as cur:
        cur.execute(_ROLLUP_UPSERT, [list(c) for c in zip(*rows, strict=True)])  # arrays as binary (%b)


@contextmanager
def pipeline(session: Session, enabled: bool) -> Iterator[None]:
    """Small batches: psycopg pipeline mode sends the event, chunk and rollup statements together
    and the server answers them together: one round trip instead of three. Large batches use COPY
    instead (not allowed in a pipeline; faster per row). Only our own psycopg statements go in:
    SQLAlchemy's executemany reads results a pipeline has not delivered yet."""
    if not enabled:
        yield
        return
    try:
        with _driver(session).pipeline():
            yield
    except BaseException:
        # psycopg may fail to leave pipeline mode after an error in the block (it logs "error
        # ignored exiting"): such a connection must never serve another transaction
        session.connection().invalidate()
        raise


def _copy_text(v: Any) -> str:
    """One value in PostgreSQL COPY text format."""
    if v is None:
        return "\\N"
    if isinstance(v, float):
        return repr(v)
    t = str(v).replace("\\", "\\\\")
    if "\t" in t or "\n" in t or "\r" in t:  # never in compact JSON: checking is cheaper than replacing
        t = t.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return t


def _copy_binary_chunks(chunks: list[dict[str, Any]]) -> bytes:
    """``metric_chunks`` rows in PostgreSQL's binary COPY format."""
    out = [_COPY_HEADER]
    for c in chunks:
        out += [_CHUNK_HEAD.pack(7, 4, c["series_id"], 4, c["first_step"], 4, c["last_step"], 4, c["n"],
                                 len(c["steps"])), c["steps"],
                struct.pack("!i", len(c["vals"])), c["vals"], struct.pack("!i", len(c["wall_times"])), c["wall_times"]]
    out.append(b"\xff\xff")
    return b"".join(out)


def _copy(session: Session, statement: str, data: str | bytes) -> None:
    """COPY FROM STDIN of pre-formatted rows (the fastest bulk path)."""
    with _driver(session).cursor() as cur, cur.copy(statement) as cp:
        cp.write(data)


def _driver(session: Session) -> Any:
    """The session's psycopg connection (inside its current transaction)."""
    conn = session.connection().connection.driver_connection
    assert conn is not None
    return conn
