"""The guards that let the engine skip idle rules (alerts/guard.py): their bounds, their
trackers, and - the point - that skipping never changes an outcome: the same streams
through an engine with and without guards give identical alerts, notifications and state."""

from __future__ import annotations

import json
import math
import random
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from alerts_helpers import Harness

import simulators.stream as simulators_stream
from alerts.guard import LAST_SPAN, NEVER, Hot, Jump, cold_interval
from alerts.rules import Cond
from alerts.window import Series, aggregate
from citywatch.model import Event, Reading
from citywatch.registry import Device, Registry
from simulators.faults import PAYLOAD_FAULTS


def cond(**kw) -> Cond:
    return Cond.model_validate(kw)


def holds(c: Cond, value: float, params: dict) -> bool:
    """The engine's comparison (no hysteresis) with a data-independent threshold."""
    from alerts.guard import static_threshold

    if c.op == "is":
        return bool(value >= 0.5) == c.want
    if c.op == "outside":
        return value < static_threshold(c.low, params) or value > static_threshold(c.high, params)
    thr = static_threshold(c.threshold, params)
    return {"above": value > thr, "below": value < thr, "at_least": value >= thr, "at_most": value <= thr}[c.op]


# ---------------------------------------------------------------------- cold intervals
@pytest.mark.parametrize("kw,cold,hot", [
    ({"above": 150}, [150.0, -1e308, -math.inf], [math.nextafter(150.0, 200), math.nan, math.inf]),
    ({"at_least": 150}, [math.nextafter(150.0, 0)], [150.0]),
    ({"below": 100}, [100.0, math.inf], [math.nextafter(100.0, 0), math.nan]),
    ({"at_most": 100}, [math.nextafter(100.0, 200)], [100.0]),
    ({"outside": [6.5, 8.5]}, [6.5, 8.5, 7.0], [math.nextafter(6.5, 0), math.nextafter(8.5, 9), math.nan]),
    ({"is": True}, [0.0, math.nextafter(0.5, 0)], [0.5, 1.0]),
    ({"is": False}, [0.5, 1.0], [0.0, math.nan]),
])
def test_last_condition_interval_is_exact(kw, cold, hot):
    # `last` compares a sample itself: the interval is exactly where the condition is false
    c = cond(field="x", **kw)
    lo, hi = cold_interval(c, {})
    for x in cold:
        assert lo <= x <= hi and not holds(c, x, {})
    for x in hot:
        assert not lo <= x <= hi


def test_interval_follows_registry_params_and_leaves_baselines_alone():
    c = cond(field="pm10", above={"param": "pm10_set_value", "default": 150})
    assert cold_interval(c, {})[1] == 150.0
    assert cold_interval(c, {"pm10_set_value": 100})[1] == 100.0
    assert cold_interval(c, {"pm10_set_value": True})[1] == 150.0  # not a number: the default
    assert cold_interval(cond(field="p", below={"baseline": {"agg": "median", "window": "24h", "factor": 1}, "default": 0.25}),
                         {}) is None  # moves with the data
    assert cold_interval(cond(field="p", below={"param": "set", "baseline": {"agg": "median", "window": "24h", "factor": 1}}),
                         {"set": 0.3}) == (0.3, math.inf)  # a set parameter wins over the baseline
    assert cold_interval(cond(field="x", agg="count", window="10m", above=3), {}) is None
    assert cold_interval(cond(field="x", agg="rate", window="10m", above=3), {}) is None
    assert cold_interval(cond(field="x", above={"param": "t", "default": 1}), {"t": math.nan}) is None


def test_windowed_interval_leaves_a_margin_and_caps_extremes():
    lo, hi = cold_interval(cond(field="x", agg="mean", window="10m", above=150), {})
    assert hi < 150.0 and hi > 150.0 - 1e-5 and lo == -1e300
    lo, hi = cold_interval(cond(field="n", agg="energy_mean", window="20m", below=55), {})
    assert lo > 55.0 and hi == 3000.0  # 10 ** (L / 10) overflows beyond


