"""六个百分百 (six 100%) daily compliance per site, computed from InfluxDB (docs/domain.md §1).

One local day (CW_TZ), up to now for today. Items and how each is judged:

| item | data | percent | pass |
|---|---|---|---|
| hoarding 周边围挡 | `hoarding_intact` samples | share of samples intact | no sample false |
| cover 物料覆盖 | `cover_ratio` | daily mean | minimum >= 100 |
| wash 车辆冲洗 | `vehicle_exit` events | share washed with wash_seconds >= 60 | every exit |
| hardened 路面硬化 | `hardened_ratio` | daily mean | minimum >= 100 |
| wet_operation 湿法作业 | 1-min PM10 mean, spray_on | share of high-PM10 minutes with spray on | no run of >= 10 min above the set value with spray off |
| muck_covered 渣土车密闭 | `vehicle_exit` events | share covered | every exit |
| monitoring 在线监测 | any dust reading | share of the day with data (gaps > 3 x interval count as offline) | >= 90 % |

The PM10 set value is the site's registry parameter `pm10_set_value` (any device of the
site), else 150 µg/m³ (Jincheng default). No data → `no_data` (null percent and pass),
except monitoring, where no data is 0 % and a failure: a silent monitor is a violation.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from api import influxql
from api.models import ComplianceItem, SiteCompliance

PM10_SET_DEFAULT = 150.0
MIN_WASH_SECONDS = 60.0  # docs/domain.md §1 (unconfirmed minimum)
WET_EPISODE_MIN = 10
MONITORING_PASS_PERCENT = 90.0

NAMES = {
    "hoarding": ("周边围挡", "perimeter hoarding"),
    "cover": ("物料堆放覆盖", "stockpiles covered"),
    "wash": ("出入车辆清洗", "exiting vehicles washed"),
    "hardened": ("路面硬化", "site roads hardened"),
    "wet_operation": ("湿法作业", "wet operation"),
    "muck_covered": ("渣土车辆密闭运输", "muck trucks enclosed"),
    "monitoring": ("在线监测联网", "online monitoring"),
}


@dataclass
class _Site:
    status: dict[str, Any] = field(default_factory=dict)
    hoard_false: int = 0
    minutes: dict[str, list[tuple[int, float | None, bool | None]]] = field(default_factory=dict)  # by device
    exits: list[dict[str, Any]] = field(default_factory=list)


def day_bounds(day: date, tz) -> tuple[int, int]:
    start = datetime.combine(day, time(0), tz)
    end = datetime.combine(day + timedelta(days=1), time(0), tz)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def _item(key: str, percent: float | None, passed: bool | None, detail: str = "") -> ComplianceItem:
    zh, en = NAMES[key]
    st = "no_data" if passed is None else ("pass" if passed else "fail")
    pct = None if percent is None else round(float(percent), 1)
    return ComplianceItem(item=key, name_zh=zh, name_en=en, percent=pct, passed=passed, status=st, detail=detail)


def _ratio_item(key: str, status: dict[str, Any], prefix: str) -> ComplianceItem:
    mean, low = status.get(f"{prefix}_mean"), status.get(f"{prefix}_min")
    if mean is None:
        return _item(key, None, None, "no data")
    return _item(key, mean, low >= 100.0, f"min {low:g} %")


def _wet(minutes: dict[str, list], set_value: float) -> ComplianceItem:
    if not any(minutes.values()):
        return _item("wet_operation", None, None, "no PM10 data")
    high = sprayed = episodes = 0
    for rows in minutes.values():
        run, prev_t = 0, None
        for t, pm10, spray in rows:
            is_high = pm10 is not None and pm10 > set_value
            if is_high:
                high += 1
                sprayed += spray is True
            bad = is_high and spray is False
            run = (run + 1 if prev_t is not None and t - prev_t == 60_000 and run else 1) if bad else 0
            if run == WET_EPISODE_MIN:
                episodes += 1
            prev_t = t
    if high == 0:
        return _item("wet_operation", 100.0, True, f"PM10 never above {set_value:g} µg/m³")
    return _item("wet_operation", sprayed / high * 100, episodes == 0,
                 f"{episodes} episode(s) of PM10 > {set_value:g} µg/m³ for >= {WET_EPISODE_MIN} min with spray off; "
                 f"{high} high-PM10 minute(s)")


def _exits(exits: list[dict[str, Any]]) -> tuple[ComplianceItem, ComplianceItem]:
    if not exits:
        return (_item("wash", None, None, "no vehicle exits"), _item("muck_covered", None, None, "no vehicle exits"))
    n = len(exits)
    unwashed = sum(1 for e in exits if e.get("washed") is not True
                   or (e.get("wash_seconds") is not None and e["wash_seconds"] < MIN_WASH_SECONDS))
    uncovered = sum(1 for e in exits if e.get("covered") is not True)
    return (_item("wash", (n - unwashed) / n * 100, unwashed == 0,
                  f"{n} exit(s), {unwashed} not washed or washed < {MIN_WASH_SECONDS:g} s"),
            _item("muck_covered", (n - uncovered) / n * 100, uncovered == 0, f"{n} exit(s), {uncovered} uncovered"))


def _monitoring(minutes: dict[str, list], start_ms: int, end_ms: int, interval_s: float) -> ComplianceItem:
    span = end_ms - start_ms
    if span <= 0:
        return _item("monitoring", None, None, "the day has not started")
    times = sorted({t for rows in minutes.values() for t, *_ in rows})
    if not times:
        return _item("monitoring", 0.0, False, "no data from any monitor")
    allowed = max(3 * interval_s, 180.0) * 1000
    offline = 0
    prev = start_ms
    for t in [*times, end_ms]:
        gap = t - prev
        if gap > allowed:
            offline += gap
        prev = t + 60_000
    pct = max(0.0, min(100.0, (span - offline) / span * 100))
    return _item("monitoring", pct, pct >= MONITORING_PASS_PERCENT,
                 f"online {pct:.1f} % of the day so far (pass >= {MONITORING_PASS_PERCENT:g} %)")


async def six100(influx: Any, *, day: date, tz, now_ms: int, site: str | None, registry: Any,
                 max_sites: int) -> list[SiteCompliance]:
    start_ms, end_ms = day_bounds(day, tz)
    until = min(end_ms, now_ms)
    sites: dict[str, _Site] = {}

    def at(name: str) -> _Site:
        return sites.setdefault(name, _Site())

    if site is not None:
        at(site)
    elif registry is not None:
        for d in registry.devices.values():
            if d.kind == "dust":
                at(d.site)
    clause, params = influxql.where(start_ms, end_ms, {"site": site})
    slimit = f" SLIMIT {int(max_sites)}"
    q = ('SELECT count("hoarding_intact") AS hoard_n, mean("cover_ratio") AS cover_mean, '
         'min("cover_ratio") AS cover_min, mean("hardened_ratio") AS hard_mean, min("hardened_ratio") AS hard_min '
         f'FROM "dust"{clause} GROUP BY "site"{slimit}')
    for s in await influxql.run(influx, q, params):
        for row in influxql.rows(s):
            at(s["tags"]["site"]).status = row
    q = f'SELECT count("hoarding_intact") AS n FROM "dust"{clause} AND "hoarding_intact" = false GROUP BY "site"{slimit}'
    for s in await influxql.run(influx, q, params):
        for row in influxql.rows(s):
            at(s["tags"]["site"]).hoard_false = int(row["n"] or 0)
    q = ('SELECT mean("pm10") AS pm10, last("spray_on") AS spray FROM "dust"'
         f'{clause} GROUP BY time(1m), "site", "device" fill(none) SLIMIT {int(max_sites) * 4}')
    for s in await influxql.run(influx, q, params):
        tags = s["tags"]
        at(tags["site"]).minutes[tags["device"]] = [(int(t), pm, sp) for t, pm, sp in s.get("values", [])]
    eclause, eparams = influxql.where(start_ms, end_ms, {"site": site, "kind": "dust", "type": "vehicle_exit"})
    q = (f'SELECT "washed", "wash_seconds", "covered" FROM "events"{eclause} GROUP BY "site" '
         f"LIMIT 100000{slimit}")
    for s in await influxql.run(influx, q, eparams):
        at(s["tags"]["site"]).exits = influxql.rows(s)

    out: list[SiteCompliance] = []
    for name in sorted(sites)[:max_sites]:
        st = sites[name]
        devices = [d for d in (registry.devices.values() if registry is not None else ()) if d.site == name]
        set_value = next((float(d.params["pm10_set_value"]) for d in devices if "pm10_set_value" in d.params),
                         PM10_SET_DEFAULT)
        interval = max((d.expected_interval_s for d in devices), default=60.0)
        n_hoard = int(st.status.get("hoard_n") or 0)
        hoard = (_item("hoarding", None, None, "no data") if n_hoard == 0 else
                 _item("hoarding", (n_hoard - st.hoard_false) / n_hoard * 100, st.hoard_false == 0,
                       f"{st.hoard_false} of {n_hoard} sample(s) not intact"))
        wash, muck = _exits(st.exits)
        items = [hoard, _ratio_item("cover", st.status, "cover"), wash, _ratio_item("hardened", st.status, "hard"),
                 _wet(st.minutes, set_value), muck, _monitoring(st.minutes, start_ms, until, interval)]
        judged = [i.passed for i in items if i.passed is not None]
        out.append(SiteCompliance(site=name, date=day.isoformat(), items=items,
                                  all_pass=None if not judged else all(judged)))
    return out


CSV_COLUMNS = ["date", "site", "item", "name_zh", "name_en", "percent", "pass", "status", "detail"]


# A spreadsheet reads a cell starting with one of these as a formula (OWASP "CSV Injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def csv_cell(value: object) -> str:
    """A cell's text, with a leading `'` when a spreadsheet would otherwise run it as a
    formula. A plain number (`-3.5`) stays a number."""
    text = "" if value is None else str(value)
    if text.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


def to_csv(sites: list[SiteCompliance]) -> str:
    """UTF-8 with a BOM so that spreadsheet programs show the Chinese names correctly.
    Every cell goes through `csv_cell`: site ids, names and details come from devices and
    rules, and must not become formulas in the safety office's spreadsheet."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(CSV_COLUMNS)
    for s in sites:
        for i in s.items:
            w.writerow([csv_cell(c) for c in (
                s.date, s.site, i.item, i.name_zh, i.name_en, "" if i.percent is None else f"{i.percent:.1f}",
                "" if i.passed is None else str(i.passed).lower(), i.status, i.detail)])
    return "\ufeff" + buf.getvalue()
