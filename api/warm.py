"""Six-100 answers judged before anyone asks (issue #12 item 7): the first all-sites day or
month view finds them ready instead of judging ~1,000 sites (2–4 ms each) per day.

Started by the service (`create_app(warm=True)`, app/service.py), in the API process where
the judge and the rules in force are. Every `WARM_EVERY_S` it asks the kept evidence
(api/six100/kept.py) for the all-sites answer of the days it covers, as a request would,
so the judged site-days land in the same cache (memory; whole days on disk too):
- today, each time: its answer is judged up to the last whole minute and the keeper's
  refresh changes its records, so only what changed since the last pass is judged;
- the past days back to the first of last month (the two month views), only when a
  record of theirs changed (a late reading) or the rules did; on the first pass all of
  them, oldest last, read from disk when a previous run judged them.
One day at a time; the judging yields to the event loop every few sites and a request for
the same day waits for it (kept.py's per-store lock) instead of judging it twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import date, timedelta
from typing import Any

from api import compliance
from api.deps import utc_now
from api.six100 import item_rules
from api.six100.days import day_bounds
from api.six100.kept import covered_days, six100_days
from ingest.evidence.store import DAY_MS

log = logging.getLogger("citywatch.api.warm")
WARM_EVERY_S = 60.0  # as often as the keeper refreshes in the background: today's changes judged once per refresh


def warm_days(today: date) -> list[date]:
    """Today, then back to the first of last month, newest first."""
    first = (today.replace(day=1) - timedelta(days=1)).replace(day=1)
    return [today - timedelta(days=k) for k in range((today - first).days + 1)]


async def warm_once(ctx: Any, seen: dict[date, tuple]) -> int:
    """One pass; `seen` (day → what it was warmed against) is kept between passes.
    Returns the number of days asked for."""
    keeper = ctx.ingest.evidence
    now = utc_now()
    now_ms = int(now.timestamp() * 1000)
    today = now.astimezone(ctx.tz).date()
    days = await covered_days(keeper, warm_days(today), ctx.tz)
    if not days:
        return 0
    registry = getattr(ctx.ingest, "registry", None)
    rules = item_rules(compliance.rules_mapping(ctx.engine, ctx.settings), getattr(ctx.settings, "rule_pack", "default"))
    low_limits, site_inputs = compliance.judge_inputs(registry, rules)
    bounds = {d: day_bounds(d, ctx.tz) for d in days}
    lo, hi = min(a for a, _ in bounds.values()), max(b for _, b in bounds.values())
    await keeper.refresh()  # first: the versions compared below are those the days are judged from
    latest = await asyncio.to_thread(keeper.store.day_versions, lo - lo % DAY_MS, hi)
    rules_key = repr(sorted(rules.by_item.items()))
    asked = 0
    for d in days:
        a, b = bounds[d]
        mark = (rules_key, tuple(latest.get(u, 0) for u in range(a - a % DAY_MS, b, DAY_MS)))
        if d != today and seen.get(d) == mark:  # a past day nothing changed in since it was warmed
            continue
        await six100_days(keeper, days=[d], tz=ctx.tz, now_ms=now_ms, site=None, registry=registry,
                          max_sites=ctx.limits.compliance_max_sites, rules=rules, low_limits=low_limits,
                          site_inputs=site_inputs)
        seen[d] = mark
        asked += 1
    for d in [d for d in seen if d not in bounds]:
        del seen[d]
    return asked


async def warm_forever(ctx: Any) -> None:
    """Until cancelled (the app's lifespan ends). A failing pass is logged and tried again."""
    seen: dict[date, tuple] = {}
    first = True
    while True:
        try:
            t0 = time.monotonic()
            asked = await warm_once(ctx, seen)
            took = time.monotonic() - t0
            if first:  # how long after a start the answers were all ready (the rest: cache hits)
                log.info("six-100 warm-up: %d day(s) judged or read in %.1f s", asked, took)
                first = False
            metrics = getattr(ctx, "api_metrics", None)
            if metrics is not None:
                metrics.six100_warm_passes.inc()
                metrics.six100_warm_seconds.set(took)
        except asyncio.CancelledError:
            raise
        except Exception:  # a full disk, InfluxDB away during the keeper's refresh: next pass
            log.exception("six-100 warm-up pass failed")
        await asyncio.sleep(WARM_EVERY_S)
