"""The FastAPI application: ``create_app(settings)`` wires settings, DB, live hub, executor and the
background threads (Redis consumer, heartbeat reaper) together; ``app`` is the default instance
``uvicorn backend.main:app`` serves (built on first access, not at import).

Modes: with ``REDIS_URL`` runs go to Celery workers and come back over Redis Streams; without it
(embedded mode) they run in local processes and their events go straight into the same ingest path.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.api.deps import require_token
from backend.api.routes import export, live, meta, mlflow, runs, telemetry
from backend.api.security import RequestGuard, document_guards, install_log_redaction
from backend.core.config import Settings
from backend.core.db import Database, run_migrations
from backend.services.artifacts import ArtifactNotFound
from backend.services.event_validation import IngestError
from backend.services.live import LiveHub
from backend.services.mlflow import MlflowError
from backend.services.runs import Conflict, RunNotFound
from rlhfkit.config import ConfigError

_log = logging.getLogger(__name__)
DEFAULT_STATIC = Path(__file__).resolve().parent / "static"

# uvicorn options `rlhfkit serve` runs with. No permessage-deflate on WebSockets: every viewer's
# connection compresses every frame with its own zlib context, so a live event costs N compressions
# for N viewers — measured as the largest single cost of the fan-out with 100 viewers (~1 KB
# metrics frames, which cost little bandwidth uncompressed).
SERVER_OPTIONS: dict[str, Any] = {"ws_ping_interval": 20, "ws_ping_timeout": 20, "ws_per_message_deflate": False}


class BodyLimit:
    """413 for request bodies over ``limit`` bytes, by Content-Length or while streaming."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for k, v in scope.get("headers", ()):
            if k == b"content-length":
                try:
                    too_big = int(v) > self.limit
                except ValueError:
                    too_big = False
                if too_big:
                    await self._reject(send)
                    return
        seen = 0
        started = False

        async def limited() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return msg

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited, tracking_send)
        except _TooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        resp = JSONResponse({"detail": f"request body larger than {self.limit} bytes"}, status_code=413)
        await send({"type": "http.response.start", "status": 413, "headers": resp.raw_headers})
        await send({"type": "http.response.body", "body": resp.body})


class _TooLarge(BaseException):
    """Raised from ``receive`` past the limit. A BaseException on purpose: FastAPI turns any
    ``Exception`` raised while it reads the body into a 400, and this must reach ``BodyLimit``."""


def _config_error_detail(exc: ConfigError, prefix: tuple[str, ...] = ("body", "config")) -> list[dict[str, Any]]:
    out = []
    for e in exc.errors:
        field = str(e.get("field", ""))
        if field == "preset":
            loc: list[Any] = ["body", "preset"]
        elif field in ("(root)", ""):
            loc = list(prefix)
        else:
            loc = [*prefix, *field.split(".")]
        out.append({"loc": loc, "msg": e.get("message", ""), "type": e.get("type", "value_error")})
    return out


