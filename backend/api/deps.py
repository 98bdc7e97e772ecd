"""Request dependencies, one typed ``Annotated`` alias each: the settings, the database, the live
hub, the executor and Redis that ``create_app`` puts on ``app.state``; auth; and the one
run-exists check. They take an ``HTTPConnection``, so WebSocket routes use them too."""

from __future__ import annotations

import base64
import hmac
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Request, WebSocket, status
from starlette.requests import HTTPConnection

from backend.api.security import WS_POLICY_VIOLATION, WS_PROTOCOL, WS_TOKEN_PROTOCOL_PREFIX
from backend.core.config import Settings
from backend.core.db import Database
from backend.models import Run
from backend.services.live import LiveHub
from backend.services.runs import Executor, get_run
from rlhfkit.events import NO_NUL_PATTERN


def get_settings(conn: HTTPConnection) -> Settings:
    return conn.app.state.settings  # type: ignore[no-any-return]


def get_db(conn: HTTPConnection) -> Database:
    return conn.app.state.db  # type: ignore[no-any-return]


def get_hub(conn: HTTPConnection) -> LiveHub:
    return conn.app.state.hub  # type: ignore[no-any-return]


def get_executor(conn: HTTPConnection) -> Executor:
    return conn.app.state.executor  # type: ignore[no-any-return]


def get_redis(conn: HTTPConnection) -> Any:
    """``redis.Redis`` in Celery mode; None in embedded mode."""
    return conn.app.state.redis


SettingsDep = Annotated[Settings, Depends(get_settings)]
DbDep = Annotated[Database, Depends(get_db)]
HubDep = Annotated[LiveHub, Depends(get_hub)]
ExecutorDep = Annotated[Executor, Depends(get_executor)]
RedisDep = Annotated[Any, Depends(get_redis)]


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
    """The token of an ``Authorization: Bearer <token>`` header. The scheme is matched case-
    insensitively (``bearer`` works too), as RFC 7235 says auth schemes are."""
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None


def require_token(request: Request, settings: SettingsDep) -> None:
    if not token_ok(settings, bearer(request.headers.get("authorization"))):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or invalid bearer token",
                            headers={"WWW-Authenticate": "Bearer"})


def _protocol_token(ws: WebSocket) -> str | None:
    for proto in ws.scope.get("subprotocols", ()):
        if proto.startswith(WS_TOKEN_PROTOCOL_PREFIX):
            encoded = proto[len(WS_TOKEN_PROTOCOL_PREFIX):]
            try:
                return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
            except (ValueError, UnicodeDecodeError):
                return None
    return None


def ws_token(ws: WebSocket) -> str | None:
    """The token a WebSocket presents: ``Authorization`` header, the UI's token subprotocol, or
    ``?token=`` (kept for clients that can do neither; redacted from the access log)."""
    return bearer(ws.headers.get("authorization")) or _protocol_token(ws) or ws.query_params.get("token")


async def ws_accept(ws: WebSocket) -> None:
    """Accept, echoing the ``rlhfkit`` subprotocol when the client offered it (a browser that
    offered subprotocols drops a connection accepted without one)."""
    await ws.accept(subprotocol=WS_PROTOCOL if WS_PROTOCOL in ws.scope.get("subprotocols", ()) else None)


async def ws_close(ws: WebSocket, code: int, reason: str) -> None:
    """Accept-then-close with ``code``: the client sees the documented code (1008, 4404), not the
    HTTP 403 a close before the accept turns into."""
    await ws_accept(ws)
    await ws.close(code=code, reason=reason)


async def ws_admit(ws: WebSocket) -> bool:
    """Token check for a WebSocket: False (and closed with 1008) when the token is missing or wrong."""
    if token_ok(get_settings(ws), ws_token(ws)):
        return True
    await ws_close(ws, WS_POLICY_VIOLATION, "missing or invalid token")
    return False


def existing_run(run_id: Annotated[str, Path(pattern=NO_NUL_PATTERN)], db: DbDep) -> Run:
    """404 for an unknown run id — the single not-found check every run route shares."""
    try:
        return get_run(db=db, run_id=run_id)
    except LookupError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"run {run_id!r} not found") from None


RunDep = Annotated[Run, Depends(existing_run)]
