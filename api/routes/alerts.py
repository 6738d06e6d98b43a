"""Alerts: list, one, acknowledge, and the live stream (Server-Sent Events)."""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, HTTPException, Path, Query, Request, status
from fastapi.responses import StreamingResponse

from alerts import AlertNotFound
from api.deps import CtxDep, DeviceDep, EngineDep, OperatorDep, ScopeDep, SiteDep, ViewerDep, checked_id
from api.models import AckRequest, Alert, AlertPage, Problem

router = APIRouter(prefix="/v1/alerts", tags=["alerts"])

AlertId = Annotated[str, Path(description="alert id", pattern=r"^[A-Za-z0-9_-]{1,64}$", max_length=64,
                              examples=["3f1c2a9b7d0e4c5f6a7b"])]
_AUTH: dict[int | str, dict[str, Any]] = {401: {"model": Problem}, 403: {"model": Problem}, 422: {"model": Problem}}


@router.get("", response_model=AlertPage, summary="List alerts, newest first", responses=_AUTH)
def list_alerts(
    ctx: CtxDep, _: ViewerDep, scope: ScopeDep, engine: EngineDep, site: SiteDep, device: DeviceDep,
    state: Annotated[Literal["pending", "firing", "resolved", "active"] | None,
                     Query(description="`active` = pending or firing")] = None,
    severity: Annotated[Literal["info", "warning", "major", "critical"] | None, Query()] = None,
    rule: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_-]{1,64}$", max_length=64,
                                      examples=["dust_pm10_10min"])] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="page size (max 500)")] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> AlertPage:
    checked_id("rule", rule)
    sites = scope.sites_for(site)  # 403 for a site outside the token's districts
    items = engine.list_alerts(state=state, site=site, severity=severity, device=device, rule=rule,
                               sites=None if site is not None else sites, limit=limit + 1, offset=offset)
    more = len(items) > limit
    return AlertPage(items=items[:limit], limit=limit, offset=offset, next_offset=offset + limit if more else None)


@router.get("/stream", summary="Live alert changes (Server-Sent Events)",
            response_class=StreamingResponse,
            description=(
                "`text/event-stream`. Each change is `event: alert` with `id: <seq>` and `data: "
                "{\"event\": firing|resolved|acked|escalated|repeat|pending, \"seq\": n, \"alert\": {...}}`. A "
                "comment line (`: keep-alive`) is sent every 15 s. Authenticate with the `Authorization` "
                "header (the dashboard streams with fetch(), so tokens never appear in URLs). Not durable: on "
                "reconnect, re-read `GET /v1/alerts?state=active`. At most `CW_API_SSE_PER_TOKEN` (default 8) "
                "streams per token are open at once; one more is a 429 with `Retry-After`."),
            responses={200: {"content": {"text/event-stream": {"example":
                       'event: alert\nid: 7\ndata: {"event": "firing", "seq": 7, "alert": {"id": "..."}}\n\n'}},
                       "description": "an endless event stream"},
                       429: {"model": Problem, "description": "this token has CW_API_SSE_PER_TOKEN streams open"},
                       **_AUTH})
async def stream(request: Request, ctx: CtxDep, who: ViewerDep, scope: ScopeDep, engine: EngineDep,
                 site: SiteDep) -> StreamingResponse:
    scope.sites_for(site)  # 403 for a site outside, before a stream lease is taken (a 403 holds no place)
    give_back = ctx.streams.take(who.slot, ctx.limits.sse_per_token)
    if give_back is None:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS,
                            f"this token already has {ctx.limits.sse_per_token} alert streams open "
                            "(CW_API_SSE_PER_TOKEN); close one first", headers={"Retry-After": "5"})
    sub = engine.subscribe_notifications()  # registered now: nothing after this request is missed
    heartbeat = ctx.limits.heartbeat_s
    closing = ctx.closing
    gauge = ctx.api_metrics.sse_clients

    async def events():
        gauge.inc()
        it = aiter(sub)
        last = time.monotonic()
        try:
            yield ": connected\nretry: 3000\n\n"
            while not closing.is_set():
                try:
                    # asyncio.timeout, not wait_for: see citywatch.aio.wait_event
                    async with asyncio.timeout(min(1.0, heartbeat)):
                        n = await anext(it)
                except TimeoutError:
                    if time.monotonic() - last >= heartbeat:
                        last = time.monotonic()
                        yield ": keep-alive\n\n"
                    continue
                except StopAsyncIteration:
                    break
                if (site is not None and n.alert.get("site") != site) or not scope.allows(n.alert.get("site")):
                    continue
                data = json.dumps({"event": n.event, "seq": n.seq, "alert": n.alert}, ensure_ascii=False)
                last = time.monotonic()
                yield f"event: alert\nid: {n.seq}\ndata: {data}\n\n"
        finally:
            sub.close()
            gauge.dec()
            give_back()

    body = events()
    # A client gone before the body starts never runs the generator's `finally`.
    weakref.finalize(body, give_back)
    weakref.finalize(body, sub.close)
    return StreamingResponse(body, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/{alert_id}", response_model=Alert, summary="One alert",
            responses={404: {"model": Problem}, **_AUTH})
def get_alert(_: ViewerDep, scope: ScopeDep, engine: EngineDep, alert_id: AlertId) -> Alert:
    a = engine.get(alert_id)
    if a is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such alert")
    scope.check_site(a.get("site"))
    return a


@router.post("/{alert_id}/ack", response_model=Alert, summary="Acknowledge an alert (operator or admin)",
             description="Idempotent. Records who (the token's name) and the note; stops escalation and "
                         "repeats of this alert.",
             responses={404: {"model": Problem}, **_AUTH})
def ack(who: OperatorDep, scope: ScopeDep, engine: EngineDep, alert_id: AlertId,
        body: Annotated[AckRequest | None, Body()] = None) -> Alert:
    if scope.limited:  # an alert's site never changes: checking it before the ack is enough
        a = engine.get(alert_id)
        if a is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such alert")
        scope.check_site(a.get("site"))
    try:
        return engine.ack(alert_id, by=who.name, note=(body.note if body else ""))
    except AlertNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such alert") from None
