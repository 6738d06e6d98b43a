"""`GET /metrics`: Prometheus text, the ingest registry plus the API's own counters.

Not behind a token, like `/health` (scrapers, and nothing in it is sensitive); bind the
API to a private address (CW_API_HOST) as usual.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import CtxDep

router = APIRouter(tags=["health"])


@router.get("/metrics", summary="Prometheus metrics (no auth)", response_class=Response,
            responses={200: {"content": {"text/plain": {"example": "citywatch_spool_backlog 0.0\n"}},
                             "description": "Prometheus text exposition format"}})
async def metrics(ctx: CtxDep) -> Response:
    body = generate_latest(ctx.ingest.metrics.registry) + generate_latest(ctx.api_metrics.registry)
    routing = getattr(ctx.engine, "routing", None)  # receivers of CW_ROUTES_FILE
    if routing is not None:
        body += generate_latest(routing.metrics_registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
