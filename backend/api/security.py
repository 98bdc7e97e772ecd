"""What a request must pass before any route sees it, and what the logs must never show.

The bearer token (``RLHFKIT_API_TOKENS``, checked in :mod:`backend.api.deps`) keeps strangers out
of a deployed server. A server *without* tokens is still reachable by every web page its user
opens, since the browser sits on the loopback interface. :class:`RequestGuard` closes those doors
for HTTP and WebSockets alike:

* **loopback only without tokens** — a connection that arrives on a non-loopback address is
  refused unless tokens are set (or ``RLHFKIT_INSECURE``). It is checked per connection against
  the socket the request came in on, so ``uvicorn backend.main:app --host 0.0.0.0`` cannot skip it
  the way it skipped the old check in ``rlhfkit serve``;
* **Host allow-list** (``RLHFKIT_ALLOWED_HOSTS``, loopback names by default) — a DNS-rebinding page
  reaches the server under the attacker's name, and is refused here;
* **same origin** — a state-changing request (anything but GET/HEAD/OPTIONS) or a WebSocket whose
  ``Origin`` is neither the page's own origin nor in ``RLHFKIT_ALLOWED_ORIGINS`` is refused;
  requests without ``Origin`` (curl, the Python client) are not browsers' cross-site requests;
* **JSON bodies** — POST/PUT/PATCH with a body must say ``application/json``: the content types a
  cross-site form may send without a CORS preflight (``text/plain``, form encodings) get 415.

WebSockets are refused the way the API documents: accepted, then closed with code 1008 (policy
violation) and the reason. Closing before the accept makes the server answer the handshake with
HTTP 403, which a browser reports as an anonymous 1006 it would retry forever.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from typing import Any
from urllib.parse import urlsplit

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from backend.core.config import Settings, is_loopback

WS_PROTOCOL = "rlhfkit"
"""The subprotocol the UI offers (and the server echoes) on every WebSocket."""
WS_TOKEN_PROTOCOL_PREFIX = "rlhfkit.bearer."
"""Browsers cannot set headers on a WebSocket: the UI sends its token as a second offered
subprotocol ``rlhfkit.bearer.<base64url(token)>``, which stays out of URLs and access logs."""
WS_POLICY_VIOLATION = 1008
WS_NOT_FOUND = 4404

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_CLOSE_REASON_BYTES = 123  # a close frame's reason is at most 123 bytes


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", ()):
        if k == name:
            return bytes(v).decode("latin-1")
    return None


def host_name(host_header: str) -> str:
    """``example.org:8000`` -> ``example.org``; ``[::1]:8000`` -> ``::1`` (lower case)."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h[1:]
    if h.count(":") == 1:
        return h.split(":", 1)[0]
    return h


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def refusal(settings: Settings, scope: Scope) -> tuple[int, str] | None:
    """(HTTP status, reason) when the request must not reach the app, else None."""
    if not settings.tokens and not settings.insecure and _arrived_off_loopback(scope):
        return 403, ("this server has no RLHFKIT_API_TOKENS and serves loopback connections only; "
                     "set RLHFKIT_API_TOKENS (or RLHFKIT_INSECURE=1)")
    host = _header(scope, b"host") or ""
    allowed = settings.hosts
    if allowed is not None and host_name(host) not in allowed:
        return 400, f"Host {host!r} is not allowed; add it to RLHFKIT_ALLOWED_HOSTS"
    websocket = scope["type"] == "websocket"
    method = str(scope.get("method", "GET")).upper()
    if websocket or method not in SAFE_METHODS:
        origin = _header(scope, b"origin")
        if origin is not None and not _same_origin(origin, host) and origin.rstrip("/").lower() not in settings.origins:
            return 403, f"cross-origin request refused (Origin {origin!r}); add it to RLHFKIT_ALLOWED_ORIGINS"
    if not websocket and method in BODY_METHODS:
        content_type = _header(scope, b"content-type")
        length = _header(scope, b"content-length")
        has_body = (length is not None and length.strip() != "0") or _header(scope, b"transfer-encoding") is not None
        if (content_type is not None or has_body) and not _is_json(content_type or ""):
            return 415, f"request bodies must be application/json (got {content_type or 'no Content-Type'})"
    return None


