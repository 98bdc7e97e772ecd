"""In-process fan-out of persisted events and run status changes to WebSocket clients.

Producers (the ingest paths) publish only after the DB commit, from any thread; each subscriber
owns a bounded asyncio queue. A subscriber that falls too far behind is cut off with a ``lagged``
message instead of slowing everyone down; it reconnects with its cursor and replays from the DB,
so it still sees every event exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

QUEUE_LIMIT = 20_000  # events buffered per subscriber before it is told to reconnect
LAGGED = -2  # seq of the sentinel that tells a subscriber it was cut off

# Live items are (seq, JSON text): serialised once by the ingest path, sent as-is to every viewer.
Item = tuple[int, str]


@dataclass(eq=False)
class Subscriber:
    queue: asyncio.Queue[list[Any] | None] = field(default_factory=lambda: asyncio.Queue())  # None: client gone
    pending: int = 0
    lagged: bool = False


class LiveHub:
    """Run id -> subscribers; plus subscribers to every run's status changes."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._runs: defaultdict[str, set[Subscriber]] = defaultdict(set)
        self._status: set[Subscriber] = set()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()

    # ---- subscriptions (called on the event loop)
    def subscribe_run(self, run_id: str) -> Subscriber:
        sub = Subscriber()
        self._runs[run_id].add(sub)
        return sub

    def unsubscribe_run(self, run_id: str, sub: Subscriber) -> None:
        subs = self._runs.get(run_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                self._runs.pop(run_id, None)

    def subscribe_status(self) -> Subscriber:
        sub = Subscriber()
        self._status.add(sub)
        return sub

    def unsubscribe_status(self, sub: Subscriber) -> None:
        self._status.discard(sub)

    def viewer_counts(self) -> dict[str, int]:
        """Open subscriptions: ``run`` (one run's live events) and ``status`` (the runs list)."""
        return {"run": sum(len(s) for s in list(self._runs.values())), "status": len(self._status)}

    # ---- publishing (any thread)
    def publish_events(self, run_id: str, events: list[Item]) -> None:
        if events:
            self._call(self._deliver_events, run_id, events)

    def publish_status(self, run: dict[str, Any]) -> None:
        self._call(self._deliver_status, run)

    def _call(self, fn: Any, *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            with contextlib.suppress(RuntimeError):  # loop shutting down
                loop.call_soon_threadsafe(fn, *args)

    def _deliver_events(self, run_id: str, events: list[Item]) -> None:
        for sub in list(self._runs.get(run_id, ())):
            if sub.lagged:
                continue
            if sub.pending + len(events) > QUEUE_LIMIT:
                sub.lagged = True
                sub.queue.put_nowait([(LAGGED, "")])
                continue
            sub.pending += len(events)
            sub.queue.put_nowait(events)

    def _deliver_status(self, run: dict[str, Any]) -> None:
        msg = [{"type": "run_status", "run": run}]
        for sub in list(self._status):
            if sub.queue.qsize() < 1000:
                sub.queue.put_nowait(msg)
