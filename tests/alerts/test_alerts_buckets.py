"""Long windows as minute buckets (alerts/buckets.py): the cursors against a brute force over
the raw samples, late and re-delivered samples, bounded memory and snapshot size, the
stored hours round trip, and the migration of a snapshot that kept the window raw."""

from __future__ import annotations

import random
import sqlite3

import numpy as np
import pytest

from alerts.buckets import (BUCKET_BYTES, BUCKET_MS, CHUNK, LONG_WINDOW_MS, BucketedSeries, BucketRolling,
                            bucketed)
from alerts.window import Series
from alerts_helpers import MIN, T0, Harness, series
from citywatch.model import Reading

DAY = 86_400_000


def _rules_24h_on():
    """The shipped rules with the GB 3095 24-h rules (shipped off, alerts/README.md) enabled."""
    import yaml

    from alerts.rules import DEFAULT_RULES_DIR, load_rules, parse_rule

    rules = load_rules()
    for doc in yaml.safe_load((DEFAULT_RULES_DIR / "dust.yaml").read_text("utf-8"))["rules"]:
        if doc["id"] in ("dust_pm25_24h", "dust_tsp_24h"):
            rules[doc["id"]] = parse_rule({**doc, "enabled": True}, "dust.yaml")
    return rules


def _want(samples: dict[int, float], start: int, end: int, agg: str, need: float) -> float | None:
    """The definition: the whole minutes whose first sample lies in (start, end]."""
    firsts: dict[int, int] = {}
    for t in samples:
        k = t // BUCKET_MS
        firsts[k] = min(firsts.get(k, t), t)
    keep = sorted(t for t in samples if start < firsts[t // BUCKET_MS] <= end)
    if agg == "count":
        return float(len(keep))
    if len(keep) < 2:
        return None
    span = keep[-1] - keep[0]
    if span + span / (len(keep) - 1) < need:
        return None
    v = np.array([samples[t] for t in keep])
    return {"mean": lambda: float(v.mean()), "max": lambda: float(v.max()), "min": lambda: float(v.min())}[agg]()


def test_which_windows_are_bucketed():
    assert bucketed("mean", 24 * 3_600_000) and bucketed("max", 2 * 3_600_000) and bucketed("count", 7_200_000)
    assert not bucketed("mean", LONG_WINDOW_MS)  # the hourly PM10 stop value stays sample-exact
    for agg in ("median", "energy_mean", "rate", "last", "stuck"):  # no exact minute summary
        assert not bucketed(agg, DAY)


@pytest.mark.parametrize("seed", range(6))
def test_bucket_cursors_match_the_definition(seed):
    rng = random.Random(seed)
    win = rng.choice([2 * 3_600_000, 6 * 3_600_000])
    s = BucketedSeries(64, span_ms=360_000, max_cap=8192, long_ms=win)
    rolls = {agg: s.rolling((agg, win, None), agg) for agg in ("mean", "max", "min", "count")}
    assert all(type(r) is BucketRolling for r in rolls.values())
    samples: dict[int, float] = {}
    t = 0
    for step in range(2000):
        r = rng.random()
        if r < 0.88:
            t += rng.choice([1_000, 10_000, 10_000, 30_000, 600_000])
            x = rng.choice([rng.uniform(30, 90), round(rng.uniform(-20, 200), 1), 55.0])
        elif r < 0.95:
            t_late = t - rng.randrange(1, 300_000)  # late, within the tolerance the raw tail spans
            if t_late in samples or t_late < 0:
                continue
            x = rng.uniform(30, 90)
            s.add(t_late, x)
            samples[t_late] = x
            continue
        else:
            t_dup = rng.choice([k for k in samples if k > t - 300_000] or [t])  # re-delivered: replaces
            x = rng.uniform(30, 90)
            s.add(t_dup, x)
            samples[t_dup] = x
            continue
        s.add(t, x)
        samples[t] = x
        if step % 100 == 0:  # (only the brute force's speed: it reads the window's minutes alone)
            samples = {k: v for k, v in samples.items() if k > t - win - 2 * BUCKET_MS}
        start = t - win
        need = 0.5 * win
        for agg, roll in rolls.items():
            got = roll.query(start, t, need)
            want = _want(samples, start, t, agg, need)
            if want is None or got is None:
                assert got == want, (step, agg)
            elif agg == "mean":
                assert got == pytest.approx(want, rel=1e-12)
                assert roll.numpy_value() == pytest.approx(want, rel=1e-12)
            else:
                assert got == want, (step, agg)


def test_short_windows_of_a_bucketed_field_stay_raw():
    s = BucketedSeries(64, span_ms=600_000, max_cap=64, long_ms=DAY)
    for i in range(100):
        s.add(i * 10_000, float(i))
    roll = s.rolling(("mean", 600_000, None), "mean")
    assert type(roll) is not BucketRolling
    assert roll.query(990_000 - 600_000, 990_000, 0) == pytest.approx(np.mean(np.arange(40, 100)))


def test_redelivery_is_idempotent():
    # the same readings twice (MQTT QoS 1 re-delivery): the buckets are bit for bit the same
    rng = random.Random(3)
    stream = [(i * 7_000, rng.uniform(0, 500)) for i in range(2_000)]
    once = BucketedSeries(64, span_ms=360_000, max_cap=8192, long_ms=DAY)
    twice = BucketedSeries(64, span_ms=360_000, max_cap=8192, long_ms=DAY)
    for i, (t, x) in enumerate(stream):
        once.add(t, x)
        twice.add(t, x)
        if i >= 5:
            twice.add(*stream[i - 5])  # 35 s later, again
    assert once.minutes() == twice.minutes()


def test_a_24h_window_stays_bounded_after_100k_samples():
    # memory and snapshot bytes are counted, not timed: 100,000 samples at 1 s (27.8 h)
    s = BucketedSeries(53, span_ms=360_000, max_cap=8192, long_ms=DAY)
    roll = s.rolling(("mean", DAY, None), "mean")
    written = 0
    stored: dict[int, bytes] = {}
    for i in range(100_000):
        t = T0 + i * 1_000
        s.add(t, 40.0 + (i % 7))
        if i % 5 == 4:  # a snapshot every 5 s
            rows, drop = s.dump_buckets()
            assert len(rows) <= 2  # the current hour (and the previous one, just after the hour)
            written += sum(len(b) for _, b in rows)
            stored.update(rows)
            if drop is not None:
                stored = {c: b for c, b in stored.items() if c >= drop}
    assert s.nbuckets() <= DAY // BUCKET_MS + 1  # 1,441
    assert len(s.bf) <= DAY // BUCKET_MS + 32  # closed minutes, plus the dead head not yet cut off
    assert 360 <= len(s) <= 2 * 360  # the raw tail: late tolerance + a minute (360 s) at 1 s; its cap doubles
    # stored: 24 h of minutes plus the oldest hour's row, whose expired minutes go with the row
    assert len(stored) <= 26 and sum(map(len, stored.values())) <= (DAY // BUCKET_MS + 1 + CHUNK) * BUCKET_BYTES
    per_snapshot = written / (100_000 / 5)
    assert per_snapshot <= CHUNK * BUCKET_BYTES  # at most one hour's row: never the whole window
    raw_would_be = 8192 * 16  # the capped raw series it replaces, rewritten by every snapshot
    assert per_snapshot * 40 < raw_would_be
    assert roll.query(t - DAY, t, 0.83 * DAY) == pytest.approx(np.mean([40.0 + (i % 7) for i in range(
        100_000 - (DAY // 1000 - 60), 100_000)]), rel=1e-3)


def test_restore_from_stored_hours_and_raw_tail():
    s = BucketedSeries(53, span_ms=360_000, max_cap=8192, long_ms=DAY)
    stored: dict[int, bytes] = {}
    for i in range(20_000):
        s.add(T0 + i * 10_000, float(i % 100))
        if i % 50 == 0:
            rows, drop = s.dump_buckets()
            stored.update(rows)
            stored = {c: b for c, b in stored.items() if drop is None or c >= drop}
    stored.update(s.dump_buckets()[0])
    ts, v = s.dump()
    r = BucketedSeries.restore(53, ts, v, span_ms=360_000, max_cap=8192, long_ms=DAY, chunks=list(stored.items()))
    assert r.minutes() == s.minutes() and r.ts.tolist() == s.ts.tolist()
    hour = r.minutes()[-1][0] // BUCKET_MS // CHUNK
    assert r.dump_buckets() == ([(hour, stored[hour])], None)
    r.add(s.ts[-1] + 10_000, 5.0)  # goes on where the stored state ended
    s.add(s.ts[-1] + 10_000, 5.0)
    assert r.minutes() == s.minutes()


def test_engine_migrates_a_raw_24h_snapshot(tmp_path):
    # a state file written before buckets: the 24 h of pm25 as raw samples in `series`
    path = tmp_path / "a.sqlite3"
    h = Harness(path, rules=_rules_24h_on())
    h.feed(series("D1", T0, 5, {"pm25": 40.0, "spray_on": True}))
    h.engine.close()
    ts = np.arange(T0, T0 + 21 * 3_600_000, 60_000, dtype=np.int64)
    v = np.full(len(ts), 100.0)
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM series_buckets")
        db.execute("INSERT OR REPLACE INTO series (device, field, ts, v) VALUES ('D1','pm25',?,?)",
                   (ts.tobytes(), v.tobytes()))
        db.execute("UPDATE devices SET watermark_ms=? WHERE device='D1'", (int(ts[-1]),))
    b = Harness(path, rules=_rules_24h_on())
    s = b.engine._devices["D1"].series["pm25"]
    assert type(s) is BucketedSeries and s.nbuckets() == len(ts) and len(s) < 100
    b.feed([Reading("dust", "S1", "D1", int(ts[-1]) + 60_000, {"pm25": 100.0})])
    assert "dust_pm25_24h" in b.firing()  # the migrated 21 h count toward the 24 h mean
    b.engine.close()
    with sqlite3.connect(path) as db:  # stored as hours now, and the raw row is the short tail
        hours = db.execute("SELECT count(*), sum(length(data)) FROM series_buckets WHERE field='pm25'").fetchone()
        raw = db.execute("SELECT length(ts) FROM series WHERE device='D1' AND field='pm25'").fetchone()[0]
    assert hours[0] == 22 and hours[1] == (len(ts) + 1) * BUCKET_BYTES
    assert raw < 100 * 8
    c = Harness(path, rules=_rules_24h_on())
    assert c.engine._devices["D1"].series["pm25"].nbuckets() == len(ts) + 1


def test_a_1s_monitor_reaches_the_24h_coverage():
    # kept raw, 8192 samples at 1 s span 2.3 h: the 24 h rule could never reach its 20 h
    s = BucketedSeries(53, span_ms=360_000, max_cap=8192, long_ms=DAY)
    roll = s.rolling(("mean", DAY, None), "mean")
    t = T0
    for i in range(21 * 3600):
        t = T0 + i * 1000
        s.add(t, 100.0)
    assert roll.query(t - DAY, t, 0.83 * DAY) == 100.0
    raw = Series(8192, span_ms=DAY, max_cap=8192)
    for i in range(21 * 3600):
        raw.add(T0 + i * 1000, 100.0)
    assert raw.rolling(("mean", DAY, None), "mean").query(t - DAY, t, 0.83 * DAY) is None


def test_late_reading_lands_in_its_minute(tmp_path):
    h = Harness(tmp_path / "a.sqlite3", rules=_rules_24h_on())
    h.feed(series("D1", T0, 30, {"pm25": 40.0}, jitter=False))
    s = h.engine._devices["D1"].series["pm25"]
    before = s.nbuckets()
    late = T0 + 27 * MIN + 30_000  # 2.5 min behind the watermark, inside the 5-min tolerance
    h.engine.process_readings([Reading("dust", "S1", "D1", late, {"pm25": 400.0})])
    minute = [m for m in s.minutes() if m[0] // BUCKET_MS == late // BUCKET_MS]
    assert minute[0][2] == 2 and minute[0][4] == 400.0 and s.nbuckets() == before
    too_late = T0 + 20 * MIN + 30_000  # beyond the tolerance: dropped, as for raw windows
    h.engine.process_readings([Reading("dust", "S1", "D1", too_late, {"pm25": 400.0})])
    assert h.engine.stats["late_dropped"] == 1
    assert [m[2] for m in s.minutes() if m[0] // BUCKET_MS == too_late // BUCKET_MS] == [1]
