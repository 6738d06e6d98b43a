"""Every default rule fires with the right severity and zh-CN text on a crafted sequence,
and a normal series raises nothing. Event time throughout (readings every minute)."""

from __future__ import annotations

import pytest

from citywatch.model import Event
from alerts_helpers import MIN, T0, exit_event, local_ms, series

NIGHT = local_ms("2026-11-27 23:00")
NORMAL_DUST = {"pm10": 80.0, "pm25": 40.0, "noise": 60.0, "noise_max": 66.0, "spray_on": True,
               "cover_ratio": 100.0, "hoarding_intact": True, "hardened_ratio": 100.0}


def dust(minutes, start=T0, **over):
    return series("D1", start, minutes, {**NORMAL_DUST, **over})


def heating(minutes, start=T0, **over):
    base = {"secondary_supply_temp": 55.0, "secondary_return_pressure": 0.25, "makeup_tank_level": 70.0,
            "leak_detected": False, "makeup_flow": 0.5}
    return series("H1", start, minutes, {**base, **over})


def water(minutes, start=T0, **over):
    base = {"turbidity": 0.3, "free_chlorine": 0.8, "ph": 7.5}
    return series("W1", start, minutes, {**base, **over})


def two_episodes():
    first = dust(15, pm10=180.0)
    calm = dust(30, start=T0 + 15 * MIN, pm10=60.0)
    second = dust(15, start=T0 + 45 * MIN, pm10=190.0)
    return first + calm + second


CASES = [
    # (rule, severity, zh fragment, readings, events)
    # PM10 10-min mean 180 over the default set value 150 → Jincheng warning, major
    ("dust_pm10_10min", "major", "PM10 10分钟均值 180.0 µg/m³ 超过设定值 150，立即停工降尘", dust(15, pm10=180.0), []),
    # second PM10 episode the same local day → critical, 24-hour stop
    ("dust_pm10_10min", "critical", "当日第2次超标", two_episodes(), []),
    # hourly mean >= 250 → Taiyuan stop, critical
    ("dust_pm10_hourly", "critical", "PM10 小时均值", dust(70, pm10=300.0), []),
    # PM10 over the set value for 10 min with the spray off → wet-operation violation
    ("dust_wet_operation", "major", "喷淋未开启", dust(12, pm10=200.0, spray_on=False), []),
    # stockpiles not fully covered for over an hour
    ("dust_cover_ratio", "warning", "覆盖率 80", dust(65, cover_ratio=80.0), []),
    # hoarding broken → immediate
    ("dust_hoarding", "major", "围挡不完整", dust(2, hoarding_intact=False), []),
    # roads not fully hardened
    ("dust_hardened_ratio", "warning", "硬化率 90", dust(2, hardened_ratio=90.0), []),
    # daytime LAeq(20 min) 75 > 70
    ("dust_noise_day", "major", "昼间场界噪声", dust(25, noise=75.0), []),
    # night-time LAeq(20 min) 60 > 55
    ("dust_noise_night", "major", "夜间场界噪声 LAeq(20min) 60.0", dust(25, start=NIGHT, noise=60.0), []),
    # night Lmax 80 > 55 + 15
    ("dust_noise_night_lmax", "major", "夜间最大声级 80.0", dust(3, start=NIGHT, noise=50.0, noise_max=80.0), []),
    # vehicle left unwashed
    ("dust_vehicle_unwashed", "major", "未按要求冲洗", dust(2), [exit_event("D1", T0 + 30_000, washed=False, wash_seconds=0.0)]),
    # vehicle washed only 30 s (< 60 s minimum)
    ("dust_vehicle_unwashed", "major", "冲洗 30 秒，要求 60 秒", dust(2), [exit_event("D1", T0 + 30_000, wash_seconds=30.0)]),
    # muck truck uncovered
    ("dust_vehicle_uncovered", "major", "未密闭", dust(2), [exit_event("D1", T0 + 30_000, covered=False)]),
    # daily wash rate 50 % < 100 %
    ("dust_wash_rate", "warning", "冲洗率 50", dust(2), [exit_event("D1", T0 + 10_000),
                                                       exit_event("D1", T0 + 20_000, washed=False)]),
    # PM2.5 24-hour mean 100 > 75 (GB 3095-2012 class 2 reference level), after >= 20 h of data
    ("dust_pm25_24h", "warning", "PM2.5 24小时均值 100.0", dust(21 * 60, pm25=100.0), []),
    # TSP 24-hour mean 400 > 300 (GB 3095-2012 table 2 class 2 reference level)
    ("dust_tsp_24h", "warning", "TSP 24小时均值 400.0", dust(21 * 60, tsp=400.0), []),
    # PM10 sensor flat for 30 min
    ("dust_pm10_stuck", "warning", "持续 30分钟 无变化", series("D1", T0, 40, {"pm10": 88.0}, jitter=False), []),
    # secondary supply 90 °C > 85 for 5 min
    ("heating_supply_temp_high", "major", "二次供水温度 90.0 °C 超过上限 85", heating(7, secondary_supply_temp=90.0), []),
    # return pressure 0.15 < set 0.25 - 0.05
    ("heating_return_pressure_low", "major", "低于设定值下限 0.2", heating(4, secondary_return_pressure=0.15), []),
    # make-up tank 15 % < 20 %
    ("heating_makeup_tank_low", "major", "补水箱液位 15%", heating(4, makeup_tank_level=15.0), []),
    # leak sensor → critical at once
    ("heating_leak", "critical", "漏水", heating(2, leak_detected=True), []),
    # make-up flow 5 m³/h vs a 4 h baseline of 0.5 (limit max(3x0.5, 1.0))
    ("heating_makeup_flow_high", "major", "补水流量",
     heating(4 * 60) + heating(25, start=T0 + 4 * 60 * MIN, makeup_flow=5.0), []),
    # return pressure 0.22 vs a learned set point 0.30 (4 h median) - 0.05
    ("heating_return_pressure_low", "major", "低于设定值下限 0.25",
     heating(4 * 60, secondary_return_pressure=0.30) + heating(4, start=T0 + 4 * 60 * MIN, secondary_return_pressure=0.22), []),
    # secondary supply temperature flat for 2 h
    ("heating_supply_temp_stuck", "warning", "无变化", series("H1", T0, 130, {"secondary_supply_temp": 55.0}, jitter=False), []),
    # turbidity 1.5 > 1 NTU for 5 min
    ("water_turbidity_high", "major", "浑浊度 1.5", water(7, turbidity=1.5), []),
    # free chlorine 0.1 < 0.3
    ("water_chlorine_range", "major", "超出限值（越限 0.3 mg/L）", water(7, free_chlorine=0.1), []),
    # free chlorine 2.5 > 2
    ("water_chlorine_range", "major", "越限 2 mg/L", water(7, free_chlorine=2.5), []),
    # pH 9 > 8.5
    ("water_ph_range", "major", "pH 9.0", water(7, ph=9.0), []),
    # chlorine analyser flat for 2 h
    ("water_chlorine_stuck", "warning", "游离氯读数", series("W1", T0, 130, {"free_chlorine": 0.8}, jitter=False), []),
    # an HJ 212 monitor flags PM10 D (fault): the decoder's sensor_fault event
    ("dust_sensor_fault", "warning", "传感器故障", dust(2), [
        Event("dust", "S1", "D1", T0 + 30_000, "sensor_fault", {"field": "pm10", "flag": "D", "fault": True})]),
    ("heating_sensor_fault", "warning", "仪表故障", heating(2), [
        Event("heating", "S1", "H1", T0 + 30_000, "sensor_fault", {"field": "primary_flow", "flag": "F",
                                                                   "fault": True})]),
]


