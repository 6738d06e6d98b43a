"""The HTTP API and dashboard: `create_app(settings=, ingest=, engine=)`.

Built once by `app.service.run` and served by uvicorn inside the service's
TaskGroup. Routers per resource live in `api/routes/`; dependencies in `api/deps.py`.
Before stopping uvicorn, call `app.state.shutdown_streams()` (or give uvicorn a
`timeout_graceful_shutdown`): open SSE streams otherwise keep the server waiting.
"""

from __future__ import annotations

import asyncio

from contextlib import asynccontextmanager
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from api.auth import TokenStore
from api.deps import AppContext, Limits
from api.routes import alerts, compliance, dashboard, deadletters, health, me, metrics, readings, rules, series
from api.routes.dashboard import STATIC
from api.metrics import ApiMetrics, MetricsMiddleware
from citywatch.schema import kinds

DESCRIPTION = """
Telemetry, alerts and 六个百分百 compliance of the urban-management bureau's monitors.

**Auth**: `Authorization: Bearer <token>`; tokens and roles come from `CW_API_TOKENS`
(`token=role[:name][:district|...],...`, roles `viewer` < `operator` < `admin`). 401 without a
valid token, 403 when the role is too low. A token limited to districts sees only their sites:
lists are narrowed, and a site (or an alert) outside them asked for by name is 403.
`/health`, `/metrics`, `/` and `/static/*` need no token.

**Times**: query parameters are RFC 3339 with an offset; answers give local time (`CW_TZ`,
default Asia/Shanghai) with its offset, and epoch milliseconds (UTC) where noted.

**Identifiers** (`kind`, `site`, `device`, `field`, `rule`) match `[A-Za-z0-9_-]{1,64}`;
`kind` and `field` must exist in the kinds schema. Anything else is a 422.
"""

TAGS = [
    {"name": "health", "description": "liveness and Prometheus metrics (no auth)"},
    {"name": "readings", "description": "latest readings and downsampled series from InfluxDB (viewer+)"},
    {"name": "alerts", "description": "alerts, acknowledgement (operator+) and the live SSE stream"},
    {"name": "rules", "description": "alert rules; changing one needs admin"},
    {"name": "compliance", "description": "六个百分百 (six 100%) daily compliance, JSON or CSV"},
    {"name": "deadletters", "description": "rejected messages (operator+) and replay (admin)"},
    {"name": "dashboard", "description": "the web dashboard"},
]

_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy",
     (b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
      b"frame-ancestors 'none'; base-uri 'none'; form-action 'none'")),
]


class _SecurityHeaders:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + _SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, send_wrapper)


def create_app(*, settings: Any, ingest: Any, engine: Any, limits: Limits | None = None, warm: bool = False) -> Any:
    """The FastAPI app. `engine` may be None (alerting off): alert routes then answer 503.
    `warm`: judge the six-100 days the kept evidence covers in the background (api/warm.py;
    the service does, tests ask for it).
    Raises ConfigError when CW_API_TOKENS is malformed (the message never shows a token)."""
    secret = settings.api_tokens.get_secret_value() if settings.api_tokens is not None else ""
    api_metrics = ApiMetrics()
    if limits is None:
        limits = Limits(sse_per_token=getattr(settings, "api_sse_per_token", Limits.sse_per_token))
    registry = getattr(ingest, "registry", None)
    has_registry = registry is not None and registry.enabled
    ctx = AppContext(settings=settings, ingest=ingest, engine=engine,
                     tokens=TokenStore.parse(secret, registry.districts if has_registry else None),
                     tz=ZoneInfo(settings.tz), kinds=kinds(), limits=limits, api_metrics=api_metrics,
                     district_sites=registry.sites_by_district() if has_registry else {})

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        ctx.closing.clear()
        warming = None
        if warm and getattr(ingest, "evidence", None) is not None:
            from api.warm import warm_forever

            warming = asyncio.create_task(warm_forever(ctx), name="six100-warm")
        yield
        ctx.closing.set()
        if warming is not None:
            warming.cancel()
            await asyncio.gather(warming, return_exceptions=True)

    # No /docs or /redoc: FastAPI's pages load Swagger/ReDoc from a CDN, which neither works
    # offline nor passes our Content-Security-Policy. The document is at /openapi.json.
    app = FastAPI(title="citywatch", version="0.1.0", description=DESCRIPTION, openapi_tags=TAGS,
                  lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.ctx = ctx
    app.state.shutdown_streams = ctx.closing.set

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI echoes the rejected input by default; ours may be a probe or a pasted secret.
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    for module in (health, metrics, me, readings, series, alerts, rules, compliance, deadletters, dashboard):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(MetricsMiddleware, metrics=api_metrics)
    app.add_middleware(_SecurityHeaders)
    return app


def server_config(app: Any, settings: Any, **overrides: Any) -> Any:
    """The uvicorn.Config that serves `app` with the CW_API_* limits and, when
    CW_API_TLS_CERT / CW_API_TLS_KEY are set, HTTPS. `app.state.http_guard` gets the
    slowloris guard's counters (api/http_guard.py)."""
    import uvicorn

    from api.http_guard import guarded_h11

    protocol, stats = guarded_h11(header_timeout_s=settings.api_header_timeout_s,
                                  max_incomplete=settings.api_max_incomplete_requests)
    app.state.http_guard = stats
    tls: dict[str, Any] = {}
    if settings.api_tls_cert is not None and settings.api_tls_key is not None:
        tls = {"ssl_certfile": str(settings.api_tls_cert), "ssl_keyfile": str(settings.api_tls_key)}
    options: dict[str, Any] = dict(
        host=settings.api_host, port=settings.api_port, log_level="warning", access_log=False, lifespan="on",
        timeout_graceful_shutdown=5, http=protocol, ws="none",
        limit_concurrency=settings.api_max_connections, timeout_keep_alive=settings.api_keep_alive_s,
        h11_max_incomplete_event_size=settings.api_max_header_bytes, **tls)
    options.update(overrides)
    return uvicorn.Config(app, **options)


