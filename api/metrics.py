"""The API's own Prometheus metrics: request counts and latency by route template, SSE
clients, refused tokens (served with the ingest registry by `GET /metrics`)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("citywatch_api_requests", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("citywatch_api_request_seconds", "HTTP request latency by route", ["route"],
                                 registry=r, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))
        self.sse_clients = Gauge("citywatch_api_sse_clients", "open /v1/alerts/stream connections", registry=r)
        self.auth_failures = Counter("citywatch_api_auth_failures", "requests refused with 401", registry=r)
        self.six100_warm_passes = Counter("citywatch_six100_warm_passes",
                                          "background six-100 warm-up passes done (api/warm.py); after the first "
                                          "one every covered day back to last month is judged", registry=r)
        self.six100_warm_seconds = Gauge("citywatch_six100_warm_last_seconds",
                                         "duration of the last six-100 warm-up pass", registry=r)


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