OPTIONAL = {"dust_pm25_24h", "dust_tsp_24h"}  # shipped with enabled: false (alerts/README.md)


def _with_optional_rules():
    """The shipped rules plus the ones shipped off, enabled, as a CW_RULES_DIR overlay would."""
    import yaml

    from alerts.rules import DEFAULT_RULES_DIR, load_rules, parse_rule

    rules = load_rules()
    for path in sorted(DEFAULT_RULES_DIR.glob("*.yaml")):
        for doc in yaml.safe_load(path.read_text("utf-8"))["rules"]:
            if doc["id"] in OPTIONAL:
                rules[doc["id"]] = parse_rule({**doc, "enabled": True}, str(path))
    assert set(rules) >= OPTIONAL
    return rules


@pytest.mark.parametrize("rule,severity,zh,readings,events", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_default_rule_fires(harness, rule, severity, zh, readings, events):
    h = harness(rules=_with_optional_rules()) if rule in OPTIONAL else harness()
    h.feed(readings, events)
    fired = [a for a in h.engine.list_alerts(rule=rule) if a["state"] in ("firing", "resolved")]
    assert fired, f"{rule} did not fire; alerts: {[a['rule'] for a in h.engine.list_alerts()]}"
    hit = [a for a in fired if a["severity"] == severity and zh in a["message"]]
    assert hit, [(a["severity"], a["message"]) for a in fired]
    a = hit[0]
    assert a["message_en"] and a["kind"] and a["site"] == "S1"
    assert set(a) >= {"id", "rule", "severity", "state", "acked", "kind", "site", "device", "field", "value",
                      "threshold", "started_at", "resolved_at", "message", "message_en"}


def test_every_default_rule_has_a_case():
    from alerts.rules import load_rules

    covered = {c[0] for c in CASES} | {"dust_no_data", "heating_no_data", "water_no_data"}  # deadman: timer tests
    covered |= {"hj212_login_lockout"}  # the gateway's own events: tests/integration/test_hj212_hostile_service.py
    assert set(load_rules()) == covered - OPTIONAL
    assert not OPTIONAL & set(load_rules())  # shipped off by default


def test_normal_day_raises_nothing(harness):
    # 24 h of every kind in its usual band, day/night noise, clean vehicle exits → zero alerts
    import math

    h = harness()
    day = local_ms("2026-11-27 00:00")

    def noise(i):  # minute of day i: 60 dB by day, 50 at night, with a wiggle
        hour = (i // 60) % 24
        return (60.0 if 6 <= hour < 22 else 50.0) + 2 * math.sin(i / 7)

    def noise_max(i):
        return noise(i) + 8

    readings = series("D1", day, 24 * 60, {**NORMAL_DUST, "pm10": lambda i: 90 + 40 * math.sin(i / 50),
                                           "noise": noise, "noise_max": noise_max})
    readings += series("H1", day, 24 * 60, {"secondary_supply_temp": lambda i: 55 + 3 * math.sin(i / 30),
                                            "secondary_return_pressure": 0.25, "makeup_tank_level": 70.0,
                                            "leak_detected": False, "makeup_flow": lambda i: 0.5 + 0.1 * math.sin(i)})
    readings += series("W1", day, 24 * 60, {"turbidity": lambda i: 0.3 + 0.05 * math.sin(i / 10),
                                            "free_chlorine": lambda i: 0.8 + 0.1 * math.sin(i / 20), "ph": 7.5})
    events = [exit_event("D1", day + k * 20 * MIN) for k in range(72)]
    h.feed(readings, events)
    assert h.engine.list_alerts() == []
    assert h.deliver() == []
