"""`GET /v1/compliance/six100`: 六个百分百 per site and local day, JSON or CSV; the month
view (`/six100/month`) and the XLSX reports (`/six100.xlsx?date=` or `?month=`)."""

from __future__ import annotations

import json
import re
from datetime import date
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from api import compliance
from api.deps import AppContext, CtxDep, Scope, ScopeDep, SiteDep, ViewerDep, invalid, utc_now
from api.models import ComplianceMonthResponse, ComplianceResponse, Problem
from api.six100 import item_rules
from api.six100.xlsx import day_workbook, month_workbook

router = APIRouter(prefix="/v1/compliance", tags=["compliance"])
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
DateQ = Annotated[str | None, Query(alias="date", description="local day YYYY-MM-DD (CW_TZ); default today",
                                    max_length=10, examples=["2026-11-27"])]
MonthQ = Annotated[str | None, Query(description="local month YYYY-MM (CW_TZ)", max_length=7, examples=["2026-11"])]
# FastAPI's `responses` type (dict[int | str, dict[str, Any]]), spelled out: a plain literal infers a narrower one.
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem}, 403: {"model": Problem}, 422: {"model": Problem}, 503: {"model": Problem}}


def _day(day: str | None, today: date) -> date:
    if day is None:
        return today
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", day):
        raise invalid("date", "must be YYYY-MM-DD")
    try:
        d = date.fromisoformat(day)
    except ValueError:
        raise invalid("date", "is not a valid date") from None
    if d > today or d.year < 2000:
        raise invalid("date", "must be between 2000-01-01 and today")
    return d


def _month(month: str, today: date) -> list[date]:
    if not re.fullmatch(r"\d{4}-\d{2}", month):
        raise invalid("month", "must be YYYY-MM")
    try:
        days = compliance.month_days(month, today)
    except ValueError:
        raise invalid("month", "is not a valid month") from None
    if not days or days[0].year < 2000:
        raise invalid("month", "must be between 2000-01 and this month")
    return days


def _args(ctx: AppContext, site: str | None):
    rules = compliance.rules_mapping(ctx.engine, ctx.settings)
    return dict(influx=ctx.ingest.influx, tz=ctx.tz, site=site, registry=getattr(ctx.ingest, "registry", None),
                max_sites=ctx.limits.compliance_max_sites, keeper=getattr(ctx.ingest, "evidence", None),
                rules=item_rules(rules, getattr(ctx.settings, "rule_pack", "default")))


def _scope_sites(ctx: AppContext, scope: Scope, site: str | None) -> list[str | None]:
    """The `site` arguments to compute: [site] for one site or an unlimited token; for a token
    limited to districts, its dust sites one by one, so that every query is filtered by site
    (compliance takes one site or all of them). 403 for a site outside the token's districts."""
    wanted = scope.sites_for(site)
    if site is not None or wanted is None:
        return [site]
    registry = getattr(ctx.ingest, "registry", None)
    dust = sorted({dev.site for dev in registry.devices.values() if dev.kind == "dust"} & wanted) if registry else []
    return list(dust[:ctx.limits.compliance_max_sites])


async def _scoped_day(ctx: AppContext, scope: Scope, site: str | None, args: dict, *, day: date, now_ms: int) -> list:
    out: list = []
    for s in _scope_sites(ctx, scope, site):
        out += await compliance.six100(day=day, now_ms=now_ms, **{**args, "site": s})
    return out


async def _scoped_month(ctx: AppContext, scope: Scope, site: str | None, args: dict, *, days: list[date],
                        now_ms: int) -> dict:
    by_day: dict = {}
    for s in _scope_sites(ctx, scope, site):
        part = await compliance.six100_month(days=days, now_ms=now_ms, **{**args, "site": s})
        for d, rows in part.items():
            by_day.setdefault(d, []).extend(rows)
    if not by_day:  # no site in scope: still one (empty) entry per day
        by_day = {d.isoformat(): [] for d in days}
    return by_day