@pytest.mark.parametrize("seed", range(6))
def test_cold_windowed_condition_never_holds(seed):
    # Samples inside the cold interval, right up to its edges: numpy's aggregate (what the
    # engine decides with) never satisfies the condition.
    rng = random.Random(seed)
    for agg in ("mean", "energy_mean", "max", "min", "median", "last"):
        for op in ("above", "at_least", "below", "at_most", "outside"):
            b = rng.choice([0.0, 1.0, 55.0, 150.0, 1e6, -3.0])
            kw = {op: [b - 1.0, b + 1.0] if op == "outside" else b}
            c = cond(field="x", agg=agg, **({} if agg == "last" else {"window": "10m"}), **kw)
            lo, hi = cold_interval(c, {})
            for _ in range(30):
                n = rng.randint(1, 60)
                edge = [lo, hi] if math.isfinite(lo) and math.isfinite(hi) else [x for x in (lo, hi) if math.isfinite(x)]
                span = max(1.0, abs(b))
                v = np.array([rng.choice(edge) if rng.random() < 0.7 else
                              min(hi, max(lo, rng.choice(edge) + rng.uniform(-span, span))) for _ in range(n)])
                assert ((lo <= v) & (v <= hi)).all()
                value = aggregate(agg, np.arange(n, dtype=np.int64), v)
                assert not holds(c, value, {}), (agg, op, b, v.tolist(), value)


# ---------------------------------------------------------------------- trackers
def test_hot_tracks_the_newest_hot_sample_in_a_window():
    h = Hot(-math.inf, 150.0, 600_000)
    s = Series(64, span_ms=600_000, max_cap=64)
    for ts, x in [(0, 100.0), (10_000, 200.0), (20_000, 100.0)]:
        h.seen(ts, x, s.add(ts, x))
    assert h.ts == 10_000
    assert not h.cold(20_000) and not h.cold(609_999) and h.cold(610_000)
    h.seen(5_000, 300.0, s.add(5_000, 300.0))  # a late hot sample older than the newest hot one
    assert h.ts == 10_000
    assert Hot(-math.inf, 150.0, 600_000).scan(s).ts == 10_000  # the same from the samples kept
    assert Hot(-math.inf, 150.0, 600_000).scan(None).ts == NEVER


def test_hot_last_condition_follows_the_newest_sample():
    h = Hot(-math.inf, 150.0, None)
    assert h.span == LAST_SPAN and h.cold(0)
    s = Series(16)
    h.seen(1000, 200.0, s.add(1000, 200.0))
    assert h.ts == 1000 and not h.cold(10**13)  # the newest is hot however old
    h.seen(500, 100.0, s.add(500, 100.0))  # late and cold: not the newest, changes nothing
    assert not h.cold(10**13)
    h.seen(1000, 100.0, s.add(1000, 100.0))  # the newest re-delivered, now cold
    assert h.cold(1000)
    h.seen(2000, 151.0, s.add(2000, 151.0))
    assert Hot(-math.inf, 150.0, None).scan(s).ts == 2000


