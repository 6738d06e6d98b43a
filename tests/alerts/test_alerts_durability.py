"""Durable state: after a crash (engine dropped without close, or a real SIGKILL) a new
engine on the same SQLite file neither repeats a notification nor loses a pending start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from alerts_helpers import MIN, T0, Harness, series

WET = {"pm10": 200.0, "spray_on": False}


def crash(h: Harness) -> None:
    """Abandon the engine like a killed process: no close(), no final snapshot."""
    h.engine = None  # type: ignore[assignment]  # dropped: nothing can close or snapshot it now


def test_crash_during_pending_keeps_pending_start(tmp_path):
    # 5 min pending before the crash + 5 min after → fires at 08:10, not 08:15
    path = tmp_path / "a.sqlite3"
    a = Harness(path)
    a.feed(series("D1", T0, 5, WET))
    crash(a)
    b = Harness(path)
    b.feed(series("D1", T0 + 5 * MIN, 6, WET))
    alert = b.engine.list_alerts(rule="dust_wet_operation")[0]
    assert alert["state"] == "firing"
    assert alert["started_at"] == "2026-11-27T08:00:00+08:00"
    assert alert["fired_at"] == "2026-11-27T08:10:00+08:00"
    assert [e for e in b.deliver() if e[1] == "dust_wet_operation"] == [("firing", "dust_wet_operation", "major")]


def test_crash_during_firing_no_duplicate(tmp_path):
    # fired and delivered before the crash; after restart the same episode continues and
    # resolves → one firing, one resolved in total
    path = tmp_path / "a.sqlite3"
    a = Harness(path)
    a.feed(series("D1", T0, 15, {"pm10": 180.0, "spray_on": True}))
    first = a.deliver()
    a.engine.snapshot()  # a periodic snapshot happened before the crash
    a.feed(series("D1", T0 + 15 * MIN, 2, {"pm10": 180.0, "spray_on": True}))  # not snapshotted
    crash(a)
    b = Harness(path)
    b.feed(series("D1", T0 + 17 * MIN, 20, {"pm10": 185.0, "spray_on": True}))
    assert b.deliver() == []  # still the same episode
    b.feed(series("D1", T0 + 37 * MIN, 30, {"pm10": 60.0, "spray_on": True}))
    assert first + b.deliver() == [("firing", "dust_pm10_10min", "major"), ("resolved", "dust_pm10_10min", "major")]


def test_snapshot_keeps_every_field_changed_since_the_last(tmp_path):
    # readings carrying different fields between two snapshots: each field's samples are
    # saved, and those of a field untouched since the last snapshot are not lost either
    path = tmp_path / "a.sqlite3"
    a = Harness(path)
    a.feed(series("D1", T0, 3, {"pm10": 80.0, "spray_on": True}))
    a.engine.snapshot()
    a.feed(series("D1", T0 + 3 * MIN, 2, {"pm10": 90.0}))
    a.feed(series("D1", T0 + 5 * MIN, 2, {"spray_on": False}))
    a.feed(series("D1", T0 + 7 * MIN, 1, {"pm10": 95.0}))
    a.engine.snapshot()
    want = {f: (s.ts.tolist(), s.values.tolist()) for f, s in a.engine._devices["D1"].series.items()}
    assert set(want) == {"pm10", "spray_on"}
    crash(a)
    b = Harness(path)
    got = {f: (s.ts.tolist(), s.values.tolist()) for f, s in b.engine._devices["D1"].series.items()}
    assert got == want


def test_crash_before_delivery_sends_once(tmp_path):
    # the transition committed with its outbox row but was not yet sent: the next engine sends it once
    path = tmp_path / "a.sqlite3"
    a = Harness(path)
    a.feed(series("H1", T0, 2, {"leak_detected": True}))
    crash(a)
    b = Harness(path)
    assert b.deliver() == [("firing", "heating_leak", "critical")]
    c = Harness(path)
    assert c.deliver() == []


CHILD = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from alerts_helpers import Harness, T0, series
    h = Harness({path!r})
    h.feed(series("D1", T0, 5, {{"pm10": 200.0, "spray_on": False}}))
    h.feed(series("H1", T0, 2, {{"leak_detected": True}}))
    h.deliver()
    print("fed", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_real_sigkill(tmp_path):
    # a child process goes pending (wet operation) and fires + delivers (leak), then SIGKILLs
    # itself; the parent resumes: pending start kept, leak not re-sent
    path = tmp_path / "a.sqlite3"
    code = CHILD.format(tests=str(Path(__file__).parent), path=str(path))
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "fed" in proc.stdout
    b = Harness(path)
    b.feed(series("D1", T0 + 5 * MIN, 6, WET) + series("H1", T0 + 2 * MIN, 3, {"leak_detected": True}))
    assert [e for e in b.deliver() if e[1] in ("heating_leak", "dust_wet_operation")] == [
        ("firing", "dust_wet_operation", "major")]
    assert b.engine.list_alerts(rule="dust_wet_operation")[0]["fired_at"] == "2026-11-27T08:10:00+08:00"
