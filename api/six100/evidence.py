"""One local day of six-100 facts per site, read from InfluxDB in 1-minute buckets.

Quality flags (HJ 212, stored beside a value as the string field `<field>_flag`): a value
counts only when its flag is absent (MQTT readings) or N or S (DOMAIN §4). InfluxDB sums
and counts every value per minute; the few flagged values are then read on their own and
taken out of their minute again, so the minute means are those of the valid values only.
A flag field is queried only when it exists in the schema: InfluxQL reads an unknown name
in WHERE as an empty tag, which would match every point.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from api import influxql

NUMERIC = ("pm10", "pm25", "tsp", "cover_ratio", "hardened_ratio")
PARTICULATE = ("pm10", "pm25", "tsp")
VALID_FLAGS = frozenset({"N", "S"})
MIN_MS = 60_000


@dataclass
class SiteEvidence:
    """Facts of one site and day; minutes are bucket starts (epoch ms)."""

    site: str
    # (device, field) -> minute -> [valid count, valid sum]
    numeric: dict[tuple[str, str], dict[int, list[float]]] = field(default_factory=lambda: defaultdict(dict))
    flagged: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # field -> flagged values
    hoarding_n: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    hoarding_false: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    spray_n: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    spray_true: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    exits: list[dict[str, Any]] = field(default_factory=list)

    def minute_means(self, name: str, combine=max) -> dict[int, float]:
        """Valid 1-minute means of a field, devices combined (max: the worst PM10 monitor;
        min: the worst cover/hardening value)."""
        out: dict[int, float] = {}
        for (_, f), minutes in self.numeric.items():
            if f != name:
                continue
            for t, (n, s) in minutes.items():
                if n > 0:
                    m = s / n
                    out[t] = combine(out[t], m) if t in out else m
        return out

    def valid_minutes(self, names: tuple[str, ...]) -> set[int]:
        return {t for (_, f), minutes in self.numeric.items() if f in names
                for t, (n, _) in minutes.items() if n > 0}


async def field_keys(influx: Any, measurement: str = "dust") -> set[str]:
    rows = await influxql.run(influx, f"SHOW FIELD KEYS FROM {influxql.ident(measurement)}")
    return {r["fieldKey"] for s in rows for r in influxql.rows(s)}


async def read_day(influx: Any, *, start_ms: int, end_ms: int, site: str | None,
                   max_sites: int) -> dict[str, SiteEvidence]:
    """Every site's facts for [start_ms, end_ms) (one site when `site` is given)."""
    sites: dict[str, SiteEvidence] = {}

    def at(name: str) -> SiteEvidence:
        ev = sites.get(name)
        if ev is None:
            ev = sites[name] = SiteEvidence(name)
        return ev

    keys = await field_keys(influx)
    clause, params = influxql.where(start_ms, end_ms, {"site": site})
    by_device = f" SLIMIT {int(max_sites) * 8}"
    numeric = [f for f in NUMERIC if f in keys]
    bools = [f for f in ("hoarding_intact", "spray_on") if f in keys]
    cols = [*(f'count({influxql.ident(f)}) AS "{f}_n", sum({influxql.ident(f)}) AS "{f}_s"' for f in numeric),
            *(f'count({influxql.ident(f)}) AS "{f}_n"' for f in bools)]
    if cols:
        q = f'SELECT {", ".join(cols)} FROM "dust"{clause} GROUP BY time(1m), "site", "device" fill(none){by_device}'
        for s in await influxql.run(influx, q, params):
            ev, dev = at(s["tags"]["site"]), s["tags"]["device"]
            for row in influxql.rows(s):
                t = int(row["time"])
                for f in numeric:
                    n = row.get(f"{f}_n") or 0
                    if n:
                        ev.numeric[(dev, f)][t] = [float(n), float(row.get(f"{f}_s") or 0.0)]
                if row.get("hoarding_intact_n"):
                    ev.hoarding_n[t] += int(row["hoarding_intact_n"])
                if row.get("spray_on_n"):
                    ev.spray_n[t] += int(row["spray_on_n"])
    # flagged values out of their minutes again
    for f in numeric:
        flag = f"{f}_flag"
        if flag not in keys:
            continue
        fq = (f'SELECT {influxql.ident(f)}, {influxql.ident(flag)} FROM "dust"{clause} AND '
              f"{influxql.ident(flag)} != 'N' AND {influxql.ident(flag)} != 'S' GROUP BY \"site\", \"device\"{by_device}")
        for s in await influxql.run(influx, fq, params):
            ev, dev = at(s["tags"]["site"]), s["tags"]["device"]
            for t, value, fl in s.get("values", []):
                if value is None or fl is None or fl in VALID_FLAGS:
                    continue
                ev.flagged[f] += 1
                cell = ev.numeric[(dev, f)].get(int(t) - int(t) % MIN_MS)
                if cell is not None:
                    cell[0] -= 1
                    cell[1] -= float(value)
    for f, want, target in (("hoarding_intact", "false", "hoarding_false"), ("spray_on", "true", "spray_true")):
        if f not in keys:
            continue
        q = (f'SELECT count({influxql.ident(f)}) AS n FROM "dust"{clause} AND {influxql.ident(f)} = {want} '
             f'GROUP BY time(1m), "site" fill(none) SLIMIT {int(max_sites)}')
        for s in await influxql.run(influx, q, params):
            ev = at(s["tags"]["site"])
            bucket = getattr(ev, target)
            for t, n in s.get("values", []):
                if n:
                    bucket[int(t)] += int(n)
    eclause, eparams = influxql.where(start_ms, end_ms, {"site": site, "kind": "dust", "type": "vehicle_exit"})
    q = (f'SELECT "washed", "wash_seconds", "covered" FROM "events"{eclause} GROUP BY "site" '
         f"LIMIT 100000 SLIMIT {int(max_sites)}")
    for s in await influxql.run(influx, q, eparams):
        at(s["tags"]["site"]).exits = influxql.rows(s)
    return sites
