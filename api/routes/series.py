"""`GET /v1/series`: one field over time, downsampled in InfluxDB (GROUP BY time)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from api import influxql
from api.deps import CtxDep, DeviceDep, KindDep, ScopeDep, SiteDep, ViewerDep, invalid, parse_time, utc_now
from api.models import Problem, Series, SeriesResponse

router = APIRouter(prefix="/v1", tags=["readings"])

_EVERY = re.compile(r"([1-9][0-9]{0,4})([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_AUTO = [(10, "10s"), (60, "1m"), (300, "5m"), (600, "10m"), (1800, "30m"), (3600, "1h"), (10800, "3h"),
         (21600, "6h"), (86400, "1d")]
AUTO_TARGET_POINTS = 720


def parse_every(text: str) -> int:
    m = _EVERY.fullmatch(text)
    if m is None:
        raise invalid("every", "must be a duration like 10s, 1m, 10m, 1h or 1d")
    seconds = int(m.group(1)) * _UNIT_S[m.group(2)]
    if not 10 <= seconds <= 31 * 86400:
        raise invalid("every", "must be between 10s and 31d")
    return seconds


@router.get("/series", response_model=SeriesResponse, summary="Downsampled time series of one field",
            description=(
                "Aggregates `field` of `kind` into buckets of `every` between `start` and `end` (RFC 3339 with "
                "offset; default the last 24 h), one series per device (at most 50). `agg` is mean, max, min "
                "or last (boolean fields: last only). The range is at most 31 days and at most 5000 buckets; "
                "without `every` a step giving about 720 points is chosen. Points are `[epoch ms, value]`, "
                "empty buckets are left out."),
            responses={401: {"model": Problem}, 403: {"model": Problem}, 422: {"model": Problem},
                       503: {"model": Problem}})
async def series(
    ctx: CtxDep, _: ViewerDep, scope: ScopeDep, kind: KindDep, site: SiteDep, device: DeviceDep,
    field: Annotated[str, Query(description="a canonical field of the kind", pattern=r"^[A-Za-z0-9_-]{1,64}$",
                                max_length=64, examples=["pm10"])],
    start: Annotated[str | None, Query(description="RFC 3339 with offset; default end - 24 h", max_length=40,
                                       examples=["2026-11-27T08:00:00+08:00"])] = None,
    end: Annotated[str | None, Query(description="RFC 3339 with offset; default now", max_length=40,
                                     examples=["2026-11-27T12:00:00+08:00"])] = None,
    every: Annotated[str | None, Query(description="bucket, e.g. 1m, 10m, 1h (10s..31d)", max_length=8,
                                       examples=["1m"])] = None,
    agg: Annotated[Literal["mean", "max", "min", "last"], Query(description="aggregate per bucket")] = "mean",
) -> SeriesResponse:
    spec = kind.fields.get(field)
    if spec is None:
        raise invalid("field", f"unknown field of {kind.name}; known: {', '.join(sorted(kind.fields))}")
    if spec.type == "bool" and agg != "last":
        raise invalid("agg", "boolean fields support agg=last only")
    t_end = parse_time("end", end) if end is not None else utc_now()
    t_start = parse_time("start", start) if start is not None else t_end - timedelta(days=1)
    if t_start >= t_end:
        raise invalid("start", "must be before end")
    span_s = (t_end - t_start).total_seconds()
    limits = ctx.limits
    if span_s > limits.max_range_days * 86400:
        raise invalid("start", f"the range is longer than {limits.max_range_days:g} days")
    if every is None:
        step_s, every = next(((s, name) for s, name in _AUTO if span_s / s <= AUTO_TARGET_POINTS), _AUTO[-1])
    else:
        step_s = parse_every(every)
    if span_s / step_s > limits.max_points:
        raise invalid("every", f"{span_s / step_s:.0f} buckets; at most {limits.max_points} (use a larger every)")
    start_ms, end_ms = int(t_start.timestamp() * 1000), int(t_end.timestamp() * 1000)
    sites = scope.sites_for(site)  # 403 for a site outside the token's districts
    if sites is not None and not sites:
        return SeriesResponse(kind=kind.name, field=field, unit=spec.unit, agg=agg, every=every,
                              start=ctx.local_iso(start_ms) or "", end=ctx.local_iso(end_ms) or "", series=[])
    clause, params = influxql.where(start_ms, end_ms, {"site": site, "device": device},
                                    sites=None if site is not None else sites)
    q = (f"SELECT {agg}({influxql.ident(field)}) AS \"v\" FROM {influxql.ident(kind.name)}{clause} "
         f"GROUP BY time({int(step_s)}s), \"site\", \"device\" fill(none) SLIMIT {int(limits.max_series)}")
    out: list[Series] = []
    for s in await influxql.run(ctx.ingest.influx, q, params):
        tags = s.get("tags") or {}
        pts = [(int(t), v) for t, v in s.get("values", [])]
        out.append(Series(site=tags.get("site", ""), device=tags.get("device", ""), points=pts))
    # Buckets with a value an HJ 212 monitor flagged other than N/S (stored as `<field>_flag`).
    flag = influxql.ident(f"{field}_flag")
    fq = (f"SELECT last({flag}) AS \"f\" FROM {influxql.ident(kind.name)}{clause} AND {flag} != 'N' AND "
          f"{flag} != 'S' GROUP BY time({int(step_s)}s), \"site\", \"device\" fill(none) "
          f"SLIMIT {int(limits.max_series)}")
    by_series = {(x.site, x.device): x for x in out}
    for s in await influxql.run(ctx.ingest.influx, fq, params):
        tags = s.get("tags") or {}
        target = by_series.get((tags.get("site", ""), tags.get("device", "")))
        if target is not None:
            target.flags.extend((int(t), f) for t, f in s.get("values", []) if isinstance(f, str))
    out.sort(key=lambda x: (x.site, x.device))
    return SeriesResponse(kind=kind.name, field=field, unit=spec.unit, agg=agg, every=every,
                          start=ctx.local_iso(start_ms) or "", end=ctx.local_iso(end_ms) or "", series=out)
