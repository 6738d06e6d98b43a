"""Six-100 judged on evidence, against real InfluxDB data: no evidence is never a pass,
what a site cannot measure is said so (and does not count), flagged values are not data."""

from __future__ import annotations

from six100_data import minutes, vehicle_exit

FULL = 1440
# a site registered with a dust monitor only (no spray relay, no cameras)
MONITOR_ONLY = """
[[device]]
id = "D1"
site = "DUSTY"
kind = "dust"
equipment = ["dust_monitor"]
"""


def test_dusty_site_without_spray_sensor_fails_wet_operation(db):
    # PM10 300 µg/m³ in every one of the day's 1,440 minutes; no spray sensor, no other data
    db.write(minutes("DUSTY", "D1", 0, FULL, "pm10=300"))
    for registry in (None, db.registry(MONITOR_ONLY)):  # unregistered (all expected) and registered
        site = db.report(registry=registry)["DUSTY"]
        wet = site["wet_operation"]
        assert wet.status == "fail" and wet.passed is False, wet
        assert wet.percent == 0.0  # no high minute had spray evidence
        assert "no spray evidence" in wet.detail and "无喷淋证据" in wet.detail_zh
        assert site["all_pass"] is False
        assert site["monitoring"].status == "pass"
    # without a registry every item is expected: silence is no_evidence, never a pass
    site = db.report()["DUSTY"]
    for key in ("hoarding", "cover", "hardened"):
        assert site[key].status == "no_evidence" and site[key].reason == "sensor_silent" and site[key].passed is None
    # registered with a monitor only: the cameras' items cannot be measured here
    site = db.report(registry=db.registry(MONITOR_ONLY))["DUSTY"]
    for key in ("hoarding", "cover", "hardened", "wash", "muck_covered"):
        assert site[key].status == "no_evidence" and site[key].reason == "not_equipped"
        assert site[key].measurable is False and "无法监测" in site[key].detail_zh


def test_spray_evidence_decides_wet_operation(db):
    registry = db.registry(MONITOR_ONLY.replace('["dust_monitor"]', '["dust_monitor", "spray_relay"]\n'
                                                                    'expected_interval_s = 180')
                           + MONITOR_ONLY.replace("D1", "D2").replace("DUSTY", "HALF")
                           .replace('["dust_monitor"]', '["dust_monitor", "spray_relay"]'))
    # DUSTY: PM10 300 all day, spray reported on every 3 minutes (its expected interval: held between reports)
    db.write(minutes("DUSTY", "D1", 0, FULL, lambda i: "pm10=300" + (",spray_on=true" if i % 3 == 0 else "")))
    # HALF: spray on in the morning, reported off from noon: 720 high minutes without it
    db.write(minutes("HALF", "D2", 0, FULL, lambda i: f"pm10=300,spray_on={'true' if i < 720 else 'false'}"))
    r = db.report(registry=registry)
    wet = r["DUSTY"]["wet_operation"]
    assert wet.status == "pass" and wet.percent == 100.0, wet
    assert r["DUSTY"]["all_pass"] is True  # monitor + relay: wet operation and monitoring both passed
    half = r["HALF"]["wet_operation"]
    assert half.status == "fail" and half.percent == 50.0 and "1 episode" in half.detail


def test_site_without_plate_camera_is_no_evidence_not_pass(db):
    registry = db.registry("""
[[device]]
id = "D1"
site = "NOCAM"
kind = "dust"
district = "城区"
equipment = ["dust_monitor", "spray_relay", "hoarding_camera", "cover_camera", "hardened_survey"]

[[device]]
id = "D2"
site = "CAM"
kind = "dust"
district = "开发区"
equipment = ["dust_monitor", "plate_camera", "wash_sensor"]
""")
    good = "pm10=80,spray_on=false,hoarding_intact=true,cover_ratio=100,hardened_ratio=100"
    db.write(minutes("NOCAM", "D1", 0, FULL, good) + minutes("CAM", "D2", 0, FULL, "pm10=80"))
    r = db.report(registry=registry)
    nocam = r["NOCAM"]
    for key in ("wash", "muck_covered"):
        assert nocam[key].status == "no_evidence" and nocam[key].passed is None, nocam[key]
        assert nocam[key].reason == "not_equipped" and nocam[key].measurable is False
        assert "车牌识别" in nocam[key].detail_zh
    # every item it can measure passed: all_pass is true, and says so only for those
    assert nocam["all_pass"] is True and nocam["district"] == "城区"
    # CAM has the camera but no vehicle left: "measured, nothing happened" — not a pass
    cam = r["CAM"]
    assert cam["wash"].status == "no_evidence" and cam["wash"].reason == "no_activity" and cam["wash"].measurable
    assert cam["all_pass"] is False
    # a vehicle exit that day: now judged
    db.write([vehicle_exit("CAM", "D2", 600), vehicle_exit("CAM", "D2", 610, wash_seconds=30)])
    cam = db.report(registry=registry)["CAM"]
    assert cam["wash"].status == "fail" and cam["wash"].percent == 50.0
    assert cam["muck_covered"].status == "pass"


def test_flagged_values_are_ignored(db):
    def mixed(i):
        if i < 720:  # morning: calibration (C) values of 300 — not data
            return 'pm10=300,pm10_flag="C"'
        if i < 1080:
            return 'pm10=80,pm10_flag="N"'
        return "pm10=80"  # an MQTT reading: no flag field, valid
    db.write(minutes("MIX", "D1", 0, FULL, mixed))
    # a faulty (D) 900 inside a valid minute: taken out of that minute's mean
    db.write(['dust,site=MIX,device=D1 pm10=900,pm10_flag="D" ' + str(__import__("six100_data").T0 + 800 * 60_000
                                                                        + 35_000)])
    # only flagged values all day (maintenance M)
    db.write(minutes("FLAGGED", "D2", 0, FULL, 'pm10=300,pm10_flag="M"'))
    # S (manual value) is valid: 15 min of 200 with the spray off is a violation
    db.write(minutes("MANUAL", "D3", 0, FULL, lambda i: f'pm10={200 if 600 <= i < 615 else 80},pm10_flag="S",'
                                                          "spray_on=false"))
    r = db.report()
    mix = r["MIX"]
    assert mix["wet_operation"].status == "pass" and "720 valid minute" in mix["wet_operation"].detail
    assert 49.0 <= mix["monitoring"].percent <= 51.0 and mix["monitoring"].status == "fail"  # morning not online
    flagged = r["FLAGGED"]
    assert flagged["wet_operation"].status == "no_evidence" and flagged["wet_operation"].reason == "only_flagged"
    assert "1440" in flagged["wet_operation"].detail_zh
    assert flagged["monitoring"].status == "fail" and flagged["monitoring"].percent == 0.0
    assert flagged["all_pass"] is False
    manual = r["MANUAL"]
    assert manual["wet_operation"].status == "fail" and "1 episode" in manual["wet_operation"].detail
