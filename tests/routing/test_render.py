"""One message per group: what it says, in Chinese by default and in English."""

from __future__ import annotations

from alerts.receivers.render import render


def _a(i: int, state: str = "firing", **kw) -> dict:
    return {"id": f"a{i}", "rule": f"rule_{i}", "severity": "critical" if i == 0 else "major", "state": state,
            "site": "S0001", "device": f"D{i:05d}", "value": 162.4, "threshold": 150, "acked": False,
            "started_at": "2026-11-27T10:05:00+08:00",
            "resolved_at": "2026-11-27T11:00:00+08:00" if state == "resolved" else None,
            "message": "PM10 超过设定值", "message_en": "PM10 above the set value", **kw}


GROUP = {"group_labels": {"site": "S0001"}, "firing": 2, "resolved": 1,
         "alerts": [_a(0), _a(1, acked=True), _a(2, "resolved")]}


def test_chinese_markdown_names_site_rules_values_since_and_links_the_dashboard():
    r = render([GROUP], dashboard_url="https://d.example/")
    assert r.title == "【告警】站点 S0001：2 条告警"
    lines = r.body.split("\n\n")
    assert lines[0] == "### 【告警】站点 S0001：2 条告警"
    assert lines[1] == ("- **紧急** rule_0 · S0001/D00000：PM10 超过设定值（数值 162.4，限值 150，自 11-27 10:05 起）")
    assert lines[2].endswith("，已确认）")
    assert lines[3] == "**已恢复**" and "恢复于 11-27 11:00" in lines[4]
    assert lines[-1] == "[打开看板](https://d.example/)"


def test_english_text_and_a_long_group_points_to_the_dashboard():
    big = {"group_labels": {"district": "城区"}, "firing": 25, "resolved": 0, "alerts": [_a(i) for i in range(25)]}
    r = render([big, GROUP], lang="en", style="text", dashboard_url="https://d.example/")
    assert r.title == "[firing] 2 groups: 27 alerts"
    assert "== district 城区 ==" in r.body and "== site S0001 ==" in r.body
    assert "- 5 more on the dashboard" in r.body and "rule_19" in r.body and "rule_20" not in r.body
    assert "PM10 above the set value (value 162.4, limit 150, since 11-27 10:05)" in r.body
    assert r.body.endswith("Open the dashboard: https://d.example/")


def test_an_all_resolved_group_is_titled_resolved():
    r = render([{"group_labels": {"site": "S9"}, "firing": 0, "resolved": 1, "alerts": [_a(3, "resolved")]}])
    assert r.title == "【已恢复】站点 S9" and r.firing == 0 and r.resolved == 1
