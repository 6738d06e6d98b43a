"""Six-100 from the kept evidence (ingest/evidence): the minute facts the writers keep
current, judged here with the rules in force — no raw points read per request.

A local day is answered from the store when every UTC day it overlaps is *covered*:
rebuilt from InfluxDB (`citywatch report six100 --rebuild`), or begun at least an hour
after the store was created (every point written since then was marked by our writers).
Otherwise `None`, and the caller reads InfluxDB as before (api/six100/evidence.py).

Pending marks are applied first (`EvidenceKeeper.refresh`), so an answer holds every
point InfluxDB accepted before the request. Judged sites are cached per (site, day)
against the versions of their facts and a fingerprint of what judges them (rules, set
values, equipment, interval, district); a past day is judged once, today up to its last
whole minute.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from api.models import SiteCompliance
from api.six100.evidence import MIN_MS, RATIOS, SiteEvidence
from api.six100.judge import judge_site, until_later
from api.six100.judged import FILE_NAME as JUDGED_FILE
from api.six100.judged import JudgedStore, digest
from api.six100.thresholds import ItemRules
from ingest.evidence.store import COLUMNS, DAY_MS, DayFacts

COVER_MARGIN_MS = 3_600_000  # a point up to this far in the future when the store began is still covered
CACHE_SITES = 200_000  # judged site-days kept in memory (a month of 1,000 sites is 31,000)
TODAY_SITES = 20_000  # today's answers kept by their facts (a site's earlier versions go first)


@dataclass
class KeptEvidence(SiteEvidence):
    """A site's day from the kept facts; the minute dicts are prepared once."""

    pm10_by_minute: dict[int, float] = field(default_factory=dict)

    def pm10_minutes(self) -> dict[int, float]:
        return self.pm10_by_minute


