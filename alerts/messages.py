"""An alert's texts: the zh-CN / en messages rendered from a rule's templates (the alert
payload, docs/contract.md §3, is `lifecycle.Alert.to_payload`).

The templates were validated when the rule was loaded (`alerts.rules.check_template`):
only the documented names, number formats only on number fields. Rendering fills them in
with `template_values`, which applies those formats.
"""

from __future__ import annotations

from typing import Any

from alerts.rules import EventRule, Rule, Text, template_values


def plain(v: Any) -> Any:
    """150.0 → 150 for display in payloads; other values unchanged."""
    return int(v) if isinstance(v, float) and v.is_integer() and abs(v) < 1e15 else v


def round_value(rule: Rule, v: Any) -> Any:
    """A value or threshold as alerts keep it: the rule's `decimals`."""
    if v is None or isinstance(v, bool):
        return v
    return round(float(v), rule.decimals)


def _fmt(v: Any, decimals: int, zh: bool) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return ("是" if v else "否") if zh else ("true" if v else "false")
    return f"{float(v):.{decimals}f}"


def _fmt_limit(v: Any, decimals: int, zh: bool) -> str:
    text = _fmt(v, decimals, zh)
    return text.rstrip("0").rstrip(".") if isinstance(v, float) and "." in text else text


def _duration(seconds: float, zh: bool) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}小时" if zh else f"{int(seconds // 3600)} h"
    return f"{round(seconds / 60)}分钟" if zh else f"{round(seconds / 60)} min"


class Renderer:
    """Renders messages (units from the device kinds, `citywatch/kinds.yaml`)."""

    def __init__(self, kinds: dict[str, Any]):
        self._kinds = kinds

    def unit(self, rule: Rule) -> str:
        if rule.unit is not None:
            return rule.unit
        spec = self._kinds.get(rule.kind)
        f = rule.primary_field
        if spec is None or f is None:
            return ""
        if isinstance(rule, EventRule):
            attrs = spec.events.get(rule.event, {})
            return attrs[f].unit if f in attrs else ""
        return spec.fields[f].unit if f in spec.fields else ""

    def render(self, rule: Rule, site: str, device: str, kind: str, message: Text, action: Text, value: Any,
               threshold: Any, count: int) -> tuple[str, str]:
        """(zh, en) message of an alert of `rule` on a device."""
        window = getattr(rule, "window", None) or getattr(rule, "for_", 0.0) or 0.0
        out = []
        for lang in ("zh", "en"):
            zh = lang == "zh"
            limit = _fmt_limit(threshold, rule.decimals, zh)
            texts = {"value": _fmt(value, rule.decimals, zh), "unit": self.unit(rule),
                     "limit": limit, "threshold": limit, "site": site, "device": device,
                     "field": rule.primary_field or "", "rule": rule.id, "count": str(count), "kind": kind,
                     "duration": _duration(window, zh)}
            # Number fields format with the rule's (validated) spec: alerts.rules.check_template
            ctx = template_values(texts, {"value": value, "limit": threshold, "threshold": threshold, "count": count})
            act = getattr(action, lang).format_map(ctx)
            out.append(getattr(message, lang).format_map({**ctx, "action": act}))
        return out[0], out[1]
