"""WebSocket routes: one run's events (replay from a cursor, then live) and run status changes.

Exactly-once with a cursor: the handler subscribes to the live hub *before* it reads the DB, sends
the stored events with ``seq > cursor``, then forwards live events, dropping any it already sent
and filling any gap from the DB. Events reach the hub only after they are committed, so the DB
read and the live stream overlap instead of leaving a hole.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect, status
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from backend.api.deps import Services, ws_token_ok
from backend.models import EventRow, Run
from backend.services.live import LAGGED

router = APIRouter(tags=["live"])
REPLAY_PAGE = 5000


def _read_after(services: Services, run_id: str, after: int, upto: int | None = None) -> list[dict[str, Any]]:
    with services.db.session() as s:
        stmt = select(EventRow.payload).where(EventRow.run_id == run_id, EventRow.seq > after)
        if upto is not None:
            stmt = stmt.where(EventRow.seq < upto)
        return list(s.scalars(stmt.order_by(EventRow.seq).limit(REPLAY_PAGE)))


def _run_status(services: Services, run_id: str) -> str | None:
    with services.db.session() as s:
        run = s.get(Run, run_id)
        return None if run is None else run.status


async def _until_disconnect(ws: WebSocket) -> None:
    """Completes when the client disconnects (clients send nothing else we need)."""
    try:
        while (await ws.receive())["type"] != "websocket.disconnect":
            pass
    except (WebSocketDisconnect, RuntimeError):
        pass


async def _next_batch(queue: asyncio.Queue[list[Any]], gone: asyncio.Future[Any], timeout: float) -> list[Any] | None:
    """The next live batch; [] after ``timeout`` (send a heartbeat); None once the client is gone."""
    if gone.done():
        return None
    get: asyncio.Future[Any] = asyncio.ensure_future(queue.get())
    done, _ = await asyncio.wait([get, gone], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    if get in done:
        return get.result()
    get.cancel()
    return None if gone in done else []


@router.websocket("/api/runs/{run_id}/live")
async def run_live(ws: WebSocket, run_id: str, cursor: int = -1) -> None:
    """Sends each event as JSON (``seq`` is the cursor), ``{"type": "heartbeat"}`` when idle, and
    ``{"type": "lagged"}`` before closing a client that fell too far behind (reconnect with cursor)."""
    services: Services = ws.app.state.services
    if not ws_token_ok(ws):
        await ws.close(code=status.WS_1008_POLICY_VIOLATION, reason="missing or invalid token")
        return
    if await run_in_threadpool(_run_status, services, run_id) is None:
        await ws.close(code=4404, reason="run not found")
        return
    await ws.accept()
    hub = services.hub
    sub = hub.subscribe_run(run_id)
    gone = asyncio.ensure_future(_until_disconnect(ws))
    last = cursor
    try:
        while True:  # replay everything stored after the cursor, page by page
            page = await run_in_threadpool(_read_after, services, run_id, last)
            if page:
                for ev in page:
                    await ws.send_json(ev)
                last = page[-1]["seq"]
            if len(page) < REPLAY_PAGE:
                break
        while True:
            batch = await _next_batch(sub.queue, gone, services.settings.ws_heartbeat_s)
            if batch is None:  # the client went away
                return
            if not batch:
                await ws.send_json({"type": "heartbeat", "ts": time.time(), "cursor": last})
                continue
            sub.pending -= len(batch)
            if batch and batch[0][0] == LAGGED:
                await ws.send_json({"type": "lagged", "cursor": last})
                await ws.close(code=4000, reason="lagged: reconnect with cursor")
                return
            for seq, text in batch:
                if seq <= last:
                    continue  # already sent during the replay
                if seq > last + 1:  # a gap (events committed out of order): fill it from the DB
                    while last + 1 < seq:
                        gap = await run_in_threadpool(_read_after, services, run_id, last, seq)
                        if not gap:
                            break
                        for g in gap:
                            await ws.send_json(g)
                        last = gap[-1]["seq"]
                await ws.send_text(text)
                last = seq
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        gone.cancel()
        hub.unsubscribe_run(run_id, sub)


@router.websocket("/api/live")
async def runs_live(ws: WebSocket) -> None:
    """Run status changes: ``{"type": "run_status", "run": RunPublic}``; heartbeats when idle."""
    services: Services = ws.app.state.services
    if not ws_token_ok(ws):
        await ws.close(code=status.WS_1008_POLICY_VIOLATION, reason="missing or invalid token")
        return
    await ws.accept()
    sub = services.hub.subscribe_status()
    gone = asyncio.ensure_future(_until_disconnect(ws))
    try:
        while True:
            batch = await _next_batch(sub.queue, gone, services.settings.ws_heartbeat_s)
            if batch is None:
                return
            if not batch:
                await ws.send_json({"type": "heartbeat", "ts": time.time()})
                continue
            for msg in batch:
                await ws.send_json(msg)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        gone.cancel()
        services.hub.unsubscribe_status(sub)

