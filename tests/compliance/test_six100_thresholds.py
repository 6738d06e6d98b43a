"""The report's set values and tolerances are the rules': change the pack (CW_RULES_DIR, a
regional pack, a registry parameter) and the report changes with the alerts."""

from __future__ import annotations

import pytest

from six100_data import minutes

FULL = 1440


def _episode_day(db):
    # PM10 200 for 30 min (10:00-10:30) with the spray off; 80 otherwise.
    # Stockpiles 80 % covered for 30 min (14:00-14:30), 100 % otherwise.
    db.write(minutes("S1", "D1", 0, FULL, lambda i: f"pm10={200 if 600 <= i < 630 else 80},spray_on=false,"
                                                      f"cover_ratio={80 if 840 <= i < 870 else 100}"))


def _override(tmp_path, body: str):
    d = tmp_path / "rules"
    d.mkdir(exist_ok=True)
    (d / "override.yaml").write_text(body, "utf-8")
    return d


WET = """
rules:
  - id: dust_wet_operation
    kind: dust
    severity: major
    source: "test override"
    six100: {{item: wet_operation}}
    when:
      - {{field: pm10, above: {{param: pm10_set_value, default: {limit}}}}}
      - {{field: spray_on, is: false}}
    for: {tol}
    message: {{zh: "PM10 {{value}}", en: "PM10 {{value}}"}}
    action: {{zh: "喷淋", en: "spray"}}
"""
COVER = """
rules:
  - id: dust_cover_ratio
    kind: dust
    severity: warning
    source: "test override"
    six100: {item: cover}
    when: {field: cover_ratio, below: 100}
    for: 10m
    message: {zh: "覆盖率 {value}", en: "cover {value}"}
    action: {zh: "苫盖", en: "cover"}
"""


def test_default_pack_values(db):
    _episode_day(db)
    s1 = db.report()["S1"]
    # wet operation: 30 min above the default set value 150 with the spray off → fail
    assert s1["wet_operation"].status == "fail" and s1["wet_operation"].rule == "dust_wet_operation"
    assert "150 µg/m³" in s1["wet_operation"].detail
    # cover: 30 min below 100 % is inside the rule's 1 h tolerance → pass (as the alert would not fire)
    assert s1["cover"].status == "pass" and "tolerance 60 min" in s1["cover"].detail


@pytest.mark.parametrize("limit,tol,status", [
    (250, "10m", "pass"),   # set value raised above the episode's 200
    (150, "45m", "pass"),   # tolerance longer than the 30-min episode
    (150, "20m", "fail"),   # still shorter
])
def test_wet_operation_follows_the_rule(db, tmp_path, limit, tol, status):
    _episode_day(db)
    rules_dir = _override(tmp_path, WET.format(limit=limit, tol=tol))
    assert db.report(rules_dir=rules_dir)["S1"]["wet_operation"].status == status


def test_cover_tolerance_follows_the_rule(db, tmp_path):
    _episode_day(db)
    cover = db.report(rules_dir=_override(tmp_path, COVER))["S1"]["cover"]
    assert cover.status == "fail" and "tolerance 10 min" in cover.detail


def test_registry_set_value_wins(db):
    _episode_day(db)
    registry = db.registry('[[device]]\nid = "D1"\nsite = "S1"\nkind = "dust"\npm10_set_value = 250\n')
    wet = db.report(registry=registry)["S1"]["wet_operation"]
    assert wet.status == "pass" and "250 µg/m³" in wet.detail


def test_a_pack_without_the_items_rule_is_no_rule(db, tmp_path):
    _episode_day(db)
    off = "rules:\n  - {id: dust_wet_operation, kind: dust, severity: major, source: switched-off, enabled: false,\n" \
          "     when: {field: pm10, above: 1}, message: {zh: x, en: x}, action: {zh: x, en: x}}\n"
    wet = db.report(rules_dir=_override(tmp_path, off))["S1"]["wet_operation"]
    assert wet.status == "no_evidence" and wet.reason == "no_rule"
