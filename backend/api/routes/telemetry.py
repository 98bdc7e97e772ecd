"""``GET /metrics``: the service's numbers for Prometheus (work in :mod:`backend.services.telemetry`).

Outside ``/api`` where scrapers look for it, behind the same bearer tokens as the API when tokens
are set (Prometheus sends one with ``authorization: {credentials: ...}``; docs/deploy.md).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from backend.api.deps import DbDep, HubDep, RedisDep, SettingsDep
from backend.services.telemetry import ServiceCollector, exposition

router = APIRouter(tags=["meta"])


@router.get("/metrics", response_class=Response, summary="Prometheus metrics (text exposition format)",
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}})
async def prometheus_metrics(settings: SettingsDep, db: DbDep, hub: HubDep, redis: RedisDep) -> Response:
    collector = ServiceCollector(settings=settings, db=db, hub=hub, redis=redis)
    body = await asyncio.to_thread(exposition, collector)  # SQL and Redis calls: off the event loop
    return Response(body, media_type=CONTENT_TYPE_LATEST)
