"""`GET /metrics`: Prometheus text, the ingest registry plus the API's own counters.

Not behind a token, like `/health` (scrapers, and nothing in it is sensitive); bind the
API to a private address (CW_API_HOST) as usual.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from api.deps import CtxDep

router = APIRouter(tags=["health"])


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("citywatch_api_requests", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("citywatch_api_request_seconds", "HTTP request latency by route", ["route"],
                                 registry=r, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))
        self.sse_clients = Gauge("citywatch_api_sse_clients", "open /v1/alerts/stream connections", registry=r)
        self.auth_failures = Counter("citywatch_api_auth_failures", "requests refused with 401", registry=r)


class MetricsMiddleware:
    """Counts requests by route template (never by raw path: ids and probes would explode
    the label set). Pure ASGI, so streaming responses pass through untouched."""

    def __init__(self, app, metrics: ApiMetrics) -> None:
        self.app = app
        self.m = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.m.requests.labels(scope.get("method", ""), route, str(status["code"])).inc()
            if route != "/v1/alerts/stream":
                self.m.latency.labels(route).observe(time.perf_counter() - started)
            if status["code"] == 401:
                self.m.auth_failures.inc()


@router.get("/metrics", summary="Prometheus metrics (no auth)", response_class=Response,
            responses={200: {"content": {"text/plain": {"example": "citywatch_spool_backlog 0.0\n"}},
                             "description": "Prometheus text exposition format"}})
async def metrics(ctx: CtxDep) -> Response:
    body = generate_latest(ctx.ingest.metrics.registry) + generate_latest(ctx.api_metrics.registry)
    routing = getattr(ctx.engine, "routing", None)  # receivers of CW_ROUTES_FILE
    if routing is not None:
        body += generate_latest(routing.metrics_registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
