"""Compiled rule plans: the rules indexed and prepared for the per-reading hot path, and
the per-device feeds and guards (alerts/guard.py) they are instantiated into.

`compile_rules` turns a rule set into a `RuleIndex` (built fully, then swapped in by the
engine at once). Threshold and stuck rules become `CompiledRule`s with their conditions
as `CompiledCond`s (constants and cursor keys worked out once). A `WatchPlan` is the
guard layout of one kind's rules for given registry parameters, shared by every device
with those values; `watch_device` makes a device's own trackers from it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from alerts.buckets import bucketed
from alerts.threshold import lookup_threshold
from alerts.guard import Hot, Jump, cold_interval
from alerts.rules import Cond, DailyRatioRule, DeadmanRule, EventRule, Rule, StuckRule, ThresholdRule
from alerts.window import Series


class Feed:
    """One field of a device that rules read: its series (made on the first sample) and the
    guard trackers (alerts/guard.py) its samples update."""

    __slots__ = ("series", "lasts", "windows", "jumps")

    def __init__(self, series: Series | None):
        self.series = series
        self.lasts: tuple[Hot, ...] = ()  # `last` conditions: only the newest sample counts
        self.windows: tuple[Hot, ...] = ()  # windowed conditions
        self.jumps: tuple[Jump, ...] = ()  # stuck rules


@dataclass
class Device:
    """What the engine keeps of one device: time, window series, feeds and guards."""

    kind: str
    site: str
    device: str
    watermark: int = -1
    last_seen: int = 0
    series: dict[str, Series] = field(default_factory=dict)
    # The fields whose series changed since the last snapshot. A tuple, not a set: ~100
    # bytes against ~700 for a set of a typical device's fields, and cheap to keep since
    # it is almost always exactly the fields of the reading just taken.
    dirty: tuple[str, ...] = ()
    meta_dirty: bool = True
    # Built by `watch_device` for the rules of generation `rules_gen` and the registry
    # entry `regdev` (its parameters move the bounds): per rule-indexed field its feed, per
    # rule slot (`CompiledRule.slot`) its guard (a tuple of Hot for a threshold rule, a Jump for
    # a stuck rule).
    feeds: dict[str, Feed] = field(default_factory=dict)
    guards: list[Any] = field(default_factory=list)
    rules_gen: int = -1
    regdev: Any = None


def union_fields(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    """The fields of `a`, then those of `b` not in it."""
    return a + tuple(f for f in b if f not in a) if a else b


class CompiledCond:
    """A threshold-rule condition prepared for the per-reading hot path."""

    __slots__ = ("c", "field", "agg", "approx", "win_ms", "need", "op", "want", "const", "rkey")

    def __init__(self, c: Cond, schedule: str | None):
        self.c = c
        self.field = c.field
        self.agg = c.agg
        # The rolling mean / energy mean is exact; numpy's (what alerts have always shown)
        # can differ in the last bits, so it is only trusted for decisions far from the bound.
        self.approx = c.agg in ("mean", "energy_mean")
        self.win_ms = int((c.window or 0) * 1000)
        # `_covered`: the samples must span min_coverage x the window (ms), same arithmetic
        self.need = c.min_coverage * (c.window or 0) * 1000
        self.op = c.op
        self.want = c.want
        t = c.threshold
        # a literal threshold, worked out once; others are looked up per evaluation
        self.const = lookup_threshold(t, {}, None, 0) if t is not None and t.value is not None else None
        self.rkey = (c.agg, self.win_ms, schedule)  # one rolling cursor per window shape


class CompiledRule:
    """A threshold or stuck rule prepared for the hot path."""

    __slots__ = ("rule", "id", "slot", "stuck", "schedule", "when", "clear", "approx", "win_ms", "need", "rkey")

    def __init__(self, rule: ThresholdRule | StuckRule):
        self.rule = rule
        self.id = rule.id
        self.slot = 0  # index of the rule among its kind's (a device's guards are per slot)
        self.stuck = isinstance(rule, StuckRule)
        if isinstance(rule, StuckRule):
            self.schedule = None
            self.when = self.clear = ()
            self.approx = False
            self.win_ms = int(rule.window * 1000)
            self.need = rule.min_coverage * rule.window * 1000
            self.rkey = ("stuck", self.win_ms, None)
        else:
            self.schedule = rule.schedule or None
            self.when = tuple(CompiledCond(c, self.schedule) for c in rule.when)
            self.clear = tuple(CompiledCond(c, self.schedule) for c in rule.clear) if rule.clear else ()
            self.approx = any(c.approx for c in (*self.when, *self.clear))
            self.win_ms, self.need, self.rkey = 0, 0.0, None


class WatchPlan:
    """The guards of one kind's rules for devices with given registry parameters, as
    `AlertEngine._watch` instantiates them per device: `hots`, one (field, lo, hi, span)
    per distinct Hot tracker (equal conditions share one), in the order they are made;
    `guards`, per rule slot the stuck rule itself (its Jump is per device) or the indexes
    in `hots` of the trackers of the rule's conditions that have a cold interval."""

    __slots__ = ("guards", "hots")

    def __init__(self, rules: Iterable[CompiledRule], params: dict[str, Any]):
        self.hots: list[tuple[str, float, float, int | None]] = []
        self.guards: list[CompiledRule | tuple[int, ...]] = []
        seen: dict[tuple[str, tuple[float, float], int | None], int] = {}
        for cr in rules:
            if cr.stuck:
                self.guards.append(cr)
                continue
            mine = []
            for c in cr.when:
                interval = cold_interval(c.c, params)
                if interval is None:
                    continue  # no data-independent bound: this condition never rules the rule out
                span = None if c.agg == "last" else c.win_ms
                i = seen.get((c.field, interval, span))
                if i is None:
                    i = seen[(c.field, interval, span)] = len(self.hots)
                    self.hots.append((c.field, *interval, span))
                mine.append(i)
            self.guards.append(tuple(mine))


