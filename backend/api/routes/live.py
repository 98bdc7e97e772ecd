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

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.concurrency import run_in_threadpool

from backend.api.deps import DbDep, HubDep, SettingsDep, ws_accept, ws_admit, ws_close
from backend.api.security import WS_NOT_FOUND
from backend.services.live import LAGGED
from backend.services.run_records import events_after, run_status
from rlhfkit.events import SEQ_MAX

router = APIRouter(tags=["live"])
REPLAY_PAGE = 5000


async def _until_disconnect(ws: WebSocket) -> None:
    """Completes when the client disconnects (clients send nothing else we need)."""
    try:
        while (await ws.receive())["type"] != "websocket.disconnect":
            pass
    except (WebSocketDisconnect, RuntimeError):
        pass


class _Wakeups:
    """What, besides live batches, wakes a viewer's handler: ``None`` in its queue once the client
    disconnected, ``[]`` (send a heartbeat) after ``heartbeat_s`` without a batch. The handler just
    awaits ``queue.get()`` — no task and ``asyncio.wait`` per batch and viewer, which with 100
    viewers of one run was a visible share of the fan-out's CPU."""

    def __init__(self, ws: WebSocket, queue: asyncio.Queue[list[Any] | None], heartbeat_s: float) -> None:
        self.queue = queue
        self.heartbeat_s = heartbeat_s
        self.active = time.monotonic()  # the handler sets it after each batch
        self.gone = False
        self._tasks = [asyncio.ensure_future(self._disconnect(ws)), asyncio.ensure_future(self._heartbeats())]

    async def _disconnect(self, ws: WebSocket) -> None:
        await _until_disconnect(ws)
        self.gone = True
        self.queue.put_nowait(None)

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(max(0.0, self.active + self.heartbeat_s - time.monotonic()))
            if time.monotonic() - self.active >= self.heartbeat_s:
                self.active = time.monotonic()
                self.queue.put_nowait([])

    def close(self) -> None:
        for t in self._tasks:
            t.cancel()


@router.websocket("/api/runs/{run_id}/live")
async def run_live(ws: WebSocket, run_id: str, db: DbDep, hub: HubDep, settings: SettingsDep,
                   cursor: int = -1) -> None:
    """Sends each event as JSON (``seq`` is the cursor), ``{"type": "heartbeat"}`` when idle, and
    ``{"type": "lagged"}`` before closing a client that fell too far behind (reconnect with cursor)."""
    if not await ws_admit(ws):
        return
    if await run_in_threadpool(run_status, db=db, run_id=run_id) is None:
        await ws_close(ws, WS_NOT_FOUND, "run not found")
        return
    await ws_accept(ws)
    sub = hub.subscribe_run(run_id)
    wake = _Wakeups(ws, sub.queue, settings.ws_heartbeat_s)
    last = max(-1, min(cursor, SEQ_MAX))  # past every seq: only what arrives from now on
    try:
        while True:  # replay everything stored after the cursor, page by page
            page = await run_in_threadpool(events_after, db=db, run_id=run_id, after=last, limit=REPLAY_PAGE)
            if page:
                for ev in page:
                    await ws.send_json(ev)
                last = page[-1]["seq"]
            if len(page) < REPLAY_PAGE:
                break
        while True:
            batch = await sub.queue.get()
            if batch is None or wake.gone:  # the client went away
                return
            if not batch:
                await ws.send_json({"type": "heartbeat", "ts": time.time(), "cursor": last})
                continue
            wake.active = time.monotonic()
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
                        gap = await run_in_threadpool(events_after, db=db, run_id=run_id, after=last, before=seq,
                                                      limit=REPLAY_PAGE)
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
        wake.close()
        hub.unsubscribe_run(run_id, sub)


@router.websocket("/api/live")
async def runs_live(ws: WebSocket, hub: HubDep, settings: SettingsDep) -> None:
    """Run status changes: ``{"type": "run_status", "run": RunPublic}``; heartbeats when idle."""
    if not await ws_admit(ws):
        return
    sub = hub.subscribe_status()  # before the accept: a client that sees the socket open misses no change
    wake: _Wakeups | None = None
    try:
        await ws_accept(ws)
        wake = _Wakeups(ws, sub.queue, settings.ws_heartbeat_s)
        while True:
            batch = await sub.queue.get()
            if batch is None or wake.gone:
                return
            if not batch:
                await ws.send_json({"type": "heartbeat", "ts": time.time()})
                continue
            wake.active = time.monotonic()
            for msg in batch:
                await ws.send_json(msg)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        if wake is not None:
            wake.close()
        hub.unsubscribe_status(sub)

