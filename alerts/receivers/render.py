"""One message for one or more group notifications, in Chinese (default) or English.

Each group says where (its group labels, and the site of every alert), what fires (rule,
severity, the alert's own message with value and limit), since when (local time, the
alert's `started_at` in CW_TZ) and links to the dashboard. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

Style = Literal["markdown", "lark", "text"]

_SEVERITY = {"zh": {"info": "提示", "warning": "警告", "major": "重要", "critical": "紧急"},
             "en": {"info": "info", "warning": "warning", "major": "major", "critical": "CRITICAL"}}
_LABEL = {"zh": {"site": "站点", "district": "区县", "kind": "类型", "device": "设备", "rule": "规则",
                 "severity": "级别", "field": "指标"},
          "en": {"site": "site", "district": "district", "kind": "kind", "device": "device", "rule": "rule",
                 "severity": "severity", "field": "field"}}
_WORDS = {
    "zh": {"firing": "告警", "resolved": "已恢复", "all": "全部", "alerts": "条告警", "groups": "个分组",
           "value": "数值", "limit": "限值", "since": "自", "since_end": "起", "until": "恢复于",
           "more": "另有 {n} 条，见看板", "dashboard": "打开看板", "acked": "已确认", "repeat": "（仍在告警）",
           "sep": "，", "colon": "："},
    "en": {"firing": "firing", "resolved": "resolved", "all": "all", "alerts": "alerts", "groups": "groups",
           "value": "value", "limit": "limit", "since": "since", "since_end": "", "until": "resolved at",
           "more": "{n} more on the dashboard", "dashboard": "Open the dashboard", "acked": "acknowledged",
           "repeat": " (still firing)", "sep": ", ", "colon": ": "},
}


@dataclass(frozen=True, slots=True)
class Rendered:
    title: str
    body: str
    firing: int
    resolved: int


def _when(iso: str | None) -> str:
    if not iso:
        return "?"
    try:
        return datetime.fromisoformat(iso).strftime("%m-%d %H:%M")
    except ValueError:
        return iso


def _num(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:g}"
    return "-" if v is None else str(v)


def group_title(group_labels: Mapping[str, str], lang: str) -> str:
    if not group_labels:
        return _WORDS[lang]["all"]
    names = _LABEL[lang]
    return " ".join(f"{names.get(k, k)} {v}" for k, v in group_labels.items())


def render(messages: Sequence[Mapping[str, Any]], *, lang: str = "zh", style: Style = "markdown",
           dashboard_url: str | None = None, max_alerts_per_group: int = 20) -> Rendered:
    w = _WORDS[lang]
    sev = _SEVERITY[lang]
    firing = sum(int(m.get("firing", 0)) for m in messages)
    resolved = sum(int(m.get("resolved", 0)) for m in messages)
    if len(messages) == 1:
        where = group_title(messages[0].get("group_labels") or {}, lang)
    else:
        where = f"{len(messages)} {w['groups']}"
    counts = f"{firing} {w['alerts']}"
    if firing:
        title = f"【{w['firing']}】{where}{w['colon']}{counts}" if lang == "zh" else f"[{w['firing']}] {where}: {counts}"
    else:
        title = f"【{w['resolved']}】{where}" if lang == "zh" else f"[{w['resolved']}] {where}"
    md = style != "text"
    out: list[str] = [(f"### {title}" if style == "markdown" else f"**{title}**") if md else title]
    for m in messages:
        if len(messages) > 1:
            head = group_title(m.get("group_labels") or {}, lang)
            out.append("")
            out.append(f"**{head}**" if md else f"== {head} ==")
        alerts = list(m.get("alerts") or [])
        shown = alerts[:max_alerts_per_group]
        resolved_heading = False
        for a in shown:  # firing first, then resolved (group.py orders them)
            state = a.get("state")
            if state != "firing" and not resolved_heading:
                out.append(f"**{w['resolved']}**" if md else f"[{w['resolved']}]")
                resolved_heading = True
            message = a.get("message" if lang == "zh" else "message_en") or a.get("message") or ""
            level = sev.get(a.get("severity", ""), a.get("severity", ""))
            level = f"**{level}**" if md and state == "firing" else level
            who = f"{a.get('site')}/{a.get('device')}"
            detail = (f"{w['value']} {_num(a.get('value'))}{w['sep']}{w['limit']} {_num(a.get('threshold'))}"
                      f"{w['sep']}{w['since']} {_when(a.get('started_at'))} {w['since_end']}".rstrip())
            if state != "firing":
                detail += f"{w['sep']}{w['until']} {_when(a.get('resolved_at'))}"
            if a.get("acked"):
                detail += f"{w['sep']}{w['acked']}"
            out.append(f"- {level} {a.get('rule')} · {who}{w['colon']}{message}（{detail}）" if lang == "zh"
                       else f"- {level} {a.get('rule')} · {who}: {message} ({detail})")
        if len(alerts) > len(shown):
            out.append("- " + w["more"].format(n=len(alerts) - len(shown)))
    if dashboard_url:
        out.append("")
        out.append(f"[{w['dashboard']}]({dashboard_url})" if md else f"{w['dashboard']}: {dashboard_url}")
    sep = "\n\n" if style == "markdown" else "\n"
    return Rendered(title=title, body=sep.join(x for x in out if x != "") if style == "markdown"
                    else "\n".join(out), firing=firing, resolved=resolved)
