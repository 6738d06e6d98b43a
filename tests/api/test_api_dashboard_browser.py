"""The dashboard in headless Chromium (Debian's /usr/bin/chromium via Playwright, never a
downloaded browser): log in, see the dust-episode alert arrive live, ack it, see the ack in
the API; screenshot to tests/artifacts/dashboard.png."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from conftest import SCENARIO_DAY, TOKENS, TZ, auth, episode_until, feed

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is absent (apt-get install chromium)")


def _chromium(p):
    return p.chromium.launch(executable_path=CHROMIUM, args=[
        "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"])


def _log_in(page, server, role: str) -> None:
    page.goto(server.url + "/")
    page.fill("#token", TOKENS[role])
    page.click("#login-form button[type=submit]")


def _hold_first(page, url_part: str, wanted: str) -> list:
    """Route the page's requests whose URL contains `url_part`; the first that also contains
    `wanted` is answered by the server now but held from the page: the list it returns gets
    (route, response), to release later with `route.fulfill(response=response)`."""
    held: list = []

    def handle(route) -> None:
        if wanted in route.request.url and not held:
            held.append((route, route.fetch()))
        else:
            route.continue_()

    page.route(lambda url: url_part in url, handle)
    return held


def _wait_held(page, held: list, what: str):
    for _ in range(200):
        if held:
            break
        page.wait_for_timeout(25)
    assert held, f"the dashboard never asked for {what}"
    return held[0]


def test_dashboard_live_alert_and_ack(stack, server):
    sync_api = pytest.importorskip("playwright.sync_api")
    readings, events, lines = episode_until("10:45")
    stack.write_lines(lines)
    with sync_api.sync_playwright() as p:
        browser = _chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1300}, locale="zh-CN",
                                    timezone_id="Asia/Shanghai")
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: errors.append(f"failed {r.url}") if "/stream" not in r.url else None)
            _log_in(page, server, "operator")
            page.wait_for_selector("#live.on", timeout=10_000)
            assert page.inner_text("h1") == "城市管理监测平台"
            # nothing yet; now the episode's readings reach the engine → live over SSE
            feed(stack.engine, readings, events)
            row = page.wait_for_selector("#alerts tbody tr[data-state=firing]:has(button.ack)", timeout=10_000)
            alert_id = row.get_attribute("data-id")
            assert "PM10" in row.inner_text() and "告警中" in row.inner_text()
            page.wait_for_selector(".card[data-site=S0001]")
            page.wait_for_selector("#chart-pm10 .uplot", timeout=10_000)
            page.fill("#comp-date", SCENARIO_DAY)  # the table opens on today; the episode was on that day
            page.wait_for_selector(f"#compliance[data-date='{SCENARIO_DAY}'] tbody tr[data-site=S0001]", timeout=10_000)
            page.click(f"#alerts tbody tr[data-id='{alert_id}'] button.ack")
            page.wait_for_selector(f"#alerts tbody tr[data-id='{alert_id}'] .acked", timeout=10_000)
            got = httpx.get(f"{server.url}/v1/alerts/{alert_id}", headers=auth("viewer")).json()
            assert got["acked"] is True and got["acked_by"] == "王工"
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            # English toggle, and it sticks
            page.click("#lang")
            assert page.inner_text("h1") == "City monitoring"
            assert "firing" in page.inner_text(f"#alerts tbody tr[data-id='{alert_id}']")
            page.screenshot(path=str(ARTIFACTS / "dashboard-en.png"), full_page=True)
            # the token lives in sessionStorage only
            assert page.evaluate("sessionStorage.getItem('cw.token')") == TOKENS["operator"]
            assert page.evaluate("localStorage.getItem('cw.token')") is None
            assert errors == [], errors
        finally:
            browser.close()


def test_dashboard_resync_snapshot_older_than_a_live_event_keeps_the_alert(stack, server):
    """The race that made the test above flaky in CI: the stream connects, the dashboard asks
    for a snapshot, the server reads it before the alert fires, but the alert's live event
    reaches the page first. Here the snapshot is held until the live row is shown, then
    released; the row must survive it."""
    sync_api = pytest.importorskip("playwright.sync_api")
    readings, events, lines = episode_until("10:45")
    stack.write_lines(lines)
    with sync_api.sync_playwright() as p:
        browser = _chromium(p)
        try:
            page = browser.new_page(locale="zh-CN", timezone_id="Asia/Shanghai")
            held = _hold_first(page, "/v1/alerts", "/v1/alerts?")  # read now: no alert yet
            _log_in(page, server, "operator")
            page.wait_for_selector("#live.on", timeout=10_000)
            route, stale = _wait_held(page, held, "its resync snapshot")
            assert stale.json()["items"] == []
            feed(stack.engine, readings, events)
            row = page.wait_for_selector("#alerts tbody tr[data-state=firing]", timeout=10_000)
            alert_id = row.get_attribute("data-id")
            route.fulfill(response=stale)
            page.wait_for_selector("#alerts[data-resynced='1']", timeout=10_000)
            assert page.query_selector(f"#alerts tbody tr[data-id='{alert_id}'][data-state=firing] button.ack")
            assert page.is_hidden("#alerts-empty")
        finally:
            browser.close()


def test_dashboard_shows_the_newest_request_answer_when_answers_cross(stack, server):
    """A user picks one day's compliance, then another before the first answer came: the
    first answer arriving last must not replace the table for the day now selected."""
    sync_api = pytest.importorskip("playwright.sync_api")
    stack.write_lines(episode_until("10:45")[2])
    with sync_api.sync_playwright() as p:
        browser = _chromium(p)
        try:
            page = browser.new_page(locale="zh-CN", timezone_id="Asia/Shanghai")
            held = _hold_first(page, "/v1/compliance/", "date=2026-11-25")
            _log_in(page, server, "viewer")
            page.wait_for_selector("#compliance[data-date]", timeout=10_000)
            page.fill("#comp-date", "2026-11-25")
            route, older = _wait_held(page, held, "2026-11-25")
            page.fill("#comp-date", "2026-11-26")
            page.wait_for_selector("#compliance[data-date='2026-11-26']", timeout=10_000)
            assert older.json()["date"] == "2026-11-25"
            with page.expect_event("requestfinished", lambda r: "date=2026-11-25" in r.url):
                route.fulfill(response=older)
            page.wait_for_timeout(300)  # let the page handle the late answer
            assert page.get_attribute("#compliance", "data-date") == "2026-11-26"
            assert page.input_value("#comp-date") == "2026-11-26"
        finally:
            browser.close()


def test_dashboard_compliance_day_and_month_views(stack, server):
    """The six-100 table in Chinese with the reason of every fail and no_evidence on hover,
    and the month view; screenshot to tests/artifacts/compliance-month.png."""
    sync_api = pytest.importorskip("playwright.sync_api")
    from datetime import datetime

    t0 = int(datetime.fromisoformat(f"{SCENARIO_DAY}T00:00:00").replace(tzinfo=TZ).timestamp() * 1000)
    lines = []
    for i in range(1440):
        t = t0 + i * 60_000 + 5000
        lines.append(f"dust,site=S1,device=D1 pm10=80,spray_on=false,hoarding_intact=true,cover_ratio=100,"
                     f"hardened_ratio=100 {t}")
        lines.append(f"dust,site=S2,device=D2 pm10=300 {t}")  # dusty all day, no spray sensor
    stack.write_lines(lines)
    month = SCENARIO_DAY[:7]
    with sync_api.sync_playwright() as p:
        browser = _chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1300}, locale="zh-CN",
                                    timezone_id="Asia/Shanghai")
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            _log_in(page, server, "viewer")
            page.wait_for_selector("#compliance[data-date]", timeout=10_000)
            page.fill("#comp-date", SCENARIO_DAY)
            page.wait_for_selector(f"#compliance[data-date='{SCENARIO_DAY}'] tbody tr[data-site=S2]", timeout=10_000)
            heads = [h.inner_text() for h in page.query_selector_all("#compliance thead th")]
            assert heads == ["区县", "工地", "周边围挡", "物料覆盖", "车辆冲洗", "路面硬化", "湿法作业", "渣土密闭",
                             "在线监测", "全部达标"]
            wet = page.query_selector("#compliance tr[data-site=S2] td[data-item=wet_operation]")
            assert wet.get_attribute("data-status") == "fail" and "无喷淋证据" in wet.get_attribute("title")
            silent = page.query_selector("#compliance tr[data-site=S2] td[data-item=hoarding]")
            assert silent.inner_text() == "无证据" and "当日无数据" in silent.get_attribute("title")
            assert page.query_selector("#compliance tr[data-site=S1] td[data-item=hoarding]").get_attribute("title") is None
            page.hover("#compliance tr[data-site=S2] td[data-item=wet_operation]")
            page.click("#comp-view-month")
            page.fill("#comp-month", month)
            cell = page.wait_for_selector(f"#compliance-month[data-month='{month}'] tbody tr[data-site=S2] "
                                          f"td[data-date='{SCENARIO_DAY}']", timeout=20_000)
            assert cell.get_attribute("class") == "fail" and "湿法作业：" in cell.get_attribute("title")
            assert page.is_hidden("#compliance")
            ARTIFACTS.mkdir(exist_ok=True)
            page.locator("#compliance-panel").screenshot(path=str(ARTIFACTS / "compliance-month.png"))
            assert errors == [], errors
        finally:
            browser.close()


def test_dashboard_chart_marks_flagged_values(stack, server):
    """A PM10 fault (flag D) and a calibration (C) in a site's data: the chart draws them
    apart from the line (hollow orange points, legend 标记数据) and says which flags it saw;
    screenshot to tests/artifacts/dashboard-flags.png."""
    sync_api = pytest.importorskip("playwright.sync_api")
    from datetime import datetime

    t0 = int(datetime.fromisoformat(f"{SCENARIO_DAY}T08:00:00").replace(tzinfo=TZ).timestamp() * 1000)
    lines = []
    for i in range(6 * 60):
        flag = "D" if 120 <= i < 150 else ("C" if 240 <= i < 250 else "N")
        pm10 = 600 if flag == "D" else (20 if flag == "C" else 70 + (i % 30))
        lines.append(f'dust,site=S1,device=D1 pm10={pm10},pm10_flag="{flag}",noise=58,noise_flag="N",'
                     f"spray_on=true {t0 + i * 60_000 + 5000}")
    stack.write_lines(lines)
    with sync_api.sync_playwright() as p:
        browser = _chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1300}, locale="zh-CN",
                                    timezone_id="Asia/Shanghai")
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            _log_in(page, server, "viewer")
            page.wait_for_selector("#charts-panel[data-site=S1] #chart-pm10 .uplot", timeout=10_000)
            pm = page.query_selector("#chart-pm10")
            assert int(pm.get_attribute("data-flagged")) > 0
            note = page.inner_text("#chart-pm10 .flag-note")
            assert "D 故障" in note and "C 校准" in note and "规则与合规不计" in note, note
            assert page.get_attribute("#chart-pm10 .flag-note", "data-flags") == "CD"
            legend = page.inner_text("#chart-pm10 .u-legend")
            assert "标记数据（不参与判定）" in legend, legend
            # the flagged series is drawn with its own hollow marker in the legend
            marker = page.locator("#chart-pm10 .u-legend .u-series").nth(2).locator(".u-marker")
            assert "rgb(230, 81, 0)" in marker.evaluate("e => getComputedStyle(e).borderColor")
            assert page.query_selector("#chart-noise .flag-note") is None  # noise was all N
            assert page.get_attribute("#chart-noise", "data-flagged") == "0"
            # hovering a flagged bucket reads the flag out in the legend
            box = page.locator("#chart-pm10 .u-over").bounding_box()
            page.mouse.move(box["x"] + box["width"] * 135 / 360, box["y"] + box["height"] / 2)  # 10:15, in the fault
            page.wait_for_function("document.querySelector('#chart-pm10 .u-legend').innerText.includes('· D 故障')",
                                   timeout=5_000)
            ARTIFACTS.mkdir(exist_ok=True)
            page.locator("#charts-panel").screenshot(path=str(ARTIFACTS / "dashboard-flags.png"))
            page.click("#lang")
            assert "D fault" in page.inner_text("#chart-pm10 .flag-note")
            assert "flagged (not judged)" in page.inner_text("#chart-pm10 .u-legend")
            assert errors == [], errors
        finally:
            browser.close()
