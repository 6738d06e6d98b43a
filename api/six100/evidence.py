"""One local day of six-100 facts per site, read from InfluxDB.

What is read, and why so (InfluxDB 1.x spends its time per GROUP BY time bucket and per
aggregate, so only PM10 is read minute by minute):

- PM10 per device and minute (count, sum): the wet-operation minutes and the minutes online;
- per device and day (count, sum) of `cover_ratio` and `hardened_ratio`, the number of
  `hoarding_intact` and `spray_on` samples: the day's means and whether a sensor spoke;
- the minutes holding a cover/hardening sample at or below the highest limit any site has
  (count, min) — usually none, so this is cheap — to find runs below the limit;
- the minutes with `hoarding_intact = false` and with `spray_on = true`;
- the vehicle exits.

Quality flags (HJ 212, stored beside a value as the string field `<field>_flag`): a value
counts only when its flag is absent (MQTT readings) or N or S (docs/domain.md §4). The flagged
values are read on their own and taken out of their minute and day again. A flag field is
queried only when it exists in the schema: InfluxQL reads an unknown name in WHERE as an
empty tag, which would match every point.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from api import influxql

RATIOS = ("cover_ratio", "hardened_ratio")
FLAGGABLE = ("pm10", "pm25", "tsp", *RATIOS)
VALID_FLAGS = frozenset({"N", "S"})
MIN_MS = 60_000


@dataclass
class SiteEvidence:
    """Facts of one site and day; minutes are bucket starts (epoch ms)."""

    site: str
    pm10: dict[str, dict[int, list[float]]] = field(default_factory=lambda: defaultdict(dict))  # device → minute → [n, sum]
    daily: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # (device, field) → [n, sum]
    low: dict[tuple[str, str], dict[int, list[float]]] = field(default_factory=lambda: defaultdict(dict))  # → [n, min]
    flagged: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # field → flagged values
    hoarding_n: int = 0
    hoarding_false: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    spray_n: int = 0
    spray_true: set[int] = field(default_factory=set)
    exits: list[dict[str, Any]] = field(default_factory=list)

    def pm10_minutes(self) -> dict[int, float]:
        """Valid 1-minute PM10 means, the worst monitor of the site in each minute."""
        out: dict[int, float] = {}
        for minutes in self.pm10.values():
            for t, (n, s) in minutes.items():
                if n > 0:
                    out[t] = max(out[t], s / n) if t in out else s / n
        return out

    def day_mean(self, name: str) -> tuple[int, float | None]:
        """(valid samples, their mean) of a field over the day, all devices of the site."""
        n = sum(v[0] for (_, f), v in self.daily.items() if f == name)
        s = sum(v[1] for (_, f), v in self.daily.items() if f == name)
        return int(n), (s / n if n > 0 else None)

    def low_minutes(self, name: str) -> dict[int, float]:
        """Minutes with a valid sample at or below the queried limit → the lowest one."""
        out: dict[int, float] = {}
        for (_, f), minutes in self.low.items():
            if f != name:
                continue
            for t, (n, lo) in minutes.items():
                if n > 0:
                    out[t] = min(out[t], lo) if t in out else lo
        return out


async def field_keys(influx: Any, measurement: str = "dust") -> set[str]:
    rows = await influxql.run(influx, f"SHOW FIELD KEYS FROM {influxql.ident(measurement)}")
    return {r["fieldKey"] for s in rows for r in influxql.rows(s)}


async def _exact_pm10_minutes(influx: Any, ev: SiteEvidence, device: str, flagged: list[tuple[int, float]],
                              start_ms: int, end_ms: int) -> None:
    """(count, sum) of the device's PM10 minutes that hold flagged values, then the flagged
    values taken out, so those minutes' means are of the valid values only."""
    first = max(start_ms, min(t for t, _ in flagged))
    last = min(end_ms, max(t for t, _ in flagged) + MIN_MS)
    clause, params = influxql.where(first, last, {"site": ev.site, "device": device})
    q = f'SELECT count("pm10") AS n, sum("pm10") AS s FROM "dust"{clause} GROUP BY time(1m) fill(none)'
    minutes = ev.pm10[device]
    wanted = {t for t, _ in flagged}
    for s in await influxql.run(influx, q, params):
        for t, n, total in s.get("values", []):
            if int(t) in wanted and n:
                minutes[int(t)] = [float(n), float(total or 0.0)]
    for t, value in flagged:
        cell = minutes.get(t)
        if cell is not None:
            cell[0] -= 1
            cell[1] -= value


def _num(value: float) -> str:
    return repr(float(value))  # a float we computed, never request text


