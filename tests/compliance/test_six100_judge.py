"""The pure parts of the judgement, table-driven: runs and tolerances, conditions from rule
conditions, the registry's equipment."""

from __future__ import annotations

import pytest

from alerts.rules import load_rules
from api.six100.judge import longest_run, violations
from api.six100.thresholds import cond_on, holds, threshold_value
from citywatch.errors import ConfigError

M = 60_000


@pytest.mark.parametrize("bad,tolerance_min,expected", [
    ([], 0, 0),                                   # nothing bad
    ([0], 0, 1),                                  # tolerance 0: one bad minute is a violation
    ([0, M, 2 * M], 10, 0),                       # 3 minutes < 10 min
    ([t * M for t in range(11)], 10, 1),          # minute 0 to minute 10: held 10 min → one
    ([t * M for t in range(10)], 10, 0),          # minute 0 to minute 9: 9 min, not yet (as the engine)
    ([t * M for t in range(11)] + [t * M for t in range(20, 31)], 10, 2),  # two runs
    ([t * M for t in range(0, 30, 2)], 10, 0),    # every other minute: never consecutive
])
def test_violations(bad, tolerance_min, expected):
    assert violations(bad, tolerance_min * M) == expected


def test_longest_run():
    assert longest_run([]) == (0, -1)
    assert longest_run([5 * M, 0, M, 2 * M]) == (2, 2 * M)


@pytest.mark.parametrize("rule,field,value,params,expected", [
    ("dust_wet_operation", "pm10", 150.0, {}, False),                      # above 150: equal is not above
    ("dust_wet_operation", "pm10", 150.1, {}, True),
    ("dust_wet_operation", "pm10", 200.0, {"pm10_set_value": 250}, False),  # the site's registry set value
    ("dust_wet_operation", "pm10", None, {}, False),                       # no value never holds
    ("dust_wet_operation", "spray_on", False, {}, True),
    ("dust_wet_operation", "spray_on", None, {}, False),
    ("dust_cover_ratio", "cover_ratio", 99.9, {}, True),
    ("dust_cover_ratio", "cover_ratio", 100.0, {}, False),
    ("dust_cover_ratio", "cover_ratio", True, {}, False),                  # a boolean is not a number
    ("dust_wash_rate", "wash_seconds", 60.0, {}, True),                    # at_least 60
    ("dust_wash_rate", "wash_seconds", 59.0, {"min_wash_seconds": 50}, True),
])
def test_holds(rule, field, value, params, expected):
    cond = cond_on(load_rules()[rule], field)
    assert holds(cond, value, params) is expected


def test_threshold_value_offset_and_bad_param():
    rules = load_rules(pack="hebei")
    cond = cond_on(rules["dust_pm10_background_hourly"], "pm10")
    assert threshold_value(cond.threshold, {}) == 80.0                     # background 0 + 80
    assert threshold_value(cond.threshold, {"pm10_background": 65}) == 145.0
    assert threshold_value(cond.threshold, {"pm10_background": "n/a"}) == 80.0  # unusable → the default


def test_registry_equipment(tmp_path):
    from citywatch.registry import Registry

    def load(body: str):
        p = tmp_path / "d.toml"
        p.write_text(body, "utf-8")
        return Registry.load(p)

    reg = load('[[device]]\nid = "A"\nsite = "S"\nkind = "dust"\nequipment = ["dust_monitor"]\n'
               '[[device]]\nid = "B"\nsite = "S"\nkind = "dust"\nequipment = ["plate_camera"]\n'
               '[[device]]\nid = "C"\nsite = "T"\nkind = "dust"\n')
    assert reg.site_equipment("S") == {"dust_monitor", "plate_camera"}
    assert reg.site_equipment("T") is None and reg.site_equipment("nowhere") is None
    assert "equipment" not in reg.devices["A"].params
    with pytest.raises(ConfigError, match="unknown equipment"):
        load('[[device]]\nid = "A"\nsite = "S"\nkind = "dust"\nequipment = ["x_ray"]\n')
    with pytest.raises(ConfigError, match="list of names"):
        load('[[device]]\nid = "A"\nsite = "S"\nkind = "dust"\nequipment = "dust_monitor"\n')
