"""The rule behind each six-100 item, read from the rules in force (shipped pack, regional
pack CW_RULE_PACK, CW_RULES_DIR, and PUT /v1/rules overrides when the engine runs).

A rule says which item it judges with `six100: {item: ...}`; its conditions, `for` and
parameters are what the report applies. A set value is the site's registry parameter when
a device of the site has it (as in the engine), else the rule's default.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from alerts.rules import Cond, DeadmanRule, EventRule, Rule, ThresholdRule, Threshold, DailyRatioRule


@dataclass(frozen=True)
class ItemRules:
    """The rules in force for each six-100 item (None: the pack has none for that item)."""

    by_item: Mapping[str, Rule]
    pack: str = "default"

    def get(self, item: str) -> Rule | None:
        return self.by_item.get(item)


def item_rules(rules: Iterable[Rule] | Mapping[str, Rule], pack: str = "default") -> ItemRules:
    values = rules.values() if isinstance(rules, Mapping) else rules
    by_item: dict[str, Rule] = {}
    for r in sorted(values, key=lambda r: r.id):
        if r.six100 is not None and r.enabled and r.six100.item not in by_item:
            by_item[r.six100.item] = r
    return ItemRules(by_item, pack)


def threshold_value(t: Threshold | None, params: Mapping[str, Any]) -> float | None:
    """A condition's limit for a site: registry parameter, else the default (a rolling
    baseline is the engine's business; the report uses the default then)."""
    if t is None:
        return None
    if t.value is not None:
        return t.value
    base: float | None = None
    if t.param and params.get(t.param) is not None:
        try:
            base = float(params[t.param])
        except (TypeError, ValueError):
            base = None
        if base is not None and t.cap is not None:
            base = min(base, t.cap)  # the same bound as the engine's (alerts/conditions.py)
    if base is None:
        base = t.default
    if base is None:
        return None
    return base + t.offset


def holds(c: Cond, value: Any, params: Mapping[str, Any]) -> bool:
    """Whether one condition holds for one value; a missing value never holds."""
    if value is None:
        return False
    if c.op == "is":
        return isinstance(value, bool) and value is c.want
    if isinstance(value, bool):
        return False
    v = float(value)
    if c.op == "outside":
        lo, hi = threshold_value(c.low, params), threshold_value(c.high, params)
        return (lo is not None and v < lo) or (hi is not None and v > hi)
    limit = threshold_value(c.threshold, params)
    if limit is None:
        return False
    return {"above": v > limit, "below": v < limit, "at_least": v >= limit, "at_most": v <= limit}[c.op]


def cond_on(rule: Rule, field: str) -> Cond | None:
    conds: tuple[Cond, ...] = ()
    if isinstance(rule, ThresholdRule | EventRule):
        conds = rule.when
    elif isinstance(rule, DailyRatioRule):
        conds = rule.numerator
    return next((c for c in conds if c.field == field), None)


def tolerance_s(rule: Rule) -> float:
    return float(getattr(rule, "for_", 0.0) or 0.0)


def deadman(rule: Rule) -> tuple[float, float]:
    """(factor, default interval s) of a deadman rule; (3, 60) otherwise."""
    if isinstance(rule, DeadmanRule):
        return float(rule.factor), float(rule.default_interval)
    return 3.0, 60.0