def _window(facts: list[tuple[int, DayFacts]], start_ms: int, end_ms: int) -> tuple[np.ndarray, dict[str, np.ndarray],
                                                                                     list[list[Any]]]:
    """Minute starts and columns of [start_ms, end_ms) out of the UTC days that hold it."""
    times, parts, exits = [], {c: [] for c in COLUMNS}, []
    for day, f in facts:
        lo = max(0, (start_ms - day) // MIN_MS)
        hi = min(1440, (end_ms - day) // MIN_MS)
        if hi <= lo:
            continue
        times.append(day + np.arange(lo, hi, dtype=np.int64) * MIN_MS)
        for c in COLUMNS:
            parts[c].append(f.cols[c][lo:hi])
        exits += [e for e in f.exits if start_ms <= e[0] < end_ms]
    if not times:
        return np.zeros(0, np.int64), {c: np.zeros(0, COLUMNS[c][0]) for c in COLUMNS}, []
    return np.concatenate(times), {c: np.concatenate(v) for c, v in parts.items()}, exits


def evidence_of(site: str, facts: list[tuple[int, DayFacts]], start_ms: int, end_ms: int,
                low_limits: Mapping[str, tuple[float, bool]]) -> KeptEvidence | None:
    """The SiteEvidence the from-raw reader would build for this site and window; None
    when the window holds no fact (the from-raw reader would not know the site)."""
    t, c, exits = _window(facts, start_ms, end_ms)
    ev = KeptEvidence(site)
    any_fact = bool(exits)
    pm = ~np.isnan(c["pm10"])
    if pm.any():
        ev.pm10_by_minute = dict(zip(t[pm].tolist(), c["pm10"][pm].tolist()))
        any_fact = True
    for f in RATIOS:
        n = c[f"{f}_n"]
        if n.any():
            ev.daily[("*", f)] = [float(n.sum()), float(c[f"{f}_s"][n > 0].sum())]
            any_fact = True
            if f in low_limits:  # the minutes the from-raw reader asks for: a sample at/below the limit
                limit, inclusive = low_limits[f]
                lo = c[f"{f}_lo"]
                with np.errstate(invalid="ignore"):
                    sel = (lo <= limit) if inclusive else (lo < limit)
                if sel.any():
                    ev.low[("*", f)] = {m: [1.0, v] for m, v in zip(t[sel].tolist(), lo[sel].tolist())}
    for name in ("pm10", "pm25", "tsp", *RATIOS):
        k = int(c[f"flag_{name}"].sum())
        if k:
            ev.flagged[name] = k
            any_fact = True
    ev.hoarding_n = int(c["hoarding_n"].sum())
    hf = c["hoarding_false"] > 0
    ev.hoarding_false.update(zip(t[hf].tolist(), c["hoarding_false"][hf].tolist()))
    ev.spray_n = int(c["spray_n"].sum())
    ev.spray_true = set(t[c["spray_true"] > 0].tolist())
    any_fact = any_fact or ev.hoarding_n > 0 or ev.spray_n > 0
    ev.exits = [{"time": e[0], "washed": e[1], "wash_seconds": e[2], "covered": e[3]} for e in exits]
    return ev if any_fact else None


class _Cache:
    """Judged site-days of one store: in memory (LRU), and the whole days on disk
    (judged.JudgedStore) so that a restart does not judge them again."""

    def __init__(self, store: Any) -> None:
        self.judged: OrderedDict[tuple, SiteCompliance] = OrderedDict()
        self.disk = JudgedStore(Path(store.path).parent / JUDGED_FILE, low_on_space=store.low_on_space)
        # a day is judged by one task at a time: a request that comes while the warmer
        # (api/warm.py) judges its day waits and finds it judged, instead of judging it too;
        # other days go on meanwhile
        self.locks: dict[tuple[int, date], asyncio.Lock] = {}
        # today's answers by their facts (key without the end): (answer, its end, valid PM10
        # minutes, flagged PM10 values), so a later minute only re-judges the monitoring item
        self.today: OrderedDict[tuple, tuple[Any, int, np.ndarray, int]] = OrderedDict()

    def lock(self, day: date) -> asyncio.Lock:
        key = (id(asyncio.get_running_loop()), day)
        if key not in self.locks:
            if len(self.locks) > 1000:  # a lock nobody holds or waits for can go
                self.locks = {k: v for k, v in self.locks.items() if v.locked()}
            self.locks[key] = asyncio.Lock()
        return self.locks[key]

    def get(self, key: tuple) -> SiteCompliance | None:
        hit = self.judged.get(key)
        if hit is not None:
            self.judged.move_to_end(key)
        return hit

    def put(self, key: tuple, value: SiteCompliance) -> None:
        self.judged[key] = value
        while len(self.judged) > CACHE_SITES:
            self.judged.popitem(last=False)

    def put_today(self, key: tuple, value: tuple[Any, int, np.ndarray, int]) -> None:
        self.today[key] = value
        self.today.move_to_end(key)
        while len(self.today) > TODAY_SITES:
            self.today.popitem(last=False)


_CACHES: dict[tuple[int, str], _Cache] = {}
_SILENT: Any = object()
_NO_MINUTES = np.zeros(0, np.int64)
YIELD_EVERY = 4  # sites judged between two yields to the event loop (~8 ms): other requests go on meanwhile


def _canon(x: Any) -> Any:
    if isinstance(x, (set, frozenset)):
        return ("set", sorted((_canon(v) for v in x), key=repr))
    if isinstance(x, dict):
        return ("dict", sorted(((_canon(k), _canon(v)) for k, v in x.items()), key=repr))
    if isinstance(x, (list, tuple)):
        return tuple(_canon(v) for v in x)
    if isinstance(x, BaseModel):
        return (type(x).__name__, _canon(x.model_dump()))
    return x


def stable_repr(x: Any) -> str:
    """repr with sets and dicts in sorted order: the same in every process (a set's order
    follows the per-process string hash), so a key kept on disk matches after a restart."""
    return repr(_canon(x))


def _cache(store: Any) -> _Cache:
    key = (id(store), str(store.path))  # the path too: a new store may get the id of a closed one
    if key not in _CACHES:
        _CACHES[key] = _Cache(store)
    return _CACHES[key]


def covered(store: Any, start_ms: int, end_ms: int) -> bool:
    """Every point of [start_ms, end_ms) is in the store: its part after the store began
    (plus the margin) was marked by the writers, each UTC day before that was rebuilt."""
    since = store.live_since_ms()
    early = [u for u in _utc_days(start_ms, end_ms) if max(u, start_ms) - since < COVER_MARGIN_MS]
    return not early or store.rebuilt(early) == set(early)


async def covered_days(keeper: Any, days: list[date], tz) -> list[date]:
    """The local days the kept evidence covers (the others are read from InfluxDB)."""
    from api.six100.days import day_bounds

    def check() -> list[date]:
        return [d for d in days if covered(keeper.store, *day_bounds(d, tz))]

    return await asyncio.to_thread(check)


def _utc_days(start_ms: int, end_ms: int) -> list[int]:
    return list(range(start_ms - start_ms % DAY_MS, end_ms, DAY_MS))


async def six100_days(keeper: Any, *, days: list[date], tz, now_ms: int, site: str | None, registry: Any,
                      max_sites: int, rules: ItemRules, low_limits: Mapping[str, tuple[float, bool]],
                      site_inputs: Any) -> dict[str, list[SiteCompliance]] | None:
    """Each local day's report from the kept evidence, or None when a day is not covered.
    `site_inputs(name)` → (equipment, params, interval_s, district) as the caller judges."""
    from api.six100.days import day_bounds

    store = keeper.store
    bounds = {d: day_bounds(d, tz) for d in days}
    utc = sorted({u for a, b in bounds.values() for u in _utc_days(a, b)})
    if not all(await asyncio.to_thread(lambda: [covered(store, a, b) for a, b in bounds.values()])):
        return None
    await keeper.refresh()
    versions = await asyncio.to_thread(store.versions, utc, None if site is None else [site])
    sites_of: dict[int, set[str]] = {}
    for s, u in versions:
        sites_of.setdefault(u, set()).add(s)
    registered: set[str] = set()
    if registry is not None:
        registered = {dv.site for dv in registry.devices.values() if dv.kind == "dust"}
    day = _Day(store=store, cache=_cache(store), versions=versions, registered=registered, site=site,
               rules=rules, low_limits=low_limits, site_inputs=site_inputs,
               # the store's birth too: its versions count from 0 again when it is made anew
               # (a digest: the whole rules' text made each site's key slow to compare and to digest)
               fingerprint=digest((await asyncio.to_thread(store.live_since_ms), rules.pack,
                                   stable_repr(sorted(rules.by_item.items())), stable_repr(sorted(low_limits.items())))))
    out: dict[str, list[SiteCompliance]] = {}
    for d in days:
        start_ms, end_ms = bounds[d]
        udays = _utc_days(start_ms, end_ms)
        names = {site} if site is not None else set().union(*(sites_of.get(u, set()) for u in udays)) | registered
        async with day.cache.lock(d):
            out[d.isoformat()] = await day.judge(d, start_ms, end_ms, now_ms, sorted(names)[:max_sites])
    return out


@dataclass
class _Day:
    """What judging a local day needs; `inputs` (site → (judge inputs, their repr)) is shared by the days."""

    store: Any
    cache: _Cache
    versions: dict[tuple[str, int], int]
    registered: set[str]
    site: str | None
    rules: ItemRules
    low_limits: Mapping[str, tuple[float, bool]]
    site_inputs: Any
    fingerprint: str
    inputs: dict[str, tuple[Any, str]] = field(default_factory=dict)

    async def judge(self, d: date, start_ms: int, end_ms: int, now_ms: int, names: list[str]) -> list[SiteCompliance]:
        cache, versions = self.cache, self.versions
        until = min(end_ms, now_ms)
        if until < end_ms:  # today: judged up to its last whole minute, so answers within it are shared
            until -= until % MIN_MS
        whole = until >= end_ms  # a whole day's answer is kept on disk too
        udays = _utc_days(start_ms, end_ms)
        todo: list[tuple[str, tuple]] = []
        results: dict[str, SiteCompliance] = {}
        for name in names:
            if name not in self.inputs:
                got = self.site_inputs(name)
                self.inputs[name] = (got, stable_repr(got))
            key = (name, d, tuple(versions.get((name, u), 0) for u in udays), until if whole else None,
                   self.fingerprint, self.inputs[name][1])
            if whole:
                hit = cache.get(key)
            else:
                hit = self._today(key, until, start_ms)
            if hit is _SILENT:
                continue
            if hit is not None:
                results[name] = hit
            else:
                todo.append((name, key))
        if todo and whole:
            held = await asyncio.to_thread(cache.disk.get, d.isoformat(), [n for n, _ in todo])
            left = []
            for name, key in todo:
                row = held.get(name)
                if row is None or row[0] != digest(key):  # judged under other versions or rules: judge again
                    left.append((name, key))
                    continue
                value = SiteCompliance.model_validate_json(row[1]) if row[1] else _SILENT
                cache.put(key, value)
                if value is not _SILENT:
                    results[name] = value
            todo = left
        if todo:
            wanted = [(name, u) for name, _ in todo for u in udays if (name, u) in versions]
            blobs = await asyncio.to_thread(self.store.read, wanted)
            rows: list[tuple[str, str, str, bytes]] = []
            for k, (name, key) in enumerate(todo):
                if k and k % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                facts = [(u, DayFacts.decode(blobs[(name, u)][1])) for u in udays if (name, u) in blobs]
                # a refresh between reading the versions and the records: the answer is right
                # for now but not for the key, so it is not kept
                keep = all(blobs.get((name, u), (0,))[0] == versions.get((name, u), 0) for u in udays)
                ev = evidence_of(name, facts, start_ms, end_ms, self.low_limits) if facts else None
                if ev is None and self.site is None and name not in self.registered:
                    if keep and whole:  # facts only in the neighbouring UTC day: not a site of this day
                        cache.put(key, _SILENT)
                        rows.append((d.isoformat(), name, digest(key), b""))
                    elif keep:
                        cache.put_today(key, (_SILENT, until, _NO_MINUTES, 0))
                    continue
                equipment, params, interval, district = self.inputs[name][0]
                res = judge_site(ev or SiteEvidence(name), day=d.isoformat(), rules=self.rules, equipment=equipment,
                                 params=params, interval_s=interval, start_ms=start_ms, until_ms=until,
                                 district=district)
                results[name] = res
                if keep and whole:
                    cache.put(key, res)
                    rows.append((d.isoformat(), name, digest(key), res.model_dump_json().encode()))
                elif keep:
                    times = np.array(sorted(ev.pm10_minutes()) if ev else [], dtype=np.int64)
                    cache.put_today(key, (res, until, times, ev.flagged.get("pm10", 0) if ev else 0))
            if whole:
                await asyncio.to_thread(cache.disk.put, rows)
        return [results[n] for n in sorted(results)]

    def _today(self, key: tuple, until: int, start_ms: int) -> Any:
        """Today's answer from the one judged on the same facts: as it is within the same
        minute, else with the monitoring item judged up to `until`; None when not held."""
        held = self.cache.today.get(key)
        if held is None:
            return None
        res, at, times, flagged = held
        if at == until or res is _SILENT:
            return res
        equipment, _, interval, _ = self.inputs[key[0]][0]
        res = until_later(res, times, flagged, rules=self.rules, equipment=equipment, interval_s=interval,
                          start_ms=start_ms, until_ms=until)
        self.cache.put_today(key, (res, until, times, flagged))
        return res