def _executor(settings: Settings, db: Database, hub: LiveHub) -> tuple[Any, Any]:
    """The executor for the mode, and the Redis client in Celery mode (None in embedded mode)."""
    if settings.embedded:
        from backend.services.embedded import EmbeddedExecutor

        return EmbeddedExecutor(settings=settings, db=db, hub=hub), None
    import redis

    from backend.services.celery_exec import CeleryExecutor

    redis_client = redis.Redis.from_url(settings.redis_url or "", decode_responses=False)
    return CeleryExecutor(settings=settings, db=db, hub=hub, redis_client=redis_client), redis_client


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    db = Database(settings.database_url)
    hub = LiveHub()
    executor, redis_client = _executor(settings, db, hub)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        install_log_redaction()  # again: a logging set-up run after create_app may have replaced loggers
        if not settings.tokens and settings.insecure:
            _log.warning("no RLHFKIT_API_TOKENS and RLHFKIT_INSECURE: anyone who can reach this server can submit runs")
        elif not settings.tokens:
            _log.info("no RLHFKIT_API_TOKENS: connections on non-loopback addresses are refused")
        hub.bind(asyncio.get_running_loop())
        if settings.migrate:
            await asyncio.to_thread(run_migrations, settings.database_url)
        settings.artifacts_dir.mkdir(parents=True, exist_ok=True)
        background: list[Any] = [executor]
        if not settings.embedded:
            from backend.services.consumer import StreamConsumer
            from backend.services.reaper import HeartbeatReaper

            consumer = StreamConsumer(settings=settings, db=db, hub=hub, redis_client=redis_client)
            app.state.stream_consumer = consumer  # /readyz asks it whether it is consuming
            background += [consumer,
                           HeartbeatReaper(settings=settings, db=db, hub=hub, redis_client=redis_client)]
        for b in background:
            b.start()
        if settings.warm_estimator:  # the first memory estimate would otherwise import torch + transformers
            from backend.services.suggestions import warm_estimator

            threading.Thread(target=warm_estimator, name="warm-estimator", daemon=True).start()
        try:
            yield
        finally:
            for b in reversed(background):
                b.stop()
            db.dispose()

    app = FastAPI(
        title="RLHF Systems Kit",
        version="0.1.0",
        description="Run registry, live metrics and ingest for PPO-for-RLHF runs. "
                    "WebSockets: /api/runs/{id}/live?cursor=N (events after seq N, then live) and /api/live.",
        lifespan=lifespan,
        docs_url=None,  # served by _mount_docs from packaged assets, not a CDN
        redoc_url=None,
    )
    # what the typed dependencies (backend.api.deps: SettingsDep, DbDep, HubDep, ...) hand to routes
    app.state.settings, app.state.db, app.state.hub = settings, db, hub
    app.state.executor, app.state.redis = executor, redis_client
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(RequestGuard, settings=settings)  # outermost: loopback, Host, Origin, JSON bodies
    install_log_redaction()

    # Open without a token: /healthz, /readyz, /docs, /redoc, /openapi.json and the static UI (which
    # must load to show its sign-in form). Everything under /api needs one (docs/api.md, "Auth").
    auth = [Depends(require_token)]
    app.include_router(meta.health_router)
    app.include_router(runs.router, dependencies=auth)
    app.include_router(export.router, dependencies=auth)
    app.include_router(meta.router, dependencies=auth)
    app.include_router(telemetry.router, dependencies=auth)  # GET /metrics for Prometheus
    app.include_router(mlflow.router, dependencies=auth)  # MLflow clients send the token as MLFLOW_TRACKING_TOKEN
    app.include_router(live.router)  # WebSockets check the token themselves (deps.ws_admit)

    @app.exception_handler(ConfigError)
    async def _config_error(_: Request, exc: ConfigError) -> JSONResponse:
        return JSONResponse({"detail": _config_error_detail(exc)}, status_code=422)

    @app.exception_handler(IngestError)
    async def _ingest_error(_: Request, exc: IngestError) -> JSONResponse:
        return JSONResponse({"detail": exc.errors}, status_code=422)

    @app.exception_handler(RunNotFound)
    async def _not_found(_: Request, exc: RunNotFound) -> JSONResponse:
        return JSONResponse({"detail": f"run {exc.args[0]!r} not found"}, status_code=404)

    @app.exception_handler(ArtifactNotFound)
    async def _no_artifact(_: Request, exc: ArtifactNotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(MlflowError)
    async def _mlflow_error(_: Request, exc: MlflowError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.http_status)

    @app.exception_handler(Conflict)
    async def _conflict(_: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400 and isinstance(exc.__cause__, RecursionError):  # FastAPI's "error parsing the body"
            return JSONResponse({"detail": [{"loc": ["body"], "msg": "JSON nested too deeply to parse",
                                             "type": "json_invalid"}]}, status_code=422)
        if exc.status_code == 405:  # every method served at this path, not only the first route's
            allow = allowed_methods(request.app, request.scope)
            return JSONResponse({"detail": exc.detail}, status_code=405, headers={"Allow": ", ".join(allow)})
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    _mount_docs(app)
    _mount_spa(app, settings.static_dir or DEFAULT_STATIC)
    _document_websockets(app)
    return app


def contract_schemas() -> dict[str, Any]:
    """The vocabularies the browser shares with Python, as named OpenAPI components.

    ``MetricName`` lists :data:`rlhfkit.metrics.METRICS` and carries the :class:`~rlhfkit.metrics.M`
    constants (``x-constants``); ``RunStatus`` and ``RunSource`` are :mod:`rlhfkit.events`'
    vocabularies. ``npm run generate`` turns them into TypeScript types and constants
    (``frontend/src/client/contract.ts``), so a rename in Python is a compile error in the UI."""
    from rlhfkit import events
    from rlhfkit.metrics import METRICS, M

    constants = {k: v for k, v in vars(M).items() if k.isupper() and isinstance(v, str)}
    return {
        "MetricName": {"type": "string", "enum": list(METRICS), "x-constants": constants,
                       "description": "A canonical metric name (rlhfkit/metrics.py)"},
        "RunStatus": {"type": "string", "enum": list(events.RUN_STATUSES), "x-active": list(events.ACTIVE_STATUSES),
                      "x-terminal": list(events.TERMINAL_STATUSES),
                      "x-status-of-terminal-event": dict(events.STATUS_OF_TERMINAL_EVENT)},
        "RunSource": {"type": "string", "enum": list(events.RUN_SOURCES)},
    }


def _document_websockets(app: FastAPI) -> None:
    """OpenAPI has no WebSockets: add their message schemas as components so the generated
    TypeScript client has types for them (``LiveEvent``, ``LiveStatusMessage``, ...), and the
    shared vocabularies (:func:`contract_schemas`)."""
    from pydantic import TypeAdapter

    from backend.schemas import HeartbeatMessage, LaggedMessage, LiveStatusMessage
    from rlhfkit.events import Event

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        document_guards(schema)
        _document_errors(schema)
        _document_links(schema)
        comps = schema.setdefault("components", {}).setdefault("schemas", {})
        ref = "#/components/schemas/{model}"
        event_schema = TypeAdapter(Event).json_schema(ref_template=ref, mode="serialization")
        defs = event_schema.pop("$defs", {})
        for js in defs.values():  # every field is in the JSON the socket sends (defaults included)
            if "properties" in js:
                js["required"] = list(js["properties"])
        # the events a client POSTs (defaults may be left out) keep their own names: <Name>Input
        _rename_components(schema, {name: f"{name}Input" for name in defs if name in comps})
        for name in defs:  # the union is told apart by "type": a posted event must name it
            posted = comps.get(f"{name}Input", {})
            if "type" in posted.get("properties", {}):
                posted["required"] = ["type", *[r for r in posted.get("required", []) if r != "type"]]
        comps.update(defs)
        comps["LiveEvent"] = event_schema
        for model in (LiveStatusMessage, HeartbeatMessage, LaggedMessage):
            js = model.model_json_schema(ref_template=ref)
            comps.update(js.pop("$defs", {}))
            comps[model.__name__] = js
        comps.update(contract_schemas())
        _describe_free_json(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


_ERROR = {"application/json": {"schema": {"type": "object", "required": ["detail"]}}}


# MLflow's protocol: {"error_code", "message"}, 404 for RESOURCE_DOES_NOT_EXIST, 400 for
# RESOURCE_ALREADY_EXISTS and INVALID_PARAMETER_VALUE (backend.services.mlflow_parts.MlflowError)
_MLFLOW_ERROR = {"type": "object", "required": ["error_code", "message"],
                 "properties": {"error_code": {"type": "string"}, "message": {"type": "string"}}}
_MLFLOW_400 = {"application/json": {"schema": {"anyOf": [_MLFLOW_ERROR, _ERROR["application/json"]["schema"]]}}}


def _document_errors(schema: dict[str, Any]) -> None:
    """The refusals every operation of a kind shares: 404 for an unknown run (every operation with a
    ``{run_id}``, and compare), 400 for a body that is not JSON text at all (not UTF-8, say), 413
    for a body over the size limit, and the MLflow door's own error answers."""
    for path, ops in schema.get("paths", {}).items():
        for op in ops.values():
            responses = op.setdefault("responses", {})
            if path.startswith("/api/2.0/mlflow/"):
                responses.setdefault("400", {"description": "MLflow INVALID_PARAMETER_VALUE or RESOURCE_ALREADY_EXISTS "
                                                            "(or a body that is not JSON text)", "content": _MLFLOW_400})
                responses.setdefault("404", {"description": "MLflow RESOURCE_DOES_NOT_EXIST",
                                             "content": {"application/json": {"schema": _MLFLOW_ERROR}}})
            if "requestBody" in op:
                responses.setdefault("413", {"description": "The body is larger than the server takes "
                                                            "(RLHFKIT_MAX_BODY_BYTES)", "content": _ERROR})
            if "{run_id}" in path or path == "/api/runs/compare":
                responses.setdefault("404", {"description": "No run with this id", "content": _ERROR})
            if "requestBody" in op:
                responses.setdefault("400", {"description": "The body could not be read as JSON text",
                                             "content": _ERROR})


# OpenAPI links: which operations a response's id is good for, whatever the resource's state (a
# client, or schemathesis's stateful phase, may follow them). A run's id is good for every
# /api/runs/{run_id} operation except /profile and /origin (a run has those only when it was
# profiled / launched from a suggestion: 404 otherwise), artifacts/{name} (the name comes from the
# list) and, for a run that is not native, /rerun (409). Ids are not interchangeable between the
# registry and the MLflow door: an MLflow run id is linked to MLflow operations only.
_ANY_RUN = ("get /api/runs/{run_id}", "delete /api/runs/{run_id}", "post /api/runs/{run_id}/cancel",
            "post /api/runs/{run_id}/events", "get /api/runs/{run_id}/events", "get /api/runs/{run_id}/metrics",
            "get /api/runs/{run_id}/timings", "get /api/runs/{run_id}/memory", "get /api/runs/{run_id}/alerts",
            "get /api/runs/{run_id}/samples", "get /api/runs/{run_id}/suggestions",
            "get /api/runs/{run_id}/artifacts", "get /api/runs/{run_id}/memory/estimate",
            "get /api/runs/{run_id}/export", "get /api/runs/{run_id}/report")
_NATIVE_RUN = (*_ANY_RUN, "post /api/runs/{run_id}/rerun")
_MLFLOW_RUN = ("get /api/2.0/mlflow/runs/get query.run_id", "post /api/2.0/mlflow/runs/update body.run_id",
               "post /api/2.0/mlflow/runs/log-metric body.run_id", "post /api/2.0/mlflow/runs/log-batch body.run_id",
               "post /api/2.0/mlflow/runs/log-parameter body.run_id", "post /api/2.0/mlflow/runs/set-tag body.run_id")
# producer "method path status" -> (where its id is, "method path parameter" it is good for)
_LINKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "post /api/runs 201": ("$response.body#/id", tuple(f"{t} path.run_id" for t in _NATIVE_RUN)),
    "post /api/runs/{run_id}/rerun 201": ("$response.body#/id", tuple(f"{t} path.run_id" for t in _NATIVE_RUN)),
    "post /api/runs/external 201": ("$response.body#/id", tuple(f"{t} path.run_id" for t in _ANY_RUN)),
    "get /api/runs/{run_id} 200": ("$response.body#/id", tuple(f"{t} path.run_id" for t in _ANY_RUN)),
    "post /api/2.0/mlflow/experiments/create 200": ("$response.body#/experiment_id",
                                                    ("get /api/2.0/mlflow/experiments/get query.experiment_id",
                                                     "post /api/2.0/mlflow/runs/create body.experiment_id")),
    "post /api/2.0/mlflow/runs/create 200": ("$response.body#/run/info/run_id", _MLFLOW_RUN),
}


def _document_links(schema: dict[str, Any]) -> None:
    """Write :data:`_LINKS` into the document (``responses.<status>.links``); a body field is set by
    the link's ``requestBody`` (the rest of the body is the client's)."""
    paths = schema.get("paths", {})
    for producer, (value, targets) in _LINKS.items():
        method, path, status = producer.split()
        links = paths[path][method]["responses"][status].setdefault("links", {})
        for target in targets:
            t_method, t_path, param = target.split()
            assert t_method in paths[t_path], target  # a renamed route must not leave a dangling link
            pointer = t_path.replace("~", "~0").replace("/", "~1")
            name = f"{t_method}{''.join(w.title() for w in re.split(r'[^A-Za-z0-9]+', t_path.removeprefix('/api')))}"
            link: dict[str, Any] = {"operationRef": f"#/paths/{pointer}/{t_method}"}
            where, field = param.split(".")
            if where == "body":
                link["requestBody"] = {field: value}
            else:
                link["parameters"] = {param: value}
            links[name] = link


def _rename_components(schema: dict[str, Any], names: dict[str, str]) -> None:
    """Rename component schemas and every reference to them."""
    comps = schema["components"]["schemas"]
    for old, new in names.items():
        comps[new] = comps.pop(old)
    refs = {f"#/components/schemas/{old}": f"#/components/schemas/{new}" for old, new in names.items()}

    def rename(node: dict[str, Any]) -> None:
        if node.get("$ref") in refs:
            node["$ref"] = refs[node["$ref"]]

    _walk_json(schema, rename)


def _walk_json(node: Any, visit: Callable[[dict[str, Any]], None]) -> None:
    """Call ``visit`` on every object of a JSON document, parents before their children (``visit``
    may change the object it is given; its children are walked as they are afterwards)."""
    if isinstance(node, dict):
        visit(node)
        for v in node.values():
            _walk_json(v, visit)
    elif isinstance(node, list):
        for v in node:
            _walk_json(v, visit)


def _describe_free_json(schema: dict[str, Any]) -> None:
    """Free-form JSON fields (``rlhfkit.events.JsonDict``: configs, summaries, artifact meta) become
    objects of ``JsonValue``: any JSON without NUL characters in keys or strings. Metric values may
    be null on the wire (NaN and inf: JSON has no such numbers)."""
    from rlhfkit.events import JSON_MAX_ARRAY_NESTING, NO_NUL_PATTERN

    comps = schema.setdefault("components", {}).setdefault("schemas", {})
    ref = {"$ref": "#/components/schemas/JsonValue"}
    scalars: list[dict[str, Any]] = [{"type": "null"}, {"type": "boolean"}, {"type": "number"},
                                     {"type": "string", "pattern": NO_NUL_PATTERN}]
    obj = {"$ref": "#/components/schemas/JsonObject"}
    # recursion only through objects: TypeScript cannot name an array type inside its own definition,
    # so arrays in arrays are spelled out level by level, as deep as the server takes them
    array: dict[str, Any] = {"type": "array", "items": {"anyOf": [*scalars, obj]}}
    for _ in range(JSON_MAX_ARRAY_NESTING - 1):
        array = {"type": "array", "items": {"anyOf": [*scalars, obj, array]}}
    comps["JsonValue"] = {"description": "Any JSON value without NUL characters; arrays nest in arrays at "
                                         f"most {JSON_MAX_ARRAY_NESTING} levels deep",
                          "anyOf": [*scalars, array, obj]}
    comps["JsonObject"] = {"type": "object", "propertyNames": {"pattern": NO_NUL_PATTERN}, "additionalProperties": ref}

    def free_json(node: dict[str, Any]) -> None:
        if node.pop("x-free-json", False):
            node["additionalProperties"] = ref
        # pydantic writes a pattern on dict keys as patternProperties (values of keys that
        # match); meant is: every key matches, every value is of that schema
        if list(node.get("patternProperties", {})) == [NO_NUL_PATTERN]:
            node["additionalProperties"] = node.pop("patternProperties")[NO_NUL_PATTERN]
            node["propertyNames"] = {**node.get("propertyNames", {}), "pattern": NO_NUL_PATTERN}

    _walk_json(schema, free_json)
    for name, comp in comps.items():
        values = comp.get("properties", {}).get("values") if name == "MetricsEventInput" else None
        if values is not None and isinstance(values.get("additionalProperties"), dict):
            values["additionalProperties"] = {"anyOf": [values["additionalProperties"], {"type": "null"}]}


def allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """The methods the API serves at ``scope``'s path, for a 405's ``Allow`` (Starlette names only
    those of the first route whose path matched): the operations the OpenAPI document lists for
    every path template that matches, plus HEAD where GET is served."""
    from starlette.routing import compile_path

    path = scope.get("path", "")
    matches: list[tuple[int, set[str]]] = []  # (path parameters in the template, its methods)
    for template, ops in app.openapi().get("paths", {}).items():
        regex, _, params = compile_path(template.replace("{name}", "{name:path}"))
        if regex.match(path):
            matches.append((len(params), {m.upper() for m in ops}))
    fewest = min((n for n, _ in matches), default=0)  # /api/runs/compare is compare, not a run id
    methods: set[str] = set().union(*(m for n, m in matches if n == fewest))
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


DOCS_ASSETS = "/docs-assets"


# what the docs pages may load: this server only (their pages carry inline scripts and styles; ReDoc
# starts a web worker from a blob and draws icons from data: URLs)
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'")


def _same_origin(page: Response) -> Response:
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page


def _mount_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` with their JavaScript, CSS and icon served by this server
    (FastAPI's self-hosting recipe; the files ship in the ``fastapi-offline`` wheel), so the pages
    render on a machine without internet. ReDoc's Google fonts are left out for the same reason, and a
    Content-Security-Policy keeps both pages on this server (ReDoc's bundle still names a logo on a CDN
    in its footer; the browser skips it instead of hanging on it offline)."""
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
    from fastapi.staticfiles import StaticFiles
    from fastapi_offline.core import _STATIC_PATH
    from starlette.responses import HTMLResponse

    app.mount(DOCS_ASSETS, StaticFiles(directory=_STATIC_PATH), name="docs-assets")
    oauth_redirect = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui(request: Request) -> Response:
        root = request.scope.get("root_path", "")
        return _same_origin(get_swagger_ui_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - Swagger UI",
                                   oauth2_redirect_url=f"{root}{oauth_redirect}",
                                   swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png"))

    @app.get(oauth_redirect, include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> Response:
        root = request.scope.get("root_path", "")
        return _same_origin(get_redoc_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
                              redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png", with_google_fonts=False))


def _mount_spa(app: FastAPI, static_dir: Path) -> None:
    """Serve the built SPA at / with client-route fallback to index.html (never for /api)."""
    index = static_dir / "index.html"
    root = static_dir.resolve()

    @app.get("/{path:path}", include_in_schema=False)
    def spa(path: str, request: Request) -> Response:
        if path.startswith("api/") or path == "api":
            allow = allowed_methods(app, request.scope)  # an API path without GET: 405, not 404
            if allow:
                return JSONResponse({"detail": "Method Not Allowed"}, status_code=405, headers={"Allow": ", ".join(allow)})
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        if not index.is_file():
            return JSONResponse({"detail": "UI not built (make ui); the API is under /api, docs at /docs"},
                                status_code=404)
        candidate = (root / path).resolve()
        if path and candidate.is_relative_to(root) and candidate.is_file():
            return FileResponse(candidate)
        return FileResponse(index)


_default_app: FastAPI | None = None


def __getattr__(name: str) -> Any:
    """``backend.main:app`` (what ``uvicorn backend.main:app`` serves) is built on first access, from
    the environment: importing this module builds no settings, database or executor."""
    global _default_app
    if name == "app":
        if _default_app is None:
            _default_app = create_app()
        return _default_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
