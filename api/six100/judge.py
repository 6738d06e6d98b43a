"""Pure judgement of one site's day: facts (evidence.SiteEvidence) + the rules in force +
the site's equipment → one ComplianceItem per six-100 item.

Status is pass | fail | no_evidence; no_evidence is never a pass. Reasons:
`not_equipped` (the registry gives the site no means to measure the item: "cannot be
measured here"), `sensor_silent` (it has the means, no data came), `only_flagged` (only
values flagged invalid), `no_activity` (means registered, nothing happened to judge, e.g.
no vehicle left: "measured, nothing happened" — a dead camera looks the same, so it is no
pass), `no_rule` (the pack has no rule for the item).

Minutes are judged on valid values only: PM10 on its 1-minute mean (the worst monitor), a
cover/hardening minute as bad when a valid sample in it is below the limit (as the engine
judges each sample). A rule's `for` is the tolerance: an item
fails when its condition held from one minute to a minute at least `for` later (as the
engine fires), or on any minute when `for` is 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from alerts.rules import DailyRatioRule, EventRule, Rule, ThresholdRule
from api.models import ComplianceItem, SiteCompliance
from api.six100.evidence import MIN_MS, SiteEvidence
from api.six100.thresholds import ItemRules, cond_on, deadman, holds, threshold_value, tolerance_s

ITEMS = ("hoarding", "cover", "wash", "hardened", "wet_operation", "muck_covered", "monitoring")
NAMES = {
    "hoarding": ("周边围挡", "perimeter hoarding"),
    "cover": ("物料堆放覆盖", "stockpiles covered"),
    "wash": ("出入车辆清洗", "exiting vehicles washed"),
    "hardened": ("路面硬化", "site roads hardened"),
    "wet_operation": ("湿法作业", "wet operation"),
    "muck_covered": ("渣土车辆密闭运输", "muck trucks enclosed"),
    "monitoring": ("在线监测联网", "online monitoring"),
}
# The registry equipment (citywatch.registry.EQUIPMENT) an item needs to be measurable.
REQUIRES: dict[str, frozenset[str]] = {
    "hoarding": frozenset({"hoarding_camera"}),
    "cover": frozenset({"cover_camera"}),
    "wash": frozenset({"plate_camera", "wash_sensor"}),
    "hardened": frozenset({"hardened_survey"}),
    "wet_operation": frozenset({"dust_monitor"}),
    "muck_covered": frozenset({"plate_camera"}),
    "monitoring": frozenset({"dust_monitor"}),
}
REASON_ZH = {
    "not_equipped": "未登记{what}，本工地无法监测此项",
    "sensor_silent": "已登记{what}，当日无数据",
    "only_flagged": "当日仅有无效标记数据（{n} 个非 N/S 标记值），无有效数据",
    "no_activity": "已登记{what}，当日无出场车辆记录（无法区分无车辆与设备离线）",
    "no_rule": "规则包 {pack} 中没有判定此项的规则",
}
WHAT_ZH = {"hoarding": "围挡视频分析", "cover": "物料覆盖视频分析", "wash": "车牌识别和洗车台传感器",
           "hardened": "路面硬化巡查", "wet_operation": "扬尘监测仪", "muck_covered": "车牌识别",
           "monitoring": "扬尘监测仪"}
REASON_EN = {"not_equipped": "no such sensor registered at this site: cannot be measured here",
             "sensor_silent": "sensor registered, no data this day",
             "only_flagged": "only flagged (invalid) values this day",
             "no_activity": "measured, nothing happened (no vehicle exit recorded; a silent camera looks the same)",
             "no_rule": "the rule pack has no rule for this item"}


def _item(key: str, status: str, *, percent: float | None = None, reason: str | None = None,
          detail: str = "", detail_zh: str = "", measurable: bool = True, rule: Rule | None = None) -> ComplianceItem:
    zh, en = NAMES[key]
    return ComplianceItem(item=key, name_zh=zh, name_en=en,
                          percent=None if percent is None else round(float(percent), 1),
                          passed=None if status == "no_evidence" else status == "pass", status=status,
                          reason=reason, measurable=measurable, rule=rule.id if rule else None,
                          detail=detail, detail_zh=detail_zh)


def _no_evidence(key: str, reason: str, *, rule: Rule | None = None, measurable: bool = True, n: int = 0,
                 pack: str = "default") -> ComplianceItem:
    return _item(key, "no_evidence", reason=reason, measurable=measurable, rule=rule,
                 detail=REASON_EN[reason], detail_zh=REASON_ZH[reason].format(what=WHAT_ZH[key], n=n, pack=pack))


def longest_run(bad_minutes: list[int]) -> tuple[int, int]:
    """(number of runs, longest span in ms from first to last bad minute) of consecutive minutes."""
    runs, longest, start, prev = 0, -1, 0, None  # start: set by the first minute (prev is None)
    for t in sorted(bad_minutes):
        if prev is None or t - prev > MIN_MS:
            runs += 1
            start = t
        longest = max(longest, t - start)
        prev = t
    return runs, longest


def violations(bad_minutes: list[int], tolerance_ms: float) -> int:
    """Runs of consecutive bad minutes that lasted the tolerance (`for`); every run when 0."""
    count, start, prev, counted = 0, 0, None, False  # start: set by the first minute (prev is None)
    for t in sorted(bad_minutes):
        if prev is None or t - prev > MIN_MS:
            start, counted = t, False
        if not counted and t - start >= tolerance_ms:
            count += 1
            counted = True
        prev = t
    return count


def _fmt_min(ms: float) -> str:
    return f"{ms / 60_000:g}"


LOW_OPS = ("below", "at_most")  # ratio conditions the report reads minute by minute (evidence.low)


def low_limit(rule: Rule | None, field: str, params: Mapping[str, Any]) -> float | None:
    """The limit under which a ratio sample is bad for this site (None: not judgeable)."""
    cond = cond_on(rule, field) if rule is not None else None
    if cond is None or cond.op not in LOW_OPS:
        return None
    return threshold_value(cond.threshold, params)


def _ratio(key: str, field: str, rule: ThresholdRule, ev: SiteEvidence, params: Mapping[str, Any]) -> ComplianceItem:
    n, mean = ev.day_mean(field)
    if n == 0 or mean is None:
        return _no_evidence(key, "only_flagged" if ev.flagged.get(field) else "sensor_silent", rule=rule,
                            n=ev.flagged.get(field, 0))
    cond = cond_on(rule, field)
    limit = low_limit(rule, field, params)
    if cond is None or limit is None:
        return _no_evidence(key, "no_rule")
    bad = [t for t, lo in ev.low_minutes(field).items() if holds(cond, lo, params)]
    tol = tolerance_s(rule) * 1000
    n_viol = violations(bad, tol)
    _, longest = longest_run(bad)
    run_min = _fmt_min(longest + MIN_MS) if bad else "0"
    detail = (f"mean {mean:.1f} %, {len(bad)} min below {limit:g} %, longest {run_min} min "
              f"(tolerance {_fmt_min(tol)} min)")
    detail_zh = (f"均值 {mean:.1f}%，低于 {limit:g}% 共 {len(bad)} 分钟，最长连续 {run_min} 分钟"
                 f"（容忍 {_fmt_min(tol)} 分钟）")
    return _item(key, "fail" if n_viol else "pass", percent=mean, rule=rule, detail=detail, detail_zh=detail_zh)


def _hoarding(rule: ThresholdRule, ev: SiteEvidence) -> ComplianceItem:
    n = ev.hoarding_n
    if n == 0:
        return _no_evidence("hoarding", "sensor_silent", rule=rule)
    bad = [t for t, k in ev.hoarding_false.items() if k]
    n_false = sum(ev.hoarding_false.values())
    tol = tolerance_s(rule) * 1000
    n_viol = violations(bad, tol)
    return _item("hoarding", "fail" if n_viol else "pass", percent=(n - n_false) / n * 100, rule=rule,
                 detail=f"{n_false} of {n} sample(s) not intact (tolerance {_fmt_min(tol)} min)",
                 detail_zh=f"{n} 个样本中 {n_false} 个围挡不完整（容忍 {_fmt_min(tol)} 分钟）")


def _event_ok(rule: Rule, exit_: Mapping[str, Any], params: Mapping[str, Any]) -> bool:
    """A vehicle exit meets the rule: all numerator conditions (daily ratio), or none of the
    violation conditions (event rule). A missing attribute is no evidence: not met."""
    if isinstance(rule, DailyRatioRule):
        return all(holds(c, exit_.get(c.field), params) for c in rule.numerator)
    if isinstance(rule, EventRule):
        if any(exit_.get(c.field) is None for c in rule.when):
            return False
        hits = [holds(c, exit_.get(c.field), params) for c in rule.when]
        return not (any(hits) if rule.match == "any" else all(hits))
    return False


def _exits(key: str, rule: Rule, ev: SiteEvidence, params: Mapping[str, Any]) -> ComplianceItem:
    if not ev.exits:
        return _no_evidence(key, "no_activity", rule=rule)
    n = len(ev.exits)
    ok = sum(1 for e in ev.exits if _event_ok(rule, e, params))
    pct = ok / n * 100
    if isinstance(rule, DailyRatioRule):
        need = threshold_value(rule.below, params) or 100.0
        passed = pct >= need
    else:
        need, passed = 100.0, ok == n
    what_en, what_zh = ("washed as required", "按要求冲洗") if key == "wash" else ("enclosed", "密闭")
    return _item(key, "pass" if passed else "fail", percent=pct, rule=rule,
                 detail=f"{n} exit(s), {n - ok} not {what_en} (pass >= {need:g} %)",
                 detail_zh=f"出场 {n} 车次，{n - ok} 车次未{what_zh}（合格线 {need:g}%）")


def _spray_minutes(ev: SiteEvidence, hold_ms: float) -> set[int]:
    """Minutes with the spray observed on, each observation held for `hold_ms` (the relay's
    expected interval: one that reports every 3 min is still on between its reports); never
    assumed on."""
    on: set[int] = set()
    for t in ev.spray_true:
        on.update(range(t, t + max(int(hold_ms), MIN_MS), MIN_MS))
    return on


def _wet(rule: ThresholdRule, ev: SiteEvidence, params: Mapping[str, Any], equipment: frozenset[str] | None,
         hold_ms: float) -> ComplianceItem:
    pm10 = ev.pm10_minutes()
    if not pm10:
        return _no_evidence("wet_operation", "only_flagged" if ev.flagged.get("pm10") else "sensor_silent",
                            rule=rule, n=ev.flagged.get("pm10", 0))
    cond = cond_on(rule, "pm10")
    limit = threshold_value(cond.threshold, params) if cond is not None else None
    if cond is None or limit is None:
        return _no_evidence("wet_operation", "no_rule")
    # PM10 minute means are floats: the bound comparison of the limit is `holds` for them, as
    # one array comparison (1,440 minutes a site, 1,000 sites a day)
    if cond.op in ("above", "at_least", "below", "at_most"):
        op = {"above": np.greater, "at_least": np.greater_equal, "below": np.less, "at_most": np.less_equal}[cond.op]
        keys = np.fromiter(pm10.keys(), np.int64, len(pm10))
        high = keys[op(np.fromiter(pm10.values(), np.float64, len(pm10)), float(limit))].tolist()
    else:
        high = [t for t, v in pm10.items() if holds(cond, v, params)]
    if not high:
        return _item("wet_operation", "pass", percent=100.0, rule=rule,
                     detail=f"PM10 never above {limit:g} µg/m³ ({len(pm10)} valid minute(s))",
                     detail_zh=f"PM10 未超过设定值 {limit:g} µg/m³（有效 {len(pm10)} 分钟）")
    sprayed = _spray_minutes(ev, hold_ms)
    unsprayed = [t for t in high if t not in sprayed]
    tol = tolerance_s(rule) * 1000
    episodes = violations(unsprayed, tol)
    pct = (len(high) - len(unsprayed)) / len(high) * 100
    has_relay = equipment is None or "spray_relay" in equipment
    if not ev.spray_n:
        why_en = "no spray relay registered" if not has_relay else "the spray relay reported nothing"
        why_zh = "未登记喷淋设备" if not has_relay else "喷淋设备当日无状态上报"
        why_en, why_zh = f"; no spray evidence ({why_en})", f"；无喷淋证据（{why_zh}）"
    else:
        why_en = why_zh = ""
    return _item("wet_operation", "fail" if episodes else "pass", percent=pct, rule=rule,
                 detail=(f"{episodes} episode(s) of PM10 > {limit:g} µg/m³ for >= {_fmt_min(tol)} min without "
                         f"spraying; {len(high)} high-PM10 minute(s), {len(high) - len(unsprayed)} sprayed{why_en}"),
                 detail_zh=(f"PM10 超过设定值 {limit:g} µg/m³ 持续 >= {_fmt_min(tol)} 分钟且无喷淋 {episodes} 次；"
                            f"超标 {len(high)} 分钟，其中喷淋 {len(high) - len(unsprayed)} 分钟{why_zh}"))


def _monitoring(rule: Rule, ev: SiteEvidence, start_ms: int, until_ms: int, interval_s: float) -> ComplianceItem:
    return monitoring_item(rule, np.array(sorted(ev.pm10_minutes()), dtype=np.int64), ev.flagged.get("pm10", 0),
                           start_ms, until_ms, interval_s)


def monitoring_item(rule: Rule, times: np.ndarray, flagged: int, start_ms: int, until_ms: int,
                    interval_s: float) -> ComplianceItem:
    """The monitoring item from the sorted valid PM10 minutes (`times`) and the number of
    flagged PM10 values: the one item that depends on how much of the day has passed."""
    span = until_ms - start_ms
    if span <= 0:
        return _no_evidence("monitoring", "sensor_silent", rule=rule)
    spec = rule.six100
    need = spec.pass_percent if spec is not None and spec.pass_percent is not None else 90.0
    factor, _ = deadman(rule)
    if not times.size:
        n = flagged
        why_en = f"only flagged values ({n})" if n else "no data from any monitor"
        why_zh = f"仅有无效标记数据（{n} 个）" if n else "所有监测仪当日无数据"
        return _item("monitoring", "fail", percent=0.0, rule=rule, detail=f"online 0 %: {why_en}",
                     detail_zh=f"在线率 0%：{why_zh}")
    allowed = max(factor * interval_s, 180.0) * 1000
    # each gap runs from the end of one valid minute (the day's start first) to the start of
    # the next (until_ms last); as arrays: 1,440 minutes a site, 1,000 sites a day
    gaps = np.append(times, until_ms) - np.insert(times + MIN_MS, 0, start_ms)
    offline = int(gaps[gaps > allowed].sum())
    pct = max(0.0, min(100.0, (span - offline) / span * 100))
    return _item("monitoring", "pass" if pct >= need else "fail", percent=pct, rule=rule,
                 detail=f"online {pct:.1f} % of the day so far with valid PM10 data (pass >= {need:g} %)",
                 detail_zh=f"PM10 有效数据在线率 {pct:.1f}%（合格线 {need:g}%）")


def until_later(res: SiteCompliance, times: np.ndarray, flagged: int, *, rules: ItemRules,
                equipment: frozenset[str] | None, interval_s: float, start_ms: int, until_ms: int) -> SiteCompliance:
    """`res` (judge_site's answer for the same facts up to an earlier end) judged up to
    `until_ms`: only the monitoring item depends on it, so only that one is judged again —
    today's answer moves every minute, its facts only where they changed."""
    rule = rules.get("monitoring")
    if rule is None or not (equipment is None or REQUIRES["monitoring"] <= equipment):
        return res  # not_equipped / no_rule: the same at any hour
    item = monitoring_item(rule, times, flagged, start_ms, until_ms, interval_s)
    items = [item if i.item == "monitoring" else i for i in res.items]
    return SiteCompliance(site=res.site, date=res.date, district=res.district, items=items,
                          all_pass=_all_pass(items))


def _all_pass(items: list[ComplianceItem]) -> bool | None:
    judged = [i for i in items if i.measurable]
    return None if not judged else all(i.status == "pass" for i in judged)


def judge_site(ev: SiteEvidence, *, day: str, rules: ItemRules, equipment: frozenset[str] | None,
               params: Mapping[str, Any], interval_s: float, start_ms: int, until_ms: int,
               district: str | None = None) -> SiteCompliance:
    """`equipment` None: the registry states none for the site, so every item is expected."""
    items: list[ComplianceItem] = []
    for key in ITEMS:
        measurable = equipment is None or REQUIRES[key] <= equipment
        rule = rules.get(key)
        if not measurable:
            items.append(_no_evidence(key, "not_equipped", rule=rule, measurable=False))
        elif rule is None:
            items.append(_no_evidence(key, "no_rule", pack=rules.pack))
        elif key == "hoarding":
            items.append(_hoarding(rule, ev))
        elif key in ("cover", "hardened"):
            items.append(_ratio(key, f"{key}_ratio", rule, ev, params))
        elif key in ("wash", "muck_covered"):
            items.append(_exits(key, rule, ev, params))
        elif key == "wet_operation":
            items.append(_wet(rule, ev, params, equipment, max(interval_s, 60.0) * 1000))
        else:
            items.append(_monitoring(rule, ev, start_ms, until_ms, interval_s))
    return SiteCompliance(site=ev.site, date=day, district=district, items=items, all_pass=_all_pass(items))