async def read_day(influx: Any, *, start_ms: int, end_ms: int, site: str | None, max_sites: int,
                   low_limits: Mapping[str, tuple[float, bool]]) -> dict[str, SiteEvidence]:
    """Every site's facts for [start_ms, end_ms) (one site when `site` is given).
    `low_limits`: per ratio field, the highest limit of any site and whether a sample equal
    to it is bad too (`at_most`); the minutes with such samples are read."""
    sites: dict[str, SiteEvidence] = {}

    def at(name: str) -> SiteEvidence:
        ev = sites.get(name)
        if ev is None:
            ev = sites[name] = SiteEvidence(name)
        return ev

    keys = await field_keys(influx)
    clause, params = influxql.where(start_ms, end_ms, {"site": site})
    eclause, eparams = influxql.where(start_ms, end_ms, {"site": site, "kind": "dust", "type": "vehicle_exit"})
    by_device = f" SLIMIT {int(max_sites) * 8}"
    by_site = f" SLIMIT {int(max_sites)}"
    ratios = [f for f in RATIOS if f in keys]
    flags = [f for f in FLAGGABLE if f in keys and f"{f}_flag" in keys]
    # the statements are independent: InfluxDB answers them side by side
    queries: dict[str, tuple[str, dict[str, str]]] = {}
    if "pm10" in keys:
        # one aggregate a minute (InfluxDB 1.x is markedly slower with two); the rare minutes
        # that hold flagged values get their count afterwards to take those values out again
        queries["pm10"] = (f'SELECT mean("pm10") AS m FROM "dust"{clause} '
                           f'GROUP BY time(1m), "site", "device" fill(none){by_device}', params)
    cols = [*(f'count({influxql.ident(f)}) AS "{f}_n", sum({influxql.ident(f)}) AS "{f}_s"' for f in ratios),
            *(f'count({influxql.ident(f)}) AS "{f}_n"' for f in ("hoarding_intact", "spray_on") if f in keys)]
    if cols:
        queries["daily"] = (f'SELECT {", ".join(cols)} FROM "dust"{clause} GROUP BY "site", "device"{by_device}', params)
    for f in ratios:
        if f in low_limits:
            limit, inclusive = low_limits[f]
            # strict for `below`: the usual 100 % samples are not read at all
            queries[f"low:{f}"] = (
                f'SELECT count({influxql.ident(f)}) AS n, min({influxql.ident(f)}) AS lo FROM "dust"{clause} AND '
                f'{influxql.ident(f)} {"<=" if inclusive else "<"} {_num(limit)} '
                f'GROUP BY time(1m), "site", "device" fill(none){by_device}', params)
    for f in flags:
        flag = influxql.ident(f"{f}_flag")
        queries[f"flag:{f}"] = (f"SELECT {influxql.ident(f)}, {flag} FROM \"dust\"{clause} AND {flag} != 'N' AND "
                                f"{flag} != 'S' GROUP BY \"site\", \"device\"{by_device}", params)
    for f, want in (("hoarding_intact", "false"), ("spray_on", "true")):
        if f in keys:
            queries[f"{f}={want}"] = (f'SELECT count({influxql.ident(f)}) AS n FROM "dust"{clause} AND '
                                      f'{influxql.ident(f)} = {want} GROUP BY time(1m), "site" fill(none){by_site}',
                                      params)
    queries["exits"] = (f'SELECT "washed", "wash_seconds", "covered" FROM "events"{eclause} GROUP BY "site" '
                        f"LIMIT 100000{by_site}", eparams)
    answers = dict(zip(queries, await asyncio.gather(*(influxql.run(influx, q, p) for q, p in queries.values()))))

    for s in answers.get("pm10", []):
        minutes = at(s["tags"]["site"]).pm10[s["tags"]["device"]]
        for t, m in s.get("values", []):
            if m is not None:
                minutes[int(t)] = [1.0, float(m)]  # [n, sum] with n = 1 until a flag needs the real count
    for s in answers.get("daily", []):
        ev, dev = at(s["tags"]["site"]), s["tags"]["device"]
        for row in influxql.rows(s):
            for f in ratios:
                if row.get(f"{f}_n"):
                    ev.daily[(dev, f)] = [float(row[f"{f}_n"]), float(row.get(f"{f}_s") or 0.0)]
            ev.hoarding_n += int(row.get("hoarding_intact_n") or 0)
            ev.spray_n += int(row.get("spray_on_n") or 0)
    for f in ratios:
        for s in answers.get(f"low:{f}", []):
            minutes = at(s["tags"]["site"]).low[(s["tags"]["device"], f)]
            for t, n, lo in s.get("values", []):
                if n:
                    minutes[int(t)] = [float(n), float(lo)]
    for s in answers.get("hoarding_intact=false", []):
        ev = at(s["tags"]["site"])
        for t, n in s.get("values", []):
            if n:
                ev.hoarding_false[int(t)] = int(n)
    for s in answers.get("spray_on=true", []):
        ev = at(s["tags"]["site"])
        ev.spray_true.update(int(t) for t, n in s.get("values", []) if n)
    for s in answers["exits"]:
        at(s["tags"]["site"]).exits = influxql.rows(s)
    # flagged values out of their minutes and days again
    flagged_pm10: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    for f in flags:
        for s in answers[f"flag:{f}"]:
            ev, dev = at(s["tags"]["site"]), s["tags"]["device"]
            for t, value, fl in s.get("values", []):
                if value is None or fl is None or fl in VALID_FLAGS:
                    continue
                ev.flagged[f] += 1
                minute = int(t) - int(t) % MIN_MS
                if f == "pm10":
                    flagged_pm10[(ev.site, dev)].append((minute, float(value)))
                elif f in RATIOS:
                    day = ev.daily.get((dev, f))
                    if day is not None:
                        day[0] -= 1
                        day[1] -= float(value)
                    low = ev.low[(dev, f)].get(minute)
                    limit, inclusive = low_limits.get(f, (float("-inf"), False))
                    if low is not None and (float(value) <= limit if inclusive else float(value) < limit):
                        low[0] -= 1  # its min may have been this value: a rare edge, the minute stays judged
    gate = asyncio.Semaphore(4)  # a city of flagging monitors must not fire 1,000 statements at once

    async def exact(site_name: str, dev: str, values: list[tuple[int, float]]) -> None:
        async with gate:
            await _exact_pm10_minutes(influx, sites[site_name], dev, values, start_ms, end_ms)

    await asyncio.gather(*(exact(site_name, dev, values) for (site_name, dev), values in flagged_pm10.items()))
    return sites
