"""Ingest stays exactly-once when another process stored some of a batch's events first: the
batch's own statements collide with the stored rows, and the conflict-safe path keeps one copy of
each event and of each metric point — for a live batch (pipelined on PostgreSQL) and a bulk one
(COPY), on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import insert

from backend.core.db import Database, run_migrations
from backend.models import EventRow
from backend.schemas import ExternalRunCreate
from backend.services.bulk_write import COPY_MIN_EVENTS
from backend.services.ingest import ingest_and_publish
from backend.services.live import LiveHub
from backend.services.metrics import query_series
from backend.services.runs import create_external_run

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("backend_db", ["sqlite", "postgres"])
@pytest.mark.parametrize("n", [3, COPY_MIN_EVENTS + 6])
def test_events_stored_meanwhile_by_another_process_are_kept_once(
        backend_db: str, n: int, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("sqlite_url" if backend_db == "sqlite" else "pg_url")
    run_migrations(url)
    db = Database(url)
    run_id = create_external_run(db=db, hub=LiveHub(), body=ExternalRunCreate(name="race")).id
    events = [{"type": "metrics", "run_id": run_id, "seq": i, "step": i, "ts": 1.0 + i, "values": {"loss": i / 10}}
              for i in range(n)]
    # another backend committed event 1 a moment ago; this one has not seen it (the run row still
    # says last_seq = -1), so its batch collides with the stored row
    with db.session() as s:
        s.execute(insert(EventRow), [dict(run_id=run_id, seq=1, type="metrics", step=1, ts=2.0, payload=events[1])])
        s.commit()

    outcome = ingest_and_publish(db=db, hub=LiveHub(), run_id=run_id, events=[json.dumps(e) for e in events])

    assert [seq for seq, _ in outcome.accepted] == [i for i in range(n) if i != 1]
    assert outcome.duplicates == 1 and outcome.last_seq == n - 1
    with db.session() as s:
        assert sorted(r.seq for r in s.query(EventRow).filter_by(run_id=run_id)) == list(range(n))
    loss = query_series(db, run_id, ["loss"], max_points=10_000, start=0, end=n)["loss"]
    assert loss.steps == [i for i in range(n) if i != 1], "points of the new events, each once"
    again = ingest_and_publish(db=db, hub=LiveHub(), run_id=run_id, events=[json.dumps(e) for e in events])
    assert again.accepted == [] and again.duplicates == n
    db.dispose()
