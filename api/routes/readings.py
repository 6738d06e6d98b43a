"""`GET /v1/readings/latest`: the newest reading of every device (InfluxQL, per series)."""

from __future__ import annotations

from fastapi import APIRouter

from api import influxql
from api.deps import CtxDep, OptionalKindDep, ScopeDep, SiteDep, ViewerDep
from api.models import LatestReading, LatestResponse, Problem

router = APIRouter(prefix="/v1/readings", tags=["readings"])

LOOKBACK = "7d"  # devices silent for longer are not "latest" any more


@router.get("/latest", response_model=LatestResponse, summary="Newest reading per device",
            description="The newest point of each device of `kind` (all kinds when omitted), optionally for one "
                        f"site. Devices without data in the last {LOOKBACK} are left out. Times are local (CW_TZ).",
            responses={401: {"model": Problem}, 403: {"model": Problem}, 422: {"model": Problem},
                       503: {"model": Problem}})
async def latest(ctx: CtxDep, _: ViewerDep, scope: ScopeDep, kind: OptionalKindDep, site: SiteDep) -> LatestResponse:
    sites = scope.sites_for(site)  # 403 for a site outside the token's districts
    if sites is not None and not sites:
        return LatestResponse(items=[])
    specs = [kind] if kind is not None else [ctx.kinds[k] for k in sorted(ctx.kinds)]
    items: list[LatestReading] = []
    for spec in specs:
        clause, params = influxql.where(None, None, {"site": site}, since=LOOKBACK,
                                        sites=None if site is not None else sites)
        q = (f"SELECT * FROM {influxql.ident(spec.name)}{clause} GROUP BY \"site\", \"device\" "
             f"ORDER BY time DESC LIMIT 1 SLIMIT 5000")
        for s in await influxql.run(ctx.ingest.influx, q, params):
            tags = s.get("tags") or {}
            for row in influxql.rows(s):
                t = int(row.pop("time"))
                values = {k: v for k, v in row.items() if k in spec.fields and v is not None}
                # HJ 212 flags are stored beside the value as `<field>_flag` (ingest/hj212/README.md)
                flags = {k[:-5]: v for k, v in row.items()
                         if k.endswith("_flag") and k[:-5] in spec.fields and isinstance(v, str)}
                items.append(LatestReading(kind=spec.name, site=tags.get("site", ""), device=tags.get("device", ""),
                                           time=ctx.local_iso(t) or "", ts_ms=t, values=values, flags=flags))
    items.sort(key=lambda r: (r.site, r.device))
    return LatestResponse(items=items)