def test_devices_share_guard_bounds_only_with_equal_params(tmp_path):
    # the guards' plan is made once per distinct value of the parameters the rules name
    # (type included: True is not a number to a threshold, 1 is), and shared by devices
    reg = Registry({d.id: d for d in [
        Device("D1", "S1", "dust"), Device("D2", "S1", "dust"),
        Device("D3", "S1", "dust", params={"pm10_set_value": 100}),
        Device("D4", "S1", "dust", params={"pm10_set_value": True}),
        Device("D5", "S1", "dust", params={"pm10_set_value": 1}),
        Device("D6", "S1", "dust", params={"pm10_set_value": [1]}),  # unhashable: planned alone
    ]}, {})
    h = Harness(tmp_path / "a.sqlite3", registry=reg)
    for i, d in enumerate(["D1", "D2", "D3", "D4", "D5", "D6"]):
        h.feed([Reading("dust", "S1", d, 1_000 + i, {"pm10": 50.0, "spray_on": True})])
    eng = h.engine
    slot = next(cr.slot for cr in eng._kind_rules["dust"] if cr.id == "dust_pm10_10min")

    def bound(d: str) -> float:
        (hot,) = eng._devices[d].guards[slot]
        return hot.hi

    assert bound("D1") == bound("D4") == bound("D6") == pytest.approx(150.0)
    assert bound("D3") == pytest.approx(100.0) and bound("D5") == pytest.approx(1.0)
    assert eng._devices["D1"].guards[slot][0] is not eng._devices["D2"].guards[slot][0]  # per device
    assert eng._devices["D1"].guards[slot][0].hi is eng._devices["D2"].guards[slot][0].hi  # shared bound


def test_jump_proves_a_window_not_flat_while_both_samples_are_in_it():
    s = Series(8, span_ms=0, max_cap=8)
    j = Jump(0.5, 60_000)
    for ts, x in [(0, 1.0), (10_000, 1.2), (20_000, 2.0), (30_000, 2.1)]:
        prev = s.last()
        s.add(ts, x)
        j.appended(s, prev, ts, x)
    assert j.ts == 10_000  # 1.2 -> 2.0
    assert j.not_flat(s, 30_000) and j.not_flat(s, 69_999) and not j.not_flat(s, 70_000)
    assert Jump(0.5, 60_000).scan(s).ts == 10_000
    s.add(15_000, 1.5)  # a late insert between them: the proof is withdrawn
    assert not j.not_flat(s, 30_000)
    prev = s.last()
    s.add(40_000, 2.1)
    j.appended(s, prev, 40_000, 2.1)
    assert j.ts == NEVER and j.epoch == s.epoch
    for i in range(5, 13):  # jumps again, then the older sample is evicted by the capacity
        prev = s.last()
        s.add(i * 10_000, float(i % 2) * 10)
        j.appended(s, prev, i * 10_000, float(i % 2) * 10)
    assert j.ts == 110_000 and j.not_flat(s, 120_000)
    assert not Jump(20.0, 60_000).scan(s).not_flat(s, 120_000)
    nan = Jump(0.0, 60_000)
    nan.appended(s, (120_000, math.nan), 130_000, 1.0)
    assert nan.ts == NEVER  # NaN proves nothing (numpy decides)


# ---------------------------------------------------------------------- with and without
def _stream(scenario: str, sites: int, start: str | None = None) -> tuple[list[Reading], list[Event], list]:
    """Healthy and device-faulted messages (late, duplicate, out of order, stuck, spikes)."""
    run = simulators_stream.plan_run(scenario, sites=sites, seed=11, start=start)
    readings: list[Reading] = []
    events: list[Event] = []
    for m in simulators_stream.generate_run(run):
        if m.fault in PAYLOAD_FAULTS:
            continue
        doc = json.loads(m.payload)
        channel, kind, site, device = m.topic.split("/")
        ts = lambda v: v if isinstance(v, int) else int(datetime.fromisoformat(v).timestamp() * 1000)
        if channel == "telemetry":
            for item in doc if isinstance(doc, list) else [doc]:
                readings.append(Reading(kind, site, device, ts(item["ts"]), item["values"], item.get("seq")))
        else:
            attrs = {k: v for k, v in doc.items() if k not in ("ts", "type")}
            events.append(Event(kind, site, device, ts(doc["ts"]), doc["type"], attrs))
    return readings, events, run.fleet


