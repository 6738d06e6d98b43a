"""Lifecycle: flapping, hysteresis, schedules, energy mean, deadman, late data, params,
ack / escalation / re-notify / silences, index cost and bounded memory."""

from __future__ import annotations

import asyncio

import pytest

from alerts.window import Series, energy_mean
from alerts_helpers import MIN, T0, exit_event, local_ms, registry, series
from citywatch.model import Reading
from citywatch.registry import Device


def only(h, rule):
    return [e for e in h.deliver() if e[1] == rule]


def test_flapping_around_threshold_is_one_alert(harness):
    # turbidity 1.2 for 6 min fires; then 0.95/1.05 alternating (inside the 0.1 hysteresis) for
    # 30 min keeps the same alert; 0.5 resolves it → one firing, one resolved
    h = harness()
    flap = series("W1", T0 + 6 * MIN, 30, {"turbidity": lambda i: 1.05 if i % 2 else 0.95}, jitter=False)
    h.feed(series("W1", T0, 6, {"turbidity": 1.2}) + flap + series("W1", T0 + 36 * MIN, 3, {"turbidity": 0.5}))
    assert only(h, "water_turbidity_high") == [("firing", "water_turbidity_high", "major"),
                                                ("resolved", "water_turbidity_high", "major")]


def test_flapping_pm10_mean_keep_firing_for(harness):
    # PM10 mean dips below 150 for a few minutes (shorter than keep_firing_for 10 m) → still one alert
    h = harness()
    vals = lambda i: 200.0 if (i // 4) % 3 else 100.0  # 4 min low every 12 min
    h.feed(series("D1", T0, 60, {"pm10": vals, "spray_on": True}))
    fired = [e for e in only(h, "dust_pm10_10min") if e[0] == "firing"]
    assert len(fired) == 1


def test_alternating_values_never_satisfy_for(harness):
    # 'for: 5m' needs the condition continuously: 0.9/1.1 alternating never fires
    h = harness()
    h.feed(series("W1", T0, 30, {"turbidity": lambda i: 1.1 if i % 2 else 0.9}, jitter=False))
    assert h.engine.list_alerts(rule="water_turbidity_high", state="firing") == []


@pytest.mark.parametrize("start,level,fires", [
    ("2026-11-27 10:00", 60.0, False),  # day: 60 < 70
    ("2026-11-27 10:00", 72.0, True),   # day: 72 > 70
    ("2026-11-27 23:00", 60.0, True),   # night: 60 > 55
    ("2026-11-27 03:00", 54.0, False),  # night: 54 < 55
])
def test_noise_day_night_schedule(harness, start, level, fires):
    h = harness()
    h.feed(series("D1", local_ms(start), 25, {"noise": level}))
    got = {a["rule"] for a in h.engine.list_alerts()}
    assert bool(got & {"dust_noise_day", "dust_noise_night"}) == fires, got


def test_day_alert_resolves_when_night_starts_and_night_window_starts_fresh(harness):
    # 65 dB from 21:30 to 22:30: day rule quiet (65 < 70); at 22:00 the night rule must not use
    # day samples; it fires only once 15 min of night samples exist (0.75 x 20 min)
    h = harness()
    h.feed(series("D1", local_ms("2026-11-27 21:30"), 60, {"noise": 65.0}))
    night = h.engine.list_alerts(rule="dust_noise_night")
    assert len(night) == 1
    assert night[0]["started_at"] >= "2026-11-27T22:14"


def test_energy_mean_not_arithmetic(harness):
    # alternating 80/50 dB: arithmetic mean 65 (< 70) but energy mean ≈ 77 (> 70) → fires
    assert energy_mean([60, 70]) == pytest.approx(67.403, abs=1e-3)
    assert energy_mean([80, 50]) == pytest.approx(77.0, abs=0.02)
    h = harness()
    h.feed(series("D1", T0, 25, {"noise": lambda i: 80.0 if i % 2 else 50.0}, jitter=False))
    a = h.firing()["dust_noise_day"]
    assert a["value"] == pytest.approx(77.0, abs=0.5)


def test_deadman_fires_from_timer_without_messages(harness):
    # registered monitor never reports: nothing arrives, the timer alone fires after 3 x 60 s,
    # and the first reading resolves it
    reg = registry(Device("D9", "S9", "dust", expected_interval_s=60))
    h = harness(registry=reg, time_mode="wall")
    h.engine.tick()
    h.clock.advance(170)
    h.engine.tick()
    assert h.engine.list_alerts() == []
    h.clock.advance(20)
    h.engine.tick()
    a = h.firing()["dust_no_data"]
    assert a["severity"] == "major" and a["device"] == "D9" and a["threshold"] == 180
    assert "已 190 秒无数据" in a["message"]
    h.engine.process_readings([Reading("dust", "S9", "D9", int(h.clock() * 1000), {"pm10": 50.0})])
    assert h.deliver() == [("firing", "dust_no_data", "major"), ("resolved", "dust_no_data", "major")]


def test_a_value_less_reading_keeps_a_monitor_alive_and_judges_nothing(harness):
    # HJ 212 minute/hour data: the decoder hands the engine a Reading without values
    reg = registry(Device("D9", "S9", "dust", expected_interval_s=60))
    h = harness(registry=reg, time_mode="wall")
    h.engine.tick()
    for _ in range(5):
        h.clock.advance(100)
        h.engine.process_readings([Reading("dust", "S9", "D9", int(h.clock() * 1000), {})])
        h.engine.tick()
    assert h.engine.list_alerts() == []  # 500 s, never silent for 180 s
    h.clock.advance(200)
    h.engine.tick()
    assert "dust_no_data" in h.firing()


def test_deadman_event_time_replay(harness):
    # in event-time mode "now" is the newest event seen: D1 stops, D2 keeps going → D1 silent
    h = harness()
    h.feed(series("D1", T0, 5, {"pm10": 50.0}) + series("D2", T0, 20, {"pm10": 50.0}))
    h.engine.tick()
    assert [a["device"] for a in h.engine.list_alerts(rule="dust_no_data")] == ["D1"]


def test_late_and_out_of_order_readings(harness):
    # out-of-order within tolerance still lands in the window; far-late readings are ignored
    h = harness(late_tolerance_s=300)
    rs = series("D1", T0, 12, {"pm10": 180.0, "spray_on": True})
    rs[3], rs[4] = rs[4], rs[3]
    for r in rs:
        h.engine.process_readings([r])
    assert "dust_pm10_10min" in h.firing()
    h.engine.process_readings([Reading("dust", "S1", "D1", T0 - 60 * MIN, {"pm10": 999.0})])
    assert h.engine.stats["late_dropped"] == 1


def test_quality_flagged_fields_are_not_judged(harness):
    # HJ 212 flag D (fault) on pm10 → the value is not used by threshold rules
    h = harness()
    rs = [Reading("dust", "S1", "D1", T0 + i * MIN, {"pm10": 500.0}, quality={"pm10": "D"}) for i in range(15)]
    h.feed(rs)
    assert h.engine.list_alerts() == []


@pytest.mark.parametrize("flag", ["N", "S"])
def test_valid_flags_are_judged(harness, flag):
    # HJ 212 readings carry every flag; N (normal) and S (manual value) are valid data
    h = harness()
    rs = [Reading("dust", "S1", "D1", T0 + i * MIN, {"pm10": 500.0, "spray_on": True},
                  quality={"pm10": flag, "pm25": "D"}) for i in range(15)]
    h.feed(rs)
    assert "dust_pm10_10min" in h.firing()


def test_per_device_param_override(harness):
    # D1 has pm10_set_value 100 in the registry, D2 uses the default 150; both at 120
    reg = registry(Device("D1", "S1", "dust", params={"pm10_set_value": 100}), Device("D2", "S2", "dust"))
    h = harness(registry=reg)
    h.feed(series("D1", T0, 12, {"pm10": 120.0, "spray_on": True}) +
           series("D2", T0, 12, {"pm10": 120.0, "spray_on": True}, site="S2"))
    alerts = h.engine.list_alerts(rule="dust_pm10_10min")
    assert [(a["device"], a["threshold"]) for a in alerts] == [("D1", 100)]
    assert "超过设定值 100" in alerts[0]["message"]


def test_ack_stops_escalation_and_unacked_escalates(harness):
    # two PM10 alerts: the acked one never escalates, the other escalates to critical after
    # escalate_after 30 min
    h = harness(time_mode="wall")
    h.clock.set(T0 / 1000 + 15 * 60)
    h.feed(series("D1", T0, 15, {"pm10": 180.0, "spray_on": True}) +
           series("D2", T0, 15, {"pm10": 180.0, "spray_on": True}, site="S2"))
    a1 = h.engine.list_alerts(device="D1")[0]
    acked = h.engine.ack(a1["id"], by="zhang.san", note="已通知项目部停工")
    assert acked["acked"] and acked["acked_by"] == "zhang.san" and acked["ack_note"] == "已通知项目部停工"
    h.clock.advance(31 * 60)
    h.engine.tick()
    sev = {a["device"]: a["severity"] for a in h.engine.list_alerts(state="firing", rule="dust_pm10_10min")}
    assert sev == {"D1": "major", "D2": "critical"}
    assert [e[0] for e in only(h, "dust_pm10_10min")] == ["firing", "firing", "acked", "escalated"]


def test_repeat_interval_renotifies_unacked(harness):
    # firing and unacknowledged: re-notified every repeat_interval (here 1 h), not more
    h = harness(time_mode="wall", repeat_interval_s=3600)
    h.clock.set(T0 / 1000 + 120)
    h.feed(series("H1", T0, 2, {"leak_detected": True}))
    for _ in range(5):
        h.clock.advance(30 * 60)
        h.engine.tick()
    assert [e[0] for e in only(h, "heating_leak")] == ["firing", "repeat", "repeat"]


def test_silence_suppresses_then_notifies_when_over(harness):
    # maintenance window on site S1: the leak alert is recorded but not sent; when the
    # window ends and it still fires, it is sent once
    h = harness(time_mode="wall")
    h.clock.set(T0 / 1000)
    s = h.engine.silence(site="S1", by="li.si", ends_at=T0 / 1000 + 600, comment="检修")
    assert h.engine.list_silences()[0]["id"] == s["id"]
    h.feed(series("H1", T0, 2, {"leak_detected": True}))
    assert h.firing()["heating_leak"]["state"] == "firing"
    h.engine.tick()
    assert only(h, "heating_leak") == []
    h.clock.advance(601)
    h.engine.tick()
    h.engine.tick()
    assert only(h, "heating_leak") == [("firing", "heating_leak", "critical")]


def test_pending_then_firing_states(harness):
    # wet operation has for: 10m → pending first (visible in the API), firing after 10 min
    h = harness()
    h.feed(series("D1", T0, 5, {"pm10": 200.0, "spray_on": False}))
    assert [a["state"] for a in h.engine.list_alerts(rule="dust_wet_operation")] == ["pending"]
    h.feed(series("D1", T0 + 5 * MIN, 6, {"pm10": 200.0, "spray_on": False}))
    a = h.engine.list_alerts(rule="dust_wet_operation")
    assert [x["state"] for x in a] == ["firing"]
    assert a[0]["started_at"] == "2026-11-27T08:00:00+08:00" and a[0]["fired_at"] == "2026-11-27T08:10:00+08:00"
    # the pending stage is never sent to external notifiers
    assert only(h, "dust_wet_operation") == [("firing", "dust_wet_operation", "major")]


def test_pending_dropped_when_condition_stops(harness):
    # spray turned on after 5 min: pending alert disappears, nothing notified
    h = harness()
    h.feed(series("D1", T0, 5, {"pm10": 200.0, "spray_on": False}) +
           series("D1", T0 + 5 * MIN, 10, {"pm10": 200.0, "spray_on": True}))
    assert h.engine.list_alerts(rule="dust_wet_operation") == []


def test_event_alert_auto_resolves_and_counts(harness):
    # two unwashed exits → one alert with count 2; a compliant exit resolves it
    h = harness()
    h.feed(events=[exit_event("D1", T0, washed=False), exit_event("D1", T0 + MIN, washed=False)])
    a = h.firing()["dust_vehicle_unwashed"]
    assert a["count"] == 2
    h.feed(events=[exit_event("D1", T0 + 2 * MIN)])
    assert "dust_vehicle_unwashed" not in h.firing()


def test_index_touches_only_relevant_rules(harness):
    # a reading with only wind fields evaluates nothing; a water reading evaluates only
    # water rules for the fields it carries
    h = harness()
    h.engine.process_readings([Reading("dust", "S1", "D1", T0, {"wind_speed": 3.0, "wind_dir": 90.0})])
    assert h.engine.stats["evaluations"] == 0
    h.engine.process_readings([Reading("water", "S1", "W1", T0, {"ph": 7.2})])
    assert h.engine.stats["evaluations"] == 1  # water_ph_range only


def test_memory_bounded_per_series():
    # a ring never grows past its cap however many samples arrive
    s = Series(16, span_ms=10**12, max_cap=64)
    for i in range(10_000):
        s.add(i * 1000, float(i))
    assert len(s) == 64 and s.last() == (9_999_000, 9999.0)
    s.add(9_998_500, 1.0)  # out of order: inserted in time order
    assert list(s.ts[-3:]) == [9_998_000, 9_998_500, 9_999_000]


def test_hub_stream_for_sse(harness):
    # subscribe_notifications() yields every state change, pending included
    h = harness()

    async def go():
        sub = h.engine.subscribe_notifications()
        h.feed(series("D1", T0, 11, {"pm10": 200.0, "spray_on": False}))
        got = [await asyncio.wait_for(sub.__anext__(), 1) for _ in range(2)]
        sub.close()
        return [(n.event, n.alert["rule"]) for n in got]

    got = asyncio.run(go())
    assert got[0] == ("pending", "dust_wet_operation")
    assert ("firing", "dust_pm10_10min") in got or ("firing", "dust_wet_operation") in got