@dataclass(frozen=True)
class RuleIndex:
    """One rule set, indexed for lookup: what the engine swaps in at once."""

    rules: dict[str, Rule]
    by_field: dict[tuple[str, str], list[Rule]]  # (kind, field) → threshold and stuck rules
    by_event: dict[tuple[str, str], list[Rule]]  # (kind, event type) → event and daily-ratio rules
    deadman: dict[str, list[DeadmanRule]]  # kind → deadman rules
    windows: dict[tuple[str, str], float]  # (kind, field) → longest raw-sample window (s) a rule reads
    long_windows: dict[tuple[str, str], float]  # (kind, field) → longest minute-bucket window (s), alerts/buckets.py
    field_index: dict[str, dict[str, list[CompiledRule]]]  # kind → field → compiled rules
    kind_rules: dict[str, list[CompiledRule]]  # kind → compiled rules, in slot order
    guard_params: dict[str, tuple[str, ...]]  # kind → registry parameters its thresholds name


def compile_rules(rules: dict[str, Rule]) -> RuleIndex:
    """Build the lookup indexes of the enabled rules."""
    by_field: dict[tuple[str, str], list[Rule]] = {}
    by_event: dict[tuple[str, str], list[Rule]] = {}
    deadman: dict[str, list[DeadmanRule]] = {}
    windows: dict[tuple[str, str], float] = {}
    long_windows: dict[tuple[str, str], float] = {}
    for r in rules.values():
        if not r.enabled:
            continue
        if isinstance(r, (ThresholdRule, StuckRule)):
            for f in r.fields():
                by_field.setdefault((r.kind, f), []).append(r)
                windows.setdefault((r.kind, f), 0.0)  # every field read gets a raw series
            for f, agg, w in _windows_read(r):
                into = long_windows if bucketed(agg, w * 1000) else windows
                into[(r.kind, f)] = max(into.get((r.kind, f), 0.0), w)
        elif isinstance(r, (EventRule, DailyRatioRule)):
            by_event.setdefault((r.kind, r.event), []).append(r)
        elif isinstance(r, DeadmanRule):
            deadman.setdefault(r.kind, []).append(r)
    compiled = {r.id: CompiledRule(r) for rs in by_field.values() for r in rs}
    index: dict[str, dict[str, list[CompiledRule]]] = {}
    for (kind, f), rs in by_field.items():
        index.setdefault(kind, {})[f] = [compiled[r.id] for r in rs]
    kind_rules: dict[str, list[CompiledRule]] = {}
    for cr in compiled.values():
        rs = kind_rules.setdefault(cr.rule.kind, [])
        cr.slot = len(rs)
        rs.append(cr)
    # per kind, the registry parameters its threshold-rule conditions name (the engine's _watch_plan)
    guard_params = {kind: tuple(sorted({t.param for cr in crs for c in cr.when
                                        for t in (c.c.threshold, c.c.low, c.c.high)
                                        if t is not None and t.param}))
                    for kind, crs in kind_rules.items()}
    return RuleIndex(dict(rules), by_field, by_event, deadman, windows, long_windows, index, kind_rules,
                     guard_params)


def _windows_read(r: ThresholdRule | StuckRule) -> Iterable[tuple[str, str, float]]:
    """(field, aggregate, window s) of every window the rule reads, baselines included."""
    if isinstance(r, StuckRule):
        yield r.field, "stuck", r.window
        return
    for c in (*r.when, *(r.clear or ())):
        yield c.field, c.agg, c.window or 0.0
        for t in (c.threshold, c.low, c.high):
            if t is not None and t.baseline is not None:
                yield c.field, t.baseline.agg, t.baseline.window


def watch_device(dev: Device, plan: WatchPlan, fields: Iterable[str], rules_gen: int, regdev: Any) -> None:
    """(Re)build the device's feeds and guards (alerts/guard.py) for the current rules
    and its registry entry `regdev`, starting the trackers from the samples kept."""
    feeds = {f: Feed(dev.series.get(f)) for f in fields}
    # Each tracker is made as a 1-tuple, used as is by a field it is the only tracker
    # of (`lasts` / `windows`) and by the rules it is the only guard of: most trackers
    # are both, and one tuple instead of two or three is ~50 bytes less each.
    hots: list[tuple[Hot]] = []
    for f, lo, hi, span in plan.hots:
        feed = feeds[f]
        one = (Hot(lo, hi, span).scan(feed.series),)
        if one[0].last:
            feed.lasts = feed.lasts + one if feed.lasts else one
        else:
            feed.windows = feed.windows + one if feed.windows else one
        hots.append(one)
    guards: list[Any] = []
    for g in plan.guards:
        if isinstance(g, CompiledRule):  # a stuck rule
            feed = feeds[g.rule.field]  # type: ignore[union-attr]
            jump = Jump(g.rule.tolerance, g.win_ms).scan(feed.series)  # type: ignore[union-attr]
            feed.jumps += (jump,)
            guards.append(jump)
        elif len(g) == 1:
            guards.append(hots[g[0]])
        else:
            guards.append(tuple([hots[i][0] for i in g]))
    dev.feeds, dev.guards, dev.rules_gen, dev.regdev = feeds, guards, rules_gen, regdev
