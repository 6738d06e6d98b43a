"""六个百分百 (six 100%) daily compliance per site, judged on evidence (docs/domain.md §1).

One local day (CW_TZ), up to now for today. Each item is `pass`, `fail` or `no_evidence`
(never a pass) with its `reason`: `not_equipped` (the registry's `equipment` gives the site
no means to measure it: it does not count in all_pass), `sensor_silent`, `only_flagged`
(HJ 212 values flagged other than N/S are not valid), `no_activity` (measured, nothing
happened: no vehicle exit) or `no_rule`. `all_pass` is true only when every item the site
can measure passed.

Set values and tolerances come from the rules in force (`six100: {item: ...}` in the rule
pack, CW_RULE_PACK), so the report and the alerts agree:

| item | rule (default pack) | data | percent | fail when |
|---|---|---|---|---|
| hoarding 周边围挡 | dust_hoarding | `hoarding_intact` | share of samples intact | a false sample (held `for`) |
| cover 物料覆盖 | dust_cover_ratio | `cover_ratio` samples; minutes with one below the set value | day mean | below the set value for the rule's `for` (1 h) |
| wash 车辆冲洗 | dust_wash_rate | `vehicle_exit` events | share meeting the numerator | share below the rule's `below` |
| hardened 路面硬化 | dust_hardened_ratio | `hardened_ratio` samples; minutes with one below the set value | day mean | below the set value for `for` |
| wet_operation 湿法作业 | dust_wet_operation | PM10 1-min means + observed `spray_on` | share of high minutes sprayed | PM10 above the set value for `for` (10 min) with no spray observed |
| muck_covered 渣土车辆密闭 | dust_vehicle_uncovered | `vehicle_exit` events | share covered | any exit breaking the rule |
| monitoring 在线监测 | dust_no_data | valid particulate data | share of the day online (gaps > factor x interval offline) | below `pass_percent` (90) |

A set value is the site's registry parameter (e.g. `pm10_set_value`) when a device of the
site has it, else the rule's default.
"""

from __future__ import annotations

import csv
import functools
import io
import re
from collections.abc import Mapping
from datetime import date
from typing import Any

from api.models import SiteCompliance
from api.six100.evidence import SiteEvidence, read_day
from api.six100.days import day_bounds, month_days  # noqa: F401 - month_days: the routes use it from here
from api.six100.judge import judge_site, low_limit
from api.six100.kept import covered_days, six100_days as six100_kept
from api.six100.thresholds import ItemRules, cond_on


def _site_params(devices: list[Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for d in devices:
        for k, v in d.params.items():
            params.setdefault(k, v)
    return params


def site_district(devices: list[Any]) -> str | None:
    for d in devices:
        district = getattr(d, "district", None) or d.params.get("district")
        if district:
            return str(district)
    return None


def judge_inputs(registry: Any, rules: ItemRules):
    """(low_limits, site_inputs): the highest ratio limit of any site (the minutes at or
    below it are read), and per site (equipment, params, interval_s, district)."""
    devices_by_site: dict[str, list[Any]] = {}
    if registry is not None:
        for d in registry.devices.values():
            devices_by_site.setdefault(d.site, []).append(d)
    low_limits: dict[str, tuple[float, bool]] = {}
    for item, name in (("cover", "cover_ratio"), ("hardened", "hardened_ratio")):
        limits = [v for devs in [[], *devices_by_site.values()]
                  if (v := low_limit(rules.get(item), name, _site_params(devs))) is not None]
        if limits:
            cond = cond_on(rules.get(item), name)
            low_limits[name] = (max(limits), cond.op == "at_most")

    def site_inputs(name: str) -> tuple[Any, dict[str, Any], float, str | None]:
        devices = devices_by_site.get(name, [])
        equipment = registry.site_equipment(name) if registry is not None else None
        interval = max((d.expected_interval_s for d in devices), default=60.0)
        return equipment, _site_params(devices), interval, site_district(devices)

    return low_limits, site_inputs


async def six100(influx: Any, *, day: date, tz, now_ms: int, site: str | None, registry: Any,
                 max_sites: int, rules: ItemRules, keeper: Any = None) -> list[SiteCompliance]:
    """One local day. With `keeper` (ingest.evidence.EvidenceKeeper) the day is judged from
    the kept evidence when the store covers it (api/six100/kept.py), else from InfluxDB."""
    low_limits, site_inputs = judge_inputs(registry, rules)
    if keeper is not None:
        kept = await six100_kept(keeper, days=[day], tz=tz, now_ms=now_ms, site=site, registry=registry,
                                 max_sites=max_sites, rules=rules, low_limits=low_limits, site_inputs=site_inputs)
        if kept is not None:
            return kept[day.isoformat()]
    start_ms, end_ms = day_bounds(day, tz)
    until = min(end_ms, now_ms)
    evidence = await read_day(influx, start_ms=start_ms, end_ms=end_ms, site=site, max_sites=max_sites,
                              low_limits=low_limits)
    names = set(evidence)
    if site is not None:
        names = {site}
    elif registry is not None:  # every registered dust site, data or not
        names |= {d.site for d in registry.devices.values() if d.kind == "dust"}
    out: list[SiteCompliance] = []
    for name in sorted(names)[:max_sites]:
        equipment, params, interval, district = site_inputs(name)
        out.append(judge_site(evidence.get(name) or SiteEvidence(name), day=day.isoformat(), rules=rules,
                              equipment=equipment, params=params, interval_s=interval,
                              start_ms=start_ms, until_ms=until, district=district))
    return out


CSV_COLUMNS = ["date", "site", "item", "name_zh", "name_en", "percent", "pass", "status", "detail",
               "reason", "district", "detail_zh"]


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
                "" if i.passed is None else str(i.passed).lower(), i.status, i.detail,
                i.reason or "", s.district or "", i.detail_zh)])
    return "\ufeff" + buf.getvalue()


async def six100_month(influx: Any, *, days: list[date], tz, now_ms: int, site: str | None, registry: Any,
                       max_sites: int, rules: ItemRules, keeper: Any = None) -> dict[str, list[SiteCompliance]]:
    """Each day's report (date ISO → sites): the days the kept evidence covers from it,
    the others one after the other from InfluxDB."""
    out: dict[str, list[SiteCompliance]] = {}
    if keeper is not None:
        kept_days = await covered_days(keeper, days, tz)
        if kept_days:
            low_limits, site_inputs = judge_inputs(registry, rules)
            out = await six100_kept(keeper, days=kept_days, tz=tz, now_ms=now_ms, site=site, registry=registry,
                                    max_sites=max_sites, rules=rules, low_limits=low_limits,
                                    site_inputs=site_inputs) or {}
    for d in days:
        if d.isoformat() not in out:
            out[d.isoformat()] = await six100(influx, day=d, tz=tz, now_ms=now_ms, site=site, registry=registry,
                                              max_sites=max_sites, rules=rules)
    return {d.isoformat(): out[d.isoformat()] for d in days}


def rules_mapping(engine: Any, settings: Any) -> Mapping[str, Any]:
    """The rules in force: the engine's (incl. PUT overrides) when alerts run, else loaded
    from the packs the settings name."""
    if engine is not None and getattr(engine, "rules", None):
        return engine.rules
    return _rules_from_files(getattr(settings, "rules_dir", None), getattr(settings, "rule_pack", "default"))


@functools.lru_cache(maxsize=4)
def _rules_from_files(rules_dir: Any, pack: str) -> Mapping[str, Any]:
    from alerts.rules import load_rules

    return load_rules(rules_dir, pack=pack)
