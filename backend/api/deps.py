"""Request dependencies: the app's services, the DB, auth, and the one run-exists check."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, WebSocket, status

from backend.core.config import Settings
from backend.core.db import Database
from backend.models import Run
from backend.services.live import LiveHub
from backend.services.runs import Executor, get_run


@dataclass
class Services:
    """Everything a route may use, built once by ``create_app``."""

    settings: Settings
    db: Database
    hub: LiveHub
    executor: Executor
    redis: Any = None  # redis.Redis in Celery mode


def get_services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(get_services)]


def token_ok(settings: Settings, presented: str | None) -> bool:
    """Constant-time comparison against every configured token (no early exit)."""
    tokens = settings.tokens
    if not tokens:
        return True
    if not presented:
        return False
    ok = False
    for t in tokens:
        ok |= hmac.compare_digest(presented.encode(), t.encode())
    return ok


def bearer(header: str | None) -> str | None:
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None


def require_token(request: Request) -> None:
    settings: Settings = request.app.state.services.settings
    if not token_ok(settings, bearer(request.headers.get("authorization"))):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or invalid bearer token",
                            headers={"WWW-Authenticate": "Bearer"})


def ws_token_ok(ws: WebSocket) -> bool:
    settings: Settings = ws.app.state.services.settings
    presented = bearer(ws.headers.get("authorization")) or ws.query_params.get("token")
    return token_ok(settings, presented)


def existing_run(run_id: str, services: ServicesDep) -> Run:
    """404 for an unknown run id — the single not-found check every run route shares."""
    try:
        return get_run(db=services.db, run_id=run_id)
    except LookupError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"run {run_id!r} not found") from None


RunDep = Annotated[Run, Depends(existing_run)]
