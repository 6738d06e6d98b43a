"""Kept six-100 evidence (ingest/evidence, api/six100/kept.py) on a real InfluxDB: readings go
through the real spool and InfluxWriter (which marks what InfluxDB accepted), the keeper
refreshes the marked minutes, and the report judged from the kept facts must equal the
report computed from the raw points — also after a late reading for an old day, a
replayed batch and a corrected value, and after a rebuild of data the writer never saw."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta

import pytest

from citywatch.lineproto import event_line, reading_line
from citywatch.model import Event, Reading
from six100_data import DAY, MIN, NOW_MS, T0, TZ

REGISTRY = """
[[device]]
id = "D1"
site = "S1"
kind = "dust"
district = "城区"
equipment = ["dust_monitor", "spray_relay", "plate_camera", "wash_sensor", "cover_camera", "hoarding_camera",
             "hardened_survey"]
[[device]]
id = "D9"
site = "S9"
kind = "dust"
pm10_set_value = 120
"""


def _r(site: str, dev: str, minute: int, sec: int, values: dict, quality: dict | None = None) -> str:
    return reading_line(Reading(kind="dust", site=site, device=dev, ts_ms=T0 + minute * MIN + sec * 1000,
                                values=values, quality=quality or {}))


def _exit(site: str, minute: int, washed: bool, secs: float, covered: bool) -> str:
    return event_line(Event(kind="dust", site=site, device="D1", ts_ms=T0 + minute * MIN + 20_000,
                            type="vehicle_exit", attributes={"washed": washed, "wash_seconds": float(secs),
                                                             "covered": covered}))


def day_lines() -> list[str]:
    out = []
    for i in range(-30, 1470):  # a little of the days around it too
        for sec in (5, 35):
            # S1: two monitors (the worst one counts), an unsprayed PM10 episode, cover below 100 for a while
            out.append(_r("S1", "D1", i, sec, {"pm10": 200.0 if 600 <= i < 630 else 80.0 + sec / 10,
                                              "spray_on": 610 <= i < 615, "hoarding_intact": not 100 <= i < 103,
                                              "cover_ratio": 80.0 if 300 <= i < 400 else 100.0,
                                              "hardened_ratio": 100.0}))
            out.append(_r("S1", "D2", i, sec, {"pm10": 90.0 + (i % 7)}))
            # S2: HJ 212 with flags; flagged values (D) are not data
            flagged = 50 <= i < 56 and sec == 5
            out.append(_r("S2", "M1", i, sec, {"pm10": 500.0 if flagged else 60.5, "cover_ratio": 10.0 if flagged
                                               else 100.0}, {"pm10": "D" if flagged else "N",
                                                             "cover_ratio": "D" if flagged else "N"}))
            # S3: silent in the morning, then an episode without spraying
            if i >= 720:
                out.append(_r("S3", "D3", i, sec, {"pm10": 210.0 if 800 <= i < 815 else 95.0, "spray_on": False}))
    out += [_exit("S1", 600 + k, *[(True, 90, True), (True, 30, True), (False, 0, False)][k % 3]) for k in range(6)]
    out.append(_exit("S4", 700, True, 90, True))
    return out


class Harness:
    def __init__(self, db, tmp_path) -> None:
        from ingest.service import build_ingest

        self.db = db
        self.ingest = build_ingest(db.settings(devices_file=self._devices(tmp_path)), mqtt=False)
        self.keeper = self.ingest.evidence
        self.rules = None

    def _devices(self, tmp_path):
        p = tmp_path / "devices.toml"
        p.write_text(REGISTRY, "utf-8")
        return p

    async def send(self, lines: list[str]) -> None:
        """Through the spool and the real InfluxWriter (which marks)."""
        await asyncio.to_thread(self.ingest.spool.append, lines)
        while await self.ingest.writer.deliver_once():
            pass

    async def report(self, *, kept: bool, days: list[date] | None = None, site: str | None = None,
                     now_ms: int = NOW_MS):
        from alerts.rules import load_rules
        from api import compliance
        from api.six100 import item_rules

        kw = dict(tz=TZ, now_ms=now_ms, site=site, registry=self.ingest.registry, max_sites=500,
                  rules=item_rules(load_rules()), keeper=self.keeper if kept else None)
        by_day = await compliance.six100_month(self.ingest.influx, days=days or [date.fromisoformat(DAY)], **kw)
        return {d: [s.model_dump() for s in sites] for d, sites in by_day.items()}

    async def kept_used(self) -> bool:
        from api.six100.kept import covered

        return covered(self.keeper.store, T0, T0 + 86_400_000)

    def close(self) -> None:
        self.ingest.close()


def _items(report, site):
    doc = next(s for s in report[DAY] if s["site"] == site)
    return {i["item"]: i for i in doc["items"]}


@pytest.fixture
def harness(db, tmp_path):
    h = Harness(db, tmp_path)
    yield h
    h.close()


def test_kept_equals_raw_with_late_replayed_and_corrected_readings(harness):
    async def go():
        h = harness
        store = h.keeper.store
        # a store that existed before the day: the day is covered by the writer's marks alone
        store._db.execute("UPDATE meta SET value = ? WHERE key = 'live_since_ms'", (str(T0 - 2 * 86_400_000),))
        lines = day_lines()
        await h.send(lines)
        assert store.pending_count() > 0  # the writer marked what InfluxDB accepted
        assert await h.kept_used()
        days = [date.fromisoformat(DAY) + timedelta(days=k) for k in (-1, 0, 1)]
        kept, raw = await h.report(kept=True, days=days), await h.report(kept=False, days=days)
        assert store.pending_count() == 0  # the request applied the marks first
        assert kept == raw
        assert {s["site"] for s in kept[DAY]} == {"S1", "S2", "S3", "S4", "S9"}
        s1 = _items(kept, "S1")
        assert s1["wet_operation"]["status"] == "fail" and s1["cover"]["status"] == "fail"
        assert s1["hoarding"]["status"] == "fail" and s1["wash"]["status"] == "fail"
        s2 = _items(kept, "S2")
        assert s2["wet_operation"]["status"] == "pass"  # the flagged 500s are not data
        before = s2["monitoring"]["percent"]

        # a late reading for the (old) day: S2's monitor had an unflagged 400 for 20 minutes
        await h.send([_r("S2", "M1", i, 50, {"pm10": 400.0}, {"pm10": "N"}) for i in range(1000, 1020)])
        kept2, raw2 = await h.report(kept=True), await h.report(kept=False)
        assert kept2 == raw2
        assert _items(kept2, "S2")["wet_operation"]["status"] == "fail" and before == 100.0
        # the same batch again (a replay): InfluxDB overwrites, nothing counts twice
        await h.send(lines)
        assert await h.report(kept=True) == kept2 == await h.report(kept=False)
        # a corrected value (same series and time, new value) replaces the old one
        await h.send([_r("S3", "D3", i, sec, {"pm10": 95.0, "spray_on": False})
                      for i in range(800, 815) for sec in (5, 35)])
        kept3, raw3 = await h.report(kept=True), await h.report(kept=False)
        assert kept3 == raw3
        assert _items(kept3, "S3")["wet_operation"]["status"] == "pass"
        # one site, as a district-limited token asks
        assert await h.report(kept=True, site="S1") == await h.report(kept=False, site="S1")

    async def run():
        try:
            await go()
        finally:
            await harness.ingest.influx.aclose()

    asyncio.run(run())


def test_rebuild_covers_what_the_writer_never_saw(harness, db):
    async def go():
        h = harness
        db.write(day_lines())  # straight into InfluxDB: no marks, and older than the store
        assert not await h.kept_used()
        days = [date.fromisoformat(DAY)]
        from api.six100.kept import six100_days

        assert await six100_days(h.keeper, days=days, tz=TZ, now_ms=NOW_MS, site=None, registry=None,
                                 max_sites=10, rules=None, low_limits={}, site_inputs=None) is None
        seen = []
        n = await h.keeper.rebuild(T0, T0 + 86_400_000, progress=lambda done, total: seen.append((done, total)))
        assert n == 2 and seen[-1][0] == seen[-1][1]  # Shanghai's day lies across two UTC days
        assert await h.kept_used()
        assert await h.report(kept=True) == await h.report(kept=False)

    async def run():
        try:
            await go()
        finally:
            await harness.ingest.influx.aclose()

    asyncio.run(run())


def test_marks_read_every_line_the_ingest_writes():
    from ingest.evidence import marks_of

    lines = [_r("S-1_a", "D1", 3, 59, {"pm10": 1.0}, {"pm10": "D"}), _exit("S2", 5, True, 9, False),
             reading_line(Reading(kind="noise", site="N1", device="D1", ts_ms=T0, values={"leq": 50.0}))]
    assert marks_of(("\n".join(lines) + "\n").encode()) == {("S-1_a", T0 + 3 * MIN), ("S2", T0 + 5 * MIN)}


def test_report_cli_rebuild_then_report(db, tmp_path, monkeypatch, capsys):
    from app.cli import main

    db.write(day_lines())
    monkeypatch.setenv("CW_INFLUX_URL", db.url)
    monkeypatch.setenv("CW_INFLUX_DATABASE", db.name)
    monkeypatch.setenv("CW_DATA_DIR", str(tmp_path / "data"))
    raw = tmp_path / "raw.csv"
    assert main(["report", "six100", "--date", DAY, "--format", "csv", "--out", str(raw)]) == 0
    assert main(["report", "six100", "--rebuild", "--from", DAY, "--to", DAY]) == 0
    assert "rebuilt the kept six-100 evidence of 2026-11-20..2026-11-20 (2 UTC day(s))" in capsys.readouterr().out
    kept = tmp_path / "kept.csv"
    assert main(["report", "six100", "--date", DAY, "--format", "csv", "--out", str(kept)]) == 0
    assert kept.read_bytes() == raw.read_bytes()
    assert main(["report", "six100", "--rebuild", "--from", DAY]) == 2
    assert "--to YYYY-MM-DD is required" in capsys.readouterr().err


def test_judged_days_survive_a_restart_but_not_a_late_reading(harness, monkeypatch):
    """Judged whole days are kept on disk (api/six100/judged.py): after a restart they are
    read, not judged again; a late reading changes the record's version, so the kept answer
    is not served after it."""
    from api.six100 import kept as kept_mod

    judged: list[str] = []
    real = kept_mod.judge_site

    def counting(ev, **kw):
        judged.append(ev.site)
        return real(ev, **kw)

    monkeypatch.setattr(kept_mod, "judge_site", counting)

    async def go():
        h = harness
        store = h.keeper.store
        store._db.execute("UPDATE meta SET value = ? WHERE key = 'live_since_ms'", (str(T0 - 2 * 86_400_000),))
        await h.send(day_lines())
        first = await h.report(kept=True)
        assert first == await h.report(kept=False) and sorted(judged) == ["S1", "S2", "S3", "S4", "S9"]
        kept_mod._CACHES.clear()  # a restart: nothing judged in memory
        judged.clear()
        assert await h.report(kept=True) == first and judged == []  # all of it read from disk
        # a late 20-minute episode for the old day: S2's record has a new version
        await h.send([_r("S2", "M1", i, 50, {"pm10": 400.0}, {"pm10": "N"}) for i in range(1000, 1020)])
        kept_mod._CACHES.clear()
        after, raw = await h.report(kept=True), await h.report(kept=False)
        assert judged == ["S2"] and after == raw != first
        assert _items(after, "S2")["wet_operation"]["status"] == "fail"

    async def run():
        try:
            await go()
        finally:
            await harness.ingest.influx.aclose()

    asyncio.run(run())


def test_warmer_judges_before_the_request_and_again_after_a_late_reading(harness, monkeypatch):
    """api/warm.py: the service's background pass judges the covered days as an all-sites
    request would, so the request judges nothing; a pass after a late reading re-judges
    only the day and site it changed."""
    from datetime import datetime, timezone
    from types import SimpleNamespace

    from api import warm
    from api.deps import Limits
    from api.six100 import kept as kept_mod

    judged: list[tuple[str, str]] = []
    real = kept_mod.judge_site

    def counting(ev, **kw):
        judged.append((kw["day"], ev.site))
        return real(ev, **kw)

    monkeypatch.setattr(kept_mod, "judge_site", counting)
    monkeypatch.setattr(warm, "utc_now", lambda: datetime.fromtimestamp(NOW_MS / 1000, timezone.utc))

    async def go():
        h = harness
        store = h.keeper.store
        store._db.execute("UPDATE meta SET value = ? WHERE key = 'live_since_ms'", (str(T0 - 2 * 86_400_000),))
        await h.send(day_lines())
        ctx = SimpleNamespace(ingest=h.ingest, tz=TZ, engine=None, settings=h.ingest.settings, limits=Limits())
        seen: dict = {}
        assert await warm.warm_once(ctx, seen) >= 2  # today and the covered past days
        assert (DAY, "S1") in judged
        judged.clear()
        assert await h.report(kept=True) == await h.report(kept=False) and judged == []
        assert await warm.warm_once(ctx, seen) == 1  # only today: nothing else changed
        await h.send([_r("S2", "M1", i, 50, {"pm10": 400.0}, {"pm10": "N"}) for i in range(1000, 1020)])
        judged.clear()
        await warm.warm_once(ctx, seen)
        assert (DAY, "S2") in judged and (DAY, "S1") not in judged
        judged.clear()
        kept = await h.report(kept=True)
        assert judged == [] and kept == await h.report(kept=False)
        assert _items(kept, "S2")["wet_operation"]["status"] == "fail"

    async def run():
        try:
            await go()
        finally:
            await harness.ingest.influx.aclose()

    asyncio.run(run())


def test_today_moves_by_the_minute_without_judging_again(harness, monkeypatch):
    """Today is judged up to its last whole minute; a later minute with the same facts
    re-judges only the monitoring item (judge.until_later) and still equals the from-raw
    report; new facts for a site judge that site again."""
    from api.six100 import kept as kept_mod

    judged: list[str] = []
    real = kept_mod.judge_site

    def counting(ev, **kw):
        judged.append(ev.site)
        return real(ev, **kw)

    monkeypatch.setattr(kept_mod, "judge_site", counting)

    async def go():
        h = harness
        store = h.keeper.store
        store._db.execute("UPDATE meta SET value = ? WHERE key = 'live_since_ms'", (str(T0 - 2 * 86_400_000),))
        await h.send(day_lines())
        noon = T0 + 12 * 3_600_000  # whole minutes: the kept report judges up to the last one, from-raw to now
        first = await h.report(kept=True, now_ms=noon)
        assert first == await h.report(kept=False, now_ms=noon) and judged
        judged.clear()
        assert await h.report(kept=True, now_ms=noon + 30_000) == first  # the same minute
        for later in (noon + 7 * MIN, T0 + 20 * 3_600_000):  # later minutes; S3's gap grows
            kept = await h.report(kept=True, now_ms=later)
            assert kept == await h.report(kept=False, now_ms=later)
        assert judged == []
        assert _items(kept, "S3")["monitoring"]["percent"] != _items(first, "S3")["monitoring"]["percent"]
        await h.send([_r("S2", "M1", i, 50, {"pm10": 400.0}, {"pm10": "N"}) for i in range(1000, 1020)])
        late = T0 + 21 * 3_600_000
        assert await h.report(kept=True, now_ms=late) == await h.report(kept=False, now_ms=late)
        assert judged == ["S2"]

    async def run():
        try:
            await go()
        finally:
            await harness.ingest.influx.aclose()

    asyncio.run(run())


def test_the_judged_key_is_the_same_in_every_process():
    """A set's order follows the per-process string hash: the key kept on disk must not."""
    import os
    import subprocess
    import sys

    code = ("from alerts.rules import load_rules; from api.six100 import item_rules; "
            "from api.six100.kept import stable_repr; r = item_rules(load_rules()); "
            "print(stable_repr((sorted(r.by_item.items()), frozenset({'dust_monitor', 'spray_relay', "
            "'plate_camera', 'wash_sensor', 'cover_camera'}), {'b': 1, 'a': 2})))")
    texts = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2", "3", "4")}
    assert len(texts) == 1 and "dust_monitor" in texts.pop()
