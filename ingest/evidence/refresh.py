"""Keeps the six-100 evidence current: re-reads from InfluxDB the minutes the writers marked
(and, for `rebuild`, whole UTC days) and stores their facts (`store.DayFacts`).

The statements are those of the from-raw report (api/six100/evidence.py) restricted to a
window, so the facts are the same numbers: PM10 as InfluxDB's 1-minute mean per device
(recounted where a flagged value sits in the minute), ratio fields as count/sum/min per
minute, boolean samples counted, flagged values (HJ 212 `<field>_flag` other than N/S)
taken out, vehicle exits as rows. No thresholds here: those live in the rule packs and
are applied when the report is read (api/six100/kept.py).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from citywatch.errors import CitywatchError
from citywatch.topics import is_identifier
from ingest.evidence.store import DAY_MS, MIN_MS, MINUTES, DayFacts, EvidenceStore

log = logging.getLogger("citywatch.ingest.evidence")

RATIOS = ("cover_ratio", "hardened_ratio")
FLAGGABLE = ("pm10", "pm25", "tsp", *RATIOS)
VALID_FLAGS = frozenset({"N", "S"})
MAX_SITE_FILTER = 50  # beyond this many sites a window is read for every site (one scan instead of 50 ORs)
MERGE_GAP_MIN = 30  # marked minutes closer than this are read in one window


def _q(name: str) -> str:
    if not is_identifier(name):
        raise ValueError("not an identifier")
    return f'"{name}"'


def _where(a: int, b: int, sites: list[str] | None, extra: str = "") -> tuple[str, dict[str, str]]:
    parts = [f"time >= {int(a)}ms", f"time < {int(b)}ms"]
    params: dict[str, str] = {}
    if sites is not None:
        alts = []
        for i, s in enumerate(sites):
            if not is_identifier(s):
                raise ValueError("site is not an identifier")
            alts.append(f'"site" = $s{i}')
            params[f"s{i}"] = s
        parts.append("(" + " OR ".join(alts) + ")")
    if extra:
        parts.append(extra)
    return " WHERE " + " AND ".join(parts), params


def windows(minutes: Iterable[int], gap_min: int = MERGE_GAP_MIN) -> list[tuple[int, int]]:
    """Marked minute starts → [start, end) windows, close ones merged, none across a UTC day."""
    out: list[tuple[int, int]] = []
    for t in sorted(set(minutes)):
        if out and t - out[-1][1] < gap_min * MIN_MS and t // DAY_MS == (out[-1][1] - 1) // DAY_MS:
            out[-1] = (out[-1][0], t + MIN_MS)
        else:
            out.append((t, t + MIN_MS))
    return out


class _Window:
    """The facts of every site for one window [a, b) inside one UTC day, dense per site."""

    def __init__(self, a: int, b: int) -> None:
        self.a, self.b = a, b
        self.day = a - a % DAY_MS
        self.lo, self.hi = (a - self.day) // MIN_MS, (b - self.day) // MIN_MS
        self.sites: dict[str, DayFacts] = {}
        # (site, device) → minute index → [n, sum] of PM10, until merged into the site's worst
        self.pm10: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(dict)

    def at(self, site: str) -> DayFacts:
        f = self.sites.get(site)
        if f is None:
            f = self.sites[site] = DayFacts()
        return f

    def index(self, t: int) -> int:
        return (int(t) - self.day) // MIN_MS


class EvidenceKeeper:
    """Refreshes the store from InfluxDB: `refresh()` for the marks, `rebuild()` for days,
    `run()` in the background of `citywatch run` (every `interval_s`). Every compliance
    answer refreshes first, so the background pass only keeps the marks' backlog short:
    once a minute is enough."""

    def __init__(self, store: EvidenceStore, influx: Any, *, interval_s: float = 60.0) -> None:
        self.store = store
        self.influx = influx
        self.interval_s = interval_s
        self._lock = asyncio.Lock()
        self.last_error: str | None = None

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
                if self.last_error is not None:
                    log.info("six-100 evidence refreshes again")
                self.last_error = None
            except (CitywatchError, OSError, Exception) as exc:  # never ends the service; retried next round
                if self.last_error is None:
                    log.warning("six-100 evidence refresh failed (%s); the marks stay and are retried", exc)
                self.last_error = str(exc)[:300]
            await asyncio.sleep(self.interval_s)

    async def refresh(self) -> int:
        """Apply the pending marks; returns the number of windows read."""
        async with self._lock:
            n = 0
            while True:
                if self.store.low_on_space():  # the spool's drain has the disk first; marks wait
                    return n
                seq, by_site = await asyncio.to_thread(self.store.pending)
                if not seq:
                    return n
                spans: dict[tuple[int, int], set[str]] = defaultdict(set)
                all_minutes = sorted({m for ms in by_site.values() for m in ms})
                wins = windows(all_minutes)
                starts = [w[0] for w in wins]
                for site, ms in by_site.items():
                    for m in ms:
                        spans[wins[bisect.bisect_right(starts, m) - 1]].add(site)
                updates: dict[tuple[str, int], list[tuple[int, int, DayFacts]]] = defaultdict(list)
                for (a, b), sites in sorted(spans.items()):
                    win = await self.read_window(a, b, sorted(sites) if len(sites) <= MAX_SITE_FILTER else None)
                    for site in set(win.sites) | sites:
                        updates[(site, win.day)].append((win.lo, win.hi, win.at(site)))
                n += len(spans)
                await asyncio.to_thread(self.store.apply, updates, done_seq=seq)

    async def rebuild(self, start_ms: int, end_ms: int, *, hours_per_read: int = 2,
                      progress: Callable[[int, int], None] | None = None) -> int:
        """Re-read every UTC day that overlaps [start_ms, end_ms) for all sites, in reads
        of `hours_per_read`; each day is stored (and counted as rebuilt) once complete."""
        first, last = start_ms - start_ms % DAY_MS, (end_ms - 1) - (end_ms - 1) % DAY_MS
        days = list(range(first, last + 1, DAY_MS))
        step = max(1, min(24, hours_per_read)) * 3_600_000
        total = len(days) * (DAY_MS // step + (DAY_MS % step > 0))
        done = 0
        for day in days:
            async with self._lock:
                v0 = await asyncio.to_thread(self.store.version)
                updates: dict[tuple[str, int], list[tuple[int, int, DayFacts]]] = defaultdict(list)
                for a in range(day, day + DAY_MS, step):
                    win = await self.read_window(a, min(a + step, day + DAY_MS), None)
                    for site, facts in win.sites.items():
                        updates[(site, day)].append((win.lo, win.hi, facts))
                    done += 1
                    if progress is not None:
                        progress(done, total)
                # sites that had facts but now have none in the day are cleared too
                for site in await asyncio.to_thread(self._sites_of, day):
                    if (site, day) not in updates:
                        updates[(site, day)].append((0, MINUTES, DayFacts()))
                await asyncio.to_thread(self.store.apply, updates, rebuilt_days=[day], read_at_version=v0)
        return len(days)

    def _sites_of(self, day: int) -> list[str]:
        return [s for s, _ in self.store.versions([day])]

    async def _fields(self) -> set[str]:
        rows = await self.influx.query('SHOW FIELD KEYS FROM "dust"')
        return {v[0] for s in rows for v in s.get("values", [])}

    async def read_window(self, a: int, b: int, sites: list[str] | None) -> _Window:
        """Every site's facts for [a, b) (a and b minute-aligned, inside one UTC day)."""
        win = _Window(a, b)
        keys = await self._fields()
        clause, params = _where(a, b, sites)
        eclause, eparams = _where(a, b, sites, "\"kind\" = 'dust' AND \"type\" = 'vehicle_exit'")
        ratios = [f for f in RATIOS if f in keys]
        flags = [f for f in FLAGGABLE if f in keys and f"{f}_flag" in keys]
        queries: dict[str, str] = {}
        if "pm10" in keys:
            queries["pm10"] = f'SELECT mean("pm10") AS m FROM "dust"{clause} GROUP BY time(1m), "site", "device" fill(none)'
        if ratios:
            cols = ", ".join(f"count({_q(f)}) AS \"{f}_n\", sum({_q(f)}) AS \"{f}_s\", min({_q(f)}) AS \"{f}_lo\""
                             for f in ratios)
            queries["ratios"] = f'SELECT {cols} FROM "dust"{clause} GROUP BY time(1m), "site", "device" fill(none)'
        for f, col in (("hoarding_intact", "hoarding"), ("spray_on", "spray")):
            if f in keys:
                queries[f"{col}_n"] = f'SELECT count({_q(f)}) AS n FROM "dust"{clause} GROUP BY time(1m), "site" fill(none)'
                want = "false" if col == "hoarding" else "true"
                queries[f"{col}_{want}"] = (f'SELECT count({_q(f)}) AS n FROM "dust"{clause} AND {_q(f)} = {want} '
                                            f'GROUP BY time(1m), "site" fill(none)')
        for f in flags:
            flag = _q(f"{f}_flag")
            queries[f"flag:{f}"] = (f"SELECT {_q(f)}, {flag} FROM \"dust\"{clause} AND {flag} != 'N' AND {flag} != 'S' "
                                    'GROUP BY "site", "device"')
        queries["exits"] = f'SELECT "washed", "wash_seconds", "covered" FROM "events"{eclause} GROUP BY "site"'
        names = list(queries)
        answers = dict(zip(names, await asyncio.gather(
            *(self.influx.query(queries[k], params=(eparams if k == "exits" else params) or None) for k in names))))

        for s in answers.get("pm10", []):
            cells = win.pm10[(s["tags"]["site"], s["tags"]["device"])]
            for t, m in s.get("values", []):
                if m is not None:
                    cells[win.index(t)] = [1.0, float(m)]  # n = 1 until a flagged value needs the real count
        # ratio minutes per device, merged into the site after the flagged values are out
        ratio_cells: dict[tuple[str, str, str], dict[int, list[float]]] = defaultdict(dict)
        for s in answers.get("ratios", []):
            site, dev = s["tags"]["site"], s["tags"]["device"]
            cols = s["columns"]
            for row in s.get("values", []):
                r = dict(zip(cols, row))
                i = win.index(r["time"])
                for f in ratios:
                    if r.get(f"{f}_n"):
                        ratio_cells[(site, dev, f)][i] = [float(r[f"{f}_n"]), float(r[f"{f}_s"] or 0.0),
                                                          float(r[f"{f}_lo"])]
        for key, col in (("hoarding_n", "hoarding_n"), ("hoarding_false", "hoarding_false"),
                         ("spray_n", "spray_n"), ("spray_true", "spray_true")):
            for s in answers.get(key, []):
                arr = win.at(s["tags"]["site"]).cols[col]
                for t, n in s.get("values", []):
                    if n:
                        arr[win.index(t)] = int(n)
        for s in answers["exits"]:
            facts = win.at(s["tags"]["site"])
            cols = s["columns"]
            for row in s.get("values", []):
                r = dict(zip(cols, row))
                facts.exits.append([int(r["time"]), r.get("washed"), r.get("wash_seconds"), r.get("covered")])
        # flagged values: counted, and taken out of their minutes (as the from-raw report does)
        flagged_pm10: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
        ratio_fix: set[tuple[str, str, str, int]] = set()
        for f in flags:
            for s in answers[f"flag:{f}"]:
                site, dev = s["tags"]["site"], s["tags"]["device"]
                for t, value, fl in s.get("values", []):
                    if value is None or fl is None or fl in VALID_FLAGS:
                        continue
                    i = win.index(t)
                    win.at(site).cols[f"flag_{f}"][i] += 1
                    if f == "pm10":
                        flagged_pm10[(site, dev)].append((i, float(value)))
                    elif f in RATIOS:
                        ratio_fix.add((site, dev, f, i))
        for (site, dev), values in flagged_pm10.items():
            await self._exact_pm10(win, site, dev, values)
        for site, dev, f, i in sorted(ratio_fix):
            await self._exact_ratio(win, site, dev, f, i, ratio_cells)
        # merge devices into the site
        for (site, _dev), cells in win.pm10.items():
            arr = win.at(site).cols["pm10"]
            for i, (n, total) in cells.items():
                if n > 0:
                    v = total / n
                    arr[i] = v if np.isnan(arr[i]) else max(arr[i], v)
        for (site, _dev, f), cells in ratio_cells.items():
            c = win.at(site).cols
            for i, (n, total, lo) in cells.items():
                if n > 0:
                    c[f"{f}_n"][i] += int(n)
                    c[f"{f}_s"][i] += total
                    c[f"{f}_lo"][i] = lo if np.isnan(c[f"{f}_lo"][i]) else min(c[f"{f}_lo"][i], lo)
        return win

    async def _exact_pm10(self, win: _Window, site: str, dev: str, flagged: list[tuple[int, float]]) -> None:
        """The real (count, sum) of the minutes holding flagged PM10, then those values out."""
        first = win.day + min(i for i, _ in flagged) * MIN_MS
        last = win.day + (max(i for i, _ in flagged) + 1) * MIN_MS
        clause, params = _where(first, last, [site], '"device" = $dev')
        params["dev"] = dev
        cells = win.pm10[(site, dev)]
        wanted = {i for i, _ in flagged}
        for s in await self.influx.query(f'SELECT count("pm10") AS n, sum("pm10") AS s FROM "dust"{clause} '
                                         "GROUP BY time(1m) fill(none)", params=params):
            for t, n, total in s.get("values", []):
                if win.index(t) in wanted and n:
                    cells[win.index(t)] = [float(n), float(total or 0.0)]
        for i, value in flagged:
            cell = cells.get(i)
            if cell is not None:
                cell[0] -= 1
                cell[1] -= value

    async def _exact_ratio(self, win: _Window, site: str, dev: str, f: str, i: int,
                           cells: dict[tuple[str, str, str], dict[int, list[float]]]) -> None:
        """A ratio minute holding a flagged sample, from its valid samples only."""
        a = win.day + i * MIN_MS
        clause, params = _where(a, a + MIN_MS, [site], '"device" = $dev')
        params["dev"] = dev
        valid: list[float] = []
        for s in await self.influx.query(f"SELECT {_q(f)}, {_q(f + '_flag')} FROM \"dust\"{clause}", params=params):
            for _t, value, fl in s.get("values", []):
                if value is not None and (fl is None or fl in VALID_FLAGS):
                    valid.append(float(value))
        cells[(site, dev, f)][i] = [float(len(valid)), float(sum(valid)), min(valid)] if valid else [0.0, 0.0, 0.0]