# Parameters at the fleet's usual levels, so rules go pending, fire and resolve all the time.
_TIGHT = {
    "dust": {"pm10_set_value": 52, "pm10_hourly_stop_value": 50, "noise_day_limit": 50, "noise_night_limit": 42,
             "noise_night_lmax": 50, "cover_ratio_min": 100},
    "heating": {"secondary_supply_max": 56, "makeup_tank_min": 74.2, "secondary_return_pressure_set": 0.39},
    "water": {"turbidity_max": 0.15, "free_chlorine_min": 0.58, "free_chlorine_max": 0.62},
}


def _registry(fleet) -> Registry:
    # every other device gets tight parameters; the rest use the rules' defaults / baselines
    return Registry({d.id: Device(d.id, d.site, d.kind, expected_interval_s=60,
                                  params=_TIGHT[d.kind] if d.index % 2 == 0 else {}) for d in fleet}, {})


_EXTRA_RULE = {  # put mid-stream: the engine rebuilds its guards for the new rule set
    "id": "dust_pm10_5min_low", "kind": "dust", "severity": "warning", "source": "test rule",
    "when": [{"field": "pm10", "agg": "max", "window": "5m", "above": 60},
             {"field": "noise", "agg": "median", "window": "5m", "min_coverage": 0.5, "below": 60}],
    "clear": {"field": "pm10", "agg": "max", "window": "5m", "below": 55},
    "for": "1m", "message": {"zh": "{value}", "en": "{value}"}, "action": {"zh": "-", "en": "-"},
}


def _replay(path: Path, readings, events, registry, *, guards: bool) -> dict:
    live: list[tuple[int, str, dict]] = []  # every change, pending included (the API's SSE stream)

    def make() -> Harness:
        h = Harness(path, registry=registry)
        h.engine._use_guards = guards
        h.engine._hub.publish = lambda n: live.append((n.seq, n.event, n.alert))  # type: ignore[method-assign]
        return h

    h = make()
    items = sorted([*readings, *events], key=lambda x: x.ts_ms)  # stable: faults keep their order
    for i in range(0, len(items), 150):
        chunk = items[i:i + 150]
        h.engine.process_readings([x for x in chunk if isinstance(x, Reading)],
                                  [x for x in chunk if isinstance(x, Event)])
        h.engine.tick()
        if i // 150 == len(items) // 450:  # a third through: restart from the state file
            h.engine.close()
            h = make()
        if i // 150 == 2 * len(items) // 450:
            h.engine.put_rule(_EXTRA_RULE)
    stats = dict(h.engine.stats)
    h.engine.close()
    import sqlite3

    db = sqlite3.connect(path)
    out = {t: db.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
           for t in ("alerts", "rstate", "devices", "series")}
    out["outbox"] = db.execute("SELECT notifier, event, alert_id, payload, created_ms FROM outbox ORDER BY seq").fetchall()
    out["stats"] = stats
    out["live"] = live
    db.close()
    return out


@pytest.mark.parametrize("scenario,sites,start", [
    ("faults", 10, None),  # spikes, stuck PM10, late / duplicate / out-of-order readings
    ("dust-episode", 2, None),
    ("noise-night", 2, None),
    ("substation-leak", 3, None),
    ("water-turbidity", 3, None),
    ("normal-day", 4, "2026-11-27T20:00:00"),  # across the 22:00 day/night switch
])
def test_guards_change_no_outcome(tmp_path, scenario, sites, start):
    readings, events, fleet = _stream(scenario, sites, start)
    if scenario == "normal-day":
        readings = readings[:25_000]
        events = [e for e in events if e.ts_ms <= readings[-1].ts_ms]
    reg = _registry(fleet)
    with_guards = _replay(tmp_path / "guarded.sqlite3", readings, events, reg, guards=True)
    without = _replay(tmp_path / "plain.sqlite3", readings, events, reg, guards=False)
    pending = sum(1 for n in without["live"] if n[1] == "pending")
    assert len(without["outbox"]) >= 10 and pending >= 5, "the stream should make the rules work"
    for table in without:
        assert with_guards[table] == without[table], table