def _arrived_off_loopback(scope: Scope) -> bool:
    """True when the connection came in on a non-loopback address of this machine. ASGI servers
    put the socket's own address in ``scope["server"]`` (None for a Unix socket, which is local);
    a name there instead of an address (an in-process test client) says nothing about a socket."""
    server = scope.get("server")
    if not server or not server[0]:
        return False
    try:
        ipaddress.ip_address(str(server[0]).strip("[]"))
    except ValueError:
        return False
    return not is_loopback(str(server[0]))


def _same_origin(origin: str, host_header: str) -> bool:
    try:
        netloc = urlsplit(origin.strip()).netloc.lower()
    except ValueError:
        return False
    return bool(netloc) and netloc == host_header.strip().lower()


async def reject_websocket(scope: Scope, receive: Receive, send: Send, code: int, reason: str) -> None:
    """Accept the handshake (echoing our subprotocol when offered), then close with ``code``."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    accept: dict[str, Any] = {"type": "websocket.accept"}
    if WS_PROTOCOL in scope.get("subprotocols", ()):
        accept["subprotocol"] = WS_PROTOCOL
    await send(accept)
    await send({"type": "websocket.close", "code": code,
                "reason": reason.encode()[:_CLOSE_REASON_BYTES].decode(errors="ignore")})


class RequestGuard:
    """ASGI middleware applying :func:`refusal` to every HTTP request and WebSocket."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        problem = refusal(self.settings, scope)
        if problem is None:
            await self.app(scope, receive, send)
            return
        status, reason = problem
        if scope["type"] == "websocket":
            await reject_websocket(scope, receive, send, WS_POLICY_VIOLATION, reason)
            return
        await JSONResponse({"detail": reason}, status_code=status)(scope, receive, send)


_DETAIL = {"application/json": {"schema": {"type": "object", "required": ["detail"],
                                          "properties": {"detail": {"type": "string"}}}}}
_GUARD_RESPONSES = {
    "401": "missing or invalid bearer token (servers started with RLHFKIT_API_TOKENS)",
    "403": "cross-origin request, or a non-loopback connection to a server without tokens",
    "415": "a request body that is not application/json",
}


def document_guards(schema: dict[str, Any]) -> None:
    """Add the refusals above to every ``/api`` operation of an OpenAPI document: 401 everywhere,
    403 and 415 where a browser could write (POST/PUT/PATCH/DELETE; 415 only with a body)."""
    for path, ops in schema.get("paths", {}).items():
        if not path.startswith("/api"):
            continue
        for method, op in ops.items():
            codes = ["401"]
            if method.upper() not in SAFE_METHODS:
                codes.append("403")
            if method.upper() in BODY_METHODS:
                codes.append("415")
            responses = op.setdefault("responses", {})
            for code in codes:
                responses.setdefault(code, {"description": _GUARD_RESPONSES[code], "content": _DETAIL})


_TOKEN_IN_TEXT = re.compile(r"""((?:[?&;]|%3F|%26)(?:access_)?token=)[^&\s"'#]*""", re.IGNORECASE)


def redact(text: str) -> str:
    """Replace the value of every ``token=`` query parameter in ``text`` with ``[redacted]``."""
    return _TOKEN_IN_TEXT.sub(r"\1[redacted]", text)


class RedactTokens(logging.Filter):
    """Log filter: tokens in logged URLs (``/api/live?token=...``) become ``[redacted]``.

    uvicorn's access formatter unpacks ``record.args`` by position, so each string argument is
    redacted in place rather than the message being pre-formatted."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        return True


REDACTED_LOGGERS = ("uvicorn.access", "uvicorn.error", "uvicorn")


def install_log_redaction() -> None:
    """Attach :class:`RedactTokens` to uvicorn's loggers (once; safe to call again)."""
    for name in REDACTED_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())
