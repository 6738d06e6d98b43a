"""`GET /v1/compliance/six100`: 六个百分百 per site and local day, JSON or CSV."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from api import compliance
from api.deps import CtxDep, ScopeDep, SiteDep, ViewerDep, invalid, utc_now
from api.models import ComplianceResponse, Problem

router = APIRouter(prefix="/v1/compliance", tags=["compliance"])


@router.get("/six100", response_model=ComplianceResponse, summary="六个百分百 daily compliance per site",
            description=compliance.__doc__.split("\n\n", 1)[1] + (
                "\n\nCSV with `format=csv` or `Accept: text/csv` (UTF-8 with BOM; one row per site and item)."),
            responses={200: {"content": {"text/csv": {"example":
                       "date,site,item,name_zh,name_en,percent,pass,status,detail\r\n"
                       "2026-11-27,S0001,hoarding,周边围挡,perimeter hoarding,100.0,true,pass,0 of 8640 ...\r\n"}}},
                       401: {"model": Problem}, 403: {"model": Problem}, 422: {"model": Problem},
                       503: {"model": Problem}})
async def six100(
    request: Request, ctx: CtxDep, _: ViewerDep, scope: ScopeDep, site: SiteDep,
    day: Annotated[str | None, Query(alias="date", description="local day YYYY-MM-DD (CW_TZ); default today",
                                     max_length=10, examples=["2026-11-27"])] = None,
    format: Annotated[Literal["json", "csv"] | None, Query(description="csv, or send Accept: text/csv")] = None,
):
    now = utc_now()
    today = now.astimezone(ctx.tz).date()
    if day is None:
        d = today
    else:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", day):
            raise invalid("date", "must be YYYY-MM-DD")
        try:
            d = date.fromisoformat(day)
        except ValueError:
            raise invalid("date", "is not a valid date") from None
        if d > today or d.year < 2000:
            raise invalid("date", "must be between 2000-01-01 and today")
    registry = getattr(ctx.ingest, "registry", None)
    wanted = scope.sites_for(site)  # 403 for a site outside the token's districts

    async def one(s: str | None) -> list:
        return await compliance.six100(ctx.ingest.influx, day=d, tz=ctx.tz, now_ms=int(now.timestamp() * 1000),
                                       site=s, registry=registry, max_sites=ctx.limits.compliance_max_sites)

    if site is not None or wanted is None:
        sites = await one(site)
    else:
        # A token limited to districts: its dust sites one by one, so that every query is
        # filtered by site (compliance.six100 takes one site or all of them).
        dust_sites = sorted({dev.site for dev in registry.devices.values() if dev.kind == "dust"} & wanted)
        sites = [row for s in dust_sites[:ctx.limits.compliance_max_sites] for row in await one(s)]
    wants_csv = format == "csv" or (format is None and "text/csv" in request.headers.get("accept", ""))
    if wants_csv:
        return Response(compliance.to_csv(sites), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="six100-{d.isoformat()}.csv"'})
    return ComplianceResponse(date=d.isoformat(), tz=str(ctx.tz), sites=sites)