def _attachment(ascii_name: str, name: str) -> dict[str, str]:
    """An ASCII file name for old clients, the Chinese one (RFC 6266 filename*) for the rest."""
    return {"Content-Disposition": f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"}


@router.get("/six100", response_model=ComplianceResponse, summary="六个百分百 daily compliance per site",
            description=compliance.__doc__.split("\n\n", 1)[1] + (
                "\n\nCSV with `format=csv` or `Accept: text/csv` (UTF-8 with BOM; one row per site and item)."),
            responses={200: {"content": {"text/csv": {"example":
                       "date,site,item,name_zh,name_en,percent,pass,status,detail,reason,district,detail_zh\r\n"
                       "2026-11-27,S0001,hoarding,周边围挡,perimeter hoarding,100.0,true,pass,0 of 8640 ...\r\n"}}},
                       **ERRORS})
async def six100(
    request: Request, ctx: CtxDep, _: ViewerDep, scope: ScopeDep, site: SiteDep, day: DateQ = None,
    format: Annotated[Literal["json", "csv"] | None, Query(description="csv, or send Accept: text/csv")] = None,
):
    now = utc_now()
    d = _day(day, now.astimezone(ctx.tz).date())
    args = _args(ctx, site)
    sites = await _scoped_day(ctx, scope, site, args, day=d, now_ms=int(now.timestamp() * 1000))
    wants_csv = format == "csv" or (format is None and "text/csv" in request.headers.get("accept", ""))
    if wants_csv:
        return Response(compliance.to_csv(sites), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="six100-{d.isoformat()}.csv"'})
    return ComplianceResponse(date=d.isoformat(), tz=str(ctx.tz), pack=args["rules"].pack, sites=sites)


@router.get("/six100/month", response_model=ComplianceMonthResponse, summary="六个百分百 month view per site",
            description="Each day of a local month (up to today) per site: all_pass, the failed and the "
                        "no-evidence items with their zh reasons.", responses=ERRORS)
async def six100_month(ctx: CtxDep, _: ViewerDep, scope: ScopeDep, site: SiteDep, month: MonthQ = None):
    now = utc_now()
    today = now.astimezone(ctx.tz).date()
    days = _month(month or today.strftime("%Y-%m"), today)
    args = _args(ctx, site)
    by_day = await _scoped_month(ctx, scope, site, args, days=days, now_ms=int(now.timestamp() * 1000))
    # Plain dicts, serialized once: 31,000 site-days at 1,000 sites, where building and
    # validating a model per site-day took about as long as answering them from the cache.
    # The shape is ComplianceMonthResponse's (tests/api check it against the model).
    sites: dict[str, dict[str, Any]] = {}
    for d, day_sites in by_day.items():
        for s in day_sites:
            m = sites.get(s.site)
            if m is None:
                m = sites[s.site] = {"site": s.site, "district": s.district, "days_all_pass": 0, "days_judged": 0,
                                     "days": []}
            m["days_judged"] += s.all_pass is not None
            m["days_all_pass"] += bool(s.all_pass)
            m["days"].append({
                "date": d, "all_pass": s.all_pass,
                "failed": [i.item for i in s.items if i.status == "fail"],
                "no_evidence": [i.item for i in s.items if i.status == "no_evidence" and i.measurable],
                "reasons": {i.item: i.detail_zh for i in s.items if i.status != "pass" and i.measurable}})
    body = {"month": days[0].strftime("%Y-%m"), "tz": str(ctx.tz), "pack": args["rules"].pack, "days": list(by_day),
            "sites": [sites[k] for k in sorted(sites)]}
    return Response(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(),
                    media_type="application/json")


@router.get("/six100.xlsx", summary="六个百分百 report as XLSX (a day, or a month)",
            description="`date=YYYY-MM-DD`: one sheet for the day plus 明细 (every item with its reason); "
                        "`month=YYYY-MM`: a month summary sheet, one sheet per day, and 明细.",
            responses={200: {"content": {XLSX: {}}}, **ERRORS}, response_class=Response)
async def six100_xlsx(ctx: CtxDep, _: ViewerDep, scope: ScopeDep, site: SiteDep, day: DateQ = None,
                      month: MonthQ = None):
    if day is not None and month is not None:
        raise invalid("month", "give date or month, not both")
    now = utc_now()
    today = now.astimezone(ctx.tz).date()
    args = _args(ctx, site)
    now_ms = int(now.timestamp() * 1000)
    if month is not None:
        days = _month(month, today)
        by_day = await _scoped_month(ctx, scope, site, args, days=days, now_ms=now_ms)
        body, key = month_workbook(month, by_day), month
    else:
        d = _day(day, today)
        sites = await _scoped_day(ctx, scope, site, args, day=d, now_ms=now_ms)
        body, key = day_workbook(d.isoformat(), sites), d.isoformat()
    return Response(body, media_type=XLSX, headers=_attachment(f"six100-{key}.xlsx", f"六个百分百-{key}.xlsx"))
