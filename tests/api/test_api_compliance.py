"""六个百分百 compliance from InfluxDB: a synthetic day with known answers, JSON and CSV."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from zoneinfo import ZoneInfo

from conftest import auth

V = auth("viewer")
DAY = "2026-11-20"
T0 = int(datetime.fromisoformat(f"{DAY}T00:00:00").replace(tzinfo=ZoneInfo("Asia/Shanghai")).timestamp() * 1000)
MIN = 60_000


def _day(stack) -> None:
    lines = []
    for i in range(1440):  # one reading a minute, the whole local day
        t = T0 + i * MIN + 5000
        # S1: everything in order, PM10 low
        lines.append(f"dust,site=S1,device=D1 pm10=80,spray_on=false,hoarding_intact=true,cover_ratio=100,"
                     f"hardened_ratio=100 {t}")
        if i >= 720:  # S2: monitor silent in the morning (50 % online)
            high = 800 <= i < 815  # 15 min PM10 200 with the spray off → wet operation violated
            sprayed = 900 <= i < 905  # 5 min PM10 200 with the spray on
            pm10 = 200 if high or sprayed else 90
            lines.append(f"dust,site=S2,device=D2 pm10={pm10},spray_on={'true' if sprayed else 'false'},"
                         f"hoarding_intact={'false' if i < 792 else 'true'},cover_ratio={80 if i < 1080 else 100},"
                         f"hardened_ratio=100 {t}")
    for k in range(4):
        lines.append(f'events,kind=dust,site=S1,device=D1,type=vehicle_exit plate="晋E1234{k}",washed=true,'
                     f"wash_seconds=90,covered=true {T0 + (600 + k) * MIN}")
        washed, secs, covered = [(True, 90, True), (True, 30, True), (True, 80, False), (True, 75, True)][k]
        lines.append(f'events,kind=dust,site=S2,device=D2,type=vehicle_exit plate="晋E5678{k}",'
                     f"washed={str(washed).lower()},wash_seconds={secs},covered={str(covered).lower()} "
                     f"{T0 + (800 + k) * MIN}")
    stack.write_lines(lines)


def _items(site_doc):
    return {i["item"]: i for i in site_doc["items"]}


def test_six100_json(client, stack):
    _day(stack)
    r = client.get("/v1/compliance/six100", params={"date": DAY}, headers=V)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["date"] == DAY and doc["tz"] == "Asia/Shanghai"
    by_site = {s["site"]: s for s in doc["sites"]}
    assert set(by_site) == {"S1", "S2"}
    s1 = _items(by_site["S1"])
    assert by_site["S1"]["all_pass"] is True
    assert all(i["status"] == "pass" for i in s1.values()), s1
    assert s1["monitoring"]["percent"] == 100.0 and s1["wash"]["percent"] == 100.0
    assert s1["wet_operation"]["percent"] == 100.0  # PM10 never high
    s2 = _items(by_site["S2"])
    assert by_site["S2"]["all_pass"] is False
    assert s2["hoarding"]["status"] == "fail" and s2["hoarding"]["percent"] == 90.0   # 72 of 720 not intact
    assert s2["cover"]["status"] == "fail" and s2["cover"]["percent"] == 90.0         # mean of 80/100 halves
    assert s2["hardened"]["status"] == "pass"
    assert s2["wet_operation"]["status"] == "fail" and s2["wet_operation"]["percent"] == 25.0  # 5 of 20 sprayed
    assert "1 episode" in s2["wet_operation"]["detail"]
    assert s2["wash"]["percent"] == 75.0 and s2["wash"]["status"] == "fail"          # 30 s is not a wash
    assert s2["muck_covered"]["percent"] == 75.0 and s2["muck_covered"]["status"] == "fail"
    assert 49.0 <= s2["monitoring"]["percent"] <= 51.0 and s2["monitoring"]["status"] == "fail"
    assert s2["wet_operation"]["name_zh"] == "湿法作业"
    one = client.get("/v1/compliance/six100", params={"date": DAY, "site": "S1"}, headers=V).json()
    assert [s["site"] for s in one["sites"]] == ["S1"]
    # a site without any data: every item no_evidence (sensor silent, never a pass), monitoring 0 % fail
    empty = client.get("/v1/compliance/six100", params={"date": DAY, "site": "S9"}, headers=V).json()["sites"][0]
    items = _items(empty)
    assert items["monitoring"]["status"] == "fail" and items["hoarding"]["status"] == "no_evidence"
    assert items["hoarding"]["reason"] == "sensor_silent" and items["hoarding"]["pass"] is None
    assert items["wash"]["reason"] == "no_activity" and items["wash"]["detail_zh"].startswith("已登记")
    assert empty["all_pass"] is False


def test_six100_csv(client, stack):
    _day(stack)
    for kw in ({"params": {"date": DAY, "format": "csv"}},
               {"params": {"date": DAY}, "headers": {**V, "Accept": "text/csv"}}):
        kw.setdefault("headers", V)
        r = client.get("/v1/compliance/six100", **kw)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        assert f"six100-{DAY}.csv" in r.headers["content-disposition"]
        text = r.content.decode("utf-8-sig")
        rows = list(csv.DictReader(io.StringIO(text)))
        assert len(rows) == 14 and rows[0]["name_zh"] == "周边围挡"
        wet = next(x for x in rows if x["site"] == "S2" and x["item"] == "wet_operation")
        assert wet["pass"] == "false" and wet["percent"] == "25.0" and wet["status"] == "fail"


def test_six100_bad_params(client, stack):
    for params in ({"date": "2026-13-01"}, {"date": "20261120"}, {"date": "2999-01-01"}, {"date": "1999-12-31"},
                   {"site": "S1' OR '1'='1"}, {"format": "xml"}):
        assert client.get("/v1/compliance/six100", params=params, headers=V).status_code == 422, params
    assert stack.queries == []
