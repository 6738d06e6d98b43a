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


NAMES = ["周边围挡", "物料堆放覆盖", "出入车辆清洗", "路面硬化", "湿法作业", "渣土车辆密闭运输", "在线监测联网"]


def _workbook(r):
    from openpyxl import load_workbook

    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    return load_workbook(io.BytesIO(r.content))


def test_six100_xlsx_day(client, stack):
    _day(stack)
    r = client.get("/v1/compliance/six100.xlsx", params={"date": DAY}, headers=V)
    assert "filename*=UTF-8''" in r.headers["content-disposition"]
    wb = _workbook(r)
    assert wb.sheetnames == [DAY, "明细"]
    ws = wb[DAY]
    assert [c.value for c in ws[1]] == ["区县", "工地", *NAMES, "全部达标"]
    assert [c.value for c in ws[2]] == [None, "S1", *["达标"] * 7, "是"]
    assert [c.value for c in ws[3]] == [None, "S2", "不达标", "不达标", "不达标", "达标", "不达标", "不达标", "不达标", "否"]
    assert ws.max_row == 3
    wet = ws.cell(row=3, column=7)  # S2 wet operation: the reason as a comment, red fill
    assert "无喷淋 1 次" in wet.comment.text and wet.fill.fgColor.rgb.endswith("FFC7CE")
    assert ws.cell(row=2, column=7).comment is None
    detail = wb["明细"]
    assert [c.value for c in detail[1]] == ["日期", "区县", "工地", "项目", "结果", "百分比", "原因", "说明", "判定规则"]
    rows = [[c.value for c in row] for row in detail.iter_rows(min_row=2)]
    assert len(rows) == 14
    s2_wet = next(x for x in rows if x[2] == "S2" and x[3] == "湿法作业")
    assert s2_wet[:6] == [DAY, None, "S2", "湿法作业", "不达标", 25.0] and s2_wet[8] == "dust_wet_operation"
    s2_mon = next(x for x in rows if x[2] == "S2" and x[3] == "在线监测联网")
    assert 49.0 <= s2_mon[5] <= 51.0 and "在线率" in s2_mon[7]


def test_six100_month_json_and_xlsx(client, stack):
    _day(stack)
    month = DAY[:7]
    doc = client.get("/v1/compliance/six100/month", params={"month": month}, headers=V).json()
    assert doc["month"] == month and doc["days"][0] == f"{month}-01" and DAY in doc["days"]
    from api.models import ComplianceMonthResponse  # the route writes plain JSON: it must be this model's

    assert ComplianceMonthResponse.model_validate(doc).model_dump(mode="json") == doc
    by_site = {s["site"]: s for s in doc["sites"]}
    assert by_site["S1"]["days_all_pass"] == 1 and by_site["S1"]["days_judged"] == 1
    s2_day = next(d for d in by_site["S2"]["days"] if d["date"] == DAY)
    assert s2_day["all_pass"] is False and "wet_operation" in s2_day["failed"] and "hardened" not in s2_day["failed"]
    assert "无喷淋" in s2_day["reasons"]["wet_operation"]
    wb = _workbook(client.get("/v1/compliance/six100.xlsx", params={"month": month}, headers=V))
    assert wb.sheetnames[0] == f"{month} 月汇总" and DAY in wb.sheetnames and wb.sheetnames[-1] == "明细"
    ws = wb[f"{month} 月汇总"]
    assert [c.value for c in ws[1]] == ["区县", "工地", "统计天数", "全部达标天数", "达标率(%)",
                                        *(f"{n}不达标天数" for n in NAMES), "无证据项次"]
    assert [c.value for c in ws[2]] == [None, "S1", 1, 1, 100.0, 0, 0, 0, 0, 0, 0, 0, 0]
    assert [c.value for c in ws[3]] == [None, "S2", 1, 0, 0.0, 1, 1, 1, 0, 1, 1, 1, 0]
    for params in ({"month": "2026-13"}, {"month": "202611"}, {"month": "2999-01"}, {"date": DAY, "month": month}):
        assert client.get("/v1/compliance/six100.xlsx", params=params, headers=V).status_code == 422, params


def test_report_follows_a_put_rule(client, stack):
    """PUT /v1/rules changes the alerts and the report together: one source of thresholds."""
    _day(stack)
    admin = auth("admin")
    rule = client.get("/v1/rules/dust_wet_operation", headers=admin).json()
    rule["when"][0]["threshold"]["default"] = 250  # S2's episode is PM10 200
    assert client.put("/v1/rules/dust_wet_operation", json=rule, headers=admin).status_code == 200
    s2 = next(s for s in client.get("/v1/compliance/six100", params={"date": DAY}, headers=V).json()["sites"]
              if s["site"] == "S2")
    wet = _items(s2)["wet_operation"]
    assert wet["status"] == "pass" and "250" in wet["detail"]


def test_the_service_app_warms_six100_in_the_background_and_stops_cleanly(stack):
    """create_app(warm=True), as app/service.py builds it: the warm-up task runs in the
    lifespan (its passes counted in /metrics) and ends with it."""
    import time

    from starlette.testclient import TestClient

    from api.app import create_app

    app = create_app(settings=stack.settings, ingest=stack.ingest, engine=stack.engine, warm=True)
    with TestClient(app) as c:
        for _ in range(600):  # the first pass starts at once; wait for it, however slow the box
            text = c.get("/metrics").text
            line = next((ln for ln in text.splitlines() if ln.startswith("citywatch_six100_warm_passes_total ")), "")
            if line and float(line.split()[1]) >= 1:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("no six-100 warm-up pass")
        assert "citywatch_six100_warm_last_seconds" in text
