"""Rolling window cursors (alerts/window.py) against the plain numpy computation, and the
engine's use of them: late inserts, duplicates, eviction, compaction, restore."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from alerts.window import ROLLING, Series, aggregate
from alerts_helpers import MIN, T0, Harness, series
from citywatch.model import Reading

AGGS = ("mean", "energy_mean", "max", "min", "median", "count", "rate", "last")


def _covered(ts: np.ndarray, need: float) -> bool:
    n = len(ts)
    if n < 2:
        return False
    span = int(ts[-1]) - int(ts[0])
    return span + span / (n - 1) >= need


@pytest.mark.parametrize("seed", range(12))
def test_rolling_matches_numpy(seed):
    rng = random.Random(seed)
    s = Series(rng.choice([4, 16, 64]), span_ms=rng.choice([0, 600_000, 10**9]), max_cap=rng.choice([64, 256]))
    win = rng.choice([60_000, 300_000, 3_600_000])
    rolls = {agg: s.rolling((agg, win), agg) for agg in AGGS}
    stuck = s.rolling(("stuck", win), "stuck")
    t = 0
    for _ in range(1500):
        r = rng.random()
        if r < 0.85:
            t += rng.choice([1_000, 10_000, 10_000, 60_000])
            s.add(t, rng.choice([rng.uniform(30, 90), round(rng.uniform(-20, 200), 1), 55.0]))
        elif r < 0.93 and len(s):
            s.add(t - rng.randrange(0, 120_000), rng.uniform(30, 90))  # late: inserted in order
        elif len(s):
            ts = s.ts
            s.add(int(ts[rng.randrange(len(ts))]), rng.uniform(30, 90))  # duplicate: replaces
        end = t
        start = end - win
        wts, wv = s.window(start, end)
        need = 0.5 * win
        for agg, roll in rolls.items():
            got = roll.query(start, end, need)
            if agg == "count":
                assert got == float(len(wv))
                continue
            if not _covered(wts, need):
                assert got is None
                continue
            want = aggregate(agg, wts, wv)
            if agg in ("mean", "energy_mean"):
                assert got == pytest.approx(want, rel=1e-12, abs=1e-12)
                assert roll.numpy_value() == want  # bit for bit
            else:
                assert got == want
        n = stuck.sync(start, end)
        assert n == len(wv)
        if n:
            assert stuck.max_minus_min() == float(wv.max() - wv.min())
            assert stuck.value("last") == float(wv[-1])
        assert len(s) <= s.cap <= s.max_cap


def test_max_min_queues_stay_bounded():
    # long monotonic runs fill one queue, a step empties it; the dead head is cut off so a
    # queue is never much longer than its live part, and the answers stay numpy's
    s = Series(4096, span_ms=10**12, max_cap=4096)
    roll = s.rolling(("max", 200_000), "max")
    rng = random.Random(3)
    x = 0.0
    for i in range(20_000):
        x += rng.choice([-1.0, 1.0]) * (1 if (i // 500) % 2 else 0.5) + (1e4 if i % 3000 == 0 else 0.0)
        t = i * 1000
        s.add(t, x)
        got = roll.query(t - 200_000, t, 0)
        wv = s.window(t - 200_000, t)[1]
        if len(wv) >= 2:
            assert got == float(wv.max())
            assert roll.value("min") == float(wv.min())
        for q, head in ((roll.mx, roll.mxh), (roll.mn, roll.mnh)):
            live = len(q) - head
            assert live <= len(wv) and head <= max(roll._DEAD_MAX, live)


def test_rolling_falls_back_for_unrepresentable_values():
    # NaN and values with bits below 2**-128 cannot be summed exactly: numpy decides
    s = Series(64, span_ms=10**9, max_cap=64)
    mean, mx = s.rolling("m", "mean"), s.rolling("x", "max")
    for i, v in enumerate([1.0, 1e-300, 2.0, 3.0]):
        s.add(i * 1000, v)
    assert mean.query(-1, 3000, 0) == aggregate("mean", *s.window(-1, 3000))
    s.add(4000, math.nan)
    assert math.isnan(mean.query(-1, 4000, 0)) and math.isnan(mx.query(-1, 4000, 0))
    for i in range(5, 20):
        s.add(i * 1000, float(i))
    assert mean.query(4000, 19000, 0) == pytest.approx(12.0) and mx.query(4000, 19000, 0) == 19.0


def test_exact_mean_is_order_independent():
    # the running sum is exact: no drift however long it runs
    s = Series(64, span_ms=10**12, max_cap=64)
    roll = s.rolling("m", "mean")
    rng = random.Random(1)
    for i in range(50_000):
        s.add(i * 1000, rng.choice([0.1, 1e6, 0.3, 123.456, 1e-6]))
        got = roll.query(i * 1000 - 10_000, i * 1000, 0)
    wts, wv = s.window(50_000_000 - 11_000, 50_000_000)
    exact = math.fsum(wv.tolist()) / len(wv)
    assert got == pytest.approx(exact, rel=1e-15)


def test_series_dump_load_roundtrip():
    s = Series(16, span_ms=10**9, max_cap=32)
    for i in range(100):
        s.add(i * 1000, i / 3)
    ts, v = s.dump()
    assert np.frombuffer(ts, dtype=np.int64).tolist() == s.ts.tolist()  # the stored format
    assert np.frombuffer(v, dtype=np.float64).tolist() == s.values.tolist()
    r = Series.load(32, ts, v, span_ms=10**9, max_cap=32)
    assert r.ts.tolist() == s.ts.tolist() and r.values.tolist() == s.values.tolist()
    r.add(200_000, 1.0)
    assert r.last() == (200_000, 1.0)


def test_rolling_registry_has_every_agg():
    assert set(AGGS) <= set(ROLLING)


def test_late_reading_changes_the_window_mean(harness):
    # a late reading within tolerance goes into the 10-min mean (the cursor recomputes):
    # the next evaluation sees it, with numpy's value over the stored window
    base = series("D1", T0, 11, {"pm10": 140.0, "spray_on": True})
    late = Reading("dust", "S1", "D1", T0 + 10 * MIN + 30_000, {"pm10": 400.0})
    now = T0 + 11 * MIN
    a = harness()
    a.feed(base + [Reading("dust", "S1", "D1", T0 + 10 * MIN + 45_000, {"pm10": 140.0})])
    a.engine.process_readings([late])  # late (behind the watermark): stored, not evaluated
    assert "dust_pm10_10min" not in a.firing()
    a.engine.process_readings([Reading("dust", "S1", "D1", now, {"pm10": 140.0})])
    got = a.firing()["dust_pm10_10min"]["value"]
    ts, v = a.engine._devices["D1"].series["pm10"].window(now - 600_000, now)
    assert 400.0 in v.tolist()
    assert got == round(aggregate("mean", ts, v), 1)


def test_windows_survive_restart(tmp_path):
    # snapshot → new engine: the restored window feeds the rolling mean at once
    path = tmp_path / "a.sqlite3"
    a = Harness(path)
    a.feed(series("D1", T0, 9, {"pm10": 200.0, "spray_on": True}))
    a.engine.close()
    b = Harness(path)
    b.feed(series("D1", T0 + 9 * MIN, 2, {"pm10": 200.0, "spray_on": True}))
    assert "dust_pm10_10min" in b.firing()


@pytest.mark.parametrize("shift", [0.0, 0.05, -0.05])
def test_near_threshold_decided_by_numpy(harness, shift):
    # means that sit on the threshold are decided (and shown) as numpy computes them
    vals = [150.1, 149.9, 150.3, 149.7, 150.0, 150.0, 150.2, 149.8, 150.05, 149.95, 150.0, 150.1, 149.9]
    h = harness()
    fired_at = None
    for i, r in enumerate(series("D1", T0, len(vals), {"pm10": lambda i: vals[i] + shift, "spray_on": True},
                                 jitter=False)):
        h.engine.process_readings([r])
        ts, v = h.engine._devices["D1"].series["pm10"].window(r.ts_ms - 600_000, r.ts_ms)
        if fired_at is None and _covered(ts, 0.9 * 600_000) and aggregate("mean", ts, v) > 150.0:
            fired_at = i
            value = round(aggregate("mean", ts, v), 1)
        firing = h.firing().get("dust_pm10_10min")
        assert (firing is not None) == (fired_at is not None)
        if firing is not None:
            assert firing["value"] == value
